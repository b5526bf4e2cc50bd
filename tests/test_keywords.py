"""The keyword snapshot after real scans (lite models, real audio files, the real DuckDB and FTS extension):
rebuilt by the scan itself, so a word found only in a track's tags is matched by BM25 straight after it;
and a rebuild that fails leaves the scan and the catalog whole, says why, and is retried by the next scan.
"""

from __future__ import annotations

import duckdb

from indexer.keywords import error_path, keywords_path, name_hash
from indexer.pipeline import scan
from indexer.store import Catalog
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
    assert keywords is not None and not keywords["stale"] and keywords["stale_tracks"] == 0


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
