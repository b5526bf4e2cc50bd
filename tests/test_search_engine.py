"""The search engine on a catalog written row by row: filters, pagination, name boosts, keyword
fallbacks, filtered search on an HNSW index, index reloads and hostile queries (the library:
tests/search_library.py; the ranking SQL's forms against each other: tests/test_search_ranking.py).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, update

from catalog.keywords import keywords_path, refresh_keywords
from catalog.store import Catalog, bump_generation, scans, tracks
from search import Filters
from search.query import parse_query
from search.rank import CHANGED_IDS
from tests.search_library import (
    FILTER_CASES,
    FORMATS,
    N_TRACKS,
    make_engine,
    passes,
    save_text_index,
    track_row,
    write_tracks,
)


@pytest.mark.parametrize("filters", FILTER_CASES, ids=lambda f: ",".join(
    f"{k}={v}" for k, v in vars(f).items() if v is not None))
@pytest.mark.parametrize("query", ["", "calm piano", "energetic rock with a backbeat"])
def test_filters_combine_with_any_query(engine, library, filters, query) -> None:
    rows = library[1]
    allowed = {r["id"] for r in rows if passes(r, filters)}
    result = engine.search(query, filters=filters, top_k=200)
    got = {h.track_id for h in result.hits}
    assert got <= allowed
    assert result.total == len(result.hits)
    if query == "":
        assert got == allowed  # browsing lists exactly the filtered library
    if not allowed:
        assert result.total == 0 and "No tracks match" in result.message


def test_pages_slice_one_stable_ranking(engine) -> None:
    whole = engine.search("slow sad strings", top_k=40)
    assert whole.total > 14
    pages = [engine.search("slow sad strings", top_k=7, offset=o) for o in range(0, 35, 7)]
    assert [h.track_id for p in pages for h in p.hits] == [h.track_id for h in whole.hits][:35]
    assert {p.total for p in pages} == {whole.total}
    past = engine.search("slow sad strings", top_k=7, offset=whole.total + 5)
    assert past.hits == [] and past.total == whole.total
    scores = [h.score for h in whole.hits]
    assert scores == sorted(scores, reverse=True)


def test_named_title_artist_and_tag_rank_first(engine, library) -> None:
    rows = library[1]
    target = rows[13]
    assert target["title"].split()[0].lower() not in target["caption"].lower()
    hits = engine.search(target["title"]).hits
    assert hits[0].track_id == target["id"]
    assert any("names its title" in r for r in hits[0].reasons)
    assert set(hits[0].matched_fields["title"]) >= {w.lower() for w in target["title"].split()}

    nadia = {r["id"] for r in rows if r["artist"] == "Nadia Okonkwo"}
    hits = engine.search("calm music by Nadia Okonkwo", top_k=len(nadia)).hits
    assert {h.track_id for h in hits} == nadia
    beyonce = engine.search("beyonce tribute band", top_k=3).hits  # accents do not matter
    assert all(h.artist == "Beyoncé Tribute Band" for h in beyonce)
    tagged = engine.search("quartzfield").hits
    assert tagged[0].track_id == rows[7]["id"] and tagged[0].keyword is not None


def test_hits_explain_themselves(engine) -> None:
    hit = engine.search("sad piano").hits[0]
    assert hit.semantic is not None and hit.keyword is not None
    assert hit.matched_terms and set(hit.matched_terms) <= {w for ws in hit.matched_fields.values() for w in ws}
    for word in hit.matched_fields.get("caption", []):
        assert word in hit.caption.lower()
    assert any(r.startswith("fused score") for r in hit.reasons)
    assert "with" not in engine.search("piano with drums").hits[0].matched_terms  # stopwords are not matches


HOSTILE = ["", " ", "'\";--*()", "'; DROP TABLE tracks; --", "piano' OR '1'='1", "x" * 10_000,
           "🎸🥁🎹", "music 🎸 with guitar", "\x00\x07\u202e", "東京の夜", "NEAR(a b) AND * OR \"", "%_%", "\\",
           "$1 $text ?", "ｆｕｌｌｗｉｄｔｈ ｐｉａｎｏ"]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_answer_without_raising(engine, query) -> None:
    result = engine.search(query, top_k=5)
    assert result.total >= len(result.hits)
    if not result.hits:
        assert result.message
    assert engine.search(query, filters=Filters(artist=query or None, genre="jazz"), top_k=5).total >= 0


def test_fullwidth_and_sql_text_still_find_music(engine) -> None:
    assert engine.search("ｐｉａｎｏ").hits  # NFKC: full-width letters are plain letters
    assert engine.search("piano' OR '1'='1").total < N_TRACKS  # text, not SQL: no "match everything"


@given(st.text(max_size=300))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_text_is_a_valid_query(engine, raw: str) -> None:
    result = engine.search(raw, top_k=3, offset=1)
    assert isinstance(result.message, str) and len(result.hits) <= 3


def test_writes_that_change_no_track_keep_the_snapshot_exact(scratch, text_embedder) -> None:
    """A current snapshot answers alone, also after catalog writes that change no track (the scan's own
    bookkeeping); once a track's row changes without a new generation (as a move does), the snapshot
    answers with that track's new row copied (tests/test_search_ranking.py compares that way with the
    catalog's)."""
    catalog = Catalog(scratch / "catalog.duckdb")
    refresh_keywords(catalog)  # a copied catalog is another file: snapshot it anew
    engine = make_engine(scratch, text_embedder)
    queries = [("slow sad strings", Filters()), ("calm piano", Filters(genre="jazz")), ("", Filters(year_min=2010))]

    def answers() -> list[tuple]:
        return [(r.total, r.message, [(h.track_id, h.caption, h.path, h.score) for h in r.hits])
                for r in (engine.search(q, filters=f, top_k=30) for q, f in queries)]

    reader = engine.reader()
    before = answers()
    with catalog.write() as conn:  # a write that changes no track: the scan's own bookkeeping
        conn.execute(insert(scans).values(state="finished"))
    with reader.lock:
        assert reader.current().changed is False
    assert answers() == before
    with catalog.write() as conn:  # a column the snapshot copies
        conn.execute(update(tracks).where(tracks.c.id == 1).values(indexed_at=dt.datetime(2023, 1, 1)))
    with reader.lock:
        assert reader.current().changed is True
        assert reader.con.execute(f"SELECT list(id) FROM {CHANGED_IDS}").fetchone()[0] == [1]


