"""Show what the catalog holds, what failed and why, and the last or running scan."""

from __future__ import annotations

import argparse

from sqlalchemy import desc, func, select

from catalog.store import Catalog, errors, generation, scans, tracks
from catalog.vectors import NAMES, IndexFileError, read_manifest
from model.cli import emit
from model.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=50, help="failures to list (default 50)")


def status(settings: Settings, limit: int = 50) -> dict:
    """Counts, failures with reasons, pipeline versions in use, the decoders that read the tracks, the tracks
    whose header misstated their length, the last scan and the FAISS indexes."""
    catalog = Catalog(settings.catalog_path)
    out: dict = {"catalog": str(settings.catalog_path), "exists": catalog.path.exists(), "tracks": {}, "failed": 0,
                 "failures": [], "versions": [], "decoders": {}, "header_mismatches": 0, "header_mismatch_tracks": [],
                 "scan": None, "indexes": {}}
    if not out["exists"]:
        return out
    from indexer.writer import running_scan_pid  # imports the models' code (torch): not for --help

    pid = running_scan_pid(settings.data_dir)
    with catalog.read() as conn:
        out["tracks"] = {s: n for s, n in conn.execute(select(tracks.c.status, func.count()).group_by(tracks.c.status))}
        out["audio_hours"] = round((conn.execute(select(func.sum(tracks.c.indexed_seconds))).scalar() or 0) / 3600, 3)
        out["formats"] = dict(conn.execute(select(tracks.c.format, func.count()).group_by(tracks.c.format)).all())
        out["decoders"] = dict(conn.execute(select(tracks.c.decoder, func.count()).group_by(tracks.c.decoder)
                                            .order_by(tracks.c.decoder)).all())
        misstated = tracks.c.header_duration.is_not(None)
        out["header_mismatches"] = conn.execute(select(func.count()).where(misstated)).scalar()
        out["header_mismatch_tracks"] = [dict(r._mapping) for r in conn.execute(
            select(tracks.c.path, tracks.c.duration, tracks.c.header_duration).where(misstated)
            .order_by(tracks.c.path).limit(limit))]
        out["failed"] = conn.execute(select(func.count()).select_from(errors)).scalar()
        out["failures"] = [dict(r._mapping) for r in conn.execute(
            select(errors.c.path, errors.c.stage, errors.c.reason, errors.c.failed_at)
            .order_by(desc(errors.c.failed_at)).limit(limit))]
        out["versions"] = [dict(r._mapping) for r in conn.execute(
            select(tracks.c.profile, tracks.c.encoder_version, tracks.c.pipeline_version, func.count().label("tracks"))
            .group_by(tracks.c.profile, tracks.c.encoder_version, tracks.c.pipeline_version))]
        last = conn.execute(select(scans).order_by(desc(scans.c.id)).limit(1)).first()
        gen = generation(conn)
    if last is not None:
        scan = dict(last._mapping)
        if scan["state"] == "running" and pid is None:
            scan["state"] = "interrupted"  # its process died without saying so
        scan["pid"] = pid
        scan["progress"] = round(scan["files_done"] / scan["files_total"], 4) if scan["files_total"] else None
        out["scan"] = scan
    for name in NAMES:
        try:
            m = read_manifest(settings.data_dir, name)
        except IndexFileError as exc:
            out["indexes"][name] = {"error": str(exc)}
            continue
        out["indexes"][name] = None if m is None else {
            "count": m.count, "kind": m.kind, "dim": m.dim, "generation": m.generation, "current": m.generation == gen}
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    s = status(settings, args.limit)
    if not s["exists"]:
        emit(args, {"ok": True, **s}, f"no catalog yet at {s['catalog']}: run `python -m indexer scan PATH`")
        return 0
    lines = [f"catalog {s['catalog']}: " + ", ".join(f"{n} {k}" for k, n in s["tracks"].items())
             + f" tracks, {s['audio_hours']} h of audio indexed, {s['failed']} failed files"]
    lines += [f"  {v['tracks']} tracks from profile {v['profile']} (encoder {v['encoder_version']}, "
              f"pipeline {v['pipeline_version']})" for v in s["versions"]]
    if s["decoders"]:
        lines.append("decoded by " + ", ".join(f"{name}: {n}" for name, n in s["decoders"].items()))
    if s["header_mismatches"]:
        lines.append(f"{s['header_mismatches']} tracks whose header misstates their length (the decoded one is stored)")
    lines += [f"  {t['path']}: header {t['header_duration']:.1f} s, decoded {t['duration']:.1f} s"
              for t in s["header_mismatch_tracks"]]
    if s["scan"]:
        sc = s["scan"]
        lines.append(f"last scan {sc['id']}: {sc['state']}, {sc['files_done']}/{sc['files_total']} files, "
                     f"{(sc['audio_seconds'] or 0):.0f} s audio, started {sc['started_at']}, heartbeat {sc['heartbeat']}")
    for name, m in s["indexes"].items():
        lines.append(f"{name} index: " + ("none" if m is None else m.get("error") or
                                           f"{m['count']} vectors ({m['kind']}){'' if m['current'] else ', stale'}"))
    lines += [f"failed: {f['path']}: {f['stage']}: {f['reason']}" for f in s["failures"]]
    emit(args, {"ok": True, **s}, "\n".join(lines))
    return 0
