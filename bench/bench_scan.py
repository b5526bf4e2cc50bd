"""A whole scan of a library of 3-5-minute tracks in six formats, before and after, on this machine.

    python bench/bench_scan.py [--tracks 24] [--baseline REV] [--profile lite] [--library DIR]
                               [--without-analysis [--repeats 3]]

For the working tree and, with --baseline, a git revision (checked out in a temporary worktree), in one
run on one machine:

- the scan as a user runs it: `python -m indexer scan LIB --json` into a fresh data dir, timed from
  outside the process (Python start and model loading included): wall seconds and x realtime;
- with --without-analysis, the working tree's scan once more with the analysis taken out: the analyser
  replaced by one that loads no model and returns an empty analysis at once (captions then say only
  "A piece."), so the two walls differ by what the analysis costs a scan (its budget: +25 %);
- what each stage costs: every track decoded, analysed, encoded and captioned one after the other in
  one process on one thread (CPU seconds per audio hour, and each stage's share), so the two revisions'
  stages compare on equal terms; the scan's own `stage_seconds` (busy seconds per stage, stages
  overlapping) where the revision reports them.

The library is written once into --library (synthetic pieces, `tests.conftest.write_audio`) and reused.
Model weights come from the shared cache (`model prepare` converts them once, not timed). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = ("flac", "mp3", "ogg", "opus", "m4a", "wav")

# Runs inside the revision's tree: its own decoder and models, one track at a time, one thread.
STAGES = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from model.audio import decode_audio
from model.config import load_profile
from model.settings import load_settings
from indexer.indexing import Indexing, Models
profile = load_profile(sys.argv[1]); settings = load_settings(data_dir=sys.argv[2])
models = Models(profile, settings)
indexing = Indexing(models, settings, greedy=True)
rate = models.encoder.sample_rate
warm = decode_audio(sys.argv[3], rate, 5.0)  # loads every model, untimed
(_, heard), = indexing.analyze([warm])[0]
indexing.caption([indexing.encode([warm])[0][0][1].tokens], [heard])
costs = {"decode": 0.0, "analysis": 0.0, "encode": 0.0, "caption": 0.0}
audio = 0.0
for path in sys.argv[3:]:
    t0 = time.process_time(); wave = decode_audio(path, rate, settings.max_track_seconds)
    t1 = time.process_time(); (_, heard), = indexing.analyze([wave])[0]
    t2 = time.process_time(); (_, enc), = indexing.encode([wave])[0]
    t3 = time.process_time(); indexing.caption([enc.tokens], [heard])
    t4 = time.process_time()
    for stage, spent in zip(costs, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        costs[stage] += spent
    audio += wave.size / rate
print(json.dumps({"audio_seconds": audio, "cpu_seconds": costs}))
"""


