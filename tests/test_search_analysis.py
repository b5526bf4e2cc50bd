"""What the taggers, tempo and key estimators heard, in search (the library: tests/search_library.py, whose
tracks carry made-up analyses): filters on it, warm and through the catalog; query words that boost by
it; auto-tags matched by keyword, weighted by their probability, and named in the explanations; facet
counts; "more like this" blended with the musicnn embeddings; the CLI's filters and --json.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pytest
from sqlalchemy import insert, update

from catalog.keywords import refresh_keywords
from catalog.store import Catalog, bump_generation, embeddings, tracks
from catalog.text import split_words
from catalog.vectors import build_index, save_index
from search import Filters, SearchError
from search.music import MUSIC_BOOST
from tests.search_library import (
    ANALYSIS,
    ANALYSIS_FILTER_CASES,
    make_engine,
    musicnn_embedding,
    passes,
    track_row,
    write_analysis,
    write_tracks,
)


def _ids(result) -> list[int]:
    return [h.track_id for h in result.hits]


@pytest.fixture
def cold(scratch, text_embedder, monkeypatch):
    """An engine on a copy of the library that reads the catalog (its snapshot attached) for every search:
    one track's row changed, and no changes copied for the warm snapshot. The track changed (id 1) passes
    none of ANALYSIS_FILTER_CASES, so that matching it by substring changes no filtered answer."""
    from search import snapshot as snapshot_module

    catalog = Catalog(scratch / "catalog.duckdb")
    refresh_keywords(catalog)
    with catalog.write() as conn:
        conn.execute(update(tracks).where(tracks.c.id == 1).values(indexed_at=dt.datetime(2023, 1, 1)))
    monkeypatch.setattr(snapshot_module, "MAX_CHANGED", 0)
    engine = make_engine(scratch, text_embedder)
    with engine.reader().lock:
        assert engine.reader().current() is None
    return engine


@pytest.mark.parametrize("filters", ANALYSIS_FILTER_CASES, ids=lambda f: ",".join(
    f"{k}={v}" for k, v in vars(f).items() if v is not None))
def test_analysis_filters_hold_warm_and_through_the_catalog(engine, cold, library, filters) -> None:
    """Browsing lists exactly the tracks whose analysis passes; searches list only those, the same ones
    in the same order from the warm snapshot and from the catalog. A track not analysed passes none."""
    rows = library[1]
    allowed = {r["id"] for r in rows if passes(r, filters)}
    assert 0 < len(allowed) < len(rows) and 1 not in allowed
    for query in ("", "calm piano", "fast techno in A minor"):
        warm, through = (e.search(query, filters=filters, top_k=200) for e in (engine, cold))
        assert set(_ids(warm)) <= allowed and warm.total == len(warm.hits)
        assert _ids(through) == _ids(warm), query
        if query == "":
            assert set(_ids(warm)) == allowed
    assert not {r["id"] for r in rows if r["bpm"] is None} & allowed


def test_meaningless_filter_values_are_a_message(engine) -> None:
    for filters in (Filters(tonic="H"), Filters(mode="dorian"), Filters(vocals="maybe"), Filters(tonic="A minor")):
        result = engine.search("piano", filters=filters)
        assert result.hits == [] and result.message.startswith("Invalid filter value"), filters
    with pytest.raises(SearchError):
        engine.facets(Filters(mode="dorian"))


def test_auto_tags_are_keywords_weighted_by_probability(engine, library) -> None:
    """No caption says "techno": it is matched in the auto-tags alone, the likelier the higher, and each
    hit names the tag and its probability."""
    rows = library[1]
    assert not any("techno" in r["caption"].lower() for r in rows)
    heard = {r["id"]: p for r in rows for tagger, tag, p in r["auto_tags"] if tag == "techno"}
    result = engine.search("techno", top_k=200)
    by_keyword = sorted((h for h in result.hits if h.keyword), key=lambda h: -h.keyword)
    assert {h.track_id for h in by_keyword} == set(heard)
    probabilities = [heard[h.track_id] for h in by_keyword]
    assert probabilities == sorted(probabilities, reverse=True)
    top = result.hits[0]
    assert heard[top.track_id] == max(heard.values())
    assert f'auto-tag "techno" (MTT_musicnn {heard[top.track_id]:.2f})' in top.reasons
    assert top.matched_fields["auto_tags"] == ["techno"]


def test_a_likelier_tag_outranks_a_fainter_one_all_else_equal(scratch, text_embedder) -> None:
    catalog = Catalog(scratch / "catalog.duckdb")
    text = "A bright and busy piece for a festival stage."
    vec = text_embedder.encode([text])
    ids = write_tracks(catalog, [{**track_row(90 + k), "title": f"Twin {k}"} for k in range(2)], [text] * 2,
                       np.vstack([vec, vec]))
    with catalog.write() as conn:
        for tid, p in zip(ids, (0.1, 0.8), strict=True):
            write_analysis(conn, tid, dict(bpm=120.0, analysis_version=ANALYSIS), [("MTT_musicnn", "sitar", p)],
                           musicnn_embedding(0))
    refresh_keywords(catalog)
    hits = make_engine(scratch, text_embedder).search("sitar").hits
    assert [h.track_id for h in hits[:2]] == [ids[1], ids[0]]
    assert hits[0].keyword == pytest.approx(8 * hits[1].keyword, rel=1e-5)


def test_plain_words_match_the_tags_that_mean_them(engine, library) -> None:
    """model/describe.py's words find the tags they stand for ("hip hop" the tag "Hip-Hop"); a tag of
    "no vocals" is found by "instrumental", never by "vocals"."""
    rows = library[1]
    hip_hop = {r["id"] for r in rows if any(t == "Hip-Hop" for _, t, _ in r["auto_tags"])}
    found = [h for h in engine.search("hip hop", top_k=200).hits if "auto_tags" in h.matched_fields]
    assert {h.track_id for h in found} == hip_hop
    assert all('auto-tag "Hip-Hop" (MSD_musicnn 0.55)' in h.reasons for h in found)
    singing = {r["id"] for r in rows if r["vocals"] == "vocal"}
    found = {h.track_id for h in engine.search("vocals", top_k=200).hits if "auto_tags" in h.matched_fields}
    assert found == singing
    hit = next(h for h in engine.search("female vocals", top_k=200).hits if "auto_tags" in h.matched_fields)
    assert 'auto-tag "female vocalists" (MSD_musicnn 0.70)' in hit.reasons
    quiet = {r["id"] for r in rows if r["vocals"] == "instrumental"}
    found = [h for h in engine.search("instrumental", top_k=200).hits if "auto_tags" in h.matched_fields]
    assert {h.track_id for h in found} == quiet
    assert 'auto-tag "no vocals" (MTT_musicnn 0.70) as instrumental' in found[0].reasons


def _boosts(engine, monkeypatch, query: str) -> dict[int, float]:
    """Each hit's score with the music boosts less its score without them; the same hits either way."""
    from search import music

    with_boost = engine.search(query, top_k=200)
    monkeypatch.setattr(music, "MUSIC_BOOST", 0.0)
    without = engine.search(query, top_k=200)
    monkeypatch.undo()
    assert sorted(_ids(with_boost)) == sorted(_ids(without)) and with_boost.total == without.total
    base = {h.track_id: h.score for h in without.hits}
    return {h.track_id: round(h.score - base[h.track_id], 9) for h in with_boost.hits}


