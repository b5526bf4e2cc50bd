"""The keyword snapshot after real scans (lite models, real audio files, the real DuckDB and FTS extension):
rebuilt by the scan itself, so a word found only in a track's tags is matched by BM25 straight after it;
and a rebuild that fails leaves the scan and the catalog whole, says why, and is retried by the next scan;
auto-tags in the postings, weighted by their probability.
"""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pytest

from catalog.keywords import error_path, keywords_path, refresh_keywords, snapshot_matches
from catalog.store import Catalog
from catalog.text import TOKEN_IGNORE, duck_lower, known_text, name_hash, norm_sql, split_words, strip_accents
from indexer.pipeline import scan
from search import SearchEngine

FALLBACK_NOTE = "keyword index is missing"


def _scan(root, settings, models) -> None:
    summary = scan([str(root)], settings, models.profile, models=models, greedy=True, limit_seconds=3.0)
    assert summary.state == "finished" and not summary.failed


def _top(engine: SearchEngine, word: str, title: str) -> None:
    """`word` finds the track called `title` first, scored by BM25 from a snapshot that holds every track."""
    result = engine.search(word)
    assert FALLBACK_NOTE not in result.message
    assert result.hits and result.hits[0].title == title
    assert result.hits[0].keyword is not None and result.hits[0].keyword > 0
    keywords = engine.stats()["indexes"]["keywords"]
    assert keywords is not None and not keywords["changed"] and keywords["changed_tracks"] == 0


def test_a_scan_leaves_the_keyword_snapshot_current(audio_library, indexer_settings, indexer_models,
                                                    text_embedder) -> None:
    lib = audio_library
    lib("Alpha/01 First.flac", seed=1, tags={"title": "First Light", "artist": "Alpha", "composer": "Quillfeather"})
    lib("Beta/01 Second.ogg", seed=2, tags={"title": "Second Wind", "artist": "Beta"})
    _scan(lib.root, indexer_settings, indexer_models)
    engine = SearchEngine(indexer_settings, text_embedder=text_embedder)
    _top(engine, "quillfeather", "First Light")  # a word only in a tag: no caption or name holds it
    reader = engine.reader()
    with reader.lock:  # the scan wrote its own bookkeeping after the rebuild; the snapshot stays warm
        assert reader.current() is not None

    lib("Gamma/01 Third.mp3", seed=3, tags={"title": "Third Coast", "artist": "Gamma", "composer": "Marrowglen"})
    _scan(lib.root, indexer_settings, indexer_models)
    _top(engine, "marrowglen", "Third Coast")
    _top(engine, "quillfeather", "First Light")
    assert engine.stats()["indexes"]["keywords"]["num_docs"] == 3


def test_a_failed_rebuild_keeps_the_scan_and_the_next_scan_retries(audio_library, indexer_settings,
                                                                   indexer_models, text_embedder) -> None:
    lib = audio_library
    lib("Alpha/01 First.flac", seed=1, tags={"title": "First Light", "artist": "Alpha", "composer": "Quillfeather"})
    catalog = Catalog(indexer_settings.catalog_path)
    blocker = keywords_path(catalog)
    blocker.mkdir(parents=True)  # a directory where the snapshot goes: the final rename fails
    _scan(lib.root, indexer_settings, indexer_models)
    failure = SearchEngine(indexer_settings, text_embedder=text_embedder).stats()["indexes"]["keywords_error"]
    assert failure is not None and "Error" in failure["error"]
    assert not list(blocker.parent.glob(f".{blocker.name}.*"))  # no temporary file left behind
    engine = SearchEngine(indexer_settings, text_embedder=text_embedder)
    result = engine.search("quillfeather first light")  # the catalog is whole: found as plain text
    assert FALLBACK_NOTE in result.message and result.hits[0].title == "First Light"

    blocker.rmdir()
    _scan(lib.root, indexer_settings, indexer_models)  # nothing changed, but the recorded failure is retried
    assert not error_path(catalog).exists()
    _top(SearchEngine(indexer_settings, text_embedder=text_embedder), "quillfeather", "First Light")


