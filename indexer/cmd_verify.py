"""Check the catalog (DuckDB) against itself, against the FAISS indexes and against the files on disk.

Repair migrates an old schema, drops orphan rows, marks tracks missing their tokens or caption as
pending (the next scan redoes them) and rebuilds FAISS indexes from DuckDB. Files that changed or
vanished on disk are reported; a scan is what brings the catalog up to date with them.
"""

from __future__ import annotations

import argparse
import os

from sqlalchemy import text, update

from catalog.store import SCHEMA_VERSION, Catalog, CatalogError, bump_generation, tracks
from catalog.vectors import NAMES, IndexSet, check_index
from model.cli import emit
from model.settings import Settings

_ORPHANS = {t: f"SELECT DISTINCT track_id FROM {t} WHERE track_id NOT IN (SELECT id FROM tracks)"
            for t in ("tags", "embeddings", "captions")}
_INCOMPLETE = """
    SELECT t.id, t.path FROM tracks t
    LEFT JOIN embeddings e ON e.track_id = t.id AND e.encoder_version = t.encoder_version
    LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
    WHERE t.status = 'done' AND (e.track_id IS NULL OR c.track_id IS NULL)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repair", action="store_true", help="fix what can be fixed without a scan")


def verify(settings: Settings, repair: bool = False) -> dict:
    """Problems found ({kind, detail, track_id?, path?}) and, with `repair`, what was fixed."""
    catalog = Catalog(settings.catalog_path)
    if not catalog.path.exists():
        return {"ok": False, "problems": [{"kind": "no_catalog", "detail": f"no catalog at {catalog.path}"}],
                "repaired": [], "tracks_checked": 0}
    if repair:
        from indexer.writer import ScanLock  # imports the models' code (torch): only when run, not for --help

        with ScanLock(settings.data_dir, wait=5.0):
            return _verify(catalog, settings, repair=True)
    return _verify(catalog, settings, repair=False)


def _verify(catalog: Catalog, settings: Settings, repair: bool) -> dict:
    problems: list[dict] = []
    repaired: list[dict] = []
    version = catalog.stored_version()
    if version != SCHEMA_VERSION:
        problem = {"kind": "schema", "detail": f"schema version {version}, this code needs {SCHEMA_VERSION}"}
        if not repair:
            return {"ok": False, "problems": [problem], "repaired": [], "tracks_checked": 0}
        try:
            catalog.create()
        except CatalogError as exc:
            return {"ok": False, "problems": [{**problem, "detail": str(exc)}], "repaired": [], "tracks_checked": 0}
        repaired.append(problem)
    with catalog.read() as conn:
        orphans = {t: list(conn.execute(text(q)).scalars()) for t, q in _ORPHANS.items()}
        incomplete = conn.execute(text(_INCOMPLETE)).all()
        on_disk = conn.execute(text("SELECT id, path, size, mtime FROM tracks WHERE status = 'done'")).all()
    db_problems = [{"kind": "orphan_rows", "detail": f"{len(ids)} {t} rows name no track", "table": t}
                   for t, ids in orphans.items() if ids]
    db_problems += [{"kind": "incomplete", "detail": "done but missing its tokens or caption",
                     "track_id": r.id, "path": r.path} for r in incomplete]
    if repair and db_problems:
        with catalog.write() as conn:
            for t, ids in orphans.items():
                if ids:
                    conn.execute(text(f"DELETE FROM {t} WHERE track_id NOT IN (SELECT id FROM tracks)"))
            if incomplete:
                conn.execute(update(tracks).where(tracks.c.id.in_([r.id for r in incomplete])).values(status="pending"))
            bump_generation(conn)
        repaired += db_problems
    else:
        problems += db_problems
    for r in on_disk:
        try:
            st = os.stat(r.path)
        except OSError:
            problems.append({"kind": "missing_file", "detail": "file not found (a scan removes it)",
                             "track_id": r.id, "path": r.path})
            continue
        if (st.st_size, st.st_mtime) != (r.size, r.mtime):
            problems.append({"kind": "changed_file", "detail": "changed on disk since indexed (a scan re-indexes it)",
                             "track_id": r.id, "path": r.path})
    if repair:
        report = IndexSet(catalog, settings.data_dir).open()
        repaired += [{"kind": "faiss", "detail": f"rebuilt from DuckDB: {p}", "index": n}
                     for n, found in report.items() for p in found]
    else:
        problems += [{"kind": "faiss", "detail": p, "index": n}
                     for n in NAMES for p in check_index(catalog, settings.data_dir, n)[1]]
    return {"ok": not problems, "problems": problems, "repaired": repaired, "tracks_checked": len(on_disk)}


def run(args: argparse.Namespace, settings: Settings) -> int:
    result = verify(settings, args.repair)
    lines = [f"checked {result['tracks_checked']} tracks: "
             + ("all consistent" if result["ok"] else f"{len(result['problems'])} problems")]
    lines += [f"repaired: {p['kind']}: {p.get('path') or p.get('index') or ''} {p['detail']}" for p in result["repaired"]]
    lines += [f"problem: {p['kind']}: {p.get('path') or p.get('index') or ''} {p['detail']}" for p in result["problems"]]
    emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else 1
