"""The search engine on a catalog written row by row: filters, pagination, name boosts, keyword
fallbacks, filtered search on an HNSW index, index reloads and hostile queries.

Captions are the synthetic corpus's attribute captions, embedded by the real text model; the FAISS index
and the keyword snapshot are the real ones the scan writes (indexer.vectors, indexer.keywords).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, update

from indexer.keywords import keywords_path, refresh_keywords
from indexer.store import Catalog, bump_generation, captions, generation, scans, tags, tracks
from indexer.vectors import build_index, save_index
from model.settings import load_settings
from search import Filters, SearchEngine
from search.query import parse_query
from training.synth import clip_record

ARTISTS = ("Aurora Fields", "The Quiet Machines", "Nadia Okonkwo", "Beyoncé Tribute Band")
TITLE_WORDS = ("Velvet", "Harbor", "Lantern", "Copper", "Meadow", "Signal", "Ember", "Orchid", "Tundra",
               "Marble", "Falcon", "Prism")
FORMATS = ("mp3", "flac", "ogg")
N_TRACKS = 48
PIPELINE = "p-test"


def _row(i: int) -> dict:
    artist = ARTISTS[i % len(ARTISTS)]
    album_no = (i // len(ARTISTS)) % 3
    root = "/music/main" if i % 3 else "/music/extra"
    title = f"{TITLE_WORDS[i % 12]} {TITLE_WORDS[(i * 5 + 1) % 12]} {i}"
    return dict(path=f"{root}/{artist}/Album {album_no}/{i:02d} {title}.{FORMATS[i % 3]}", root=root,
                size=1000 + i, mtime=1.0, format=FORMATS[i % 3], duration=60.0 + 5 * i, title=title,
                artist=artist, album=f"{artist.split()[0]} Album {album_no}", genre=("Jazz", "Rock", "Ambient")[i % 3],
                year=2000 + i % 20, track_no=i % 4 + 1, status="done", encoder_version="e-test",
                pipeline_version=PIPELINE, profile="lite", indexed_at=dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i))


def _write_tracks(catalog: Catalog, rows: list[dict], texts: list[str], vecs: np.ndarray) -> list[int]:
    ids = []
    with catalog.write() as conn:
        for row, text, vec in zip(rows, texts, vecs, strict=True):
            tid = conn.execute(insert(tracks).values(**row).returning(tracks.c.id)).scalar_one()
            conn.execute(insert(captions).values(track_id=tid, pipeline_version=PIPELINE, text=text,
                                                 text_vector=vec.astype(np.float32).tobytes()))
            ids.append(tid)
        bump_generation(conn)  # as the scan's writer does with every batch that changes tracks
    return ids


def _save_text_index(catalog: Catalog, data_dir: Path, ids: list[int], vecs: np.ndarray, kind: str) -> None:
    with catalog.read() as conn:
        gen = generation(conn)
    save_index(data_dir, "text", build_index(np.array(ids), vecs, kind), gen, None)


@pytest.fixture(scope="module")
def library(tmp_path_factory, text_embedder):
    """A data dir with N_TRACKS done tracks, a flat text index and a fresh keyword snapshot."""
    data = tmp_path_factory.mktemp("search-engine") / "data"
    catalog = Catalog(data / "catalog.duckdb")
    catalog.create()
    rows = [_row(i) for i in range(N_TRACKS)]
    records = [clip_record(seed=11, index=i, seconds=10.0) for i in range(N_TRACKS)]
    texts = [r["caption"] for r in records]
    vecs = text_embedder.encode(texts)
    ids = _write_tracks(catalog, rows, texts, vecs)
    with catalog.write() as conn:
        conn.execute(insert(tags).values(track_id=ids[7], key="composer", value="Zbigniew Quartzfield"))
    _save_text_index(catalog, data, ids, vecs, "flat")
    refresh_keywords(catalog)
    rows = [{**r, "id": tid, "caption": t, "labels": rec["labels"]}
            for r, tid, t, rec in zip(rows, ids, texts, records, strict=True)]
    return data, rows, vecs


def _engine(data: Path, text_embedder) -> SearchEngine:
    return SearchEngine(load_settings(data_dir=data), text_embedder=text_embedder)


@pytest.fixture(scope="module")
def engine(library, text_embedder) -> SearchEngine:
    return _engine(library[0], text_embedder)


@pytest.fixture
def scratch(library, tmp_path) -> Path:
    """A private copy of the library's data dir, for tests that change it."""
    shutil.copytree(library[0], tmp_path / "data")
    return tmp_path / "data"


def _passes(row: dict, f: Filters) -> bool:
    return ((f.artist is None or row["artist"].lower() == f.artist.lower())
            and (f.album is None or row["album"].lower() == f.album.lower())
            and (f.genre is None or row["genre"].lower() == f.genre.lower())
            and (f.year_min is None or row["year"] >= f.year_min)
            and (f.year_max is None or row["year"] <= f.year_max)
            and (f.min_duration is None or row["duration"] >= f.min_duration)
            and (f.max_duration is None or row["duration"] <= f.max_duration)
            and (f.format is None or row["format"] == f.format.lower().lstrip("."))
            and (f.root is None or row["root"] == f.root or row["path"].startswith(f.root.rstrip("/") + "/")))