# The scan with an analyser that hears nothing and costs nothing (--without-analysis).
WITHOUT_ANALYSIS = r"""
import sys
import numpy as np
import model.analysis as analysis
from model.musicnn import load_config

class NoAnalysis:
    sample_rate = 16000
    def __init__(self, *args, **kwargs):
        self.version = analysis.analysis_version()
    def analyze(self, waves):
        labels = {name: load_config(name).labels for name in analysis.TAGGERS}
        return [analysis.TrackAnalysis(len(w) / self.sample_rate, [0.0], labels,
                                       {n: np.zeros((1, len(ls)), np.float32) for n, ls in labels.items()},
                                       np.zeros(400, np.float32), 0.0, "", "", self.version) for w in waves]

analysis.Analyzer = NoAnalysis
from indexer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def library(folder: Path, n: int) -> list[Path]:
    """n tracks of 180-300 s, formats in turn, in artist/album folders; written once."""
    from tests.conftest import write_audio

    files = []
    for i in range(n):
        path = folder / f"Artist {i % 5}" / f"Album {i % 3}" / f"{i + 1:02d} Track.{FORMATS[i % len(FORMATS)]}"
        if not path.exists():
            write_audio(path, 180 + (i * 47) % 121, seed=i)
        files.append(path)
    return files


def run_scan(tree: Path, lib: Path, data: Path, cache: Path, profile: str, analysis: bool = True) -> dict:
    env = os.environ | {"MUSILINGO_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    command = ["-m", "indexer"] if analysis else ["-c", WITHOUT_ANALYSIS]
    started = time.perf_counter()
    out = subprocess.run([sys.executable, *command, "scan", str(lib), "--json", "--profile", profile,
                          "--data-dir", str(data)], cwd=tree, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    summary = json.loads(out.stdout)
    if summary["counts"]["failed"]:
        raise SystemExit(f"{tree}: {summary['counts']['failed']} files failed: {summary['failed'][0]}")
    return {"wall": wall, "audio": summary["audio_seconds"], "stage_seconds": summary.get("stage_seconds")}


def run_stages(tree: Path, files: list[Path], data: Path, cache: Path, profile: str) -> dict:
    env = os.environ | {"MUSILINGO_CACHE_DIR": str(cache), "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", STAGES, profile, str(data), *map(str, files)], cwd=tree, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def worktree(revision: str, folder: Path) -> Iterator[Path]:
    """`revision` checked out (detached) in `folder` for the duration."""
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--baseline", help="a git revision to measure beside the working tree")
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--library", type=Path, default=Path(tempfile.gettempdir()) / "bench-scan-library")
    parser.add_argument("--cache-dir", type=Path, help="model cache (default: the settings' cache dir)")
    parser.add_argument("--without-analysis", action="store_true",
                        help="also scan with the analysis taken out (the working tree), for its share of the wall")
    parser.add_argument("--repeats", type=int, default=3, help="scans with and without the analysis, in turn")
    args = parser.parse_args(argv)

    from model.settings import load_settings

    cache = args.cache_dir or load_settings().cache_dir
    files = library(args.library, args.tracks)
    work = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    trees = [("working tree", ROOT)]
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        if args.baseline:
            trees.insert(0, (f"baseline {args.baseline}", stack.enter_context(worktree(args.baseline, work / "baseline"))))
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, profile {args.profile}, "
              f"{len(files)} tracks, formats {', '.join(FORMATS)}\n")
        rows = []
        for name, tree in trees:
            scan = run_scan(tree, args.library, work / f"data-{len(rows)}", cache, args.profile)
            stages = run_stages(tree, files, work / f"stages-{len(rows)}", cache, args.profile)
            rows.append((name, scan, stages))
            print(f"{name}: {scan['audio'] / 3600:.2f} h audio in {scan['wall']:.1f} s: "
                  f"{scan['audio'] / scan['wall']:.0f}x realtime", flush=True)
        if args.without_analysis:  # pairs, in turn: a busy spell on a shared box then hits both alike
            walls: dict[bool, list[float]] = {True: [rows[-1][1]["wall"]], False: []}
            for k in range(args.repeats):
                for analysis in (False, True)[: 1 if k == 0 else 2]:
                    scan = run_scan(ROOT, args.library, work / f"data-{k}-{analysis}", cache, args.profile, analysis)
                    walls[analysis].append(scan["wall"])
            with_it, without = statistics.median(walls[True]), statistics.median(walls[False])
            print(f"working tree, scan wall s with the analysis {walls[True]}, without {walls[False]} (in turn); "
                  f"medians {with_it:.1f} and {without:.1f}: the analysis adds {100 * (with_it / without - 1):.0f} %",
                  flush=True)
        print("\n| revision | audio h | scan wall s | x realtime | decode | analysis | encode | caption |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, scan, stages in rows:
            cpu, hours = stages["cpu_seconds"], stages["audio_seconds"] / 3600
            total = sum(cpu.values())
            cells = " | ".join(f"{cpu[s] / hours:.0f} s/h ({100 * cpu[s] / total:.0f} %)" for s in cpu)
            print(f"| {name} | {scan['audio'] / 3600:.2f} | {scan['wall']:.1f} | {scan['audio'] / scan['wall']:.0f} "
                  f"| {cells} |")
        for name, scan, _ in rows:
            if scan["stage_seconds"]:
                busy = ", ".join(f"{k} {v:.1f} s" for k, v in scan["stage_seconds"].items())
                print(f"\n{name}, the scan's busy seconds per stage (overlapping): {busy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
