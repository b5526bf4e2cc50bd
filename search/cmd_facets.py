"""Show the values the filters can take, and the tracks per analysis value under the filters given."""

from __future__ import annotations

import argparse

from model.settings import Settings
from search.cli import add_filters, filters_of, open_engine, print_object


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_filters(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    print_object(open_engine(settings).facets(filters_of(args)), args)
    return 0
