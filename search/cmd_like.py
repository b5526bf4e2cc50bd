"""Find tracks that sound like an audio file or an indexed track ("more like this")."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.settings import Settings
from search.cli import add_filters, add_top_k, filters_of, open_engine, print_hits
from search.types import SearchError

OPTIONS = ("profile",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("like", metavar="PATH_OR_TRACK_ID", help="an audio file, or the id of an indexed track")
    add_top_k(p)
    add_filters(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    filters = filters_of(args)
    engine = open_engine(settings)
    if Path(args.like).is_file():
        hits = engine.like_audio(args.like, top_k=args.top_k, filters=filters)
    elif args.like.strip().isdigit():
        hits = engine.like_track(int(args.like), top_k=args.top_k, filters=filters)
    else:
        raise SearchError(f"{args.like}: neither an audio file nor a track id")
    print_hits(hits, args, len(hits), "", filters)
    return 0
