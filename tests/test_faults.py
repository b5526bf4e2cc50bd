"""Faults injected into the real indexer: SIGKILL at seeded points, corrupted FAISS files, old catalogs,
readers during a scan, a full disk, files and roots vanishing mid-scan, and a malicious checkpoint.

Every scan is the real `python -m indexer` in a subprocess; every check reads the catalog file with
DuckDB and the index files with FAISS directly, so a bug in the indexer's own view cannot hide.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests import hostile

KILL_SPAN_S = 12.0  # kill points are drawn from [0, KILL_SPAN_S) after the scan takes its lock (a round of work)


def run_scan(roots: list[Path], data: Path, *extra: str, timeout: float = 900) -> dict:
    done = subprocess.run(hostile.scan_cmd(roots, data, *extra), cwd=hostile.REPO, env=hostile.cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    out = hostile.parse_json(done.stdout)
    assert done.returncode == 0 and out.get("state") == "finished", (done.returncode, out, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return out


def lock_held(data: Path) -> bool:
    """Whether a scan holds `<data>/scan.lock` (the indexer's flock), probed without taking it for long."""
    path = data / "scan.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def done_tracks(data: Path) -> dict[str, int]:
    if not (data / "catalog.duckdb").exists():
        return {}
    return {p: i for i, p in hostile.rows(data, "SELECT id, path FROM tracks WHERE status = 'done'")}


@dataclass
class KillLog:
    runs: int = 0
    killed: int = 0  # faults really injected (the scan was still running)
    committed_before_kill: int = 0
    lost: list[str] = field(default_factory=list)


def kill_then_resume(root: Path, data: Path, seed: int, log: KillLog, bad: list[Path]) -> None:
    """One seeded SIGKILL of a scan, then a resume scan and the full consistency check."""
    rng = random.Random(seed)
    delay = rng.uniform(0, KILL_SPAN_S)
    proc = subprocess.Popen(hostile.scan_cmd([root], data, "--commit-every", str(rng.choice([1, 2, 3]))),
                            cwd=hostile.REPO, env=hostile.cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    log.runs += 1
    try:
        hostile.wait_for(lambda: lock_held(data) or proc.poll() is not None, timeout=300)
        hostile.wait_for(lambda: proc.poll() is not None, timeout=delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            log.killed += 1
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    committed = done_tracks(data)  # what the killed scan committed: it must all survive
    log.committed_before_kill += len(committed)
    run_scan([root], data)
    after = done_tracks(data)
    for path, track_id in committed.items():
        if after.get(path) != track_id:
            log.lost.append(f"seed {seed}: {path} (id {track_id}) -> {after.get(path)}")
    problems = hostile.consistency(data)
    assert problems == [], f"seed {seed} (kill after {delay:.1f}s): {problems}"
    failed = {p for (p,) in hostile.rows(data, "SELECT path FROM errors")}
    assert {str(p) for p in bad} <= failed, f"seed {seed}: failed files not listed: {set(map(str, bad)) - failed}"
    goods = {str(p) for p in root.rglob("*") if p.is_file() and p not in bad}
    assert goods <= set(after), f"seed {seed}: not indexed after resume: {goods - set(after)}"


def kill_loop(tmp: Path, seeds: list[int]) -> KillLog:
    """Seeded kills on one growing library: each round adds two tracks so every kill has work to cut."""
    root = tmp / "library"
    hostile.good_tracks(root / "base", 3)
    bad = [hostile.zero_byte(root)[0], hostile.video_only(root)[0]]
    data = hostile.make_data_dir(tmp / "data")
    log = KillLog()
    for n, seed in enumerate(seeds):
        for k in range(2):
            i = 2 * n + k
            hostile.write_wav(root / f"round-{n}" / f"t{k}.wav", hostile.tone(2.0, 22050, freq=150.0 + 41 * i), 22050)
        kill_then_resume(root, data, seed, log, bad)
    assert log.lost == [], log.lost
    record(tmp, "sigkill", {"seeds": seeds, "runs": log.runs, "faults_injected": log.killed,
                            "committed_before_kill": log.committed_before_kill, "tracks_lost": len(log.lost)})
    return log


def record(tmp: Path, name: str, result: dict) -> None:
    """Append a result line for docs/reliability.md when RELIABILITY_LOG names a file."""
    target = os.environ.get("RELIABILITY_LOG")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps({"case": name, **result}) + "\n")


def test_sigkill_then_resume_three_seeds(tmp_path: Path) -> None:
    log = kill_loop(tmp_path, [11, 12, 13])
    assert log.runs == 3 and log.lost == []


@pytest.mark.slow
def test_sigkill_then_resume_twenty_seeds(tmp_path: Path) -> None:
    log = kill_loop(tmp_path, list(range(100, 120)))
    assert log.runs == 20 and log.killed >= 5 and log.lost == []  # a run may finish before its kill point


# ---------------------------------------------------------------- one scanned catalog, copied per test


@dataclass
class Base:
    root: Path
    data: Path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    tmp = tmp_path_factory.mktemp("base")
    root = tmp / "library"
    hostile.good_tracks(root, 4)
    hostile.zero_byte(root)
    data = hostile.make_data_dir(tmp / "data")
    run_scan([root], data)
    return Base(root, data)


def copy_data(base: Base, dest: Path) -> Path:
    """A private copy of the scanned data dir (catalog and indexes; the model cache stays shared)."""
    data = hostile.make_data_dir(dest)
    shutil.copy2(base.data / "catalog.duckdb", data / "catalog.duckdb")
    shutil.copytree(base.data / "faiss", data / "faiss")
    return data


@dataclass
class Searched:
    """`python -m search --json`: one JSON hit per stdout line, a {"total", "message"} object on stderr."""

    rc: int
    hits: list[dict]
    summary: dict
    stderr: str

    @property
    def ids(self) -> set[int]:
        return {int(h["track_id"]) for h in self.hits}


def search_json(data: Path, *args: str) -> Searched:
    done = subprocess.run([hostile.PYTHON, "-m", "search", *args, "--data-dir", str(data), "--json"],
                          cwd=hostile.REPO, env=hostile.cli_env(), capture_output=True, text=True, timeout=300)
    hits = [json.loads(line) for line in done.stdout.splitlines() if line.strip().startswith("{")]
    summary = hostile.parse_json(done.stderr) or hostile.parse_json(done.stdout)
    return Searched(done.returncode, hits, summary, done.stderr)


@pytest.mark.parametrize("damage", [pytest.param("truncate", marks=pytest.mark.slow), "garbage", "foreign-ids"])
def test_corrupted_faiss_is_detected_and_rebuilt(base: Base, tmp_path: Path, damage: str) -> None:
    import faiss

    data = copy_data(base, tmp_path / "data")
    done = set(done_tracks(data).values())
    probe = str(min(done))
    healthy = search_json(data, "--like", probe)
    assert healthy.rc == 0 and healthy.ids and healthy.ids <= done, (healthy.summary, healthy.stderr[-1000:])
    for name in ("audio", "text"):  # text serves word queries, audio serves "more like this"
        index_file = data / "faiss" / f"{name}.index"
        if damage == "truncate":
            index_file.write_bytes(index_file.read_bytes()[:100])
        elif damage == "garbage":
            index_file.write_bytes(np.random.default_rng(1).bytes(index_file.stat().st_size))
        else:  # a valid FAISS file whose ids the catalog never issued (from another library)
            dim = faiss.read_index(str(index_file)).d
            foreign = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            vectors = np.random.default_rng(2).standard_normal((4, dim)).astype(np.float32)
            foreign.add_with_ids(vectors, np.array([900, 901, 902, 903], dtype=np.int64))
            faiss.write_index(foreign, str(index_file))
    for found in (search_json(data, "--like", probe), search_json(data, "tone")):
        assert "Traceback" not in found.stderr, found.stderr[-3000:]
        if found.rc == 0:
            assert found.ids <= done, f"search used the damaged index: hits {found.ids} not in {done}"
        else:
            assert found.summary.get("error"), (found.rc, found.summary, found.stderr[-1000:])
    rc, verify, err = hostile.indexer("verify", data=data)
    assert rc in (0, 1) and verify.get("problems"), f"verify did not notice the {damage} index: {verify} {err[-1000:]}"
    out = run_scan([base.root], data)
    assert out["index_repairs"], f"the scan did not repair the {damage} index: {out}"
    assert hostile.consistency(data) == []
    record(tmp_path, f"faiss-{damage}", {"detected": True, "rebuilt": True})


def test_newer_schema_is_refused_not_used(base: Base, tmp_path: Path) -> None:
    import duckdb

    data = copy_data(base, tmp_path / "data")
    con = duckdb.connect(str(data / "catalog.duckdb"))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    before = (data / "catalog.duckdb").read_bytes()
    done = subprocess.run(hostile.scan_cmd([base.root], data), cwd=hostile.REPO, env=hostile.cli_env(),
                          capture_output=True, text=True, timeout=600)
    out = hostile.parse_json(done.stdout)
    assert done.returncode == 2 and out.get("ok") is False and "schema version" in out.get("error", ""), \
        (done.returncode, out, done.stderr[-2000:])
    assert (data / "catalog.duckdb").read_bytes() == before, "a refused catalog was written to"


def v1_catalog(path: Path, track: Path) -> None:
    """A catalog written by the schema-1 store (the first committed indexer/store.py, read from git)."""
    source = subprocess.run(["git", "show", "a0ea0b4:indexer/store.py"], cwd=hostile.REPO, capture_output=True,
                            text=True)
    if source.returncode != 0:
        pytest.skip(f"cannot read the schema-1 store from git history: {source.stderr.strip()}")
    module = path.parent / "store_v1.py"
    module.write_text(source.stdout)
    script = f"""
import sys; sys.path.insert(0, {str(path.parent)!r})
from sqlalchemy import text
import store_v1
cat = store_v1.Catalog({str(path)!r}); cat.create()
with cat.write() as c:
    c.execute(text("INSERT INTO tracks (path, root, size, mtime, status) VALUES (:p, :r, 1, 1.0, 'pending')"),
              dict(p={str(track)!r}, r={str(track.parent)!r}))
    c.execute(text("INSERT INTO errors (path, stage, reason) VALUES ('/gone.mp3', 'decode', 'old failure')"))
"""
    done = subprocess.run([hostile.PYTHON, "-c", script], capture_output=True, text=True, env=hostile.cli_env())
    assert done.returncode == 0, done.stderr[-2000:]


def test_old_schema_is_migrated(tmp_path: Path) -> None:
    root = tmp_path / "library"
    tracks = hostile.good_tracks(root, 2)
    data = hostile.make_data_dir(tmp_path / "data")
    v1_catalog(data / "catalog.duckdb", tracks[0])
    assert hostile.rows(data, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    run_scan([root], data)
    import catalog.store

    assert hostile.rows(data, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(catalog.store.SCHEMA_VERSION),)]
    assert set(done_tracks(data)) == {str(t) for t in tracks}
    assert hostile.consistency(data) == []


# ---------------------------------------------------------------- readers while a scan writes

READER = """
import json, sys, time
from model.settings import load_settings
from search import SearchEngine
engine = SearchEngine(load_settings(data_dir=sys.argv[1]))
ok = 0
for i in range(int(sys.argv[2])):
    result = engine.search(["calm tone", "loud", "piano at night", ""][i % 4], top_k=5)
    ok += 1
    time.sleep(0.2)
print(json.dumps({"ok": ok}))
"""


def test_readers_succeed_while_a_scan_writes(base: Base, tmp_path: Path) -> None:
    data = copy_data(base, tmp_path / "data")
    more = tmp_path / "more"
    for i in range(4):
        hostile.write_wav(more / f"new-{i}.wav", hostile.tone(3.0, 22050, freq=300.0 + 50 * i), 22050)
    env = hostile.cli_env()
    scan = subprocess.Popen(hostile.scan_cmd([base.root, more], data, "--commit-every", "1"), cwd=hostile.REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = subprocess.Popen([hostile.PYTHON, "-c", READER, str(data), "25"], cwd=hostile.REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli_runs = []
    try:
        hostile.wait_for(lambda: lock_held(data) or scan.poll() is not None, timeout=300)
        while scan.poll() is None and len(cli_runs) < 8:
            cli_runs.append(search_json(data, "calm tone"))
        s_out, s_err = scan.communicate(timeout=900)
        e_out, e_err = engine.communicate(timeout=900)
    finally:
        for proc in (scan, engine):
            if proc.poll() is None:
                proc.kill()
    assert scan.returncode == 0 and hostile.parse_json(s_out)["state"] == "finished", s_err[-3000:]
    assert engine.returncode == 0 and hostile.parse_json(e_out) == {"ok": 25}, e_err[-3000:]
    assert cli_runs, "the scan ended before any CLI search ran"
    for found in cli_runs:
        assert found.rc == 0 and "total" in found.summary, (found.rc, found.summary, found.stderr[-2000:])
        assert found.ids <= set(done_tracks(data).values())
    assert hostile.consistency(data) == []
    assert len(done_tracks(data)) == len(done_tracks(base.data)) + 4


# ---------------------------------------------------------------- the world changing under a scan


def test_disk_full_fails_cleanly_and_resumes(base: Base, tmp_path: Path) -> None:
    """A 2 MB data dir: the scan stops with a clear reason, loses nothing, and resumes once space is back."""
    mount = tmp_path / "small"
    try:
        ctx = hostile.small_disk(mount, "2m")
        ctx.__enter__()
    except PermissionError as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    try:
        data = hostile.make_data_dir(mount / "data")
        lib = tmp_path / "library"
        for i in range(6):
            hostile.write_wav(lib / f"t{i}.wav", hostile.tone(4.0, 22050, freq=200.0 + 30 * i), 22050)
        done = subprocess.run(hostile.scan_cmd([lib], data, "--commit-every", "1"), cwd=hostile.REPO,
                              env=hostile.cli_env(), capture_output=True, text=True, timeout=900)
        out = hostile.parse_json(done.stdout)
        full = done.returncode != 0 or out.get("state") != "finished"
        if full:
            reason = json.dumps(out).lower() + done.stderr[-2000:].lower()
            assert "space" in reason or "disk" in reason or "full" in reason, (done.returncode, out, done.stderr[-2000:])
        committed = done_tracks(data) if (data / "catalog.duckdb").exists() else {}
        subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)
        run_scan([lib], data)
        after = done_tracks(data)
        assert all(after.get(p) == i for p, i in committed.items()), "a committed track was lost after disk full"
        assert set(after) == {str(p) for p in lib.iterdir()}
        assert hostile.consistency(data) == []
        record(tmp_path, "disk-full", {"filled": full, "committed_before": len(committed), "tracks_lost": 0})
    finally:
        ctx.__exit__(None, None, None)


def test_files_and_a_root_vanish_mid_scan(tmp_path: Path) -> None:
    """Once the scan holds its lock: delete files, rewrite one with garbage, and remove a whole root."""
    stay, doomed = tmp_path / "stay", tmp_path / "doomed"
    keep = [hostile.write_wav(stay / f"keep-{i}.wav", hostile.tone(3.0, 22050, freq=200.0 + 40 * i), 22050)
            for i in range(3)]
    delete = [hostile.write_wav(stay / f"delete-{i}.wav", hostile.tone(3.0, 22050, freq=600.0 + 40 * i), 22050)
              for i in range(2)]
    rewrite = hostile.write_wav(stay / "rewrite.wav", hostile.tone(3.0, 22050, freq=900.0), 22050)
    for i in range(3):
        hostile.write_wav(doomed / f"d-{i}.wav", hostile.tone(3.0, 22050, freq=1200.0 + 40 * i), 22050)
    data = hostile.make_data_dir(tmp_path / "data")

    def vandalise() -> None:
        for path in delete:
            path.unlink()
        rewrite.write_bytes(b"\x00garbage" * 1000)
        shutil.rmtree(doomed)

    proc = subprocess.Popen(hostile.scan_cmd([stay, doomed], data, "--commit-every", "1"), cwd=hostile.REPO,
                            env=hostile.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hostile.wait_for(lambda: lock_held(data) or proc.poll() is not None, timeout=300)
    with hostile.during(vandalise, delay=1.0):
        out, err = proc.communicate(timeout=900)
    result = hostile.parse_json(out)
    assert proc.returncode == 0 and result.get("state") == "finished", (proc.returncode, result, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    run_scan([stay, doomed], data)  # the next scan settles everything that changed
    after = done_tracks(data)
    assert {str(p) for p in keep} <= set(after)
    assert not {str(p) for p in delete} & set(after), "a deleted file is still listed as indexed"
    assert str(rewrite) not in after
    assert str(rewrite) in {p for (p,) in hostile.rows(data, "SELECT path FROM errors")}
    assert hostile.consistency(data) == []


# ---------------------------------------------------------------- a checkpoint that runs code


class _Payload:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    import torch

    from model.checkpoints import CheckpointError, load_adapter

    marker = tmp_path / "pwned"
    evil = tmp_path / "adapter.pth"
    torch.save({"model": {"llama_proj.weight": torch.zeros(4, 3), "llama_proj.bias": _Payload(marker)}}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_adapter(evil, 3, 4)
    assert not marker.exists(), "the checkpoint's code ran"
    # The same refusal in a fresh process, as a user would meet it.
    done = subprocess.run([sys.executable, "-c", f"from model.checkpoints import load_adapter; "
                           f"load_adapter(__import__('pathlib').Path({str(evil)!r}), 3, 4)"],
                          cwd=hostile.REPO, capture_output=True, text=True, env=hostile.cli_env())
    assert done.returncode != 0 and "refusing to load" in done.stderr
    assert not marker.exists(), "the checkpoint's code ran in a fresh process"
    # A genuine checkpoint in the same format loads: the refusal is about the pickle, not the format.
    good = tmp_path / "good.pth"
    torch.save({"model": {"llama_proj.weight": torch.ones(4, 3), "llama_proj.bias": torch.zeros(4)}}, good)
    adapter, _ = load_adapter(good, 3, 4)
    assert float(adapter.weight.detach().sum()) == 12.0