def test_keyword_search_falls_back_without_a_snapshot(scratch, library, text_embedder) -> None:
    keywords_path(Catalog(scratch / "catalog.duckdb")).unlink()
    target = library[1][21]
    result = make_engine(scratch, text_embedder).search(target["title"])
    assert result.hits[0].track_id == target["id"]
    assert "keyword index is missing" in result.message


def test_tracks_indexed_after_the_snapshot_are_found_until_it_is_refreshed(scratch, text_embedder) -> None:
    catalog = Catalog(scratch / "catalog.duckdb")
    row = {**track_row(99), "title": "Xylophone Nebula", "indexed_at": dt.datetime(2025, 1, 1)}
    text = "A bright xylophone nebula of sound."
    write_tracks(catalog, [row], [text], text_embedder.encode([text]))
    engine = make_engine(scratch, text_embedder)
    assert engine.stats()["indexes"]["keywords"]["changed_tracks"] == 1
    assert engine.search("xylophone nebula").hits[0].title == "Xylophone Nebula"
    refresh_keywords(catalog)
    assert engine.stats()["indexes"]["keywords"]["changed_tracks"] == 0
    hit = engine.search("xylophone nebula").hits[0]
    assert hit.title == "Xylophone Nebula" and hit.matched_fields["title"] == ["nebula", "xylophone"]


def test_semantic_search_without_a_text_index_says_so(scratch, library, text_embedder) -> None:
    for name in ("text.json", "text.index"):
        (scratch / "faiss" / name).unlink()
    result = make_engine(scratch, text_embedder).search(library[1][5]["title"])
    assert result.hits[0].track_id == library[1][5]["id"] and result.hits[0].semantic is None
    assert "semantic index has not been built" in result.message


