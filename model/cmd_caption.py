"""Caption audio files as the profile's scan does.

Written from what the taggers hear (the lite profile's `analysis` caption source), or decode, encode,
compress, generate (batched), or pick the likeliest sentence of the profile's caption template (`--json`
then says so and gives its log-likelihood). `--json` prints one object per file, its "profile" the
profile that ran (a MERT checkpoint given with --encoder on lite runs the musilingo profile).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from model.runtime import load_model, profile_of
from model.settings import Settings

OPTIONS = ("profile", "device", "models")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--greedy", action="store_true", help="deterministic greedy decoding instead of sampling (template captions are always deterministic)")
    p.add_argument("--free", action="store_true",
                   help="let the LLM generate freely even if the profile writes captions from the analysis or a template")
    p.add_argument("--max-new-tokens", type=int, help="default: the profile's (300 as in the reference)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-seconds", type=float, help="encode at most this many seconds of each file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from model.audio import AudioDecodeError

    profile = profile_of(args, settings)
    if profile.caption_source == "analysis":
        return _from_analysis(args, settings, profile)
    model = load_model(settings, profile)
    failed = 0
    for start in range(0, len(args.files), args.batch_size):
        names, waves = [], []
        for name in args.files[start:start + args.batch_size]:
            try:
                waves.append(model.encoder.load(name, args.max_seconds or settings.max_track_seconds))
                names.append(name)
            except (AudioDecodeError, OSError) as exc:
                failed += 1
                _report({"file": name, "error": str(exc)}, args.json, error=True)
        if not names:
            continue
        t0 = time.perf_counter()
        tokens = model.encoder.encode(waves)
        gens = model.caption(tokens, greedy=args.greedy, max_new_tokens=args.max_new_tokens)
        seconds = (time.perf_counter() - t0) / len(names)
        for name, wave, gen in zip(names, waves, gens, strict=True):
            _report({"file": name, "caption": gen.text, "audio_tokens": gen.n_audio_tokens,
                     "token_ids": gen.token_ids, "audio_seconds": round(len(wave) / model.encoder.sample_rate, 3),
                     "seconds": round(seconds, 3), "profile": profile.name,
                     "pipeline_version": profile.version(),
                     "decoding": "greedy" if args.greedy else "sampled", **gen.extra}, args.json)
    return 1 if failed else 0


def _from_analysis(args: argparse.Namespace, settings: Settings, profile) -> int:
    """Captions written from the analysis (model/describe.py): no audio tokens, no LLM."""
    from model.analysis import Analyzer, analyze_files

    analyzer = Analyzer(settings.models_dir, settings.resolved_device())
    failed = 0
    for name, analysis, error in analyze_files(analyzer, args.files, args.max_seconds or settings.max_track_seconds):
        if analysis is None:
            failed += 1
            _report({"file": name, "error": error}, args.json, error=True)
            continue
        _report({"file": name, "caption": analysis.describe().caption(), "caption_source": "analysis",
                 "audio_tokens": None, "token_ids": [], "audio_seconds": round(analysis.seconds, 3),
                 "profile": profile.name, "pipeline_version": profile.version(), "analysis": analysis.to_json()},
                args.json)
    return 1 if failed else 0


def _report(row: dict, as_json: bool, error: bool = False) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    elif error:
        print(f"{row['file']}: error: {row['error']}", file=sys.stderr)
    else:
        print(f"{row['file']}\t{row['caption']}", flush=True)
