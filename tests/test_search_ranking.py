"""The ranking SQL's forms against each other on the search tests' library (tests/search_library.py):
filters as registered ids or evaluated in SQL, the head-only page against the full ranking, and searches
from many threads against one at a time. Each side runs both statements as the engine does.
"""

from __future__ import annotations

import datetime as dt

import pytest

from indexer.store import Catalog
from search import Filters
from search.query import parse_query
from tests.search_library import (
    FILTER_CASES,
    make_engine,
    track_row,
    write_tracks,
)


def _ranking_inputs(engine, db, snapshot: dict | None, tracks: str, query: str, filters: Filters,
                    analyzed: tuple[str, list[str]]) -> tuple:
    """What the engine passes the ranking SQL for a query, computed the way it does: (arguments of
    `rank.search_sql` before `filters_sql`, the filters' SQL, parameters, allowed ids)."""
    from search import rank

    parsed = parse_query(query)
    phrase, stems = analyzed
    filter_sql, params = filters.sql()
    termids = None
    if snapshot is not None:  # the rarer terms if any, as the engine takes them
        found = db.execute(rank.terms_sql(stems)).fetchall()
        termids = [t for t, _, df in found if df <= rank.COMMON_TERM_SHARE * snapshot["num_docs"]] or \
            [t for t, _, _ in found]
    runs = rank.word_runs(phrase)
    genres = db.execute(rank.genres_sql(runs)).fetchall() if snapshot is not None and runs else []
    n_like = 0 if snapshot is not None else len(parsed.words)
    allowed = engine._allowed(db, tracks, filters, filter_sql, params)
    ids, sims = engine.text_index.search(engine.embedder().encode([parsed.text])[0], rank.SEMANTIC_DEPTH, allowed)
    keep = sims >= rank.SEMANTIC_MIN_SIMILARITY
    ids, sims = ids[keep], sims[keep]
    params.update(sem_ids=ids.tolist(), sem_sims=sims.astype(float).tolist(), phrase_len=max(1, len(phrase)),
                  limit=200, offset=0, **{f"like{i}": f"%{w}%" for i, w in enumerate(parsed.words[:n_like])})
    return (termids, n_like, runs, genres), filter_sql, params, allowed


def _ranked(db, args: tuple, filter_sql: str, check_tracks: bool, tracks: str, allowed: str | None, params: dict,
            head_only: bool = False) -> list[dict]:
    """Both statements of a search as the engine runs them (its keyword stage, then its ranking): page rows."""
    from search import rank
    from search.engine import _bound, _run_all

    termids, n_like, _, _ = args
    _run_all(db, rank.keyword_sql(termids, n_like, filter_sql, check_tracks, tracks, allowed), params)
    sql = rank.search_sql(*args, filter_sql, check_tracks, tracks, allowed, head_only=head_only)
    cur = db.execute(sql, _bound(sql, params))
    return [dict(zip([d[0] for d in cur.description], r, strict=True)) for r in cur.fetchall()]


def _pages_both_ways(engine, db, snapshot: dict | None, tracks: str, query: str, filters: Filters,
                     analyzed: tuple[str, list[str]]) -> tuple:
    """A filtered query's ranking SQL restricted by the registered allowed ids (as the engine runs it) and
    by the filters evaluated in the SQL itself (as it ran before), on the same inputs: every page row."""
    from search.engine import ALLOWED_TABLE

    args, filter_sql, params, allowed = _ranking_inputs(engine, db, snapshot, tracks, query, filters, analyzed)
    before = _ranked(db, args, filter_sql, True, tracks, None, params)
    db.register(ALLOWED_TABLE, {"id": allowed})
    try:
        now = _ranked(db, args, filter_sql, tracks == "tracks", tracks, ALLOWED_TABLE,
                      {k: v for k, v in params.items() if not k.startswith("f_")})
    finally:
        db.unregister(ALLOWED_TABLE)
    return before, now


@pytest.mark.parametrize("warm", [True, False], ids=["snapshot", "catalog"])
def test_filtered_ranking_by_allowed_ids_equals_filtering_in_sql(engine, warm) -> None:
    """The filters are evaluated once per search: their ids restrict FAISS and, as a registered table, the
    ranking SQL. Pages equal those of the SQL evaluating the filters itself, warm and on the catalog."""
    from search.fts import attach_snapshot

    queries = ["calm piano", "energetic rock with a backbeat", "slow sad strings", "aurora fields", "jazz"]
    active = [f for f in FILTER_CASES if f.active()]
    reader = engine.reader()
    analyzed = {q: reader.analyze(parse_query(q).text, parse_query(q).words) for q in queries}
    compared = 0
    if warm:
        with reader.lock:
            meta = reader.current()
            assert meta is not None
            for query in queries:
                for filters in active:
                    before, now = _pages_both_ways(engine, reader.con, meta, "kw.kw_tracks", query, filters,
                                                   analyzed[query])
                    assert now == before, (query, filters)
                    compared += len(now)
    else:
        with engine.catalog.read() as conn:
            db = conn.connection.driver_connection
            for snapshot in (None, attach_snapshot(db, engine.catalog)):
                for query in queries:
                    for filters in active:
                        before, now = _pages_both_ways(engine, db, snapshot, "tracks", query, filters, analyzed[query])
                        assert now == before, (query, filters, snapshot is None)
                        compared += len(now)
    assert compared > 100


