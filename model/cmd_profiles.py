"""List the model profiles this installation knows (shipped ones and those in <data_dir>/profiles)."""

from __future__ import annotations

import argparse
import json

from model.config import list_profiles, load_profile
from model.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # no options of its own


def run(args: argparse.Namespace, settings: Settings) -> int:
    rows = [load_profile(n, settings.data_dir).describe() for n in list_profiles(settings.data_dir)]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['name']:12s} {row['description']}")
    return 0
