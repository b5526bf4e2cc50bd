"""Encode every clip of a dataset once and store its compressed audio tokens (the feature cache).

Prints the reader's report on stderr and one JSON object on stdout (clips, missing audio, undecodable
files, the encoder version the cache is kept under).
"""

from __future__ import annotations

import argparse
import json
import sys

from model.runtime import profile_of
from model.settings import Settings

OPTIONS = ("profile", "device")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="lp-musiccaps-msd, musiccaps, musicinstruct, musicqa, synth")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True, help="cache root; a subfolder per encoder version")
    p.add_argument("--split", default="all")
    p.add_argument("--audio-dir", default=None)
    p.add_argument("--batch", type=int, default=8)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.datasets import read_dataset
    from training.features import build_cache

    profile = profile_of(args, settings, adapter="")  # the tokens depend on the encoder only
    result = read_dataset(args.dataset, args.root, args.split, args.audio_dir)
    print(result.report(), file=sys.stderr)
    index = build_cache(result.items, args.out, profile, settings.resolved_device(), args.batch)
    print(json.dumps({"clips": len(index["clips"]), "missing_audio": result.missing_audio,
                      "undecodable": len(index["failed"]), "version": index["version"]}))
    return 0
