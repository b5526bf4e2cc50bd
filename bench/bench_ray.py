"""Ray Data engine against the single-process scan on the same clips (issue: scale).

Both index the same freshly written library into fresh data dirs with the `lite` profile, greedy
captions of `--max-new-tokens` tokens, and the same seeded adapter (saved once, since the repo ships
no trained one yet). Each wall time includes loading the models, as a real scan does; the Ray cluster
is started before the clock, as a real cluster would already be running.

The engines alternate `--repeats` times in one process (the first single-process run also pays
for imports and the decode worker's start), and the median wall time of each is reported, with the
machine's load average before each run, since the CPU box is shared.

Usage: python bench/bench_ray.py [--clips 20] [--seconds 10] [--cpus 2] [--repeats 2] [--out bench_ray.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_model import write_wav

from indexer.pipeline import scan
from indexer.ray_engine import run_ray_scan
from model.checkpoints import save_adapter
from model.config import load_profile
from model.frontend import LiteFrontend
from model.llm import local_folder
from model.settings import load_settings


def seeded_adapter(folder: Path) -> Path:
    lite = load_profile("lite")
    d_llm = json.loads((local_folder(lite.llm) / "config.json").read_text())["hidden_size"]
    torch.manual_seed(0)
    path = folder / "adapter.safetensors"
    save_adapter(torch.nn.Linear(LiteFrontend().dim, d_llm), path)
    return path


def main() -> None:
    import ray

    p = argparse.ArgumentParser()
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    library = tmp / "library"
    library.mkdir()
    for i in range(args.clips):
        write_wav(library / f"clip{i:03d}.wav", args.seconds, seed=i)
    profile = load_profile("lite", adapter=str(seeded_adapter(tmp)), max_new_tokens=args.max_new_tokens)

    def settings(name: str):
        return load_settings(data_dir=tmp / name, device="cpu", decode_workers=1)

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    engines = {"single process (1 decode worker)": lambda d: scan([str(library)], settings(d), profile, greedy=True),
               f"Ray Data, local cluster of {args.cpus} CPUs":
                   lambda d: run_ray_scan([str(library)], settings(d), profile, greedy=True)}
    walls: dict[str, list[float]] = {name: [] for name in engines}
    loads = []
    for r in range(args.repeats):  # alternate, so a busy spell on a shared machine hits both
        for k, (name, run) in enumerate(engines.items()):
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            summary = run(f"run{r}-{k}")
            walls[name].append(time.perf_counter() - t0)
            assert len(summary.indexed) == args.clips, summary.failed
            audio = summary.audio_seconds
    ray.shutdown()

    base = statistics.median(walls[next(iter(engines))])
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
              "clips": args.clips, "seconds": args.seconds, "max_new_tokens": args.max_new_tokens,
              "ray_startup_s": round(startup, 2), "load_average_1min": loads, "walls_s": walls, "rows": []}
    print("| engine | wall s (median) | runs | audio s | audio s / wall s | speed vs single |\n|---|---|---|---|---|---|")
    for name, times in walls.items():
        wall = statistics.median(times)
        report["rows"].append({"engine": name, "wall_s": round(wall, 2), "audio_per_wall_s": round(audio / wall, 3),
                               "speed_vs_single": round(base / wall, 3)})
        print(f"| {name} | {wall:.1f} | {', '.join(f'{t:.1f}' for t in times)} | {audio:.0f} | "
              f"{audio / wall:.2f} | {base / wall:.2f}x |")
    print(f"Ray local cluster start (not in the wall times): {startup:.1f} s; "
          f"1-min load average before each run: {', '.join(f'{x:.1f}' for x in loads)}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
