"""The search engine the UI and the CLI share: natural-language search, more like this, track details.

Each call opens the catalog read-only for one query and closes it (a scan in another process writes
between our queries), except the keyword snapshot (search/snapshot.py), which no one writes in place and which
answers a search alone, with a copy of the tracks changed since when a scan has moved the catalog on; the
text embedder, the snapshot reader and the FAISS indexes are loaded once, lazily, and reloaded when the
scan rewrites them. What callers pass and get back (filters, hits, result pages) is in search/types.py;
the SQL in search/rank.py; what the analysis heard (tempo, key, vocals, auto-tags) as boosts and reasons
in search/music.py; the "more like this" blend in search/like.py; facets and stats in search/summary.py.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.engine import Connection

from catalog.keywords import keywords_path
from catalog.store import (
    Catalog,
    CatalogError,
    analyses,
    auto_tags,
    captions,
    embeddings,
    file_stamp,
    tags,
    tracks,
)
from catalog.text import AUTO_TEXT_MIN, tag_text
from catalog.vectors import NAMES, index_path, manifest_path
from model.analysis import Analyzer
from model.audio import AudioDecodeError, decode_audio
from model.config import ModelNotFoundError, Profile, load_profile
from model.encoder import Encoder, track_vector
from model.settings import Settings
from model.textembed import TextEmbedder
from search import like, pages, rank, summary
from search.ann import VectorIndex
from search.music import music_reasons, tag_reasons
from search.query import ParsedQuery, parse_query
from search.snapshot import QUERY_THREADS, SnapshotReader, SnapshotView, attach_snapshot
from search.types import Filters, Hit, SearchError, SearchResult

MAX_TOP_K = 200
MAX_OFFSET = 10_000
ALLOWED_TABLE = "search_allowed_ids"  # a filtered search's allowed track ids, registered for its ranking SQL
# Runs each search's keyword stage while the searching thread embeds the query (see `_rank`); shared by
# the engines of a process. Four stages at once: one per search in flight (searches on the warm snapshot
# take turns, those on the catalog each have their own connection).
_KEYWORD_STAGES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="search-keywords")


def _hit(row: dict, **extra: object) -> Hit:
    return Hit(track_id=int(row["id"]), **{n: row.get(n) for n in (*pages.HIT_COLUMNS, "caption")}, **extra)


def _duck(conn: Connection) -> duckdb.DuckDBPyConnection:
    """The DuckDB connection under a catalog connection, set up for one search query."""
    db = conn.connection.driver_connection
    db.execute(f"SET threads = {QUERY_THREADS}")
    return db


def _rows(db: duckdb.DuckDBPyConnection, sql: str, params: dict | list | None = None) -> list[dict]:
    cur = db.execute(sql, params or {})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def allowed_ids(db: duckdb.DuckDBPyConnection, tracks: str, filters: Filters, filter_sql: str,
                params: dict) -> np.ndarray | None:
    """The ids of the tracks of `tracks` that are done and pass the filters (None: no filter)."""
    if not filters.active():
        return None
    bound = {k: v for k, v in params.items() if k.startswith("f_")}
    sql = f"SELECT t.id FROM {tracks} t WHERE t.status = 'done' {filter_sql}"
    return db.execute(sql, bound).fetchnumpy()["id"].astype(np.int64)


@dataclass(frozen=True)
class PreparedQuery:
    """One search, prepared (`SearchEngine.prepare`): what the ranking needs whichever store answers it."""

    parsed: ParsedQuery
    stems: list[str]
    runs: list[str]
    semantic: bool  # whether there is a text index to ask
    filters: Filters
    filter_sql: str
    params: dict


@dataclass(frozen=True)
class Plan:
    """A prepared query on the connection that answers it (`SearchEngine.plan`): the ranking's shape, its
    parameters (the semantic list's not yet), the allowed ids registered as ALLOWED_TABLE while it runs
    (None: no filter), the index terms matched (None: no snapshot) and the words matched by substring."""

    ranking: rank.Ranking
    params: dict
    allowed: np.ndarray | None
    terms: list[str] | None
    like_words: list[str]


def _with_details(db: duckdb.DuckDBPyConnection, rows: list[dict], tracks: str,
                  with_tags: bool = False) -> list[dict]:
    """Page rows (ids and scores) completed with each track's display columns and caption from `tracks`
    (the catalog's table or the warm snapshot's), in order; `with_tags`: and its `auto_tags` (tagger, tag,
    probability), likeliest first, read alike."""
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    details = {d["id"]: d for d in _rows(db, pages.hydrate_sql(ids, tracks))}
    heard: dict[int, list[tuple]] = {i: [] for i in ids}
    for t in _rows(db, pages.page_tags_sql(ids, tracks)) if with_tags else ():
        heard[t["track_id"]].append((t["tagger"], t["tag"], t["probability"]))
    return [{**details[r["id"]], **r, "auto_tags": heard[r["id"]]} for r in rows if r["id"] in details]


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
        self._analyzer: Analyzer | None = None  # the musicnn taggers, for "more like" a file
        self._facets: tuple[tuple[str, Filters], dict] | None = None  # (catalog stamp, filters), facets

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

    def stamp(self) -> str:
        """Changes whenever what a search reads changes: the catalog (`Catalog.stamp`), its keyword
        snapshot, the FAISS indexes. A cached answer keyed on it never outlives a scan's changes."""
        derived = [keywords_path(self.catalog)]
        for name in NAMES:
            derived += [index_path(self.settings.data_dir, name), manifest_path(self.settings.data_dir, name)]
        return json.dumps([self.catalog.stamp(), file_stamp(*derived)])

    def follow_catalog(self, interval: float = 1.0) -> None:
        """Copy each scan commit for the warm keyword snapshot in the background (every `interval`
        seconds), for a long-running process such as the UI's: otherwise the first search after each
        commit makes the copy itself (docs/benchmarks.md, "Why the search path is built this way")."""
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
                rows = _rows(reader.con, pages.browse_sql(filter_sql, view.tracks), params)
                rows = _with_details(reader.con, rows, view.tracks)
        if rows is None:
            try:
                with self.catalog.read() as conn:
                    db = _duck(conn)
                    rows = _with_details(db, _rows(db, pages.browse_sql(filter_sql, "tracks"), params), "tracks")
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

    def prepare(self, parsed: ParsedQuery, filters: Filters, filter_sql: str, params: dict,
                notes: list[str] | None = None) -> PreparedQuery:
        """A parsed query with what every store needs to rank it: its index terms and word runs, whether
        there is a text index to ask; `params` holds the filters' and the page's. Why a part is missing
        goes to `notes`."""
        notes = [] if notes is None else notes
        reader = self.reader()
        if not reader.ok:
            notes.append(reader.error)
        phrase, stems = reader.analyze(parsed.text, parsed.words)
        semantic = self.text_index.available
        if not semantic:
            notes.append("The semantic index has not been built yet (run `python -m indexer scan`); "
                         "showing keyword matches only.")
        return PreparedQuery(parsed, stems, rank.word_runs(phrase), semantic, filters, filter_sql,
                             {**params, "phrase_len": max(1, len(phrase))})

    def _search(self, parsed: ParsedQuery, filters: Filters, filter_sql: str, params: dict,
                notes: list[str]) -> SearchResult:
        query = self.prepare(parsed, filters, filter_sql, params, notes)
        reader = self.reader()
        with reader.lock:  # the warm snapshot answers alone, with the changes since if any (search/snapshot.py)
            view = reader.current()
            found = self._rank(reader.con, view, query) if view is not None else None
        if found is None:
            with self.catalog.read() as conn:
                db = _duck(conn)
                view = attach_snapshot(db, self.catalog) if reader.ok else None
                if view is None:
                    notes.append("The keyword index is missing or from an older version (the next "
                                 "`python -m indexer scan` rebuilds it), so keywords are matched as plain text.")
                found = self._rank(db, view, query)
        rows, total, terms, by_substring = found
        hits = self._explain(rows, terms, parsed.words, by_substring)
        if not total:
            notes.append("No tracks match" + (" these filters and" if filters.active() else "") + " the query.")
        return SearchResult(hits, total, " ".join(notes))

    def plan(self, db: duckdb.DuckDBPyConnection, view: SnapshotView | None, q: PreparedQuery) -> Plan:
        """How `db` ranks `q`: with the snapshot `view` (the reader's own connection or a catalog
        connection with it attached), or without a snapshot (None: every track matched by substring)."""
        tracks = view.tracks if view is not None else "tracks"
        termids: list[int] | None = None
        terms: list[str] | None = None
        genres: list[tuple[str, bool]] = []
        like_words: list[str] = list(q.parsed.words)
        if view is not None:
            found = db.execute(rank.terms_sql(q.stems)).fetchall()
            if q.runs:
                genres = db.execute(rank.genres_sql(q.runs)).fetchall()
            terms = [term for _, term, _ in found]
            rare = [t for t, _, df in found if df <= rank.COMMON_TERM_SHARE * view.num_docs]
            termids = rare or [t for t, _, _ in found]
            if not view.changed:
                like_words = []  # the snapshot holds every track: BM25 covers them all
        params = dict(q.params)
        # The filters are evaluated once: their ids restrict the vector search and, as a registered
        # table, the ranking SQL (evaluating them again there cost as much again; docs/benchmarks.md,
        # "Why the search path is built this way").
        allowed = allowed_ids(db, tracks, q.filters, q.filter_sql, params)
        params.update({f"like{i}": f"%{w}%" for i, w in enumerate(like_words)})
        if allowed is not None:
            params = {k: v for k, v in params.items() if not k.startswith("f_")}
        private = view is not None and view.private
        ranking = rank.Ranking(termids, len(like_words), q.runs, genres, filters_sql=q.filter_sql, tracks=tracks,
                               check_tracks=not private, allowed=None if allowed is None else ALLOWED_TABLE,
                               copied=view is not None and view.copied, music=q.parsed.music)
        return Plan(ranking, params, allowed, terms, like_words)

    def _rank(self, db: duckdb.DuckDBPyConnection, view: SnapshotView | None,
              q: PreparedQuery) -> tuple[list[dict], int, list[str] | None, bool]:
        """Ranked page rows with details, the total, the index terms matched (None: no snapshot), and
        whether tracks the snapshot lacks were matched by substring."""
        plan = self.plan(db, view, q)
        ranking, params = plan.ranking, plan.params

        def ranked(head_only: bool, **page: int) -> list[dict]:
            sql = ranking.search_sql(head_only=head_only)
            return _rows(db, sql, rank.bind(sql, {**params, **page}))

        # A tail track can only be boosted by a genre the query names (one of the snapshot's, or any of
        # its word runs for tracks matched by substring) and by the tempo, key and vocals it asks for.
        genre_chars = max((len(g) for g in (q.runs if plan.like_words else [g for g, _ in ranking.genres])),
                          default=0)
        tail_best = rank.max_tail_score(genre_chars, params["phrase_len"], q.parsed.music.best_boost())
        if plan.allowed is not None:
            db.register(ALLOWED_TABLE, {"id": plan.allowed})
        try:
            # The keyword stage needs no query vector: on two cores it runs while this thread embeds the
            # query and asks FAISS (both release the GIL), which makes a search faster than with the stage
            # run first (docs/benchmarks.md, "Why the search path is built this way"). Nothing else uses
            # `db` until it is done.
            stage = _KEYWORD_STAGES.submit(rank.run_statements, db, ranking.keyword_sql(), params)
            try:
                sem_ids, sem_sims = self.semantic(q, plan.allowed)
            finally:
                stage.result()
            if view is not None and view.private and plan.allowed is None:
                # the text index may be a save ahead of or behind the snapshot
                held = self.reader().held(sem_ids, view.changed)
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
            if plan.allowed is not None:
                db.unregister(ALLOWED_TABLE)
            for table in (rank.KEYWORD_TABLE, rank.LIKE_TABLE):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        return _with_details(db, rows, ranking.tracks, with_tags=True), total, plan.terms, \
            bool(plan.like_words)

    def semantic(self, q: PreparedQuery, allowed: np.ndarray | None) -> tuple[list[int], list[float]]:
        """The captions nearest the query in meaning (ids and cosines), among the allowed tracks."""
        if not q.semantic:
            return [], []
        vec = self.embedder().encode_query(q.parsed.text)
        ids, sims = self.text_index.search(vec, rank.SEMANTIC_DEPTH, allowed)
        keep = sims >= rank.SEMANTIC_MIN_SIMILARITY
        return ids[keep].tolist(), sims[keep].astype(float).tolist()

    def _explain(self, rows: list[dict], terms: list[str] | None, words: tuple[str, ...],
                 by_substring: bool) -> list[Hit]:
        """Hits with the words to highlight per field: the index terms matched, as written in each field
        (or, without a keyword snapshot, the query words found as substrings); and the auto-tags matched
        (`_tag_words`): their words highlighted as the field `auto_tags`, the tags named in the reasons."""
        names = ("caption", "title", "artist", "album", "genre")
        texts = [str(r.get(n) or "") for r in rows for n in names]
        if terms is not None:
            found = self.reader().surface_matches(texts, terms)
        else:
            found = [[w for w in words if w in t.lower()] for t in texts]
        hits = []
        for i, (row, tag_words) in enumerate(zip(rows, self._tag_words(rows, terms, words, by_substring),
                                                 strict=True)):
            per_field = {n: found[i * len(names) + j] for j, n in enumerate(names) if found[i * len(names) + j]}
            heard = music_reasons(row) + tag_reasons(row["auto_tags"], tag_words)
            matched = {**per_field, "auto_tags": sorted({w for ws in tag_words for w in ws})}
            matched = {n: ws for n, ws in matched.items() if ws}
            hits.append(_hit(row, score=float(row["score"]), semantic=row["semantic"], keyword=row["keyword"],
                             matched_terms=sorted({w for ws in matched.values() for w in ws}),
                             matched_fields=matched, reasons=rank.reasons(row, per_field, heard)))
        return hits

    def _tag_words(self, rows: list[dict], terms: list[str] | None, words: tuple[str, ...],
                   by_substring: bool) -> list[list[list[str]]]:
        """Per row, per auto-tag: the words of its text (`tag_text`) that matched, as the search matched
        them: the index terms, and where tracks were matched by substring, the query words in the texts
        of the tags substring matching reads (heard with at least AUTO_TEXT_MIN)."""
        tags = [(tag_text(tagger, tag), p) for r in rows for tagger, tag, p in r["auto_tags"]]
        stems = self.reader().surface_matches([t for t, _ in tags], terms) if terms else [[] for _ in tags]
        if by_substring or terms is None:
            stems = [sorted({*ws, *(w for w in words if p >= AUTO_TEXT_MIN and w in t.lower())})
                     for ws, (t, p) in zip(stems, tags, strict=True)]
        found = iter(stems)
        return [[next(found) for _ in r["auto_tags"]] for r in rows]

    # -- more like this --------------------------------------------------------------------------------
    def like_track(self, track_id: int, top_k: int = 10, filters: Filters | None = None,
                   musicnn_weight: float | None = None) -> list[Hit]:
        """Tracks that sound most like a catalog track (track vectors blended with musicnn embeddings,
        the latter's share of the score `musicnn_weight`, like.MUSICNN_WEIGHT when None: search/like.py),
        the track itself excluded."""
        with self.catalog.read() as conn:
            row = conn.execute(select(embeddings.c.vector, embeddings.c.encoder_version)
                               .where(embeddings.c.track_id == int(track_id))).first()
            heard = conn.execute(select(analyses.c.embedding, analyses.c.analysis_version)
                                 .where(analyses.c.track_id == int(track_id))).first()
        if row is None:
            raise SearchError(f"track {track_id} is not in the catalog or has no audio embedding yet")
        vec = np.frombuffer(row.vector, dtype=np.float32)
        musicnn = (like.unit(heard.embedding), heard.analysis_version) if heard else None
        return self._like(vec, row.encoder_version, musicnn, int(track_id), top_k, filters or Filters(),
                          f"sounds like track {int(track_id)}", musicnn_weight)

    def like_audio(self, path: str | Path, top_k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """Tracks that sound most like an audio file, which need not be in the library."""
        path = Path(path)
        if not path.is_file():
            raise SearchError(f"no such audio file: {path}")
        encoder = self.encoder()
        try:
            tokens = encoder.encode_file(path, max_seconds=self.settings.max_track_seconds)
            musicnn = self._musicnn(path)
        except AudioDecodeError as exc:
            raise SearchError(f"cannot read {path.name} as audio: {exc}") from exc
        if tokens.shape[0] == 0:
            raise SearchError(f"{path.name} is too short to compare")
        return self._like(track_vector(tokens), encoder.version(), musicnn, -1, top_k, filters or Filters(),
                          f"sounds like {path.name}")

    def _musicnn(self, path: Path) -> tuple[np.ndarray | None, str] | None:
        """A file's musicnn embedding and analysis version, as the scan stores a track's; None where the
        taggers cannot be loaded (the `musicnn` package missing): the tracks are then compared as before."""
        with self._lock:
            if self._analyzer is None:
                try:
                    self._analyzer = Analyzer(self.settings.models_dir, self.settings.resolved_device())
                except ModelNotFoundError:
                    return None
            analyzer = self._analyzer
        wave = decode_audio(path, analyzer.sample_rate, self.settings.max_track_seconds)
        analysis = analyzer.analyze([wave])[0]
        return like.unit(analysis.embedding), analysis.version

    def _like(self, vec: np.ndarray, encoder_version: str, musicnn: tuple[np.ndarray | None, str] | None,
              exclude: int, top_k: int, filters: Filters, why: str,
              weight: float | None = None) -> list[Hit]:
        """The audio index's nearest tracks passing the filters (of the same encoder version), re-ranked
        with the musicnn embedding `musicnn` (vector, analysis version) when there is one."""
        if not self.audio_index.available:
            raise SearchError("the audio index has not been built yet: run `python -m indexer scan`")
        top_k = max(1, min(int(top_k), MAX_TOP_K))
        query, version = musicnn if musicnn else (None, "")
        depth = max(top_k, like.LIKE_DEPTH) if query is not None else top_k
        filter_sql, params = filters.sql()
        with self.catalog.read() as conn:
            db = _duck(conn)
            allowed = allowed_ids(db, "tracks", filters, filter_sql, params)
            ids, sims = self.audio_index.search(vec, depth + 1, allowed)
            params.update(ids=ids.tolist(), sims=sims.astype(float).tolist(), encoder_version=encoder_version,
                          exclude=exclude, limit=depth)
            rows = _rows(db, like.like_sql(filter_sql), params)
            vectors = like.musicnn_vectors(db, [r["id"] for r in rows], version) if query is not None else {}
            rows = _with_details(db, like.blend(rows, query, vectors, weight)[:top_k], "tracks")
        return [_hit(r, score=r["score"], audio=float(r["audio"]), reasons=[like.reason(why, r)])
                for r in rows]

    # -- details for the UI ----------------------------------------------------------------------------
    def track(self, track_id: int) -> dict:
        """Every catalog column of a track (the analysis's too) plus its tags, current caption, auto-tags
        (likeliest first) and stored token shape."""
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
            info["auto_tags"] = [dict(r) for r in conn.execute(
                select(auto_tags.c.tagger, auto_tags.c.tag, auto_tags.c.probability)
                .where(auto_tags.c.track_id == int(track_id))
                .order_by(auto_tags.c.probability.desc(), auto_tags.c.tagger, auto_tags.c.tag)).mappings()]
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

    def facets(self, filters: Filters | None = None) -> dict:
        """Values for filter widgets, over the tracks a search can return, and the tracks per value of
        the analysis columns under `filters` (search/summary.py).

        Kept until the catalog changes or other filters are asked for: the UI asks on every page render,
        and at a million tracks the distinct values take longer than a search (docs/benchmarks.md,
        "Search latency at catalog size").
        """
        key = (self.catalog.stamp(), filters or Filters())  # before reading: a write gives a new stamp
        with self._lock:
            if self._facets is not None and self._facets[0] == key:
                return self._facets[1]
        found = self._read_facets(key[1])
        with self._lock:
            self._facets = (key, found)
        return found

    def _read_facets(self, filters: Filters | None = None) -> dict:
        """`facets`, read from the catalog every time."""
        with self.catalog.read() as conn:
            return summary.facets(conn, _duck(conn), filters or Filters())

    def stats(self) -> dict:
        """Catalog health for the UI and `--stats`: counts, failures and why, versions, the last scan."""
        with self.catalog.read() as conn:
            found = summary.stats(conn, _duck(conn), self.catalog)
        found["indexes"] = {"text": self.text_index.info(), "audio": self.audio_index.info(),
                            **found["indexes"]}
        return found


__all__ = ["SearchEngine"]