@pytest.mark.parametrize("query, wants", [
    ("fast music", lambda r: r["bpm"] is not None and r["bpm"] > 125),
    ("slow sad piano", lambda r: r["bpm"] is not None and r["bpm"] < 85),
    ("mid-tempo strings", lambda r: r["bpm"] is not None and 85 <= r["bpm"] <= 125),
    ("a piece at around 120 bpm", lambda r: r["bpm"] is not None and any(
        114 <= r["bpm"] * k <= 126 for k in (1, 2, 0.5))),
    ("in a minor key", lambda r: r["mode"] == "minor"),
    ("calm piano in A minor", lambda r: (r["tonic"], r["mode"]) == ("A", "minor")),
    ("instrumental jazz", lambda r: r["vocals"] == "instrumental"),
    ("with vocals", lambda r: r["vocals"] == "vocal"),
])
def test_query_words_boost_by_what_was_heard_and_filter_nothing(engine, library, monkeypatch, query,
                                                                 wants) -> None:
    rows = {r["id"]: r for r in library[1]}
    boosts = _boosts(engine, monkeypatch, query)
    assert {tid: b > 0 for tid, b in boosts.items()} == {tid: wants(rows[tid]) for tid in boosts}
    assert set(boosts.values()) == {0.0, MUSIC_BOOST}


