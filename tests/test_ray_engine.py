"""The Ray Data engine against the single-process scan: a real local Ray cluster, real files, real models.

Both engines index the same library with the same (seeded, saved) lite adapter and greedy decoding,
so their catalogs must agree track by track. Worker and driver deaths must cost no track.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from catalog.store import Catalog, analyses, captions, embeddings, errors, scans, tracks
from catalog.vectors import load_index
from indexer.discover import plan_scan, walk
from indexer.pipeline import scan
from indexer.ray_engine import compute_shards, plan_stages, run_ray_scan, shard_dir
from model.checkpoints import save_adapter
from model.config import load_profile
from model.frontend import LiteFrontend
from model.llm import local_folder
from model.settings import load_settings
from tests.conftest import write_audio
from tests.harness import lite_variant

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
FORMATS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A fresh adapter drawn with a fixed seed and saved, so every process and actor uses the same weights."""
    lite = load_profile("lite")
    d_llm = json.loads((local_folder(lite.llm) / "config.json").read_text())["hidden_size"]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("adapter") / "adapter.safetensors"
    save_adapter(torch.nn.Linear(LiteFrontend().dim, d_llm), path)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Six short pieces in six formats, and one file that is not audio."""
    root = tmp_path_factory.mktemp("library")
    for i, suffix in enumerate(FORMATS):
        write_audio(root / f"Artist {i % 2}/Album/{i + 1:02d} Piece{suffix}", seconds=3.0 + i, seed=i)
    (root / "broken.mp3").write_bytes(b"this is not audio\n" * 200)
    return root


def _settings(path: Path):
    return load_settings(data_dir=path, decode_workers=0, device="cpu", caption_batch_size=4)


def _profile(adapter: Path):
    return load_profile("lite", adapter=str(adapter), max_new_tokens=8)


def _catalog(data_dir: Path) -> dict:
    with Catalog(data_dir / "catalog.duckdb").read() as conn:
        rows = conn.execute(select(
            tracks.c.path, tracks.c.size, tracks.c.mtime, tracks.c.fingerprint, tracks.c.status, tracks.c.title,
            tracks.c.indexed_seconds, tracks.c.id, tracks.c.indexed_at, embeddings.c.tokens, embeddings.c.vector,
            captions.c.text, captions.c.token_ids, captions.c.text_vector, tracks.c.bpm, tracks.c.tonic,
            tracks.c.mode, tracks.c.analysis_version, analyses.c.probabilities, analyses.c.patch_seconds)
            .join(embeddings, embeddings.c.track_id == tracks.c.id)
            .join(captions, captions.c.track_id == tracks.c.id)
            .join(analyses, analyses.c.track_id == tracks.c.id)).all()
        failed = {r.path: r.stage for r in conn.execute(select(errors.c.path, errors.c.stage))}
    return {"tracks": {r.path: r for r in rows}, "errors": failed}


def test_stage_plan_fits_small_and_gpu_clusters() -> None:
    laptop = plan_stages({"CPU": 2.0})
    assert laptop.decode_cpus + 2 * laptop.actor_cpus <= 2.0 and laptop.decode_cpus != laptop.actor_cpus
    assert (laptop.encode_gpus, laptop.caption_gpus) == (0.0, 0.0)
    gpus = plan_stages({"CPU": 64.0, "GPU": 8.0})
    assert gpus.encode_gpus + gpus.caption_gpus == 1.0 and gpus.caption_actors == (1, 8)
    assert plan_stages({"CPU": 64.0, "GPU": 8.0}, device="cpu").caption_gpus == 0.0


def test_ray_scan_matches_single_process(cluster, adapter: Path, library: Path, tmp_path: Path) -> None:
    profile = _profile(adapter)
    single = scan([str(library)], _settings(tmp_path / "single"), profile, greedy=True)
    ours = run_ray_scan([str(library)], _settings(tmp_path / "ray"), profile, greedy=True)
    assert single.state == ours.state == "finished"
    assert len(ours.indexed) == len(single.indexed) == len(FORMATS)
    assert [f["path"] for f in ours.failed] == [str(library / "broken.mp3")]
    assert ours.audio_seconds == pytest.approx(single.audio_seconds)
    a, b = _catalog(tmp_path / "single"), _catalog(tmp_path / "ray")
    assert a["errors"] == b["errors"] == {str(library / "broken.mp3"): "decode"}
    assert sorted(a["tracks"]) == sorted(b["tracks"])
    for path, x in a["tracks"].items():
        y = b["tracks"][path]
        assert (x.size, x.mtime, x.fingerprint, x.status, x.title) == (y.size, y.mtime, y.fingerprint, y.status, y.title)
        assert x.indexed_seconds == pytest.approx(y.indexed_seconds)
        np.testing.assert_allclose(np.frombuffer(x.tokens, np.float16), np.frombuffer(y.tokens, np.float16), atol=1e-3,
                                   err_msg=path)
        np.testing.assert_allclose(np.frombuffer(x.vector, np.float32), np.frombuffer(y.vector, np.float32), atol=1e-5)
        assert (x.text, x.token_ids) == (y.text, y.token_ids)
        np.testing.assert_allclose(np.frombuffer(x.text_vector, np.float32), np.frombuffer(y.text_vector, np.float32),
                                   atol=1e-5)
        assert (x.bpm, x.tonic, x.mode, x.analysis_version, x.patch_seconds) == (
            y.bpm, y.tonic, y.mode, y.analysis_version, y.patch_seconds)
        np.testing.assert_allclose(np.frombuffer(x.probabilities, np.float16), np.frombuffer(y.probabilities, np.float16),
                                   atol=1e-3)
    for name in ("audio", "text"):
        index, manifest = load_index(tmp_path / "ray", name)
        assert index.ntotal == manifest.count == len(FORMATS)
    assert not shard_dir(tmp_path / "ray", ours.scan_id).exists()  # merged shards are gone
    # lite captions are written from the analysis: no caption model ran
    assert ours.batch_sizes == single.batch_sizes == {"analysis": {"start": 4, "final": 4},
                                                      "encode": {"start": 4, "final": 4}}

    again = run_ray_scan([str(library)], _settings(tmp_path / "ray"), profile, greedy=True)
    assert again.state == "finished" and again.indexed == [] and again.unchanged == len(FORMATS)
    assert again.skipped_failed == 1
    with Catalog(tmp_path / "ray" / "catalog.duckdb").read() as conn:  # one row per Ray scan, no second pass
        runs = conn.execute(select(scans.c.id, scans.c.state, scans.c.summary).order_by(scans.c.id)).all()
    assert [(r.id, r.state) for r in runs] == [(ours.scan_id, "finished"), (again.scan_id, "finished")]
    assert [json.loads(r.summary)["engine"] for r in runs] == ["ray", "ray"]


def test_shards_left_by_a_dead_driver_are_committed_not_recomputed(cluster, adapter: Path, library: Path,
                                                                   tmp_path: Path, caplog) -> None:
    """Shards on disk but never committed (the driver died in between) are committed by the next run."""
    data, profile = tmp_path / "data", _profile(adapter)
    settings = _settings(data)
    jobs = plan_scan(walk([str(library)]), [], {}, profile.version("encoder"), profile.version()).index
    first = sorted(jobs, key=lambda j: j.entry.path)[:3]
    written = list(compute_shards(first, settings, profile, shard_dir(data, 0), greedy=True))
    assert sum(t.num_rows for t in written) == 3 and list(shard_dir(data, 0).glob("shard-*.parquet"))
    with caplog.at_level("INFO", logger="indexer.ray_engine"):
        summary = run_ray_scan([str(library)], settings, profile, greedy=True)
    assert "committed 3 tracks from the shards of an earlier run" in caplog.text
    assert summary.state == "finished" and len(summary.indexed) == len(FORMATS)
    assert len(summary.failed) == 1 and not shard_dir(data, 0).exists()
    assert len(_catalog(data)["tracks"]) == len(FORMATS)


def _map_workers(name: str) -> dict[int, str]:
    """Ray Data actor processes of stage `name`, by pid, with their title (which names the running method)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and cmd.startswith("ray::MapWorker") and name in cmd:
            found[int(proc.name)] = cmd.strip()
    return found


