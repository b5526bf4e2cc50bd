"""The ranking SQL's forms against each other on the search tests' library (tests/search_library.py):
filters as registered ids or evaluated in SQL, the head-only page against the full ranking, and searches
from many threads against one at a time. Each side runs both statements as the engine does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import delete, update

from catalog.store import Catalog, bump_generation, captions, tags, tracks
from search import Filters, rank
from search.engine import ALLOWED_TABLE, Plan, PreparedQuery
from search.query import parse_query
from search.snapshot import SnapshotView, attach_snapshot
from tests.search_library import (
    ANALYSIS,
    FILTER_CASES,
    make_engine,
    musicnn_embedding,
    save_text_index,
    track_row,
    write_analysis,
    write_tracks,
)


def _prepare(engine, query: str, filters: Filters, limit: int = 200) -> PreparedQuery:
    """A query prepared as the engine's search prepares it (outside the reader's lock: it takes it)."""
    filter_sql, params = filters.sql()
    return engine.prepare(parse_query(query), filters, filter_sql, {**params, "limit": limit, "offset": 0})


def _plan(engine, db, view: SnapshotView | None, q: PreparedQuery) -> tuple[Plan, dict]:
    """The engine's plan for `q` on `db`, and its parameters with the semantic list the engine adds."""
    plan = engine.plan(db, view, q)
    sem_ids, sem_sims = engine.semantic(q, plan.allowed)
    return plan, {**plan.params, "sem_ids": sem_ids, "sem_sims": sem_sims}


def _ranked(db, ranking: rank.Ranking, params: dict, head_only: bool = False) -> list[dict]:
    """Both statements of a search as the engine runs them (its keyword stage, then its ranking): page rows."""
    rank.run_statements(db, ranking.keyword_sql(), params)
    sql = ranking.search_sql(head_only=head_only)
    cur = db.execute(sql, rank.bind(sql, params))
    return [dict(zip([d[0] for d in cur.description], r, strict=True)) for r in cur.fetchall()]


def _pages_both_ways(engine, db, view: SnapshotView | None, q: PreparedQuery) -> tuple:
    """A filtered query's ranking SQL restricted by the registered allowed ids (as the engine runs it) and
    by the filters evaluated in the SQL itself, on the same inputs: every page row."""
    plan, params = _plan(engine, db, view, q)
    in_sql = replace(plan.ranking, allowed=None, check_tracks=True)
    before = _ranked(db, in_sql, {**q.params, **params})
    db.register(ALLOWED_TABLE, {"id": plan.allowed})
    try:
        now = _ranked(db, plan.ranking, params)
    finally:
        db.unregister(ALLOWED_TABLE)
    return before, now


@pytest.mark.parametrize("warm", [True, False], ids=["snapshot", "catalog"])
def test_filtered_ranking_by_allowed_ids_equals_filtering_in_sql(engine, warm) -> None:
    """The filters are evaluated once per search: their ids restrict FAISS and, as a registered table, the
    ranking SQL. Pages equal those of the SQL evaluating the filters itself, warm and on the catalog."""
    from search.snapshot import attach_snapshot

    queries = ["calm piano", "energetic rock with a backbeat", "slow sad strings", "aurora fields", "jazz"]
    prepared = [_prepare(engine, q, f) for q in queries for f in FILTER_CASES if f.active()]
    reader = engine.reader()
    compared = 0
    if warm:
        with reader.lock:
            view = reader.current()
            assert view is not None and view.private
            for q in prepared:
                before, now = _pages_both_ways(engine, reader.con, view, q)
                assert now == before, (q.parsed.text, q.filters)
                compared += len(now)
    else:
        with engine.catalog.read() as conn:
            db = conn.connection.driver_connection
            for view in (None, attach_snapshot(db, engine.catalog)):
                for q in prepared:
                    before, now = _pages_both_ways(engine, db, view, q)
                    assert now == before, (q.parsed.text, q.filters, view is None)
                    compared += len(now)
    assert compared > 100


