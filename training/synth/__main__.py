"""`python -m training.synth --out DIR --n N --seed S --seconds 10 --workers 2`: render a labelled corpus."""

from __future__ import annotations

import argparse
import sys

from .corpus import generate_corpus
from .render import DEFAULT_SAMPLE_RATE, SynthUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.synth", description=__doc__)
    parser.add_argument("--out", required=True, help="output folder (audio/ and metadata.jsonl)")
    parser.add_argument("--n", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (clip i depends only on seed and i)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--workers", type=int, default=2, help="parallel FluidSynth processes")
    parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="output sample rate (Hz)")
    args = parser.parse_args(argv)
    if args.n < 0 or args.seconds <= 0 or args.workers < 1:
        parser.error("--n must be >= 0, --seconds > 0 and --workers >= 1")
    try:
        generate_corpus(args.out, args.n, seed=args.seed, seconds=args.seconds, workers=args.workers,
                        sample_rate=args.sample_rate)
    except SynthUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