def test_killed_caption_actor_is_restarted_and_every_track_indexed(cluster, adapter: Path, library: Path,
                                                                    tmp_path: Path) -> None:
    killed: list[int] = []

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for pid, title in _map_workers("CaptionStage").items():
                if title.endswith(".submit"):  # mid-batch, not while loading its models
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    summary = run_ray_scan([str(library)], _settings(tmp_path / "data"), _profile(adapter), greedy=True)
    killer.join()
    assert killed, "the caption actor was never seen working"
    assert summary.state == "finished" and len(summary.indexed) == len(FORMATS)
    done = _catalog(tmp_path / "data")["tracks"]
    assert len(done) == len(FORMATS) and all(r.status == "done" and r.text for r in done.values())


def test_driver_killed_mid_scan_resumes_without_redoing_tracks(cluster, adapter: Path, library: Path,
                                                               tmp_path: Path) -> None:
    """SIGKILL a driver joined to the running cluster after its first commit; the next run keeps what was
    committed and does the rest.

    The dying driver commits one track per batch and writes longer captions (32 tokens), so its
    commits are apart; the caption length is not part of the pipeline version, so the rerun's short
    captions do not redo them.
    """
    data = tmp_path / "data"
    address = ray.get_runtime_context().gcs_address
    profile = tmp_path / "driver.toml"  # the lite profile with this adapter and 32-token captions
    lite_variant(profile, adapter=str(adapter), max_new_tokens=32, caption_template="")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "MUSILINGO_DECODE_WORKERS": "0",
           "MUSILINGO_DEVICE": "cpu", "MUSILINGO_CAPTION_BATCH_SIZE": "1"}
    cmd = [sys.executable, "-m", "indexer", "scan", str(library), "--engine", "ray", "--address", address,
           "--data-dir", str(data), "--profile", str(profile), "--greedy", "--commit-every", "1", "--json"]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        # The driver writes shard N+1 only after committing batch N: once shard 2 is on disk, two rows are
        # committed, so at least one track (only one file fails).
        while not list(data.glob("ray/*/shard-000002.parquet")) and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver committed nothing in time"
            time.sleep(0.02)
    finally:
        driver.kill()  # Ray then ends the actors this driver owned; the cluster stays up
        driver.wait()
    before = _catalog(data)["tracks"]
    assert before, "the driver finished or died before its first commit"
    assert len(before) < len(FORMATS)
    summary = run_ray_scan([str(library)], _settings(data), _profile(adapter), greedy=True)
    after = _catalog(data)["tracks"]
    assert summary.state == "finished" and len(after) == len(FORMATS)
    for path, row in before.items():  # committed before the kill: neither redone nor renumbered
        assert (after[path].id, after[path].indexed_at) == (row.id, row.indexed_at)
    assert len(summary.indexed) <= len(FORMATS) - len(before)
    assert not (data / "ray").exists() or not any((data / "ray").iterdir())
