"""Check a profile's models are present and build the caches (GGUF and musicnn TF checkpoints -> safetensors).

The caches live in the settings' cache dir (`<cache_dir>/models`, by default
~/.cache/musilingo-search/models), shared by every data dir.
"""

from __future__ import annotations

import argparse
import json
import time

from model.config import ModelNotFoundError, resolve_path
from model.runtime import model_locations, profile_of
from model.settings import Settings

OPTIONS = ("profile", "models")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-llm", action="store_true", help="only check that files exist")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from model.musicnn import convert, load_config, tagger_names

    profile = profile_of(args, settings)
    report: dict[str, object] = {"profile": profile.name}
    missing = []
    for part, location in model_locations(profile).items():
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