def test_filtered_search_on_hnsw_is_exact_over_the_allowed_tracks(scratch, library, text_embedder) -> None:
    data, rows, vecs = library
    catalog = Catalog(scratch / "catalog.duckdb")
    save_text_index(catalog, scratch, [r["id"] for r in rows], vecs, "hnsw")
    engine = make_engine(scratch, text_embedder)
    assert engine.stats()["indexes"]["text"]["kind"] == "hnsw"
    filters = Filters(artist="The Quiet Machines", year_max=2010)
    allowed = [i for i, r in enumerate(rows) if passes(r, filters)]
    query = "a calm and peaceful piece"
    q = text_embedder.encode([query])[0]
    sims = {rows[i]["id"]: float(vecs[i] @ q) for i in allowed}
    expected = {tid for tid, s in sims.items() if s >= 0.3}
    assert expected
    for exact_max in (len(allowed), 0):  # the allowed tracks scored exactly, then by a filtered graph walk
        engine.text_index.exact_max = exact_max
        result = engine.search(query, filters=filters, top_k=50)
        assert {h.track_id for h in result.hits} <= {rows[i]["id"] for i in allowed}
        for hit in result.hits:
            if hit.semantic is not None:
                assert hit.semantic == pytest.approx(sims[hit.track_id], abs=1e-5)
        assert expected <= {h.track_id for h in result.hits if h.semantic is not None}


def test_engine_reloads_the_index_after_a_save(scratch, library, text_embedder) -> None:
    data, rows, vecs = library
    catalog = Catalog(scratch / "catalog.duckdb")
    engine = make_engine(scratch, text_embedder)
    text = "Thunderous taiko drums with a choir of throat singers."
    assert engine.search(text).hits[0].caption != text
    vec = text_embedder.encode([text])
    (new_id,) = write_tracks(catalog, [{**track_row(98), "title": "Untitled 98"}], [text], vec)
    save_text_index(catalog, scratch, [r["id"] for r in rows] + [new_id], np.vstack([vecs, vec]), "flat")
    top = engine.search(text).hits[0]
    assert top.track_id == new_id and top.semantic == pytest.approx(1.0, abs=1e-4)


def test_missing_catalog_is_a_message(tmp_path, text_embedder) -> None:
    engine = make_engine(tmp_path / "nothing", text_embedder)
    result = engine.search("piano")
    assert result.hits == [] and "no catalog" in result.message
    assert "no catalog" in engine.search("").message


def test_facets_cover_the_library(engine, library) -> None:
    rows = library[1]
    facets = engine.facets()
    assert facets["artists"] == sorted({r["artist"] for r in rows}, key=str.lower)
    assert set(facets["formats"]) == set(FORMATS)
    assert facets["year_range"] == [min(r["year"] for r in rows), max(r["year"] for r in rows)]
    assert facets["roots"] == ["/music/extra", "/music/main"]


def test_facets_follow_catalog_writes(scratch, text_embedder) -> None:
    engine = make_engine(scratch, text_embedder)
    assert "Polka" not in engine.facets()["genres"]
    text = "An accordion polka."
    write_tracks(Catalog(scratch / "catalog.duckdb"), [{**track_row(97), "genre": "Polka"}], [text],
                  text_embedder.encode([text]))
    assert "Polka" in engine.facets()["genres"]


def _genre_view(result) -> list[tuple]:
    return [(h.track_id, h.score, h.keyword, any("names its genre" in r for r in h.reasons)) for h in result.hits]