@pytest.mark.parametrize("warm", [True, False], ids=["snapshot", "catalog"])
def test_head_only_pages_equal_the_full_ranking_whenever_taken(engine, monkeypatch, warm) -> None:
    """The engine first ranks only the head (the best keyword matches, the semantic list, named tracks) and
    counts the tail; it keeps that page when `head_page_is_exact` says no tail track could be on it. With
    the keyword depth cut to 3 so this 48-track library has a tail: every page so kept equals the full
    ranking's, totals agree, both decisions occur, and the engine's pages are the full ranking's."""
    monkeypatch.setattr(rank, "KEYWORD_DEPTH", 3)
    queries = ["calm piano", "slow sad strings", "jazz piano", "energetic rock with a backbeat", "aurora fields"]
    filter_cases = [Filters(), Filters(genre="Jazz"), Filters(min_duration=100, max_duration=250)]
    pages = [(0, 5), (0, 20), (5, 5), (12, 7), (40, 10)]
    reader = engine.reader()
    prepared = [(query, _prepare(engine, query, f)) for query in queries for f in filter_cases]
    kept, redone = 0, 0
    expected: dict[tuple, list[int]] = {}  # (query, offset, limit) -> the full ranking's page, unfiltered

    def compare(db, view: SnapshotView | None) -> None:
        nonlocal kept, redone
        for query, q in prepared:
            plan, params = _plan(engine, db, view, q)
            ranking = plan.ranking
            if plan.allowed is not None:
                db.register(ALLOWED_TABLE, {"id": plan.allowed})
            best = rank.max_tail_score(
                max(map(len, ranking.runs if ranking.n_like else [g for g, _ in ranking.genres]), default=0),
                params["phrase_len"], q.parsed.music.best_boost())
            try:
                for offset, limit in pages:
                    page = {**params, "offset": offset, "limit": limit}
                    full, head = (_ranked(db, ranking, page, h) for h in (False, True))
                    if full and head:
                        assert head[0]["total"] == full[0]["total"], (query, q.filters, offset)
                    if rank.head_page_is_exact(head, limit, best):
                        strip = [{k: v for k, v in r.items() if k != "tail"} for r in head]
                        assert strip == [{k: v for k, v in r.items() if k != "tail"} for r in full], \
                            (query, q.filters, offset)
                        kept += 1
                    else:
                        redone += 1
                    if not q.filters.active():
                        expected[query, offset, limit] = [r["id"] for r in full]
            finally:
                if plan.allowed is not None:
                    db.unregister(ALLOWED_TABLE)

    if warm:
        with reader.lock:
            view = reader.current()
            assert view is not None and view.private
            compare(reader.con, view)
        for (query, offset, limit), ids in expected.items():
            assert [h.track_id for h in engine.search(query, top_k=limit, offset=offset).hits] == ids, (query, offset)
    else:
        with engine.catalog.read() as conn:
            db = conn.connection.driver_connection
            for view in (None, attach_snapshot(db, engine.catalog)):
                compare(db, view)
    assert kept > 20 and redone > 5, (kept, redone)


@pytest.mark.parametrize("path", ["snapshot", "delta", "catalog"])
def test_searches_from_many_threads_answer_as_one_at_a_time(scratch, text_embedder, monkeypatch, path) -> None:
    """Each search runs its keyword stage in a worker thread while it embeds the query; eight threads
    searching one engine at once (on the warm snapshot, on it with a track newer than the snapshot
    copied, or each on its own catalog connection, with that track matched by substring) get exactly
    the answers of one search at a time. (Catalog connections of one process share a DuckDB instance,
    so they also share the snapshot's attachment: before that was handled, concurrent searches fell
    back to plain-text matching.)"""
    from concurrent.futures import ThreadPoolExecutor

    from search import snapshot as snapshot_module

    catalog = Catalog(scratch / "catalog.duckdb")
    if path == "catalog":
        monkeypatch.setattr(snapshot_module, "MAX_CHANGED", 0)
    if path != "snapshot":
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
    if path != "snapshot":  # the track newer than the snapshot, matched by substring
        assert engine.search("quartz lantern").hits[0].title == "Quartz Lantern"
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(2):
            assert list(pool.map(answer, requests)) == one_at_a_time
    with engine.reader().lock:
        view = engine.reader().current()
    assert (view is None) == (path == "catalog")
    assert path == "catalog" or view.changed == (path == "delta")


