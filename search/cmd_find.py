"""Search the library in words, with filters and pages (the default: `python -m search "slow sad piano"`).

The flags --like, --track, --stats and --facets run the subcommand of that name, so every form of
`python -m search` that came before the subcommands still works.
"""

from __future__ import annotations

import argparse

from model.settings import Settings
from search import cmd_facets, cmd_like, cmd_stats, cmd_track
from search.cli import add_filters, add_top_k, filters_of, open_engine, print_hits

OPTIONS = ("profile",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?", default="", help="what to look for, e.g. 'calm piano at night'")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--like", metavar="PATH_OR_TRACK_ID", help="tracks that sound like this file or track id")
    mode.add_argument("--track", type=int, metavar="ID", help="print everything stored about one track")
    mode.add_argument("--stats", action="store_true", help="catalog counts, failures, versions, last scan")
    mode.add_argument("--facets", action="store_true", help="values available for the filters")
    add_top_k(p)
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N hits (pagination)")
    add_filters(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    filters = filters_of(args)
    if args.stats:
        return cmd_stats.run(args, settings)
    if args.facets:
        return cmd_facets.run(args, settings)
    if args.track is not None:
        return cmd_track.run(args, settings)
    if args.like:
        return cmd_like.run(args, settings)
    result = open_engine(settings).search(args.query, filters=filters, top_k=args.top_k, offset=args.offset)
    print_hits(result.hits, args, result.total, result.message, filters, args.offset)
    return 0
