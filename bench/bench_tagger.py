"""musicnn tagger speed per minute of audio on this CPU, beside the original's one-patch-at-a-time loop.

    python bench/bench_tagger.py [--minutes 4] [--repeats 3] [--threads 1 2] [--mert-seconds 30]

For each thread count, in one process: the log-mel input; each tagger over every patch of the track
one patch per forward with every filter (what the original extractor does, BATCH_SIZE = 1: the
baseline), then with its dead filters pruned (`Musicnn.prune`, as `Analyzer` loads it) 1, 4 and all
patches per forward; tempo + key; and `Analyzer.analyze` as the indexer calls it (at most
`model.analysis.MAX_PATCHES` patches spread over the track). With --mert-seconds S, beside them: a
MERT-v1-330M-size encoder with random weights (the `musilingo` profile's; speed does not depend on the
weights) over the track's first S seconds at 24 kHz, so the analysis's share of that profile's encoding shows.
The audio is a synthetic piece (chord, pulse, noise); the cost does not depend on what it sounds like.
Prints a markdown table; times are the best of --repeats, in seconds per minute of audio.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_gpu import MERT_330M  # noqa: E402

from model.analysis import MAX_PATCHES, Analyzer  # noqa: E402
from model.mert import MERTConfig, MERTModel  # noqa: E402
from model.musicnn import SAMPLE_RATE, Musicnn, log_mel, patches  # noqa: E402
from model.tempo_key import estimate_key, estimate_tempo  # noqa: E402
from tests.conftest import MODELS_DIR, synth_wave  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the track")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--mert-seconds", type=float, default=0.0,
                        help="also time a MERT-v1-330M-size encoder on this many seconds (0: not)")
    args = parser.parse_args(argv)
    mert = MERTModel(MERTConfig(**MERT_330M)).eval() if args.mert_seconds else None

    wave = synth_wave(args.minutes * 60, seed=7, rate=SAMPLE_RATE)
    analyzer = Analyzer(MODELS_DIR)
    spec = log_mel(wave)
    if mert is not None:
        clip = torch.from_numpy(soxr.resample(wave[:int(args.mert_seconds * SAMPLE_RATE)], SAMPLE_RATE,
                                              mert.config.sampling_rate))[None]
    every = patches(spec, max_patches=10**6)  # all non-overlapping patches of the whole track
    per_min = 1.0 / args.minutes
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads by default, "
          f"{args.minutes:g} min track ({len(every)} patches), torch {torch.__version__}, {date.today()}\n")
    print("| threads | stage | s per audio minute | x realtime | time vs one patch per forward |")
    print("|---:|---|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows: dict[str, float] = {}
        rows["log-mel input"] = best(lambda: log_mel(wave), args.repeats) * per_min
        for name, model in analyzer.models.items():
            full = Musicnn.from_pretrained(name, MODELS_DIR)
            runs = [("every filter", full, 1)] + [(f"{model.pruned} dead filters pruned", model, n)
                                                  for n in (1, 4, len(every))]
            for label, net, size in runs:
                net.tag(every[:2])  # warm up
                rows[f"{name}, {label}, {size} patch{'es' if size > 1 else ''} per forward"] = best(
                    lambda m=net, n=size: [m.tag(every[i:i + n]) for i in range(0, len(every), n)],
                    args.repeats) * per_min
        rows["tempo + key"] = best(lambda: (estimate_tempo(wave, SAMPLE_RATE), estimate_key(wave, SAMPLE_RATE)),
                                   args.repeats) * per_min
        analyze = f"Analyzer.analyze ({MAX_PATCHES} patches spread, both taggers, tempo, key)"
        rows[analyze] = best(lambda: analyzer.analyze([wave]), args.repeats) * per_min
        if mert is not None:
            with torch.inference_mode():
                encode = "MERT-v1-330M-size encoder, random weights (musilingo's)"
                rows[encode] = best(lambda: mert(clip), 1) * 60.0 / args.mert_seconds
            rows["the analysis's share of analysis + MERT encoding, %"] = 100 * rows[analyze] / (
                rows[analyze] + rows[encode])
        for stage, seconds in rows.items():
            ratio = ""
            if "per forward" in stage:
                ratio = f"{seconds / rows[stage.split(',')[0] + ', every filter, 1 patch per forward']:.2f}"
            if stage.endswith("%"):
                print(f"| {threads} | {stage} | {seconds:.2f} % | | |", flush=True)
                continue
            realtime = 60 / seconds
            print(f"| {threads} | {stage} | {seconds:.3f} | {realtime:.{0 if realtime >= 10 else 1}f} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