def test_the_snapshot_with_the_changes_since_answers_as_the_catalog(scratch, library, text_embedder,
                                                                     monkeypatch) -> None:
    """After a scan's commits (tracks added, deleted, no longer done, re-indexed and re-analysed), the warm
    snapshot with the changes copied answers every query, filtered or not, browsing too, exactly as
    reading the catalog does (the way with more changes than MAX_CHANGED), auto-tags, tempo, key and vocals
    included, explanations too; the text index still holds the tracks gone. Changes the catalog way cannot
    see, as it finds changed tracks by their indexed_at (a move, a recaption, a re-analysis), the copy
    shows: the new names and auto-tags are searched, the new path and caption shown."""
    from search import snapshot as snapshot_module

    rows, vecs = library[1], library[2]
    catalog = Catalog(scratch / "catalog.duckdb")
    new = [{**track_row(100), "title": "Xylophone Nebula", "genre": "Jazz", "indexed_at": dt.datetime(2025, 1, 1)},
           {**track_row(101), "indexed_at": dt.datetime(2025, 1, 2)}]
    texts = ["A bright xylophone nebula of sound.", "Slow sad strings in a minor key over a soft piano."]
    new_vecs = text_embedder.encode(texts)
    new_ids = write_tracks(catalog, new, texts, new_vecs)
    deleted, pending, redone = rows[3], rows[4], rows[9]
    with catalog.write() as conn:
        write_analysis(conn, new_ids[0], dict(bpm=131.0, tonic="E", mode="minor", vocals="instrumental",
                                              auto_genre="ambient", analysis_version=ANALYSIS),
                       [("MTT_musicnn", "sitar", 0.9), ("MSD_musicnn", "chillout", 0.5), ("MTT_musicnn", "techno", 0.2)],
                       musicnn_embedding(100))
        write_analysis(conn, redone["id"], dict(bpm=70.0, tonic="F#", mode="major", vocals="vocal",
                                                auto_genre="rock", analysis_version=ANALYSIS),
                       [("MTT_musicnn", "harpsichord", 0.8), ("MSD_musicnn", "female vocalists", 0.4)],
                       musicnn_embedding(101))
        for table in (tags, captions):
            conn.execute(delete(table).where(table.c.track_id == deleted["id"]))
        conn.execute(delete(tracks).where(tracks.c.id == deleted["id"]))
        conn.execute(update(tracks).where(tracks.c.id == pending["id"]).values(status="pending"))
        conn.execute(update(tracks).where(tracks.c.id == redone["id"])
                     .values(genre="Rock", title="Granite Echo", indexed_at=dt.datetime(2025, 2, 1)))
        bump_generation(conn)
    save_text_index(catalog, scratch, [r["id"] for r in rows] + new_ids, np.vstack([vecs, new_vecs]), "flat")
    requests = [(q, f) for q in ("slow sad strings", "xylophone nebula", "granite echo", "rock", deleted["title"],
                                 pending["title"], "calm piano", "", "sitar", "mellow harpsichord", "fast techno",
                                 "instrumental in E minor", "slow female vocals")
                for f in (Filters(), Filters(genre="Rock"), Filters(min_duration=100), Filters(bpm_min=100, mode="minor"),
                          Filters(vocals="vocal", auto_genre="rock"))]

    def answers(engine) -> list[tuple]:
        out = []
        for query, filters in requests:
            result = engine.search(query, filters=filters, top_k=10)
            out.append((result.total, result.message,
                        [(h.track_id, h.title, h.path, h.caption, round(h.score, 9), tuple(h.reasons))
                         for h in result.hits]))
        return out

    warm = make_engine(scratch, text_embedder)
    found = answers(warm)
    with warm.reader().lock:
        assert warm.reader().current().changed
    monkeypatch.setattr(snapshot_module, "MAX_CHANGED", 2)  # three tracks changed
    cold = make_engine(scratch, text_embedder)
    assert answers(cold) == found
    with cold.reader().lock:
        assert cold.reader().current() is None
    hits = {(q, f): [h[0] for h in r[2]] for (q, f), r in zip(requests, found, strict=True)}
    assert hits[("xylophone nebula", Filters())][0] == new_ids[0]
    assert hits[("granite echo", Filters())][0] == redone["id"]
    assert redone["id"] in hits[("rock", Filters(genre="Rock"))]
    assert hits[("sitar", Filters())][0] == new_ids[0]  # a word only its auto-tags hold
    assert hits[("mellow harpsichord", Filters(vocals="vocal", auto_genre="rock"))][0] == redone["id"]
    sitar = found[requests.index(("sitar", Filters()))][2][0]
    assert 'auto-tag "sitar" (MTT_musicnn 0.90)' in sitar[5]
    gone = {deleted["id"], pending["id"]}
    assert not gone & {i for ids in hits.values() for i in ids}

    moved, recaptioned, reanalysed = rows[8], rows[10], rows[12]
    with catalog.write() as conn:  # a move, a recaption and a re-analysis: none changes indexed_at
        write_analysis(conn, reanalysed["id"], dict(bpm=99.0, analysis_version="a-next"),
                       [("MTT_musicnn", "flute", 0.9)], musicnn_embedding(102))
        conn.execute(update(tracks).where(tracks.c.id == moved["id"])
                     .values(path="/music/moved/Basalt Comet.flac", root="/music/moved", title="Basalt Comet"))
        conn.execute(update(captions).where(captions.c.track_id == recaptioned["id"])
                     .values(text="A lone theremin hums over tape hiss.", pipeline_version="p-next"))
        conn.execute(update(tracks).where(tracks.c.id == recaptioned["id"]).values(pipeline_version="p-next"))
        bump_generation(conn)
    monkeypatch.setattr(snapshot_module, "MAX_CHANGED", 50_000)
    hit = warm.search("basalt comet").hits[0]
    assert (hit.track_id, hit.path) == (moved["id"], "/music/moved/Basalt Comet.flac")
    assert moved["id"] not in [h.track_id for h in warm.search(moved["title"]).hits[:1]]
    hit = warm.search("theremin tape hiss").hits[0]
    assert (hit.track_id, hit.caption) == (recaptioned["id"], "A lone theremin hums over tape hiss.")
    hit = warm.search("flute", filters=Filters(bpm_max=100)).hits[0]
    assert (hit.track_id, hit.bpm) == (reanalysed["id"], 99.0)
    assert 'auto-tag "flute" (MTT_musicnn 0.90)' in hit.reasons
