"""Whether two revisions index and answer alike: captions, tags, analyses, search pages, "more like this"
and facets of one library, scanned by each.

    python bench/compare_revisions.py --baseline REV [--revision REV2] [--library demo/library] [--json]

Each revision (REV2 default: the working tree) is checked out in a temporary worktree, scans the library
into a fresh data dir with its own `python -m indexer scan`, then dumps, through its own `SearchEngine`,
every track's stored fields (ids, times and scan bookkeeping left out), the pages of a fixed set of queries
under several filters (paths, scores to 1e-9, totals, messages, reasons), each track's five nearest
("more like this") and the facets. Tracks are named by path, so ids that differ between the scans do not
count: a scan numbers tracks in the order they finish, and the ranking breaks equal scores by id, so hits
of equal score are compared in path order. Prints the first differences and exits 1 if any. For restructurings that must not change what the
product computes. Not a test: it scans the library twice.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_scan import run_scan, worktree  # noqa: E402  (bench/, the script's folder)

QUERIES = ("calm piano", "fast electronic dance", "slow sad strings", "jazz", "in a minor key", "about 120 bpm",
           "acoustic guitar", "instrumental", "female vocals", "upbeat rock with drums", "Pixelheart", "Neon Rain",
           "café", "", "xyzzy plugh")
FILTERS = ({}, {"bpm_min": 100.0}, {"mode": "minor"}, {"vocals": "instrumental"}, {"min_duration": 20.0},
           {"auto_genre": "electronic"})

# Runs inside the revision's tree, with its own search engine; prints one JSON object.
DUMP = r"""
import json, re, sys
from model.settings import load_settings
from search import Filters, SearchEngine
queries, filters = json.loads(sys.argv[2]), json.loads(sys.argv[3])
engine = SearchEngine(load_settings(data_dir=sys.argv[1]))
listed = engine.search("", top_k=200).hits
path_of = {h.track_id: h.path for h in listed}
def named(text):
    return re.sub(r"track (\d+)", lambda m: "track " + path_of.get(int(m.group(1)), m.group(1)), text)
def page(hits):
    rows = [[h.path, round(h.score, 9), [named(r) for r in h.reasons], h.caption] for h in hits]
    return sorted(rows, key=lambda r: (-r[1], r[0]))  # equal scores fall back to ids, which scans may assign apart
skip = {"id", "indexed_at", "mtime", "scan_id", "analysed_at", "analyzed_at", "created_at", "updated_at"}
out = {"tracks": {}, "searches": {}, "like": {}, "facets": engine.facets()}
for h in listed:
    info = engine.track(h.track_id)
    out["tracks"][h.path] = {k: v for k, v in info.items() if k not in skip and "time" not in k}
for q in queries:
    for f in filters:
        for offset in (0, 5):
            r = engine.search(q, filters=Filters(**f), top_k=10, offset=offset)
            out["searches"][f"{q!r} {f} +{offset}"] = [r.total, r.message, page(r.hits)]
for h in listed:
    out["like"][h.path] = page(engine.like_track(h.track_id, top_k=5))
print(json.dumps(out, default=str, sort_keys=True))
"""


def dump(tree: Path, data: Path, cache: Path) -> dict:
    env = os.environ | {"MUSILINGO_CACHE_DIR": str(cache), "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", DUMP, str(data), json.dumps(QUERIES), json.dumps(FILTERS)],
                          cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def differences(a: object, b: object, where: str = "") -> list[str]:
    """Where two dumps differ, as 'path: a != b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in {'baseline' if k in a else 'revision'}" for k in sorted(set(a) ^ set(b))]
        for key in sorted(set(a) & set(b)):
            out += differences(a[key], b[key], f"{where}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {json.dumps(a, default=str)[:200]} != {json.dumps(b, default=str)[:200]}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a git revision")
    parser.add_argument("--revision", help="another git revision (default: the working tree)")
    parser.add_argument("--library", type=Path, default=ROOT / "demo" / "library")
    parser.add_argument("--profile", default="lite")
    parser.add_argument("--json", action="store_true", help="print the counts and differences as JSON")
    args = parser.parse_args(argv)

    from model.settings import load_settings

    cache = load_settings().cache_dir
    work = Path(tempfile.mkdtemp(prefix="compare-revisions-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        trees = [stack.enter_context(worktree(args.baseline, work / "baseline")),
                 stack.enter_context(worktree(args.revision, work / "revision")) if args.revision else ROOT]
        dumps = []
        for i, tree in enumerate(trees):
            run_scan(tree, args.library.resolve(), work / f"data-{i}", cache, args.profile)
            dumps.append(dump(tree, work / f"data-{i}", cache))
    found = differences(*dumps)
    counts = {k: len(dumps[1][k]) for k in ("tracks", "searches", "like")}
    hits = sum(len(v[2]) for v in dumps[1]["searches"].values())
    if args.json:
        print(json.dumps({"baseline": args.baseline, "revision": args.revision or "working tree", **counts,
                          "search_hits": hits, "differences": found}))
    else:
        print(f"{args.baseline} vs {args.revision or 'the working tree'}: {counts['tracks']} tracks, "
              f"{counts['searches']} search pages ({hits} hits), {counts['like']} 'more like this' lists, facets: "
              f"{len(found)} differences")
        for line in found[:40]:
            print("  " + line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