def test_name_hash_matches_the_hash_the_snapshot_stores() -> None:
    # kw_names is written with DuckDB's md5_number_upper and searched with name_hash: they must agree on
    # every name, or a named title or artist silently stops matching.
    names = ["rock", "artist 42", "björk", "坂本 龍一", "sigur rós ágætis byrjun", "🎹 calm piano", "x" * 300]
    con = duckdb.connect()
    stored = [con.execute("SELECT md5_number_upper(?)", [n]).fetchone()[0] for n in names]
    assert [name_hash(n) for n in names] == [int(h) for h in stored]
    assert len(set(stored)) == len(names)


# Strings for the Python tokeniser against DuckDB's own expressions: ASCII, accents precomposed and
# decomposed, CJK, Hangul, emoji (with skin tones and joiners), Greek capital sigma (final form in
# Python's str.lower), dotted capital I, scripts with combining vowel signs, other digits, full width,
# punctuation runs and whitespace of every kind.
TOKEN_SAMPLES = [
    "", " ", "calm piano", "Calm   Piano, 1999!", "energetic rock with drums", "'\";--*()", "a_b-c.d/e\\f",
    "Björk — Jóga (Live)", "Beyonce\u0301 Knowles", "SIGUR RÓS Ágætis Byrjun", "Ça va? Œuvre Æther Straße ẞ",
    "坂本 龍一「戦場のメリークリスマス」", "東京の夜", "방탄소년단 BTS", "🎸🥁 ✨", "music 🎸 with guitar",
    "👩🏽‍🎤 singer 🇯🇵", "ΟΔΟΣ ΟΔΟΣ ΣΑΣ", "İSTANBUL ıI", "हिन्दी गाना", "مُوسِيقَى عربية", "Ⅻ ½ ٣٤ ४२ ①",
    "ｆｕｌｌｗｉｄｔｈ ｐｉａｎｏ", "tab\tnew\nline\u00a0nbsp\u2003em", "x" * 300, "Ǆemal ǅ ǆ ﬁne ﬂow",
    "Ω Å K ÅNGSTRÖM", "\u0301\u0302 lone marks", "¿¡!!!...???", "déjà-vu_remix (feat. Ünal)",
]


def _duck_tokens(con: duckdb.DuckDBPyConnection, texts: list[str], keep_accents: bool) -> list[list[str]]:
    inner = "t" if keep_accents else "strip_accents(t)"
    sql = f"""SELECT [w FOR w IN string_split_regex(regexp_replace(lower({inner}), '{TOKEN_IGNORE}', ' ', 'g'),
                                                     '\\s+') IF w <> '']
              FROM unnest($t::VARCHAR[]) WITH ORDINALITY u(t, i) ORDER BY i"""
    return [row[0] for row in con.execute(sql, {"t": texts}).fetchall()]


def _random_texts(n: int) -> list[str]:
    rng = random.Random(5)
    pool = ("aZ09 _-.,'\"!?()/\\\t\n\u00a0\u2003éÉèüÜñÑçßẞøØåÅæœ\u0301\u0308\u0327\u0645\u064f\u0915\u093f\u094d"
            "東京坂本龍의한글ナイト一二三🎸🥁✨👩🏽\u200d🎤🇯🇵ΣσςΟΔİıIǄǅﬁ½Ⅻ٣४①ｆｐ")
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 24))) for _ in range(n)]


def test_the_python_tokeniser_equals_duckdbs_on_every_code_point() -> None:
    # split_words tokenises queries and highlighted text in Python as the snapshot's FTS index tokenised
    # them in DuckDB: lower(), strip_accents() and the letter-or-digit class must agree on every code
    # point Python's Unicode database assigns (DuckDB's newer Unicode is asked for the others).
    con = duckdb.connect()
    rows = con.execute(f"""SELECT i, lower(chr(i)), strip_accents(chr(i)), regexp_matches(chr(i), '{TOKEN_IGNORE}')
        FROM (SELECT range::INTEGER AS i FROM range(0, 1114112)) WHERE i < 55296 OR i > 57343""").fetchall()
    checked = 0
    for code, lower, stripped, ignored in rows:
        ch = chr(code)
        if not known_text(ch):
            continue
        checked += 1
        assert duck_lower(ch) == lower, hex(code)
        assert strip_accents(ch) == stripped, hex(code)
        assert (split_words(ch, keep_accents=True) == []) == ignored, hex(code)
    assert checked > 250_000


