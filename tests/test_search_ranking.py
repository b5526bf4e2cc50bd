"""The ranking SQL's forms against each other on the search tests' library (tests/search_library.py):
filters as registered ids or evaluated in SQL, the head-only page against the full ranking, and searches
from many threads against one at a time. Each side runs both statements as the engine does.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import delete, update

from catalog.store import Catalog, bump_generation, captions, tags, tracks
from search import Filters
from search.query import parse_query
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


def _ranking_inputs(engine, db, snapshot: dict | None, tracks: str, query: str, filters: Filters,
                    analyzed: tuple[str, list[str]]) -> tuple:
    """What the engine passes the ranking SQL for a query, computed the way it does: (arguments of
    `rank.search_sql` before `filters_sql`, the filters' SQL, parameters (with, as `music`, what the query
    asks of tempo, key and vocals), allowed ids)."""
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
                  limit=200, offset=0, music=parsed.music, **{f"like{i}": f"%{w}%" for i, w in enumerate(parsed.words[:n_like])})
    return (termids, n_like, runs, genres), filter_sql, params, allowed


def _ranked(db, args: tuple, filter_sql: str, check_tracks: bool, tracks: str, allowed: str | None, params: dict,
            head_only: bool = False) -> list[dict]:
    """Both statements of a search as the engine runs them (its keyword stage, then its ranking): page rows."""
    from search import rank
    from search.engine import _bound, _run_all

    termids, n_like, _, _ = args
    _run_all(db, rank.keyword_sql(termids, n_like, filter_sql, check_tracks, tracks, allowed), params)
    sql = rank.search_sql(*args, filter_sql, check_tracks, tracks, allowed, head_only=head_only,
                          music=params["music"])
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
    from search.snapshot import attach_snapshot

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
    from search.snapshot import attach_snapshot

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
                                           params["phrase_len"], params["music"].best_boost())
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
        monkeypatch.setattr(snapshot_module, "DELTA_MAX", 0)
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
    assert path == "catalog" or view["stale"] == (path == "delta")


def test_the_snapshot_with_the_changes_since_answers_as_the_catalog(scratch, library, text_embedder,
                                                                     monkeypatch) -> None:
    """After a scan's commits (tracks added, deleted, no longer done, re-indexed and re-analysed), the warm
    snapshot with the changes copied answers every query, filtered or not, browsing too, exactly as
    reading the catalog does (the way with more changes than DELTA_MAX), auto-tags, tempo, key and vocals
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
        assert warm.reader().current()["stale"]
    monkeypatch.setattr(snapshot_module, "DELTA_MAX", 2)  # three tracks changed
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
    monkeypatch.setattr(snapshot_module, "DELTA_MAX", 50_000)
    hit = warm.search("basalt comet").hits[0]
    assert (hit.track_id, hit.path) == (moved["id"], "/music/moved/Basalt Comet.flac")
    assert moved["id"] not in [h.track_id for h in warm.search(moved["title"]).hits[:1]]
    hit = warm.search("theremin tape hiss").hits[0]
    assert (hit.track_id, hit.caption) == (recaptioned["id"], "A lone theremin hums over tape hiss.")
    hit = warm.search("flute", filters=Filters(bpm_max=100)).hits[0]
    assert (hit.track_id, hit.bpm) == (reanalysed["id"], 99.0)
    assert 'auto-tag "flute" (MTT_musicnn 0.90)' in hit.reasons