FILTER_CASES = [
    Filters(artist="aurora fields"),
    Filters(genre="ROCK", year_min=2005, year_max=2012),
    Filters(min_duration=100, max_duration=200, format=".FLAC"),
    Filters(root="/music/extra"),
    Filters(root="/music/main/Nadia Okonkwo"),
    Filters(album="Aurora Album 1", artist="Aurora Fields"),
    Filters(year_min=2030),
]


@pytest.mark.parametrize("filters", FILTER_CASES, ids=lambda f: ",".join(
    f"{k}={v}" for k, v in vars(f).items() if v is not None))
@pytest.mark.parametrize("query", ["", "calm piano", "energetic rock with a backbeat"])
def test_filters_combine_with_any_query(engine, library, filters, query) -> None:
    rows = library[1]
    allowed = {r["id"] for r in rows if _passes(r, filters)}
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


def test_snapshot_and_catalog_answer_alike(scratch, text_embedder) -> None:
    """A current snapshot answers alone, also after catalog writes that change no track; once a track's
    row changes without a new generation (as a move does), the catalog answers, the same."""
    catalog = Catalog(scratch / "catalog.duckdb")
    refresh_keywords(catalog)  # a copied catalog is another file: snapshot it anew
    engine = _engine(scratch, text_embedder)
    queries = [("slow sad strings", Filters()), ("calm piano", Filters(genre="jazz")), ("", Filters(year_min=2010))]
    warm = [engine.search(q, filters=f, top_k=30) for q, f in queries]
    reader = engine.reader()
    with reader.lock:
        assert reader.current() is not None
    with catalog.write() as conn:  # a write that changes no track: the scan's own bookkeeping
        conn.execute(insert(scans).values(state="finished"))
    with reader.lock:
        assert reader.current() is not None
    with catalog.write() as conn:  # a column the snapshot copies, changed in a way no result shows
        conn.execute(update(tracks).where(tracks.c.id == 1).values(indexed_at=dt.datetime(2023, 1, 1)))
    cold = [engine.search(q, filters=f, top_k=30) for q, f in queries]
    with reader.lock:
        assert reader.current() is None
    for a, b in zip(warm, cold, strict=True):
        assert a.total == b.total and a.message == b.message
        assert [(h.track_id, h.caption, h.path) for h in a.hits] == [(h.track_id, h.caption, h.path) for h in b.hits]
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits])


def test_keyword_search_falls_back_without_a_snapshot(scratch, library, text_embedder) -> None:
    keywords_path(Catalog(scratch / "catalog.duckdb")).unlink()
    target = library[1][21]
    result = _engine(scratch, text_embedder).search(target["title"])
    assert result.hits[0].track_id == target["id"]
    assert "keyword index is missing" in result.message


def test_tracks_indexed_after_the_snapshot_are_found_until_it_is_refreshed(scratch, text_embedder) -> None:
    catalog = Catalog(scratch / "catalog.duckdb")
    row = {**_row(99), "title": "Xylophone Nebula", "indexed_at": dt.datetime(2025, 1, 1)}
    text = "A bright xylophone nebula of sound."
    _write_tracks(catalog, [row], [text], text_embedder.encode([text]))
    engine = _engine(scratch, text_embedder)
    assert engine.stats()["indexes"]["keywords"]["stale_tracks"] == 1
    assert engine.search("xylophone nebula").hits[0].title == "Xylophone Nebula"
    refresh_keywords(catalog)
    assert engine.stats()["indexes"]["keywords"]["stale_tracks"] == 0
    hit = engine.search("xylophone nebula").hits[0]
    assert hit.title == "Xylophone Nebula" and hit.matched_fields["title"] == ["nebula", "xylophone"]


def test_semantic_search_without_a_text_index_says_so(scratch, library, text_embedder) -> None:
    for name in ("text.json", "text.index"):
        (scratch / "faiss" / name).unlink()
    result = _engine(scratch, text_embedder).search(library[1][5]["title"])
    assert result.hits[0].track_id == library[1][5]["id"] and result.hits[0].semantic is None
    assert "semantic index has not been built" in result.message


def test_filtered_search_on_hnsw_is_exact_over_the_allowed_tracks(scratch, library, text_embedder) -> None:
    data, rows, vecs = library
    catalog = Catalog(scratch / "catalog.duckdb")
    _save_text_index(catalog, scratch, [r["id"] for r in rows], vecs, "hnsw")
    engine = _engine(scratch, text_embedder)
    assert engine.stats()["indexes"]["text"]["kind"] == "hnsw"
    filters = Filters(artist="The Quiet Machines", year_max=2010)
    allowed = [i for i, r in enumerate(rows) if _passes(r, filters)]
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
    engine = _engine(scratch, text_embedder)
    text = "Thunderous taiko drums with a choir of throat singers."
    assert engine.search(text).hits[0].caption != text
    vec = text_embedder.encode([text])
    (new_id,) = _write_tracks(catalog, [{**_row(98), "title": "Untitled 98"}], [text], vec)
    _save_text_index(catalog, scratch, [r["id"] for r in rows] + [new_id], np.vstack([vecs, vec]), "flat")
    top = engine.search(text).hits[0]
    assert top.track_id == new_id and top.semantic == pytest.approx(1.0, abs=1e-4)


