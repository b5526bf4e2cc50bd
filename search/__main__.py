"""`python -m search "query"`: search the catalog from a shell; `--like` for "more like this".

Output: one line per hit (score, artist – title, duration, tempo and key, caption excerpt); with `--json`,
one JSON object per hit on stdout (track id, path, tags, caption, what the analysis heard, scores and
the explanation fields) and the total, any message and the filters applied as one JSON object on stderr.
`--stats`, `--facets` (with the tracks per analysis value under the filters given) and `--track ID`
print one object. Errors exit with status 2 ({"ok": false, "error": ...} with --json).

Filters on what the analysis heard: `--bpm 110-130` (or `120-`, `-90`, or `120`: 114-126),
`--key "A minor"` (or `--tonic A --mode minor`), `--vocals instrumental`, `--auto-genre jazz`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

from search.music import BPM_TOLERANCE
from search.types import MODES, VOCALS, Filters, SearchError, parse_key

EXCERPT_CHARS = 90
_BPM_ARG = re.compile(r"(\d+(?:\.\d+)?)?(-)?(\d+(?:\.\d+)?)?")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search", description="Search the indexed music library in words.")
    p.add_argument("query", nargs="?", default="", help="what to look for, e.g. 'calm piano at night'")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--like", metavar="PATH_OR_TRACK_ID", help="tracks that sound like this file or track id")
    mode.add_argument("--track", type=int, metavar="ID", help="print everything stored about one track")
    mode.add_argument("--stats", action="store_true", help="catalog counts, failures, versions, last scan")
    mode.add_argument("--facets", action="store_true", help="values available for the filters")
    p.add_argument("--top-k", type=int, default=20, metavar="K", help="hits to show (default 20, at most 200)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N hits (pagination)")
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
    p.add_argument("--json", action="store_true", help="machine-readable output (see the module docstring)")
    p.add_argument("--data-dir", help="where the catalog and indexes live (default: settings)")
    p.add_argument("--profile", help="model profile for query embedding and --like files (default: settings)")
    p.add_argument("--config", help="settings TOML (default: $MUSILINGO_CONFIG or <data-dir>/config.toml)")
    return p


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
    """The filters the arguments ask for; a SearchError for values that mean nothing."""
    tonic, mode = args.tonic, args.mode
    if args.key:
        if tonic or mode:
            raise SearchError("give --key, or --tonic and --mode, not both")
        tonic, mode = parse_key(args.key)
    bpm_min, bpm_max = _bpm(args.bpm)
    return Filters(artist=args.artist, album=args.album, genre=args.genre, year_min=args.year_min,
                   year_max=args.year_max, min_duration=args.min_duration, max_duration=args.max_duration,
                   format=args.format, root=args.root, bpm_min=bpm_min, bpm_max=bpm_max, tonic=tonic,
                   mode=mode, vocals=args.vocals, auto_genre=args.auto_genre)


def _print_hits(hits: list, args: argparse.Namespace, total: int, message: str, filters: Filters) -> None:
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
        print(f"{total} tracks; showing {args.offset + 1}-{args.offset + len(hits)}", file=sys.stderr)
    for hit in hits:
        print(_line(hit))


def _print_object(obj: dict, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(obj, ensure_ascii=False, default=str))
    else:
        for key, value in obj.items():
            print(f"{key}: {json.dumps(value, ensure_ascii=False, default=str)}")


def run(args: argparse.Namespace) -> int:
    from model.settings import load_settings
    from search.engine import SearchEngine

    settings = load_settings(args.config, data_dir=args.data_dir, profile=args.profile)
    engine = SearchEngine(settings)
    filters = filters_of(args)
    filters.sql()  # refuse a meaningless value before any work
    if args.stats:
        _print_object(engine.stats(), args)
        return 0
    if args.facets:
        _print_object(engine.facets(filters), args)
        return 0
    if args.track is not None:
        _print_object(engine.track(args.track), args)
        return 0
    if args.like:
        if Path(args.like).is_file():
            hits = engine.like_audio(args.like, top_k=args.top_k, filters=filters)
        elif args.like.strip().isdigit():
            hits = engine.like_track(int(args.like), top_k=args.top_k, filters=filters)
        else:
            raise FileNotFoundError(f"--like {args.like}: neither an audio file nor a track id")
        _print_hits(hits, args, len(hits), "", filters)
        return 0
    result = engine.search(args.query, filters=filters, top_k=args.top_k, offset=args.offset)
    _print_hits(result.hits, args, result.total, result.message, filters)
    return 0


def main(argv: list[str] | None = None) -> int:
    from catalog.store import CatalogError
    from model.config import ModelNotFoundError

    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (SearchError, CatalogError, ModelNotFoundError, FileNotFoundError, KeyError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if args.json:
            print(json.dumps({"ok": False, "error": reason}, ensure_ascii=False))
        else:
            print(f"error: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
