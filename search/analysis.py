"""What the taggers, tempo and key estimators heard in tracks, read back for display (the UI's cards and track page).

The scan stores an analysis in three places (catalog/store.py, schema 3): summary columns on `tracks`, the
tags heard with some confidence in `auto_tags`, and the tags patch by patch in `analyses`. A track whose
`analysis_version` is NULL has not been analysed yet, and reads as None here whatever other rows say.
Every read opens the catalog read-only for one query, as the engine does (`Catalog.read`), so a running
scan is never blocked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Connection

from catalog.store import Catalog, analyses, auto_tags, tracks
from model.analysis import TrackAnalysis
from model.describe import HEAD_TAGGER

Tags = dict[str, dict[str, float]]  # tagger -> {tag: probability}, as model.describe takes them


@dataclass(frozen=True)
class AnalysisSummary:
    """A track's analysis without the tags over time: enough for a result card."""

    track_id: int
    version: str
    bpm: float | None
    tonic: str | None  # C, C#, ... B
    mode: str | None  # major | minor
    vocals: str | None  # vocal | instrumental | None (not sure)
    auto_genre: str | None
    tags: Tags  # each tagger's tags, most probable first

    @property
    def key(self) -> str | None:
        """"A minor", or None when either half is unknown."""
        return f"{self.tonic} {self.mode}" if self.tonic and self.mode else None

    def top_tags(self, n: int) -> list[tuple[str, str, float]]:
        """The `n` most probable (tagger, tag, probability) over both musicnn taggers: the tags heard over
        time; the instrument head's families reach the page as words of the description."""
        every = [(tagger, tag, p) for tagger, probs in self.tags.items() if tagger != HEAD_TAGGER
                 for tag, p in probs.items()]
        return sorted(every, key=lambda row: -row[2])[:n]


@dataclass(frozen=True)
class TrackAnalysisView(AnalysisSummary):
    """A track's whole analysis: the summary and the tags patch by patch, for the track page."""

    patch_seconds: list[float]  # where each patch starts
    labels: list[tuple[str, str]]  # (tagger, tag) of each column of `probabilities`
    probabilities: np.ndarray  # float32 [patches, labels]; [0, 0] when the stored matrix is missing or unreadable

    def columns_by_mean(self, n: int) -> list[int]:
        """The `n` columns heard most over the whole track (mean over patches), most first."""
        if not self.probabilities.size:
            return []
        return [int(i) for i in np.argsort(-self.probabilities.mean(axis=0), kind="stable")[:n]]


def _over_time(record: dict | None) -> tuple[list[float], list[tuple[str, str]], np.ndarray]:
    """Patch starts, column labels and the [patches, labels] matrix of a stored `analyses` row (read by the
    model's own reader); all empty without a row, or when it does not fit its taggers' labels as this code
    knows them (an unknown or changed tagger)."""
    nothing: tuple[list[float], list[tuple[str, str]], np.ndarray] = ([], [], np.zeros((0, 0), dtype=np.float32))
    if record is None:
        return nothing
    try:
        stored = TrackAnalysis.from_record(record)
    except (KeyError, ValueError):
        return nothing
    matrix = np.concatenate(list(stored.probabilities.values()), axis=1)
    if matrix.shape[0] != len(stored.patch_seconds) or not matrix.size:
        return nothing
    labels = [(tagger, label) for tagger, names in stored.labels.items() for label in names]
    return [float(s) for s in stored.patch_seconds], labels, matrix


def _summaries(conn: Connection, ids: list[int]) -> dict[int, dict]:
    """The analysed tracks among `ids`: their summary columns and tags, as AnalysisSummary fields."""
    rows = conn.execute(select(tracks.c.id, tracks.c.analysis_version, tracks.c.bpm, tracks.c.tonic, tracks.c.mode,
                               tracks.c.vocals, tracks.c.auto_genre)
                        .where(tracks.c.id.in_(ids), tracks.c.analysis_version.is_not(None))).all()
    found = {r.id: dict(track_id=r.id, version=r.analysis_version, bpm=r.bpm, tonic=r.tonic, mode=r.mode,
                        vocals=r.vocals, auto_genre=r.auto_genre, tags={}) for r in rows}
    if found:
        for tid, tagger, tag, p in conn.execute(
                select(auto_tags.c.track_id, auto_tags.c.tagger, auto_tags.c.tag, auto_tags.c.probability)
                .where(auto_tags.c.track_id.in_(list(found)))
                .order_by(auto_tags.c.track_id, auto_tags.c.tagger, auto_tags.c.probability.desc(), auto_tags.c.tag)):
            found[tid]["tags"].setdefault(tagger, {})[tag] = float(p)
    return found


def analysis_summaries(catalog: Catalog, track_ids: Iterable[int]) -> dict[int, AnalysisSummary]:
    """The analyses of a page of tracks in one read, by id; tracks not analysed yet are absent."""
    ids = sorted({int(i) for i in track_ids})
    if not ids:
        return {}
    with catalog.read() as conn:
        return {tid: AnalysisSummary(**fields) for tid, fields in _summaries(conn, ids).items()}


def track_analysis(catalog: Catalog, track_id: int) -> TrackAnalysisView | None:
    """One track's analysis with its tags over time; None when the track is unknown or not analysed yet."""
    with catalog.read() as conn:
        summary = _summaries(conn, [int(track_id)]).get(int(track_id))
        if summary is None:
            return None
        row = conn.execute(select(analyses).where(analyses.c.track_id == int(track_id))).mappings().first()
    numbers = {k: summary[k] for k in ("bpm", "tonic", "mode")}  # from_record wants the whole record
    seconds, labels, matrix = _over_time(None if row is None else {**row, **numbers})
    return TrackAnalysisView(**summary, patch_seconds=seconds, labels=labels, probabilities=matrix)


__all__ = ["AnalysisSummary", "TrackAnalysisView", "analysis_summaries", "track_analysis"]