def test_missing_catalog_is_a_message(tmp_path, text_embedder) -> None:
    engine = _engine(tmp_path / "nothing", text_embedder)
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
    engine = _engine(scratch, text_embedder)
    assert "Polka" not in engine.facets()["genres"]
    text = "An accordion polka."
    _write_tracks(Catalog(scratch / "catalog.duckdb"), [{**_row(97), "genre": "Polka"}], [text],
                  text_embedder.encode([text]))
    assert "Polka" in engine.facets()["genres"]


def _genre_view(result) -> list[tuple]:
    return [(h.track_id, h.score, h.keyword, any("names its genre" in r for r in h.reasons)) for h in result.hits]


def test_a_named_genre_boosts_alike_from_a_bitmap_and_from_name_rows(scratch, library, text_embedder,
                                                                     monkeypatch) -> None:
    """The snapshot keeps the genres of many tracks as bitmaps and rarer ones as name rows: both give the
    same ranking, warm and through the catalog; a genre boosts its tracks without adding candidates."""
    import indexer.keywords as keywords

    rows = library[1]
    catalog = Catalog(scratch / "catalog.duckdb")
    queries = ["energetic jazz with a backbeat", "calm ambient piano", "rock", "slow sad strings"]
    answers = {}
    for share in (keywords.GENRE_BITMAP_SHARE, 2.0):  # 2.0: no genre is shared by enough tracks for a bitmap
        monkeypatch.setattr(keywords, "GENRE_BITMAP_SHARE", share)
        refresh_keywords(catalog)
        engine = _engine(scratch, text_embedder)
        assert engine.search(queries[0], top_k=1).hits  # the warm snapshot is current
        answers[share] = [_genre_view(engine.search(q, top_k=60)) for q in queries]
        with catalog.write() as conn:  # the catalog path: a track's row changed, no new generation
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
    engine = _engine(scratch, text_embedder)
    assert engine.stats()["indexes"]["keywords"]["stale_tracks"] == 1

    def boosted(query: str) -> dict[int, bool]:
        return {h.track_id: any("names its genre" in r for r in h.reasons)
                for h in engine.search(query, top_k=200).hits}

    word = target["title"].split()[0].lower()  # so that the track is a match either way
    jazz, rock = boosted(f"jazz {word}"), boosted(f"rock {word}")
    assert not jazz[target["id"]]
    assert rock[target["id"]]
    assert sum(jazz.values()) == sum(r["genre"] == "Jazz" for r in rows) - 1


def test_query_analysis_and_highlighting_in_python_equal_duckdbs(engine, library) -> None:
    """The reader tokenises queries and highlighted text in Python (indexer.keywords.split_words): the
    phrase, the stems and the highlighted words are those DuckDB's own expressions give."""
    from tests.test_keywords import TOKEN_SAMPLES

    reader = engine.reader()
    rows = library[1]
    queries = [*TOKEN_SAMPLES, *HOSTILE, "slow sad strings", "Beyoncé tribute", "running runners ran",
               rows[13]["title"], "calm music by Nadia Okonkwo"]
    for text in queries:
        parsed = parse_query(text)
        phrase, stems = reader.analyze(parsed.text, parsed.words)
        ref_phrase, ref_stems = reader._analyze_sql(parsed.text, parsed.words)
        assert phrase == ref_phrase and sorted(stems) == sorted(ref_stems), text
        assert len(set(stems)) == len(stems)
    texts = [str(r.get(n) or "") for r in rows[:20] for n in ("caption", "title", "artist", "album", "genre")]
    texts += TOKEN_SAMPLES
    for query in ("slow sad strings piano", "beyonce tribute band", "björk sigur ros", "東京の夜 坂本",
                  "played playing plays guitar", rows[5]["caption"]):
        stems = reader.analyze(query, parse_query(query).words)[1]
        assert reader.surface_matches(texts, stems) == reader._surface_sql(texts, stems), query
    odd = ["new \U0001fae8 emoji piano", "piano"]  # a code point Python's Unicode 14 lacks: DuckDB answers
    assert reader.surface_matches(odd, ["piano"]) == reader._surface_sql(odd, ["piano"]) == [["piano"], ["piano"]]
    assert reader.analyze(odd[0], ("new", "emoji", "piano")) == reader._analyze_sql(odd[0], ("new", "emoji", "piano"))


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
        row = {**_row(98), "title": "Quartz Lantern", "indexed_at": dt.datetime(2025, 1, 1)}
        text = "A quiet piano piece with a lantern glow."
        _write_tracks(catalog, [row], [text], text_embedder.encode([text]))
    engine = _engine(scratch, text_embedder)
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
