"""Property-based tests (hypothesis): the tag reader, the pooling arithmetic and the query parser hold
their contracts for any input, not just the examples someone thought of.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from indexer import tags as T
from model.encoder import pool_frames
from search.query import MAX_QUERY_CHARS, MAX_TERMS, parse_query
from tests import hostile

BAD_CATEGORIES = ("Cc", "Cs", "Co")
any_text = st.text(alphabet=st.characters(codec=None), max_size=2000)
hostile_text = st.one_of(
    any_text,
    st.text(alphabet=st.sampled_from("\x00\x01\x1b\n\r\t \u202e\u200b\ufeff\ud800\udfffÃ©©Â\x85\x9f"), max_size=50),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1, 5000)),
)


def assert_clean(value: str | None, limit: int) -> None:
    """What every stored tag string must be: bounded, storable as UTF-8, no control characters, trimmed."""
    if value is None:
        return
    assert isinstance(value, str) and 0 < len(value) <= limit
    value.encode("utf-8")  # no lone surrogates: DuckDB could not bind it
    assert not any(unicodedata.category(ch) in BAD_CATEGORIES for ch in value), repr(value)
    assert value == value.strip() and "  " not in value and "\n" not in value


@given(st.one_of(hostile_text, st.binary(max_size=3000)), st.integers(1, 400))
@settings(max_examples=400, deadline=None)
def test_clean_text_is_bounded_and_storable(value: str | bytes, limit: int) -> None:
    assert_clean(T.clean_text(value, limit), limit)


@given(hostile_text)
@example("\x80Â¡")
@settings(max_examples=300, deadline=None)
def test_clean_text_is_idempotent(value: str) -> None:
    """Cleaning a stored value again changes nothing (a rescan must not rewrite clean tags)."""
    once = T.clean_text(value)
    assert T.clean_text(once) == once


@given(st.one_of(st.none(), hostile_text))
@settings(max_examples=300, deadline=None)
def test_year_and_track_number_are_bounded(value: str | None) -> None:
    year, number = T.parse_year(value), T.parse_track_no(value)
    assert year is None or 1000 <= year <= 2100
    assert number is None or 0 < number < 10000


name_part = st.text(alphabet=st.characters(blacklist_characters="/\x00", codec="utf-8"), min_size=1, max_size=60)


@given(st.lists(name_part, min_size=1, max_size=5))
@settings(max_examples=300, deadline=None)
def test_tags_from_any_path_are_clean(parts: list[str]) -> None:
    root = "/music"
    got = T.tags_from_path("/".join([root, *parts]) + ".flac", root)
    for name in ("title", "artist", "album"):
        assert_clean(getattr(got, name), T.MAX_FIELD_CHARS)
    assert got.track_no is None or 0 < got.track_no < 10000


@pytest.fixture(scope="module")
def mp3_template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("tpl")
    return hostile.encode(folder / "t.mp3", hostile.tone(0.2, 44100), 44100, "mp3").read_bytes()


@given(st.dictionaries(st.sampled_from(["TIT2", "TPE1", "TALB", "TCON", "TDRC", "TRCK", "TXXX", "COMM"]),
                       hostile_text.filter(lambda s: "\x00" not in s), max_size=8),
       st.binary(max_size=64))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_read_tags_on_real_files_with_arbitrary_tags(tmp_path: Path, mp3_template: bytes, frames: dict[str, str],
                                                     garbage: bytes) -> None:
    """Real MP3s carrying arbitrary ID3 text (and a garbage tail): read_tags never raises, output bounded."""
    from mutagen import id3

    path = tmp_path / "Artist\nName" / "01 \x1b[31mTitle.mp3"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(mp3_template)
    tags = id3.ID3()
    for key, text in frames.items():
        text = text.encode("utf-8", "replace").decode("utf-8")  # mutagen writes only valid text; raw bytes: fuzz
        if key == "TXXX":
            tags.add(id3.TXXX(encoding=3, desc=text[:10], text=text))
        elif key == "COMM":
            tags.add(id3.COMM(encoding=1, lang="eng", desc="", text=text))
        else:
            tags.add(getattr(id3, key)(encoding=3, text=text))
    tags.save(str(path))
    with path.open("ab") as f:
        f.write(garbage)
    got = T.read_tags(str(path), str(tmp_path))
    for name in ("title", "artist", "album", "album_artist", "genre"):
        assert_clean(getattr(got, name), T.MAX_FIELD_CHARS)
    assert got.year is None or 1000 <= got.year <= 2100
    assert got.duration is None or 0 < got.duration < T.MAX_DURATION
    assert len(got.raw) <= T.MAX_RAW_TAGS
    for key, value in got.raw.items():
        assert_clean(key, T.MAX_KEY_CHARS)
        assert_clean(value, T.MAX_RAW_CHARS)


@given(st.binary(min_size=0, max_size=4096))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_read_tags_on_random_bytes(tmp_path: Path, blob: bytes) -> None:
    for suffix in (".mp3", ".flac", ".m4a", ".ogg"):
        path = tmp_path / f"x{suffix}"
        path.write_bytes(blob)
        got = T.read_tags(str(path), str(tmp_path))
        assert got.title == "x" and len(got.raw) <= T.MAX_RAW_TAGS


# ---------------------------------------------------------------- pooling arithmetic


@given(st.integers(0, 3000), st.integers(1, 400), st.integers(1, 3), st.integers(0, 2**31 - 1))
@settings(max_examples=300, deadline=None)
def test_pool_frames_count_and_means(t: int, window: int, batch: int, seed: int) -> None:
    """T' = ceil(T / t) tokens, token i the mean of frames [i*t, min((i+1)*t, T))."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch, t, 5, generator=gen, dtype=torch.float64)
    pooled = pool_frames(frames, window)
    assert pooled.shape == (batch, math.ceil(t / window), 5)
    for i in range(pooled.shape[1]):
        expected = frames[:, i * window:min((i + 1) * window, t)].mean(dim=1)
        torch.testing.assert_close(pooled[:, i], expected)