def test_the_python_tokeniser_equals_duckdbs_on_text() -> None:
    con = duckdb.connect()
    texts = TOKEN_SAMPLES + _random_texts(3000)
    for keep_accents in (False, True):
        assert [split_words(t, keep_accents=keep_accents) for t in texts] == _duck_tokens(con, texts, keep_accents)
    normalised = [r[0] for r in con.execute(f"SELECT {norm_sql('t')} FROM unnest($t::VARCHAR[]) WITH ORDINALITY "
                                            "u(t, i) ORDER BY i", {"t": texts}).fetchall()]
    assert [" ".join(split_words(t) or []) for t in texts] == normalised
    assert split_words("ΟΔΟΣ") == ["οδοσ"] and split_words("İstanbul") == ["istanbul"]
    assert split_words("Beyonce\u0301") == ["beyonce"] == split_words("Beyoncé")
    assert split_words("Beyonce\u0301", keep_accents=True) == ["beyonce"]
    assert split_words("Beyoncé", keep_accents=True) == ["beyoncé"]
    assert split_words("new \U0001fae8 emoji \U00011f04") is None  # unassigned in Python 3.11's Unicode 14


def _snapshot_rows(catalog: Catalog, sql: str) -> list[tuple]:
    con = duckdb.connect(str(keywords_path(catalog)), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_auto_tags_join_the_postings_weighted_by_probability(tmp_path) -> None:
    """A tag's words (and model/describe.py's for it) are terms whose weight is proportional to the tag's
    probability; they leave the BM25 documents, and so the weights of the texts' own words, as they were;
    a tag of "no vocals" is found as "instrumental", never as "vocals"; a pending track's tags stay out."""
    from sqlalchemy import update

    from catalog.store import bump_generation, tracks
    from tests.search_library import ANALYSIS, musicnn_embedding, track_row, write_analysis, write_tracks

    def build(folder: str, heard: bool) -> Catalog:
        catalog = Catalog(tmp_path / folder / "catalog.duckdb")
        catalog.create()
        texts = ["a calm piano piece", "a calm piano piece", "loud rock", "a quiet waltz"]
        ids = write_tracks(catalog, [track_row(i) for i in range(4)], texts, np.zeros((4, 384), np.float32))
        tags = [[("MTT_musicnn", "techno", 0.8), ("MTT_musicnn", "piano", 0.06)], [("MTT_musicnn", "techno", 0.1)],
                [("MSD_musicnn", "Hip-Hop", 0.7), ("MTT_musicnn", "no vocals", 0.5), ("MSD_musicnn", "chillout", 0.4)],
                [("MTT_musicnn", "sitar", 0.9)]]
        with catalog.write() as conn:
            for tid, heard_here in zip(ids, tags if heard else [[]] * 4, strict=True):
                write_analysis(conn, tid, dict(bpm=100.0, analysis_version=ANALYSIS), heard_here, musicnn_embedding(tid))
            conn.execute(update(tracks).where(tracks.c.id == ids[3]).values(status="pending"))
            bump_generation(conn)
        refresh_keywords(catalog)
        return catalog

    catalog, plain = build("heard", True), build("plain", False)
    sql = "SELECT t.term, p.track_id, p.weight FROM kw_postings p JOIN kw_terms t USING (termid) ORDER BY ALL"
    weights = {(term, tid): w for term, tid, w in _snapshot_rows(catalog, sql)}
    text_only = {(term, tid): w for term, tid, w in _snapshot_rows(plain, sql)}
    assert weights[("techno", 1)] == pytest.approx(8 * weights[("techno", 2)], rel=1e-6)
    assert {k: weights[k] for k in text_only if k != ("piano", 1)} == \
        {k: w for k, w in text_only.items() if k != ("piano", 1)}
    assert weights[("piano", 1)] > text_only[("piano", 1)]  # the faint tag adds a little
    words = {term for term, tid in weights if tid == 3}
    assert {"hip", "hop", "instrument", "chillout", "mellow"} <= words
    assert not {"vocal", "no"} & words
    assert not any(term == "sitar" for term, _ in weights)  # the pending track's
    assert _snapshot_rows(catalog, "SELECT DISTINCT track_id FROM kw_auto ORDER BY 1") == [(1,), (2,), (3,)]
    dfs = dict(_snapshot_rows(catalog, "SELECT term, df FROM kw_terms"))
    assert (dfs["techno"], dfs["piano"], dfs["calm"]) == (1, 2, 2)  # 0.8 + 0.1 tracks of techno: about one
    assert snapshot_matches(catalog)
