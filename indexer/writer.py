"""The single writer: each batch of finished work is one DuckDB transaction, then a FAISS update.

A track is written with its tokens, vector and caption in the same transaction as its row, so after
a crash a track is either done or absent, never half there, and rewriting a path reuses its row, so
a batch committed twice creates no duplicates. Whoever produces results (the scan here, a
distributed engine later) hands them to `Writer.commit`; only the holder of `ScanLock` writes.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from catalog.keywords import refresh_after_scan
from catalog.store import (
    Catalog,
    analyses,
    auto_tags,
    bump_generation,
    captions,
    embeddings,
    errors,
    generation,
    scans,
    tags,
    tracks,
)
from catalog.vectors import IndexSet
from indexer.discover import Failure, FileEntry
from indexer.tags import TrackTags
from model.analysis import TrackAnalysis

FP16_MAX = 65504.0
AUTO_TAG_MIN = 0.05  # auto-tags below this probability are kept only in the analysis matrix, not as rows


class ScanBusyError(RuntimeError):
    """Another process is writing this data dir."""


class ScanLock:
    """One writer per data dir: an flock on `<data_dir>/scan.lock`, which the kernel drops even on SIGKILL."""

    def __init__(self, data_dir: str | Path, wait: float = 0.0) -> None:
        self.path = Path(data_dir) / "scan.lock"
        self.wait = wait
        self.fd: int | None = None

    def __enter__(self) -> ScanLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    pid = running_scan_pid(self.path.parent)
                    raise ScanBusyError(f"another scan (pid {pid}) is writing {self.path.parent}; "
                                        "wait for it to finish or stop it") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def running_scan_pid(data_dir: str | Path) -> int | None:
    """The pid of the process holding the scan lock, or None when no scan is running."""
    path = Path(data_dir) / "scan.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(raw) if raw.isdigit() else -1
    finally:
        os.close(fd)


@dataclass
class CaptionResult:
    text: str
    token_ids: list[int]
    text_vector: np.ndarray  # fp32 unit vector from the text embedder
    pipeline_version: str


@dataclass
class TrackResult:
    """Everything one indexed file contributes; written in one go."""

    entry: FileEntry
    fingerprint: str
    tags: TrackTags
    indexed_seconds: float
    profile: str
    encoder_version: str
    tokens: np.ndarray  # compressed audio tokens [T', D], stored as fp16
    vector: np.ndarray  # fp32 unit track vector
    caption: CaptionResult
    analysis: TrackAnalysis | None = None  # what the taggers, tempo and key estimators heard
    track_id: int | None = None  # the catalog row this replaces, if any


@dataclass
class Batch:
    tracks: list[TrackResult] = field(default_factory=list)
    recaptions: list[tuple[int, CaptionResult]] = field(default_factory=list)
    reanalyses: list[tuple[int, TrackAnalysis]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    moves: list[tuple[int, FileEntry, TrackTags]] = field(default_factory=list)
    touches: list[tuple[int, FileEntry]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    clear_errors: list[str] = field(default_factory=list)  # error rows of files that are gone
    files_done: int = 0  # progress made by this batch
    audio_seconds: float = 0.0


@dataclass
class Committed:
    track_ids: list[int]  # one per Batch.tracks entry
    removed: list[int]  # Batch.removed plus tracks dropped because their file now fails


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Writer:
    """Commits batches to the catalog and mirrors them into the FAISS indexes."""

    def __init__(self, catalog: Catalog, indexes: IndexSet, scan_id: int | None = None) -> None:
        self.catalog, self.indexes, self.scan_id = catalog, indexes, scan_id
        self.files_done = 0
        self.audio_seconds = 0.0
        self.changed = False  # whether a commit changed what the keyword snapshot holds
        self.keywords: dict | None = None  # what `close` did to the keyword snapshot
        with catalog.read() as conn:
            self.generation = generation(conn)

    def commit(self, batch: Batch) -> Committed:
        removed = list(dict.fromkeys(batch.removed + [f.track_id for f in batch.failures if f.track_id is not None]))
        files_done, audio_seconds = self.files_done + batch.files_done, self.audio_seconds + batch.audio_seconds
        with self.catalog.write() as conn:
            _delete_tracks(conn, removed)
            if batch.clear_errors:
                conn.execute(delete(errors).where(errors.c.path.in_(batch.clear_errors)))
            for track_id, entry, tag in batch.moves:
                conn.execute(update(tracks).where(tracks.c.id == track_id).values(
                    path=entry.path, root=entry.root, size=entry.size, mtime=entry.mtime, **_tag_columns(tag)))
                _replace_tags(conn, track_id, tag)
            for track_id, entry in batch.touches:
                conn.execute(update(tracks).where(tracks.c.id == track_id).values(size=entry.size, mtime=entry.mtime))
            ids = [_write_track(conn, result) for result in batch.tracks]
            for track_id, analysis in batch.reanalyses:
                _write_analysis(conn, track_id, analysis)
            for track_id, caption in batch.recaptions:
                _write_caption(conn, track_id, caption)
                conn.execute(update(tracks).where(tracks.c.id == track_id).values(
                    pipeline_version=caption.pipeline_version))
            for failure in batch.failures:
                conn.execute(delete(errors).where(errors.c.path == failure.path))
                conn.execute(insert(errors).values(
                    path=failure.path, root=failure.root, stage=failure.stage, reason=failure.reason,
                    size=failure.size, mtime=failure.mtime, scan_id=self.scan_id, failed_at=_now()))
            if self.scan_id is not None:
                conn.execute(update(scans).where(scans.c.id == self.scan_id).values(
                    files_done=files_done, audio_seconds=audio_seconds, heartbeat=_now()))
            changed = removed or ids or batch.recaptions or batch.reanalyses
            catalog_generation = bump_generation(conn) if changed else self.generation
        self.files_done, self.audio_seconds, self.generation = files_done, audio_seconds, catalog_generation
        self.changed = self.changed or bool(changed or batch.moves)
        self.indexes.apply("audio", removed, ids, np.stack([r.vector for r in batch.tracks]) if ids else None)
        text_ids = ids + [track_id for track_id, _ in batch.recaptions]
        text_vecs = [r.caption.text_vector for r in batch.tracks] + [c.text_vector for _, c in batch.recaptions]
        self.indexes.apply("text", removed, text_ids, np.stack(text_vecs) if text_vecs else None)
        self.indexes.save(self.generation, self.scan_id)
        return Committed(ids, removed)

    def close(self) -> None:
        """Save the indexes now; they reflect every committed batch. Then rebuild the keyword snapshot
        if the scan changed the library (here, so both scan engines do it; it never raises)."""
        self.indexes.save(self.generation, self.scan_id, force=True)
        self.keywords = refresh_after_scan(self.catalog, self.changed)


def _tag_columns(tag: TrackTags) -> dict:
    """The columns a moved file's tags update: not what decoding found (duration, decoder), since a move keeps
    the content, and the header's duration, read again, would undo a length that decoding corrected."""
    cols = tag.columns()
    for name in ("duration", "header_duration", "decoder"):
        cols.pop(name)
    return cols


