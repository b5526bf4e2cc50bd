"""The search engine the UI and the CLI share: natural-language search, more like this, track details.

Each call opens the catalog read-only for one query and closes it (a scan in another process writes
between our queries), except the keyword snapshot (search/fts.py), which no one writes in place and which
answers a search alone, with a copy of the tracks changed since when a scan has moved the catalog on; the
text embedder, the snapshot reader and the FAISS indexes are loaded once, lazily, and reloaded when the
scan rewrites them. What callers pass and get back (filters, hits, result pages) is in search/types.py;
the SQL in search/rank.py.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import torch
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from indexer.keywords import catalog_stamp, last_error
from indexer.store import Catalog, CatalogError, captions, embeddings, errors, scans, tags, tracks
from model.audio import AudioDecodeError
from model.config import Profile, load_profile
from model.encoder import Encoder, track_vector
from model.settings import Settings
from model.textembed import TextEmbedder
from search import rank
from search.ann import VectorIndex
from search.fts import QUERY_THREADS, SnapshotReader, attach_snapshot
from search.query import ParsedQuery, parse_query
from search.types import Filters, Hit, SearchError, SearchResult

MAX_TOP_K = 200
MAX_OFFSET = 10_000
ALLOWED_TABLE = "search_allowed_ids"  # a filtered search's allowed track ids, registered for its ranking SQL
# Runs each search's keyword stage while the searching thread embeds the query (see `_rank`); shared by
# the engines of a process. Four stages at once: one per search in flight (searches on the warm snapshot
# take turns, those on the catalog each have their own connection).
_KEYWORD_STAGES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="search-keywords")


def _hit(row: dict, **extra: object) -> Hit:
    return Hit(track_id=int(row["id"]), **{n: row.get(n) for n in (*rank.HIT_COLUMNS, "caption")}, **extra)


def _duck(conn: Connection) -> duckdb.DuckDBPyConnection:
    """The DuckDB connection under a catalog connection, set up for one search query."""
    db = conn.connection.driver_connection
    db.execute(f"SET threads = {QUERY_THREADS}")
    return db


def _rows(db: duckdb.DuckDBPyConnection, sql: str, params: dict | list | None = None) -> list[dict]:
    cur = db.execute(sql, params or {})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _bound(sql: str, params: dict) -> dict:
    """The parameters a statement names (DuckDB refuses any others)."""
    names = set(re.findall(r"\$(\w+)", sql))
    return {k: v for k, v in params.items() if k in names}


def _run_all(db: duckdb.DuckDBPyConnection, statements: list[str], params: dict) -> None:
    for sql in statements:
        db.execute(sql, _bound(sql, params))


@dataclass(frozen=True)
class _Query:
    """One search, prepared: what the ranking needs whichever store answers it."""

    parsed: ParsedQuery
    stems: list[str]
    runs: list[str]
    semantic: bool  # whether there is a text index to ask
    filters: Filters
    filter_sql: str
    params: dict


def _with_details(db: duckdb.DuckDBPyConnection, rows: list[dict], tracks: str) -> list[dict]:
    """Page rows (ids and scores) completed with each track's display columns and caption from `tracks`
    (the catalog's table or the warm snapshot's), in order."""
    if not rows:
        return []
    details = {d["id"]: d for d in _rows(db, rank.hydrate_sql([r["id"] for r in rows], tracks))}
    return [{**details[r["id"]], **r} for r in rows if r["id"] in details]


class SearchEngine:
    """Search a catalog built by `python -m indexer scan`. Safe to share between threads."""

    def __init__(self, settings: Settings, text_embedder: TextEmbedder | None = None) -> None:
        self.settings = settings
        self.catalog = Catalog(settings.catalog_path)
        self.text_index = VectorIndex(settings.data_dir, "text")
        self.audio_index = VectorIndex(settings.data_dir, "audio")
        self._embedder = text_embedder
        self._reader: SnapshotReader | None = None
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()
        self._facets: tuple[str, dict] | None = None  # (catalog stamp, facets) of the last read

    # -- lazily loaded parts -------------------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        return load_profile(self.settings.profile, self.settings.data_dir)

    def embedder(self) -> TextEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = TextEmbedder(self.profile.text_embedder)
            return self._embedder

    def reader(self) -> SnapshotReader:
        with self._lock:
            if self._reader is None:
                self._reader = SnapshotReader(self.catalog)
            return self._reader

    def encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = Encoder.from_profile(self.profile, device=self.settings.resolved_device())
            return self._encoder

    def follow_catalog(self, interval: float = 1.0) -> None:
        """Copy each scan commit for the warm keyword snapshot in the background (every `interval`
        seconds), for a long-running process such as the UI's: otherwise the first search after each
        commit makes the copy itself (about 0.2 s at a million tracks, docs/benchmarks.md)."""
        self.reader().follow(interval)

    # -- search ----------------------------------------------------------------------------------------
    def search(self, query: str, filters: Filters | None = None, top_k: int = 20, offset: int = 0) -> SearchResult:
        """Hybrid search; never raises for any query text: problems come back in `message`."""
        filters = filters or Filters()
        top_k = max(1, min(int(top_k), MAX_TOP_K))
        offset = max(0, min(int(offset), MAX_OFFSET))
        parsed = parse_query(query)
        notes = list(parsed.notes)
        try:
            filter_sql, params = filters.sql()
        except (TypeError, ValueError) as exc:
            return SearchResult([], 0, f"Invalid filter value: {exc}")
        params.update(limit=top_k, offset=offset)
        if parsed.empty:
            return self._browse(filter_sql, params, notes)
        if not parsed.words:
            return SearchResult([], 0, " ".join([*notes, "The query has no words to search for; describe the "
                                                "music or name an artist, album or title."]))
        try:
            return self._search(parsed, filters, filter_sql, params, notes)
        except (FileNotFoundError, CatalogError) as exc:
            return SearchResult([], 0, str(exc))

    def _browse(self, filter_sql: str, params: dict, notes: list[str]) -> SearchResult:
        reader = self.reader()
        with reader.lock:
            rows = None
            view = reader.current()
            if view is not None:
                rows = _rows(reader.con, rank.browse_sql(filter_sql, view["tracks"]), params)
                rows = _with_details(reader.con, rows, view["tracks"])
        if rows is None:
            try:
                with self.catalog.read() as conn:
                    db = _duck(conn)
                    rows = _with_details(db, _rows(db, rank.browse_sql(filter_sql, "tracks"), params), "tracks")
            except (FileNotFoundError, CatalogError) as exc:
                return SearchResult([], 0, str(exc))
        total = int(rows[0]["total"]) if rows else self._count(filter_sql, params)
        if not total:
            notes.append("No tracks match the filters." if filter_sql else "The library has no indexed tracks yet.")
        else:
            what = "tracks matching the filters" if filter_sql else "the whole library"
            notes.append(f"No query: listing {what} by artist, album and track.")
        hits = [_hit(r, score=0.0, reasons=["listed by artist, album and track"]) for r in rows]
        return SearchResult(hits, total, " ".join(notes))

    def _count(self, filter_sql: str, params: dict) -> int:
        sql = f"SELECT count(*) FROM tracks t WHERE t.status = 'done' {filter_sql}"
        bound = {k: v for k, v in params.items() if k.startswith("f_")}
        with self.catalog.read() as conn:
            return int(_duck(conn).execute(sql, bound).fetchone()[0])

    @staticmethod
    def _allowed(db: duckdb.DuckDBPyConnection, tracks: str, filters: Filters, filter_sql: str,
                 params: dict) -> np.ndarray | None:
        """The ids of the tracks passing the filters (None: no filter)."""
        if not filters.active():
            return None
        bound = {k: v for k, v in params.items() if k.startswith("f_")}
        sql = f"SELECT t.id FROM {tracks} t WHERE t.status = 'done' {filter_sql}"
        return db.execute(sql, bound).fetchnumpy()["id"].astype(np.int64)

    def _search(self, parsed: ParsedQuery, filters: Filters, filter_sql: str, params: dict,
                notes: list[str]) -> SearchResult:
        reader = self.reader()
        if not reader.ok:
            notes.append(reader.error)
        phrase, stems = reader.analyze(parsed.text, parsed.words)
        semantic = self.text_index.available
        if not semantic:
            notes.append("The semantic index has not been built yet (run `python -m indexer scan`); "
                         "showing keyword matches only.")
        params.update(phrase_len=max(1, len(phrase)))
        query = _Query(parsed, stems, rank.word_runs(phrase), semantic, filters, filter_sql, params)
        with reader.lock:  # the warm snapshot answers alone, with the changes since if any (search/fts.py)
            view = reader.current()
            found = None
            if view is not None:
                found = self._rank(reader.con, view, query, view["tracks"])
        if found is None:
            with self.catalog.read() as conn:
                db = _duck(conn)
                snapshot = attach_snapshot(db, self.catalog) if reader.ok else None
                if snapshot is None:
                    notes.append("The keyword index is missing or from an older version (the next "
                                 "`python -m indexer scan` rebuilds it), so keywords are matched as plain text.")
                found = self._rank(db, snapshot, query, "tracks")
        rows, total, terms = found
        hits = self._explain(rows, terms, parsed.words)
        if not total:
            notes.append("No tracks match" + (" these filters and" if filters.active() else "") + " the query.")
        return SearchResult(hits, total, " ".join(notes))

    def _rank(self, db: duckdb.DuckDBPyConnection, snapshot: dict | None, q: _Query,
              tracks: str) -> tuple[list[dict], int, list[str] | None]:
        """Ranked page rows with details, the total, and the index terms matched (None: no snapshot).

        `db` has the snapshot attached as `kw` (when there is one); `tracks` is the catalog's table, or
        the warm snapshot's (`SnapshotReader.current`).
        """
        termids: list[int] | None = None
        terms: list[str] | None = None
        genres: list[tuple[str, bool]] = []
        like_words: list[str] = list(q.parsed.words)
        if snapshot is not None:
            found = db.execute(rank.terms_sql(q.stems)).fetchall()
            if q.runs:
                genres = db.execute(rank.genres_sql(q.runs)).fetchall()
            terms = [term for _, term, _ in found]
            rare = [t for t, _, df in found if df <= rank.COMMON_TERM_SHARE * snapshot["num_docs"]]
            termids = rare or [t for t, _, _ in found]
            if not snapshot["stale"]:
                like_words = []  # the snapshot holds every track: BM25 covers them all
        params = dict(q.params)
        # The filters are evaluated once: their ids restrict the vector search and, as a registered
        # table, the ranking SQL (evaluating them again there cost 15 ms at a million tracks).
        allowed = self._allowed(db, tracks, q.filters, q.filter_sql, params)
        params.update({f"like{i}": f"%{w}%" for i, w in enumerate(like_words)})
        if allowed is not None:
            params = {k: v for k, v in params.items() if not k.startswith("f_")}
        warm = tracks != "tracks"
        shape = dict(filters_sql=q.filter_sql, check_tracks=not warm, tracks=tracks,
                     allowed=None if allowed is None else ALLOWED_TABLE, delta=warm and snapshot["stale"])

        def ranked(head_only: bool, **page: int) -> list[dict]:
            sql = rank.search_sql(termids, len(like_words), q.runs, genres, head_only=head_only, **shape)
            return _rows(db, sql, _bound(sql, {**params, **page}))

        # A tail track can only be boosted by a genre the query names: one of the snapshot's, or any of
        # its word runs for tracks matched by substring.
        genre_chars = max((len(g) for g in (q.runs if like_words else [g for g, _ in genres])), default=0)
        tail_best = rank.max_tail_score(genre_chars, params["phrase_len"])
        if allowed is not None:
            db.register(ALLOWED_TABLE, {"id": allowed})
        try:
            # The keyword stage needs no query vector: on two cores it runs while this thread embeds the
            # query and asks FAISS (both release the GIL); at a million tracks a search took about 0.76
            # of the time it takes with the stage run first (docs/benchmarks.md). Nothing else uses
            # `db` until it is done.
            stage = _KEYWORD_STAGES.submit(_run_all, db, rank.keyword_sql(termids, len(like_words), **shape), params)
            try:
                sem_ids, sem_sims = self._semantic(q, allowed)
            finally:
                stage.result()
            if warm and allowed is None:  # the text index may be a save ahead of or behind the snapshot
                held = self.reader().held(sem_ids, snapshot["stale"])
                sem_ids = [i for i, h in zip(sem_ids, held, strict=True) if h]
                sem_sims = [s for s, h in zip(sem_sims, held, strict=True) if h]
            params.update(sem_ids=sem_ids, sem_sims=sem_sims)
            rows = ranked(head_only=True)
            if not rank.head_page_is_exact(rows, params["limit"], tail_best):
                rows = ranked(head_only=False)
            if rows or not params["offset"]:
                total = int(rows[0]["total"]) if rows else 0
            else:  # a page past the end: the total still comes from the first row
                first = ranked(head_only=True, offset=0, limit=1)
                total = int(first[0]["total"]) if first else 0
        finally:
            if allowed is not None:
                db.unregister(ALLOWED_TABLE)
            for table in (rank.KEYWORD_TABLE, rank.LIKE_TABLE):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        return _with_details(db, rows, tracks), total, terms

    def _semantic(self, q: _Query, allowed: np.ndarray | None) -> tuple[list[int], list[float]]:
        """The captions nearest the query in meaning (ids and cosines), among the allowed tracks."""
        if not q.semantic:
            return [], []
        vec = self.embedder().encode_query(q.parsed.text)
        ids, sims = self.text_index.search(vec, rank.SEMANTIC_DEPTH, allowed)
        keep = sims >= rank.SEMANTIC_MIN_SIMILARITY
        return ids[keep].tolist(), sims[keep].astype(float).tolist()

    def _explain(self, rows: list[dict], terms: list[str] | None, words: tuple[str, ...]) -> list[Hit]:
        """Hits with the words to highlight per field: the index terms matched, as written in each field
        (or, without a keyword snapshot, the query words found as substrings)."""
        names = ("caption", "title", "artist", "album", "genre")
        texts = [str(r.get(n) or "") for r in rows for n in names]
        if terms is not None:
            found = self.reader().surface_matches(texts, terms)
        else:
            found = [[w for w in words if w in t.lower()] for t in texts]
        hits = []
        for i, row in enumerate(rows):
            per_field = {n: found[i * len(names) + j] for j, n in enumerate(names) if found[i * len(names) + j]}
            terms_here = sorted({w for ws in per_field.values() for w in ws})
            hits.append(_hit(row, score=float(row["score"]), semantic=row["semantic"], keyword=row["keyword"],
                             matched_terms=terms_here, matched_fields=per_field,
                             reasons=rank.reasons(row, per_field)))
        return hits

    # -- more like this --------------------------------------------------------------------------------
    def like_track(self, track_id: int, top_k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """Tracks that sound most like a catalog track (audio track vectors), the track itself excluded."""
        with self.catalog.read() as conn:
            row = conn.execute(select(embeddings.c.vector, embeddings.c.encoder_version)
                               .where(embeddings.c.track_id == int(track_id))).first()
        if row is None:
            raise SearchError(f"track {track_id} is not in the catalog or has no audio embedding yet")
        vec = np.frombuffer(row.vector, dtype=np.float32)
        return self._like(vec, row.encoder_version, int(track_id), top_k, filters or Filters(),
                          f"sounds like track {int(track_id)}")

    def like_audio(self, path: str | Path, top_k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """Tracks that sound most like an audio file, which need not be in the library."""
        path = Path(path)
        if not path.is_file():
            raise SearchError(f"no such audio file: {path}")
        encoder = self.encoder()
        try:
            tokens = encoder.encode_file(path, max_seconds=self.settings.max_track_seconds)
        except AudioDecodeError as exc:
            raise SearchError(f"cannot read {path.name} as audio: {exc}") from exc
        if tokens.shape[0] == 0:
            raise SearchError(f"{path.name} is too short to compare")
        return self._like(track_vector(tokens), encoder.version(), -1, top_k, filters or Filters(),
                          f"sounds like {path.name}")

    def _like(self, vec: np.ndarray, encoder_version: str, exclude: int, top_k: int, filters: Filters,
              why: str) -> list[Hit]:
        if not self.audio_index.available:
            raise SearchError("the audio index has not been built yet: run `python -m indexer scan`")
        top_k = max(1, min(int(top_k), MAX_TOP_K))
        filter_sql, params = filters.sql()
        with self.catalog.read() as conn:
            db = _duck(conn)
            allowed = self._allowed(db, "tracks", filters, filter_sql, params)
            ids, sims = self.audio_index.search(vec, top_k + 1, allowed)
            params.update(ids=ids.tolist(), sims=sims.astype(float).tolist(), encoder_version=encoder_version,
                          exclude=exclude, limit=top_k)
            rows = _with_details(db, _rows(db, rank.like_sql(filter_sql), params), "tracks")
        return [_hit(r, score=float(r["audio"]), audio=float(r["audio"]),
                     reasons=[f"{why} (audio similarity {r['audio']:.2f})"]) for r in rows]

    # -- details for the UI ----------------------------------------------------------------------------
    def track(self, track_id: int) -> dict:
        """Every catalog column of a track plus its tags, current caption and stored token shape."""
        with self.catalog.read() as conn:
            row = conn.execute(select(tracks).where(tracks.c.id == int(track_id))).mappings().first()
            if row is None:
                raise SearchError(f"no track with id {track_id}")
            info = dict(row)
            info["tags"] = dict(conn.execute(select(tags.c.key, tags.c.value)
                                             .where(tags.c.track_id == int(track_id))).all())
            info["caption"] = conn.execute(select(captions.c.text).where(
                captions.c.track_id == int(track_id),
                captions.c.pipeline_version == row["pipeline_version"])).scalar()
            emb = conn.execute(select(embeddings.c.n_tokens, embeddings.c.dim, embeddings.c.encoder_version)
                               .where(embeddings.c.track_id == int(track_id))).first()
        info["tokens_shape"] = [emb.n_tokens, emb.dim] if emb else None
        info["embedding_encoder_version"] = emb.encoder_version if emb else None
        return info

    def track_tokens(self, track_id: int) -> torch.Tensor:
        """The stored compressed audio tokens as float32 [n_tokens, dim] (stored as fp16)."""
        with self.catalog.read() as conn:
            row = conn.execute(select(embeddings.c.tokens, embeddings.c.n_tokens, embeddings.c.dim)
                               .where(embeddings.c.track_id == int(track_id))).first()
        if row is None:
            raise SearchError(f"track {track_id} has no stored audio tokens")
        arr = np.frombuffer(row.tokens, dtype=np.float16).reshape(row.n_tokens, row.dim)
        return torch.from_numpy(arr.astype(np.float32))

    def facets(self) -> dict:
        """Values for filter widgets, over the tracks a search can return.

        Kept until the catalog changes: the UI asks on every page render, and at a million tracks the
        distinct values take over half a second (docs/benchmarks.md).
        """
        stamp = catalog_stamp(self.catalog)  # before reading: a write meanwhile gives a new stamp
        with self._lock:
            if self._facets is not None and self._facets[0] == stamp:
                return self._facets[1]
        found = self._read_facets()
        with self._lock:
            self._facets = (stamp, found)
        return found

    def _read_facets(self) -> dict:
        done = tracks.c.status == "done"
        with self.catalog.read() as conn:
            def distinct(col) -> list:
                return [v for (v,) in conn.execute(select(col).where(done, col.is_not(None), col != "")
                                                  .distinct().order_by(func.lower(col)))]
            years = conn.execute(select(func.min(tracks.c.year), func.max(tracks.c.year)).where(done)).one()
            durs = conn.execute(select(func.min(tracks.c.duration), func.max(tracks.c.duration)).where(done)).one()
            return {"artists": distinct(tracks.c.artist), "albums": distinct(tracks.c.album),
                    "genres": distinct(tracks.c.genre), "formats": distinct(tracks.c.format),
                    "roots": distinct(tracks.c.root),
                    "year_range": None if years[0] is None else [int(years[0]), int(years[1])],
                    "duration_range": None if durs[0] is None else [float(durs[0]), float(durs[1])]}

    def stats(self) -> dict:
        """Catalog health for the UI and `--stats`: counts, failures and why, versions, the last scan."""
        with self.catalog.read() as conn:
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
            db = _duck(conn)
            snapshot = attach_snapshot(db, self.catalog)
            if snapshot is not None:  # tracks the snapshot lacks, matched by substring until it is rebuilt
                snapshot["stale_tracks"] = int(db.execute(rank.FRESH_COUNT_SQL).fetchone()[0]) \
                    if snapshot["stale"] else 0
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
            "indexes": {"text": self.text_index.info(), "audio": self.audio_index.info(), "keywords": snapshot,
                        "keywords_error": last_error(self.catalog)},
        }


__all__ = ["SearchEngine"]