@given(st.integers(-5, 0))
def test_pool_frames_rejects_bad_window(window: int) -> None:
    with pytest.raises(ValueError):
        pool_frames(torch.zeros(1, 4, 2), window)


# ---------------------------------------------------------------- the query parser

SQL_AND_FTS = st.sampled_from(["'", '"', ";", "--", "/*", "*/", "*", "(", ")", "OR", "AND", "NOT", "NEAR", ":",
                               "%", "_", "\\", "DROP TABLE tracks;", "' OR 1=1 --", "\x00", "\u202e", "🎵"])
queries = st.one_of(any_text, st.lists(st.one_of(SQL_AND_FTS, any_text), max_size=30).map(" ".join),
                    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=8), st.integers(1, 3000)),
                    st.none(), st.integers(), st.floats(allow_nan=True))


@given(queries)
@settings(max_examples=500, deadline=None)
def test_parse_query_is_bounded_clean_and_stable(raw: object) -> None:
    parsed = parse_query(raw)
    assert len(parsed.text) <= MAX_QUERY_CHARS
    parsed.text.encode("utf-8")
    assert not any(unicodedata.category(ch).startswith("C") for ch in parsed.text)
    assert parsed.text == parsed.text.strip() and "  " not in parsed.text
    assert len(parsed.words) <= MAX_TERMS and len(set(parsed.words)) == len(parsed.words)
    for word in parsed.words:
        assert word and word == word.lower() and all(ch.isalnum() for ch in word), word
    again = parse_query(parsed.text)
    assert again.text == parsed.text and again.words == parsed.words


def test_pool_frames_matches_numpy_on_a_long_track() -> None:
    """The same arithmetic at full size: 3 minutes at 75 frames/s, window 325."""
    frames = np.random.default_rng(0).standard_normal((13500, 8))
    pooled = pool_frames(torch.from_numpy(frames), 325).numpy()
    expected = np.stack([frames[i:i + 325].mean(0) for i in range(0, 13500, 325)])
    np.testing.assert_allclose(pooled, expected, atol=1e-12)
