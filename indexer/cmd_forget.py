"""Drop files or whole folders from the catalog and both indexes.

The files on disk are not touched; a later scan of a root that still holds them adds them back.
"""

from __future__ import annotations

import argparse

from sqlalchemy import select

from catalog.store import Catalog, errors, tracks
from catalog.vectors import IndexSet
from indexer.discover import absolute, is_under
from model.cli import emit
from model.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders, as scanned")


def forget(settings: Settings, paths: list[str]) -> dict:
    """Remove the tracks and error rows at or under `paths`; waits briefly for a running scan's lock."""
    from indexer.writer import Batch, ScanLock, Writer  # imports the models' code (torch): only when run

    catalog = Catalog(settings.catalog_path)
    targets = [absolute(p) for p in paths]
    with ScanLock(settings.data_dir, wait=5.0):
        with catalog.read() as conn:
            found = [(r.id, r.path) for r in conn.execute(select(tracks.c.id, tracks.c.path))
                     if any(is_under(r.path, t) for t in targets)]
            failed = [p for p in conn.execute(select(errors.c.path)).scalars() if any(is_under(p, t) for t in targets)]
        indexes = IndexSet(catalog, settings.data_dir)
        indexes.open()
        writer = Writer(catalog, indexes)
        done = writer.commit(Batch(removed=[i for i, _ in found], clear_errors=failed))
        writer.close()
    return {"removed": done.removed, "paths": [p for _, p in found], "errors_cleared": len(failed)}


def run(args: argparse.Namespace, settings: Settings) -> int:
    result = forget(settings, args.paths)
    lines = [f"forgot {len(result['removed'])} tracks and {result['errors_cleared']} failure records"]
    lines += [f"  {p}" for p in result["paths"]]
    matched = bool(result["removed"] or result["errors_cleared"])
    emit(args, {"ok": matched, **result}, "\n".join(lines))
    return 0 if matched else 1