def test_a_named_genre_boosts_alike_from_a_bitmap_and_from_name_rows(scratch, library, text_embedder,
                                                                     monkeypatch) -> None:
    """The snapshot keeps the genres of many tracks as bitmaps and rarer ones as name rows: both give the
    same ranking, warm and through the catalog; a genre boosts its tracks without adding candidates."""
    import catalog.keywords as keywords
    from search import snapshot as snapshot_module

    monkeypatch.setattr(snapshot_module, "MAX_CHANGED", 0)  # a changed track sends searches to the catalog
    rows = library[1]
    catalog = Catalog(scratch / "catalog.duckdb")
    queries = ["energetic jazz with a backbeat", "calm ambient piano", "rock", "slow sad strings"]
    answers = {}
    for share in (keywords.GENRE_BITMAP_SHARE, 2.0):  # 2.0: no genre is shared by enough tracks for a bitmap
        monkeypatch.setattr(keywords, "GENRE_BITMAP_SHARE", share)
        refresh_keywords(catalog)
        engine = make_engine(scratch, text_embedder)
        assert engine.search(queries[0], top_k=1).hits  # the warm snapshot is current
        answers[share] = [_genre_view(engine.search(q, top_k=60)) for q in queries]
        with catalog.write() as conn:  # the catalog path: a track's row changed
            conn.execute(update(tracks).where(tracks.c.id == rows[0]["id"])
                         .values(indexed_at=dt.datetime(2023, 1, 1 + len(answers))))
        cold = [_genre_view(engine.search(q, top_k=60)) for q in queries]
        assert [[h[0] for h in a] for a in cold] == [[h[0] for h in a] for a in answers[share]]
        assert [[h[1] for h in a] for a in cold] == [pytest.approx([h[1] for h in a]) for a in answers[share]]
    bitmap, name_rows = answers.values()
    assert bitmap == name_rows
    genre_of = {r["id"]: r["genre"] for r in rows}
    for query, hits in zip(queries, bitmap, strict=True):
        named = {g for g in ("Jazz", "Rock", "Ambient") if g.lower() in query.split()}
        assert all(boosted == (genre_of[tid] in named) for tid, _, _, boosted in hits), query
    rock = [kw for _, _, kw, boosted in bitmap[2] if boosted]  # "rock": its tracks are all keyword matches
    assert len(rock) == sum(r["genre"] == "Rock" for r in rows) and None not in rock


def test_a_track_indexed_after_the_snapshot_is_boosted_by_its_new_genre(scratch, library, text_embedder) -> None:
    """A track recaptioned with another genre after the snapshot: the snapshot's bitmap of its old genre no
    longer counts; its live name row gives the new one."""
    rows = library[1]
    target = next(r for r in rows if r["genre"] == "Jazz")
    catalog = Catalog(scratch / "catalog.duckdb")
    refresh_keywords(catalog)
    with catalog.write() as conn:
        conn.execute(update(tracks).where(tracks.c.id == target["id"])
                     .values(genre="Rock", indexed_at=dt.datetime(2025, 1, 1)))
        bump_generation(conn)
    engine = make_engine(scratch, text_embedder)
    assert engine.stats()["indexes"]["keywords"]["changed_tracks"] == 1

    def boosted(query: str) -> dict[int, bool]:
        return {h.track_id: any("names its genre" in r for r in h.reasons)
                for h in engine.search(query, top_k=200).hits}

    word = target["title"].split()[0].lower()  # so that the track is a match either way
    jazz, rock = boosted(f"jazz {word}"), boosted(f"rock {word}")
    assert not jazz[target["id"]]
    assert rock[target["id"]]
    assert sum(jazz.values()) == sum(r["genre"] == "Jazz" for r in rows) - 1


def test_query_analysis_and_highlighting_in_python_equal_duckdbs(engine, library) -> None:
    """The reader tokenises queries and highlighted text in Python (catalog.text.split_words): the
    phrase, the stems and the highlighted words are those DuckDB's own expressions give."""
    from tests.test_keywords import TOKEN_SAMPLES

    reader = engine.reader()
    rows = library[1]
    queries = [*TOKEN_SAMPLES, *HOSTILE, "slow sad strings", "Beyoncé tribute", "running runners ran",
               rows[13]["title"], "calm music by Nadia Okonkwo"]
    for text in queries:
        parsed = parse_query(text)
        phrase, stems = reader.analyze(parsed.text, parsed.words)
        ref_phrase, ref_stems = reader.analyze_sql(parsed.text, parsed.words)
        assert phrase == ref_phrase and sorted(stems) == sorted(ref_stems), text
        assert len(set(stems)) == len(stems)
    texts = [str(r.get(n) or "") for r in rows[:20] for n in ("caption", "title", "artist", "album", "genre")]
    texts += TOKEN_SAMPLES
    for query in ("slow sad strings piano", "beyonce tribute band", "björk sigur ros", "東京の夜 坂本",
                  "played playing plays guitar", rows[5]["caption"]):
        stems = reader.analyze(query, parse_query(query).words)[1]
        assert reader.surface_matches(texts, stems) == reader.surface_sql(texts, stems), query
    odd = ["new \U0001fae8 emoji piano", "piano"]  # a code point Python's Unicode 14 lacks: DuckDB answers
    assert reader.surface_matches(odd, ["piano"]) == reader.surface_sql(odd, ["piano"]) == [["piano"], ["piano"]]
    assert reader.analyze(odd[0], ("new", "emoji", "piano")) == reader.analyze_sql(odd[0], ("new", "emoji", "piano"))