def _replace_tags(conn: Connection, track_id: int, tag: TrackTags) -> None:
    conn.execute(delete(tags).where(tags.c.track_id == track_id))
    if tag.raw:
        conn.execute(insert(tags), [{"track_id": track_id, "key": k, "value": v} for k, v in tag.raw.items()])


def _delete_tracks(conn: Connection, ids: list[int]) -> None:
    if not ids:
        return
    for table in (tags, embeddings, captions, auto_tags, analyses):
        conn.execute(delete(table).where(table.c.track_id.in_(ids)))
    conn.execute(delete(tracks).where(tracks.c.id.in_(ids)))


def _write_caption(conn: Connection, track_id: int, caption: CaptionResult) -> None:
    """One caption per track: the one made by its current pipeline."""
    conn.execute(delete(captions).where(captions.c.track_id == track_id))
    conn.execute(insert(captions).values(
        track_id=track_id, pipeline_version=caption.pipeline_version, text=caption.text,
        token_ids=json.dumps([int(t) for t in caption.token_ids]),
        text_vector=np.asarray(caption.text_vector, dtype=np.float32).tobytes(), created_at=_now()))


def _write_track(conn: Connection, r: TrackResult) -> int:
    """Insert or replace one finished track with its tags, tokens and caption; returns its id."""
    entry = r.entry
    values = dict(path=entry.path, root=entry.root, size=entry.size, mtime=entry.mtime, fingerprint=r.fingerprint,
                  format=entry.format, indexed_seconds=r.indexed_seconds, status="done",
                  encoder_version=r.encoder_version, pipeline_version=r.caption.pipeline_version,
                  profile=r.profile, indexed_at=_now(), **r.tags.columns())
    track_id = r.track_id
    if track_id is None or conn.execute(select(tracks.c.id).where(tracks.c.id == track_id)).scalar() is None:
        track_id = conn.execute(select(tracks.c.id).where(tracks.c.path == entry.path)).scalar()
    if track_id is None:
        track_id = conn.execute(insert(tracks).values(**values).returning(tracks.c.id)).scalar_one()
    else:
        conn.execute(update(tracks).where(tracks.c.id == track_id).values(**values))
        conn.execute(delete(embeddings).where(embeddings.c.track_id == track_id))
    _replace_tags(conn, track_id, r.tags)
    tokens = np.clip(np.asarray(r.tokens, dtype=np.float32), -FP16_MAX, FP16_MAX).astype(np.float16)
    conn.execute(insert(embeddings).values(
        track_id=track_id, encoder_version=r.encoder_version, n_tokens=int(tokens.shape[0]),
        dim=int(tokens.shape[1]), tokens=tokens.tobytes(), vector=np.asarray(r.vector, np.float32).tobytes()))
    _write_caption(conn, track_id, r.caption)
    if r.analysis is not None:
        _write_analysis(conn, track_id, r.analysis)
    conn.execute(delete(errors).where(errors.c.path == entry.path))
    return track_id


def _write_analysis(conn: Connection, track_id: int, analysis: TrackAnalysis) -> None:
    """A track's analysis: the numbers and words on its row, its tags as rows, the rest in `analyses`."""
    record = analysis.to_record()
    said = analysis.describe()
    conn.execute(update(tracks).where(tracks.c.id == track_id).values(
        bpm=record["bpm"] or None, tonic=record["tonic"], mode=record["mode"], vocals=said.vocals,
        auto_genre=said.genre, analysis_version=analysis.version))
    conn.execute(delete(auto_tags).where(auto_tags.c.track_id == track_id))
    # the taggers' tags and the instrument head's families (tagger "instrument_head"): a family word then
    # ranks tracks by how sure the head is, not only those whose caption names it (head at 0.6 or more)
    rows = [{"track_id": track_id, "tagger": tagger, "tag": tag, "probability": p}
            for tagger, probs in analysis.all_tags().items() for tag, p in probs.items() if p >= AUTO_TAG_MIN]
    if rows:
        conn.execute(insert(auto_tags), rows)
    conn.execute(delete(analyses).where(analyses.c.track_id == track_id))
    conn.execute(insert(analyses).values(track_id=track_id, **{k: record[k] for k in (
        "analysis_version", "taggers", "patch_seconds", "probabilities", "embedding")}))
