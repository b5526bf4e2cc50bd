"""Check a profile's models are present and build the caches (GGUF and musicnn TF checkpoints -> safetensors)."""

from __future__ import annotations

import argparse
import json
import time

from model.config import ModelNotFoundError, resolve_path
from model.musicnn import convert, load_config, tagger_names
from model.runtime import settings_and_profile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-llm", action="store_true", help="only check that files exist")


def run(args: argparse.Namespace) -> int:
    settings, profile = settings_and_profile(args)
    report: dict[str, object] = {"profile": profile.name}
    locations = {"llm": profile.llm, "text_embedder": profile.text_embedder, "adapter": profile.adapter}
    if profile.encoder == "mert":
        locations["encoder"] = profile.encoder_path
    missing = []
    for part, location in locations.items():
        if not location:
            report[part] = "none (fresh adapter)"
            continue
        try:
            report[part] = str(resolve_path(location))
        except ModelNotFoundError as exc:
            missing.append(str(exc))
    for name in tagger_names():  # every profile analyses tracks with the musicnn taggers
        try:
            report[name] = str(convert(load_config(name), settings.models_dir))
        except ModelNotFoundError as exc:
            missing.append(str(exc))
    if not missing and not args.skip_llm:
        from model.llm import load_llm

        t0 = time.perf_counter()
        load_llm(profile.llm, "cpu", profile.llm_dtype, settings.models_dir)
        report["llm_load_seconds"] = round(time.perf_counter() - t0, 2)
    report["missing"] = missing
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 1 if missing else 0
