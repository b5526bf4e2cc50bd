"""Crash safety and concurrency with real processes: `python -m indexer scan` killed with SIGKILL, and a
second process reading the catalog and FAISS indexes while a scan writes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from catalog.store import Catalog
from catalog.vectors import index_ids, load_index
from indexer.cli import main as cli
from indexer.pipeline import scan
from tests.conftest import REPO, write_audio
from tests.harness import lite_variant

READER = r"""
import json, sys, time
from pathlib import Path
from sqlalchemy import text
from catalog.store import Catalog
from catalog.vectors import IndexReader, read_manifest
data, stop, out = map(Path, sys.argv[1:4])
catalog = Catalog(data / "catalog.duckdb")
readers = {name: IndexReader(data, name, gpu=False) for name in ("audio", "text")}
reads, loads, most, problems = 0, 0, 0, []
(out.parent / "ready").write_text("1")
while not stop.exists():
    try:
        if catalog.path.exists():
            with catalog.read() as conn:
                n = conn.execute(text("SELECT count(*) FROM tracks WHERE status = 'done'")).scalar()
                conn.execute(text("SELECT t.title, c.text FROM tracks t JOIN captions c ON c.track_id = t.id")).all()
            reads, most = reads + 1, max(most, n)
        for name, reader in readers.items():
            if read_manifest(data, name) is not None:
                index, manifest = reader.get()
                assert index.ntotal == manifest.count
                loads += 1
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    time.sleep(0.05)
out.write_text(json.dumps({"reads": reads, "loads": loads, "most": most, "problems": problems}))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MUSILINGO_DECODE_WORKERS": "1"}


def _count(data: Path, query: str) -> int:
    if not (data / "catalog.duckdb").exists():
        return 0
    with Catalog(data / "catalog.duckdb").read() as conn:
        return conn.execute(text(query)).scalar()


def _assert_no_duplicates(data: Path) -> int:
    """Each path once; a track has tokens and a caption exactly when it is done. Returns the done count."""
    done = _count(data, "SELECT count(*) FROM tracks WHERE status = 'done'")
    assert _count(data, "SELECT count(*) FROM tracks") == _count(data, "SELECT count(DISTINCT path) FROM tracks") == done
    assert _count(data, "SELECT count(DISTINCT track_id) FROM embeddings") == _count(data, "SELECT count(*) FROM embeddings") == done
    assert _count(data, "SELECT count(DISTINCT track_id) FROM captions") == _count(data, "SELECT count(*) FROM captions") == done
    return done


def test_concurrent_reader_sees_no_lock_errors(audio_library, indexer_settings, indexer_models, tmp_path):
    for i in range(8):
        audio_library(f"Artist {i % 2}/Album/{i + 1:02d} Track.{['flac', 'wav'][i % 2]}", seconds=2.0, seed=40 + i)
    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(indexer_settings.data_dir), str(stop), str(out)],
                              env=_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline and reader.poll() is None:
            time.sleep(0.05)
        summary = scan([str(audio_library.root)], indexer_settings, indexer_models.profile, models=indexer_models,
                       greedy=True, commit_every=2)
        time.sleep(0.5)  # let the reader see the final save
    finally:
        stop.write_text("1")
        reader.wait(timeout=60)
    result = json.loads(out.read_text())
    assert summary.state == "finished" and len(summary.indexed) == 8
    assert result["problems"] == []
    assert result["reads"] > 10 and result["loads"] > 0 and result["most"] == 8


@pytest.mark.slow
def test_sigkill_at_any_point_loses_nothing_and_duplicates_nothing(tmp_path):
    lib, data = tmp_path / "library", tmp_path / "data"
    for i in range(12):
        write_audio(lib / f"Band {i % 3}" / "Album" / f"{i + 1:02d} Song.{['flac', 'wav', 'ogg'][i % 3]}",
                    seconds=2.0, seed=60 + i)
    (data / "profiles").mkdir(parents=True)
    lite_variant(data / "profiles" / "lite-fresh.toml", adapter="", max_new_tokens=4, caption_template="")
    cmd = [sys.executable, "-m", "indexer", "scan", str(lib), "--data-dir", str(data), "--profile", "lite-fresh",
           "--greedy", "--commit-every", "2", "--json"]

    def run_until(condition) -> subprocess.Popen:
        """Start a scan and SIGKILL it as soon as `condition()` holds (or let it finish first)."""
        proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if condition():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        return proc

    done = lambda: _count(data, "SELECT count(*) FROM tracks WHERE status = 'done'")  # noqa: E731
    first = run_until(lambda: done() >= 1)  # right after the first commit is visible
    assert first.returncode == -signal.SIGKILL
    after_first = _assert_no_duplicates(data)
    assert 1 <= after_first < 12
    second = run_until(lambda: done() >= after_first + 2)  # after one more commit of its own
    assert second.returncode == -signal.SIGKILL
    assert after_first + 2 <= _assert_no_duplicates(data) < 12

    final = run_until(lambda: False)
    assert final.returncode == 0
    summary = json.loads(final.stdout.read())
    assert summary["state"] == "finished" and summary["failed"] == []
    assert summary["counts"]["indexed"] + summary["counts"]["unchanged"] == 12
    assert _assert_no_duplicates(data) == 12
    with Catalog(data / "catalog.duckdb").read() as conn:
        ids = sorted(conn.execute(text("SELECT id FROM tracks")).scalars())
    for name in ("audio", "text"):
        index, _ = load_index(data, name, gpu=False)
        assert sorted(index_ids(index).tolist()) == ids
    assert _count(data, "SELECT count(*) FROM scans WHERE state = 'interrupted'") == 2
    assert cli(["verify", "--data-dir", str(data)]) == 0
