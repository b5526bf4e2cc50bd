"""Greedy generation on a test split, then the captioning and QA metrics (+ attribute accuracy on synth).

The report: text per run (audio, no_audio, shuffled_audio), or with --json one JSON object; the metrics
and the runs are described in training/evaluate.py.
"""

from __future__ import annotations

import argparse
import json

from model.runtime import profile_of
from model.settings import Settings

OPTIONS = ("profile", "device")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--audio-dir", default=None)
    p.add_argument("--cache", default="", help="feature cache root (default: encode the audio now)")
    p.add_argument("--adapter", default=None, help="adapter checkpoint (default: the profile's)")
    p.add_argument("--limit", type=int, default=0, help="at most this many clips")
    p.add_argument("--qa-per-clip", type=int, default=0, help="at most this many QA pairs per clip (0: all)")
    p.add_argument("--qa-attributes", default="", help="synth: only QA about these attributes (comma list)")
    p.add_argument("--qa-max-new-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--baseline", action="store_true", help="also run the no-audio baseline")
    p.add_argument("--no-audio", action="store_true", help="only the no-audio baseline")
    p.add_argument("--shuffled", action="store_true",
                   help="also run with each clip's audio swapped for another clip's (what the model hears)")
    p.add_argument("--free-captions", dest="free", action="store_true",
                   help="generate captions freely even when the profile has a caption template")
    p.add_argument("--forced-choice", action="store_true",
                   help="synth: also score each clip's summary caption with every value of each attribute")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--samples", default="", help="write every generation to this jsonl file")
    p.add_argument("--out", default="", help="also write the JSON report here")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.evaluate import RUNS, evaluate, summary_lines

    report = evaluate(args, settings, profile_of(args, settings))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name in RUNS:
        if name in report:
            print("\n".join(summary_lines(name, report[name])))
    if "majority_class_accuracy" in report:
        print("majority-class accuracy: " + json.dumps(report["majority_class_accuracy"]))
    return 0
