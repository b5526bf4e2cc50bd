"""Tag audio files with the musicnn taggers and estimate tempo and key: what the offline default hears."""

from __future__ import annotations

import argparse
import json
import sys

from model.settings import Settings

OPTIONS = ("device",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--top", type=int, default=5, help="tags shown per tagger in the text output")
    p.add_argument("--max-patches", type=int, help="3-s patches per file: all of a file up to this many, else "
                                                   "this many spread over it (default: as the scan analyses)")
    p.add_argument("--max-seconds", type=float, help="decode at most this many seconds of each file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from model.analysis import MAX_PATCHES, Analyzer, analyze_files

    analyzer = Analyzer(settings.models_dir, settings.resolved_device(), max_patches=args.max_patches or MAX_PATCHES)
    failed = 0
    for name, analysis, error in analyze_files(analyzer, args.files, args.max_seconds or settings.max_track_seconds):
        if analysis is None:
            failed += 1
            if args.json:
                print(json.dumps({"file": name, "error": error}), flush=True)
            else:
                print(f"{name}: error: {error}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"file": name, **analysis.to_json()}), flush=True)
            continue
        print(f"{name}\n  {analysis.bpm:.1f} BPM, {analysis.key} {analysis.mode}, "
              f"{analysis.seconds:.1f} s from {len(analysis.patch_seconds)} patches")
        for tagger in analysis.probabilities:
            tags = ", ".join(f"{tag} {p:.2f}" for tag, p in analysis.top_tags(tagger, args.top))
            print(f"  {tagger}: {tags}", flush=True)
    return 1 if failed else 0
