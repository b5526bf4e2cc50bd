"""`python -m search "query"`: search the catalog from a shell; `--like` for "more like this".

    python -m search "slow sad piano"          find (the default subcommand): words, filters, pages
    python -m search --like PATH_OR_TRACK_ID   or `like PATH_OR_TRACK_ID`: tracks that sound alike
    python -m search --track ID                or `track ID`: everything stored about one track
    python -m search --stats                   or `stats`: catalog counts, failures, versions, last scan
    python -m search --facets                  or `facets`: values for the filters, tracks per value

A one-word query that names a subcommand is read as the subcommand: write `find WORD` to search for it.

Output: one line per hit (score, artist – title, duration, tempo and key, caption excerpt); with `--json`,
one JSON object per hit on stdout (track id, path, tags, caption, what the analysis heard, scores and
the explanation fields) and the total, any message and the filters applied as one JSON object on stderr.
`stats`, `facets` (with the tracks per analysis value under the filters given) and `track` print one
object. Errors, a missing catalog among them, exit with status 2 ({"ok": false, "error": ...} with --json).

Filters on what the analysis heard: `--bpm 110-130` (or `120-`, `-90`, or `120`: 114-126),
`--key "A minor"` (or `--tonic A --mode minor`), `--vocals instrumental`, `--auto-genre jazz`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from model.cli import run_cli
from model.settings import Settings
from search.engine import SearchEngine
from search.music import BPM_TOLERANCE
from search.types import MODES, VOCALS, Filters, SearchError, parse_key

COMMANDS = {"find": "search.cmd_find", "like": "search.cmd_like", "track": "search.cmd_track",
            "stats": "search.cmd_stats", "facets": "search.cmd_facets"}
EXCERPT_CHARS = 90
_BPM_ARG = re.compile(r"(\d+(?:\.\d+)?)?(-)?(\d+(?:\.\d+)?)?")


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m search", __doc__, COMMANDS, argv, user_errors=(SearchError, "catalog.store.CatalogError"),
                   default="find")


def add_top_k(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=20, metavar="K", help="hits to show (default 20, at most 200)")


def add_filters(p: argparse.ArgumentParser) -> None:
    """The filters on what the catalog holds and what the analysis heard."""
    p.add_argument("--artist")
    p.add_argument("--album")
    p.add_argument("--genre")
    p.add_argument("--year-min", type=int, metavar="Y")
    p.add_argument("--year-max", type=int, metavar="Y")
    p.add_argument("--min-duration", type=float, metavar="S", help="seconds")
    p.add_argument("--max-duration", type=float, metavar="S", help="seconds")
    p.add_argument("--format", help="file format, e.g. mp3 or flac")
    p.add_argument("--root", help="a library root or a folder below one")
    p.add_argument("--bpm", metavar="LO-HI", help="tempo heard: a range (110-130, 120-, -90) or N for N±5%%")
    p.add_argument("--key", help="key heard, e.g. 'A minor' or 'F# major' (sets --tonic and --mode)")
    p.add_argument("--tonic", help="tonic heard, e.g. A or F# (Bb reads as A#)")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--vocals", choices=VOCALS)
    p.add_argument("--auto-genre", metavar="GENRE", help="genre the taggers heard, e.g. jazz")


def _bpm(text: str | None) -> tuple[float | None, float | None]:
    """`--bpm`: "110-130", "120-", "-90", or "120" for 120 within BPM_TOLERANCE."""
    if not text:
        return None, None
    found = _BPM_ARG.fullmatch(text.replace(" ", ""))
    if found is None or not (found.group(1) or found.group(3)) or (found.group(3) and not found.group(2)):
        raise SearchError(f"--bpm {text}: write a range such as 110-130, 120- or -90, or one tempo")
    lo, dash, hi = found.groups()
    if not dash:
        return float(lo) * (1 - BPM_TOLERANCE), float(lo) * (1 + BPM_TOLERANCE)
    return (float(lo) if lo else None), (float(hi) if hi else None)


def filters_of(args: argparse.Namespace) -> Filters:
    """The filters the arguments ask for; a SearchError for values that mean nothing, before any work."""
    tonic, mode = args.tonic, args.mode
    if args.key:
        if tonic or mode:
            raise SearchError("give --key, or --tonic and --mode, not both")
        tonic, mode = parse_key(args.key)
    bpm_min, bpm_max = _bpm(args.bpm)
    filters = Filters(artist=args.artist, album=args.album, genre=args.genre, year_min=args.year_min,
                      year_max=args.year_max, min_duration=args.min_duration, max_duration=args.max_duration,
                      format=args.format, root=args.root, bpm_min=bpm_min, bpm_max=bpm_max, tonic=tonic,
                      mode=mode, vocals=args.vocals, auto_genre=args.auto_genre)
    filters.sql()  # refuses a meaningless value
    return filters


def open_engine(settings: Settings) -> SearchEngine:
    """The engine over the settings' catalog; a missing catalog, or one of another schema, is an error here,
    before any model loads."""
    engine = SearchEngine(settings)
    with engine.catalog.read():
        pass
    return engine


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def _line(hit) -> str:
    caption = " ".join((hit.caption or "").split())
    if len(caption) > EXCERPT_CHARS:
        caption = caption[: EXCERPT_CHARS - 1].rstrip() + "…"
    name = f"{hit.artist or 'Unknown artist'} – {hit.title or Path(hit.path).name}"
    heard = [f"{hit.bpm:.0f} BPM"] if hit.bpm else []
    heard += [f"{hit.tonic} {hit.mode}"] if hit.tonic and hit.mode else []
    return f"{hit.score:8.4f}  {name}  {_duration(hit.duration)}  " + "".join(f"{h}  " for h in heard) + caption


def print_hits(hits: list, args: argparse.Namespace, total: int, message: str, filters: Filters,
               offset: int = 0) -> None:
    """Hits on stdout; the total, the engine's message and the filters on stderr."""
    if args.json:
        for hit in hits:
            print(json.dumps(hit.to_dict(), ensure_ascii=False, default=str))
        applied = {k: v for k, v in asdict(filters).items() if v not in (None, "")}
        print(json.dumps({"total": total, "message": message, "filters": applied}, ensure_ascii=False),
              file=sys.stderr)
        return
    if message:
        print(message, file=sys.stderr)
    if hits:
        print(f"{total} tracks; showing {offset + 1}-{offset + len(hits)}", file=sys.stderr)
    for hit in hits:
        print(_line(hit))


def print_object(obj: dict, args: argparse.Namespace) -> None:
    """One object: JSON with --json, else one `key: value` line per field."""
    if args.json:
        print(json.dumps(obj, ensure_ascii=False, default=str))
    else:
        for key, value in obj.items():
            print(f"{key}: {json.dumps(value, ensure_ascii=False, default=str)}")
