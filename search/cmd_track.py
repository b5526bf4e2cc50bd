"""Print everything stored about one track: its columns, tags, caption, what the analysis heard."""

from __future__ import annotations

import argparse

from model.settings import Settings
from search.cli import open_engine, print_object


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("track", type=int, metavar="ID", help="the track's id, as search results show it")


def run(args: argparse.Namespace, settings: Settings) -> int:
    print_object(open_engine(settings).track(args.track), args)
    return 0
