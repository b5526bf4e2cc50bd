"""What the UI and the CLI show about the catalog itself: the values and counts filter widgets offer
(`facets`) and its health (`stats`). The engine opens the catalog connection; these read through it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from catalog.keywords import last_error
from catalog.store import Catalog, captions, embeddings, errors, scans, tracks
from model.tempo_key import PITCH_CLASSES
from search.snapshot import CHANGED_COUNT_SQL, snapshot_summary
from search.types import MODES, VOCALS, Filters

# Columns whose values are counted for the filters of the same name (`facets`), each in its own order.
COUNTED = {"mode": MODES, "tonic": PITCH_CLASSES, "vocals": VOCALS, "auto_genre": ()}


def _counts(db: duckdb.DuckDBPyConnection, column: str, filters: Filters) -> dict[str, int]:
    """Tracks per value of `column` among those passing `filters` but the column's own filter, so a widget
    shows the other values it could switch to (tracks not analysed have none)."""
    filter_sql, params = replace(filters, **{column: None}).sql()
    found = dict(db.execute(f"""SELECT t.{column}, count(*) FROM tracks t
        WHERE t.status = 'done' AND t.{column} IS NOT NULL {filter_sql} GROUP BY ALL""", params).fetchall())
    order = COUNTED[column]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                      kv[0])))


def facets(conn: Connection, db: duckdb.DuckDBPyConnection, filters: Filters) -> dict:
    """Values for filter widgets over the tracks a search can return: names, formats, roots and ranges
    of the whole library, and per analysis value (COUNTED) its tracks under `filters`."""
    done = tracks.c.status == "done"

    def distinct(col) -> list:
        return [v for (v,) in conn.execute(select(col).where(done, col.is_not(None), col != "")
                                          .distinct().order_by(func.lower(col)))]

    def span(col) -> list | None:
        lo, hi = conn.execute(select(func.min(col), func.max(col)).where(done)).one()
        return None if lo is None else [lo, hi]

    years, durations, bpms = span(tracks.c.year), span(tracks.c.duration), span(tracks.c.bpm)
    return {"artists": distinct(tracks.c.artist), "albums": distinct(tracks.c.album),
            "genres": distinct(tracks.c.genre), "formats": distinct(tracks.c.format),
            "roots": distinct(tracks.c.root),
            "year_range": years and [int(v) for v in years],
            "duration_range": durations and [float(v) for v in durations],
            "bpm_range": bpms and [float(v) for v in bpms],
            "counts": {column: _counts(db, column, filters) for column in COUNTED}}


def stats(conn: Connection, db: duckdb.DuckDBPyConnection, catalog: Catalog) -> dict:
    """Catalog health: counts, failures and why, versions, the last scan, the keyword snapshot (the
    engine adds its FAISS indexes)."""
    by_status = dict(conn.execute(select(tracks.c.status, func.count()).group_by(tracks.c.status)).all())
    n_captions = conn.execute(select(func.count()).select_from(tracks.join(
        captions, (captions.c.track_id == tracks.c.id)
        & (captions.c.pipeline_version == tracks.c.pipeline_version)))).scalar()
    n_embeddings = conn.execute(select(func.count()).select_from(embeddings)).scalar()
    by_stage = dict(conn.execute(select(errors.c.stage, func.count()).group_by(errors.c.stage)).all())
    recent = [dict(r) for r in conn.execute(
        select(errors.c.path, errors.c.stage, errors.c.reason, errors.c.failed_at)
        .order_by(errors.c.failed_at.desc().nulls_last(), errors.c.path).limit(50)).mappings()]
    versions = [dict(r) for r in conn.execute(
        select(tracks.c.profile, tracks.c.encoder_version, tracks.c.pipeline_version,
               func.count().label("tracks"))
        .group_by(tracks.c.profile, tracks.c.encoder_version, tracks.c.pipeline_version)
        .order_by(func.count().desc())).mappings()]
    scan = conn.execute(select(scans).order_by(scans.c.id.desc()).limit(1)).mappings().first()
    snapshot = snapshot_summary(db, catalog)
    if snapshot is not None:  # tracks changed since the snapshot, matched by substring until it is rebuilt
        snapshot["changed_tracks"] = int(db.execute(CHANGED_COUNT_SQL).fetchone()[0]) \
            if snapshot["changed"] else 0
    latest = dict(scan) if scan else None
    for key in ("roots", "summary"):
        if latest and isinstance(latest.get(key), str):
            try:
                latest[key] = json.loads(latest[key])
            except ValueError:
                pass
    return {
        "tracks": sum(by_status.values()), "by_status": by_status, "captions": n_captions,
        "embeddings": n_embeddings,
        "failures": {"count": sum(by_stage.values()), "by_stage": by_stage, "recent": recent},
        "versions": versions, "latest_scan": latest,
        "indexes": {"keywords": snapshot, "keywords_error": last_error(catalog)},
    }