def test_tempo_key_and_vocals_words_combine_and_are_explained(engine, library, monkeypatch) -> None:
    rows = {r["id"]: r for r in library[1]}
    boosts = _boosts(engine, monkeypatch, "fast instrumental in A minor")
    for tid, boost in boosts.items():
        r = rows[tid]
        expected = [r["bpm"] is not None and r["bpm"] > 125, r["vocals"] == "instrumental",
                    (r["tonic"], r["mode"]) == ("A", "minor")]
        assert boost == pytest.approx(MUSIC_BOOST * sum(expected), abs=1e-9), tid
    for hit in engine.search("fast instrumental in A minor", top_k=200).hits:
        r = rows[hit.track_id]
        assert (f"{r['bpm'] or 0:.0f} BPM (fast)" in hit.reasons) == (r["bpm"] is not None and r["bpm"] > 125)
        assert ("key A minor" in hit.reasons) == ((r["tonic"], r["mode"]) == ("A", "minor"))
        assert ("instrumental" in hit.reasons) == (r["vocals"] == "instrumental")
        assert (hit.bpm, hit.tonic, hit.mode, hit.vocals) == (r["bpm"], r["tonic"], r["mode"], r["vocals"])


def test_caption_words_still_match_beside_the_boosts(engine, library) -> None:
    """"slow" asks for a slow tempo and is still a keyword: every caption that says slow is found, and
    the word marked in it."""
    says_slow = {r["id"] for r in library[1] if "slow" in split_words(r["caption"])}
    result = engine.search("slow sad piano", top_k=200)
    assert len(says_slow) > 5
    assert {h.track_id for h in result.hits if "slow" in h.matched_fields.get("caption", [])} == says_slow


def test_facets_count_the_analysis_values_under_the_other_filters(engine, library) -> None:
    rows = library[1]

    def count(column: str, keep) -> dict:
        found: dict = {}
        for r in rows:
            if r[column] is not None and keep(r):
                found[r[column]] = found.get(r[column], 0) + 1
        return found

    facets = engine.facets()
    for column in ("mode", "tonic", "vocals", "auto_genre"):
        assert facets["counts"][column] == count(column, lambda r: True), column
    assert list(facets["counts"]["mode"]) == ["major", "minor"]
    heard = [r["bpm"] for r in rows if r["bpm"] is not None]
    assert facets["bpm_range"] == [min(heard), max(heard)]
    narrowed = engine.facets(Filters(mode="minor", vocals="instrumental"))
    assert narrowed["counts"]["mode"] == count("mode", lambda r: r["vocals"] == "instrumental")
    assert narrowed["counts"]["vocals"] == count("vocals", lambda r: r["mode"] == "minor")
    assert narrowed["counts"]["auto_genre"] == count(
        "auto_genre", lambda r: (r["mode"], r["vocals"]) == ("minor", "instrumental"))
    assert narrowed["artists"] == facets["artists"]  # the value lists stay the library's