def test_a_query_is_embedded_on_one_thread_of_the_caller_only(text_embedder) -> None:
    """`encode_query` gives `encode`'s vector, computed with one OpenMP thread in the calling thread
    only: another thread meanwhile, and the caller afterwards, keep torch's two."""
    import threading

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    hook = text_embedder.model[0].register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    stop, other = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            other.append(torch.get_num_threads())

    watcher = threading.Thread(target=watch)
    try:
        watcher.start()
        vec = text_embedder.encode_query("slow sad strings")
        stop.set()
        watcher.join()
        assert seen == [1]
        assert torch.get_num_threads() == 2 and other and set(other) == {2}
        text_embedder.encode(["slow sad strings"])
        assert seen == [1, 2]
        np.testing.assert_allclose(vec, text_embedder.encode(["slow sad strings"])[0], atol=1e-6)
    finally:
        stop.set()
        hook.remove()
        torch.set_num_threads(before)


def test_a_following_engine_copies_a_commit_before_the_next_search(scratch, text_embedder) -> None:
    """`follow_catalog`: a scan's commit is copied for the warm snapshot in the background, before any
    search asks; the thread ends once the engine and its snapshot reader are gone."""
    import gc
    import threading
    import time

    from search.rank import CHANGED_TRACKS

    catalog = Catalog(scratch / "catalog.duckdb")
    refresh_keywords(catalog)
    engine = make_engine(scratch, text_embedder)
    reader = engine.reader()

    def following() -> set:
        return {t for t in threading.enumerate() if t.name == "search-follow"}

    others = following()  # other tests' engines (the UI's) may follow their catalogs
    engine.follow_catalog(interval=0.02)
    engine.follow_catalog(interval=0.02)  # once is enough: no second thread
    followers = list(following() - others)
    assert len(followers) == 1
    text = "A cobalt murmur of bowed glass."
    row = {**track_row(96), "title": "Cobalt Murmur", "indexed_at": dt.datetime(2025, 1, 1)}
    write_tracks(catalog, [row], [text], text_embedder.encode([text]))

    def copied(reader) -> list:
        with reader.lock:
            if not reader.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $t",
                                      {"t": CHANGED_TRACKS}).fetchone()[0]:
                return []
            return [t for (t,) in reader.con.execute(f"SELECT title FROM {CHANGED_TRACKS}").fetchall()]

    deadline = time.monotonic() + 20
    while not copied(reader) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert copied(reader) == ["Cobalt Murmur"]
    assert engine.search("cobalt murmur").hits[0].title == "Cobalt Murmur"
    del engine, reader
    gc.collect()
    followers[0].join(timeout=10)
    assert not followers[0].is_alive()


def test_a_process_exits_cleanly_while_engines_follow_a_changing_catalog(scratch) -> None:
    """A follower thread caught inside DuckDB when the interpreter finalises aborts the process (exit
    134, as the test run once did after its UI tests): the followers are stopped at exit first."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = """
import os, sys, threading, time
from model.settings import load_settings
from search import SearchEngine
data, pause = sys.argv[1], float(sys.argv[2])
engines = [SearchEngine(load_settings(data_dir=data)) for _ in range(3)]
for engine in engines:
    engine.follow_catalog(interval=0.0005)
def touch():  # a new catalog stamp every millisecond: the followers keep opening the catalog
    while True:
        os.utime(os.path.join(data, "catalog.duckdb"))
        time.sleep(0.001)
threading.Thread(target=touch, daemon=True).start()
time.sleep(pause)
"""
    repo = Path(__file__).resolve().parents[1]
    for pause in ("0.1", "0.3", "0.5"):
        done = subprocess.run([sys.executable, "-c", script, str(scratch), pause], cwd=repo, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-2000:]