@pytest.mark.parametrize("warm", [True, False], ids=["snapshot", "catalog"])
def test_head_only_pages_equal_the_full_ranking_whenever_taken(engine, monkeypatch, warm) -> None:
    """The engine first ranks only the head (the best keyword matches, the semantic list, named tracks) and
    counts the tail; it keeps that page when `head_page_is_exact` says no tail track could be on it. With
    the keyword depth cut to 3 so this 48-track library has a tail: every page so kept equals the full
    ranking's, totals agree, both decisions occur, and the engine's pages are the full ranking's."""
    from search import rank
    from search.engine import ALLOWED_TABLE
    from search.fts import attach_snapshot

    monkeypatch.setattr(rank, "KEYWORD_DEPTH", 3)
    queries = ["calm piano", "slow sad strings", "jazz piano", "energetic rock with a backbeat", "aurora fields"]
    filter_cases = [Filters(), Filters(genre="Jazz"), Filters(min_duration=100, max_duration=250)]
    pages = [(0, 5), (0, 20), (5, 5), (12, 7), (40, 10)]
    reader = engine.reader()
    analyzed = {q: reader.analyze(parse_query(q).text, parse_query(q).words) for q in queries}
    kept, redone = 0, 0
    expected: dict[tuple, list[int]] = {}  # (query, offset, limit) -> the full ranking's page, unfiltered

    def compare(db, snapshot, tracks: str) -> None:
        nonlocal kept, redone
        for query in queries:
            for filters in filter_cases:
                args, filter_sql, params, allowed = _ranking_inputs(engine, db, snapshot, tracks, query, filters,
                                                                     analyzed[query])
                termids, n_like, runs, genres = args
                if allowed is not None:
                    params = {k: v for k, v in params.items() if not k.startswith("f_")}
                    db.register(ALLOWED_TABLE, {"id": allowed})
                table = None if allowed is None else ALLOWED_TABLE
                best = rank.max_tail_score(max(map(len, runs if n_like else [g for g, _ in genres]), default=0),
                                           params["phrase_len"])
                try:
                    for offset, limit in pages:
                        page = {**params, "offset": offset, "limit": limit}
                        full, head = (_ranked(db, args, filter_sql, tracks == "tracks", tracks, table, page, h)
                                      for h in (False, True))
                        if full and head:
                            assert head[0]["total"] == full[0]["total"], (query, filters, offset)
                        if rank.head_page_is_exact(head, limit, best):
                            strip = [{k: v for k, v in r.items() if k != "tail"} for r in head]
                            assert strip == [{k: v for k, v in r.items() if k != "tail"} for r in full], \
                                (query, filters, offset)
                            kept += 1
                        else:
                            redone += 1
                        if not filters.active():
                            expected[query, offset, limit] = [r["id"] for r in full]
                finally:
                    if allowed is not None:
                        db.unregister(ALLOWED_TABLE)

    if warm:
        with reader.lock:
            meta = reader.current()
            assert meta is not None
            compare(reader.con, meta, "kw.kw_tracks")
        for (query, offset, limit), ids in expected.items():
            assert [h.track_id for h in engine.search(query, top_k=limit, offset=offset).hits] == ids, (query, offset)
    else:
        with engine.catalog.read() as conn:
            db = conn.connection.driver_connection
            for snapshot in (None, attach_snapshot(db, engine.catalog)):
                compare(db, snapshot, "tracks")
    assert kept > 20 and redone > 5, (kept, redone)


@pytest.mark.parametrize("warm", [True, False], ids=["snapshot", "catalog"])
def test_searches_from_many_threads_answer_as_one_at_a_time(scratch, text_embedder, warm) -> None:
    """Each search runs its keyword stage in a worker thread while it embeds the query; eight threads
    searching one engine at once (on the warm snapshot, or each on its own catalog connection, with
    tracks newer than the snapshot matched by substring) get exactly the answers of one search at a time.
    (Catalog connections of one process share a DuckDB instance, so they also share the snapshot's
    attachment: before that was handled, concurrent searches fell back to plain-text matching.)"""
    from concurrent.futures import ThreadPoolExecutor

    catalog = Catalog(scratch / "catalog.duckdb")
    if not warm:
        row = {**track_row(98), "title": "Quartz Lantern", "indexed_at": dt.datetime(2025, 1, 1)}
        text = "A quiet piano piece with a lantern glow."
        write_tracks(catalog, [row], [text], text_embedder.encode([text]))
    engine = make_engine(scratch, text_embedder)
    requests = [(q, f, offset) for q in ("calm piano", "slow sad strings", "jazz", "quartz lantern", "Aurora Fields")
                for f in (Filters(), Filters(genre="Jazz"), Filters(min_duration=100)) for offset in (0, 3)]

    def answer(request: tuple) -> tuple:
        query, filters, offset = request
        result = engine.search(query, filters=filters, top_k=6, offset=offset)
        return result.total, result.message, [(h.track_id, h.score, tuple(h.reasons)) for h in result.hits]

    one_at_a_time = [answer(r) for r in requests]
    assert sum(bool(hits) for _, _, hits in one_at_a_time) > len(requests) // 2
    assert not any("keyword index is missing" in message for _, message, _ in one_at_a_time)
    if not warm:  # the track newer than the snapshot, matched by substring
        assert engine.search("quartz lantern").hits[0].title == "Quartz Lantern"
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(2):
            assert list(pool.map(answer, requests)) == one_at_a_time
    with engine.reader().lock:
        assert (engine.reader().current() is not None) == warm
