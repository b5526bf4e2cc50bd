"""Scan throughput in audio seconds per wall second, from 10 tracks up to --max-tracks, as a markdown table.

    python bench/bench_scan.py [--max-tracks 200] [--seconds 30] [--workers 1] [--max-new-tokens N]

Synthetic tracks in five formats are written once (not timed); each size is then scanned into a fresh
data dir with the models already loaded, so the numbers are decode + encode + caption + embed +
commit. Without trained adapter weights a fresh adapter is used: the same cost per token. Not a test.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.indexing import Models  # noqa: E402
from indexer.pipeline import scan  # noqa: E402
from model.config import ModelNotFoundError, load_profile, resolve_path  # noqa: E402
from model.settings import load_settings  # noqa: E402
from tests.conftest import MODELS_DIR, write_audio  # noqa: E402

FORMATS = ("flac", "mp3", "ogg", "wav", "m4a")


def sizes(largest: int) -> list[int]:
    steps = [n for n in (10, 20, 50, 100, 200, 500, 1000, 2000) if n < largest]
    return steps + [largest]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tracks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each synthetic track")
    parser.add_argument("--workers", type=int, default=1, help="decode worker processes")
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="caption length cap (default: profile)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    profile = load_profile(args.profile)
    try:
        if profile.adapter:
            resolve_path(profile.adapter)
    except ModelNotFoundError:
        print(f"note: {profile.adapter} not found, using a fresh adapter (same speed)", file=sys.stderr)
        profile = load_profile(args.profile, adapter="")
    work = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    try:
        files = [write_audio(work / "lib" / f"Artist {i % 7}" / f"Album {i % 3}" / f"{i + 1:03d} Track.{FORMATS[i % 5]}",
                             args.seconds, seed=i) for i in range(args.max_tracks)]
        base = load_settings(data_dir=work / "data-0", decode_workers=args.workers, device=args.device)
        models = Models(profile, base)
        models.encoder, models.musilingo, models.text  # load before timing  # noqa: B018
        print(f"profile {profile.name}, {args.seconds:g} s tracks, {args.workers} decode workers, "
              f"device {base.resolved_device()}, captions up to {args.max_new_tokens or profile.max_new_tokens} tokens\n")
        print("| tracks | audio s | wall s | audio s / wall s | tracks / s |")
        print("|---:|---:|---:|---:|---:|")
        for n in sizes(args.max_tracks):
            data = work / f"data-{n}"
            data.mkdir()
            (data / "models").symlink_to(MODELS_DIR, target_is_directory=True)
            settings = load_settings(data_dir=data, decode_workers=args.workers, device=args.device)
            started = time.perf_counter()
            summary = scan([str(f) for f in files[:n]], settings, profile, models=models, greedy=True,
                           max_new_tokens=args.max_new_tokens)
            wall = time.perf_counter() - started
            if summary.failed:
                print(f"warning: {len(summary.failed)} files failed: {summary.failed[0]}", file=sys.stderr)
            print(f"| {n} | {summary.audio_seconds:.0f} | {wall:.1f} | {summary.audio_seconds / wall:.1f} "
                  f"| {n / wall:.2f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
