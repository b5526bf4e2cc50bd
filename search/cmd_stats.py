"""Show the catalog's health: counts, failures and why, pipeline versions, the last scan, the indexes."""

from __future__ import annotations

import argparse

from model.settings import Settings
from search.cli import open_engine, print_object


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # no options of its own


def run(args: argparse.Namespace, settings: Settings) -> int:
    print_object(open_engine(settings).stats(), args)
    return 0