def test_more_like_this_blends_the_musicnn_embedding(scratch, library, monkeypatch) -> None:
    """Track X sounds less like the query than track Y by the track vectors but has the query's musicnn
    embedding: blended (MUSICNN_WEIGHT 0.5) X comes first, by the track vectors alone Y does. Tracks
    without an analysis keep their track-vector cosine."""
    from search import like

    rows = library[1]
    query, x, y = rows[0]["id"], rows[1]["id"], rows[2]["id"]
    rng = np.random.default_rng(5)
    vecs = {r["id"]: v / np.linalg.norm(v) for r, v in zip(rows, rng.standard_normal((len(rows), 64)), strict=True)}
    q = vecs[query]
    for tid, cos in ((y, 0.9), (x, 0.8)):
        other = vecs[tid] - (vecs[tid] @ q) * q
        vecs[tid] = (cos * q + np.sqrt(1 - cos**2) * other / np.linalg.norm(other)).astype(np.float32)
    catalog = Catalog(scratch / "catalog.duckdb")
    with catalog.write() as conn:
        for tid, vec in vecs.items():
            conn.execute(insert(embeddings).values(track_id=tid, encoder_version="e-test", n_tokens=1, dim=64,
                                                   tokens=vec.astype(np.float16).tobytes(),
                                                   vector=vec.astype(np.float32).tobytes()))
        write_analysis(conn, x, dict(bpm=100.0, analysis_version=ANALYSIS), [], musicnn_embedding(0))
        gen = bump_generation(conn)
    save_index(scratch, "audio", build_index(np.array(list(vecs)), np.stack(list(vecs.values())), "flat"), gen, None)
    engine = make_engine(scratch, None)
    blended = engine.like_track(query, top_k=len(rows))
    monkeypatch.setattr(like, "MUSICNN_WEIGHT", 0.0)
    plain = engine.like_track(query, top_k=len(rows))
    order = [h.track_id for h in blended]
    assert order.index(x) < order.index(y) and order[0] == x
    assert [h.track_id for h in plain][:2] == [y, x]
    for hit in blended:
        assert hit.audio == pytest.approx(float(vecs[hit.track_id] @ q), abs=1e-5)
        analysed = rows[[r["id"] for r in rows].index(hit.track_id)]["bpm"] is not None
        assert (hit.score == pytest.approx(hit.audio)) == (not analysed)
        assert ("musicnn similarity" in hit.reasons[0]) == analysed
    assert blended[0].score == pytest.approx(0.5 * 1.0 + 0.5 * 0.8, abs=1e-5)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from search.__main__ import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_filters_and_json(library, capsys) -> None:
    data, rows = library[0], library[1]
    code, out, err = _cli(capsys, "", "--json", "--bpm", "60-160", "--key", "A# minor", "--data-dir", str(data))
    assert code == 0
    hits = [json.loads(line) for line in out.splitlines()]
    expected = {r["id"] for r in rows if passes(r, Filters(bpm_min=60, bpm_max=160, tonic="A#", mode="minor"))}
    assert {h["track_id"] for h in hits} == expected and len(expected) > 1
    assert all(60 <= h["bpm"] <= 160 and (h["tonic"], h["mode"]) == ("A#", "minor") for h in hits)
    assert json.loads(err.splitlines()[-1])["filters"] == {"bpm_min": 60.0, "bpm_max": 160.0, "tonic": "A#", "mode": "minor"}

    code, out, err = _cli(capsys, "techno", "--json", "--vocals", "instrumental", "--bpm", "-150", "--data-dir",
                          str(data), "--top-k", "200")
    hits = [json.loads(line) for line in out.splitlines()]
    assert hits and all(h["vocals"] == "instrumental" and h["bpm"] <= 150 for h in hits)
    assert json.loads(err.splitlines()[-1])["filters"] == {"bpm_max": 150.0, "vocals": "instrumental"}
    code, out, _ = _cli(capsys, "--facets", "--json", "--mode", "minor", "--data-dir", str(data))
    counts = json.loads(out)["counts"]
    assert counts["vocals"] == {v: sum(r["vocals"] == v and r["mode"] == "minor" for r in rows)
                                for v in ("vocal", "instrumental")}
    for bad in (["--key", "H minor"], ["--bpm", "fast"], ["--key", "A minor", "--mode", "major"]):
        code, out, _ = _cli(capsys, "piano", "--json", *bad, "--data-dir", str(data))
        assert code == 2 and json.loads(out)["ok"] is False, bad


def test_hits_carry_what_was_heard(engine, library) -> None:
    rows = {r["id"]: r for r in library[1]}
    for hit in engine.search("", top_k=200).hits:
        r = rows[hit.track_id]
        heard = dataclasses.asdict(hit)
        assert {k: heard[k] for k in ("bpm", "tonic", "mode", "vocals", "auto_genre")} == \
            {k: r[k] for k in ("bpm", "tonic", "mode", "vocals", "auto_genre")}
    details = engine.track(library[1][0]["id"])
    assert [(t["tagger"], t["tag"], t["probability"]) for t in details["auto_tags"]] == \
        sorted(library[1][0]["auto_tags"], key=lambda t: (-t[2], t[0], t[1]))
