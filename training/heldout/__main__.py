"""`python -m training.heldout OUT_DIR --n N --seed S [--soundfont PATH] [--seconds 30]`: render a set."""

from __future__ import annotations

import argparse
import sys

from training.synth.render import SynthUnavailable

from .dataset import DEFAULT_SAMPLE_RATE, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__)
    parser.add_argument("out", help="output folder (audio/ and labels.jsonl)")
    parser.add_argument("--n", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="set seed (clip i depends only on seed and i)")
    parser.add_argument("--soundfont", help="General MIDI .sf2/.sf3 (default $HELDOUT_SOUNDFONT or TimGM6mb)")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length in seconds")
    parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="output rate (Hz)")
    parser.add_argument("--workers", type=int, default=2, help="parallel FluidSynth processes")
    args = parser.parse_args(argv)
    if args.n < 0 or args.seconds <= 0 or args.workers < 1:
        parser.error("--n must be >= 0, --seconds > 0 and --workers >= 1")
    try:
        generate(args.out, args.n, seed=args.seed, seconds=args.seconds, soundfont=args.soundfont,
                 sample_rate=args.sample_rate, workers=args.workers)
    except SynthUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
