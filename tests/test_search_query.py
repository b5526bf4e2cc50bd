"""The query parser: any input becomes bounded, normalised text and safe keyword terms, never an error; and
what its words ask of tempo, key and vocals, with the key and filter values as the catalog spells them."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.music import MusicIntent
from search.query import MAX_QUERY_CHARS, MAX_TERMS, parse_query
from search.types import Filters, SearchError, parse_key, tonic_name

SAFE_WORD = re.compile(r"^[^\W_]+$")


@given(st.one_of(st.text(max_size=2000), st.text(alphabet=st.characters(codec="utf-8"), max_size=400),
                 st.sampled_from(["", " ", "'\";--*()", "piano); DROP TABLE tracks; --", "a" * 10_000,
                                  "🎸🥁 ✨", "\x00\x1b[31m\u202e", "NEAR(piano strings) AND NOT rock*"])))
@settings(max_examples=300, deadline=None)
def test_parser_bounds_and_normalises_any_input(raw: str) -> None:
    parsed = parse_query(raw)
    assert len(parsed.text) <= MAX_QUERY_CHARS
    assert parsed.text == parsed.text.strip()
    assert "  " not in parsed.text
    assert not any(unicodedata.category(ch).startswith("C") for ch in parsed.text)
    assert len(parsed.words) <= MAX_TERMS
    assert len(set(parsed.words)) == len(parsed.words)
    for word in parsed.words:
        assert SAFE_WORD.match(word), word  # only letters and digits reach the keyword SQL
        assert word == word.lower()
        assert word in parsed.text.lower()
    assert parsed.empty == (parsed.text == "")
    assert parse_query(parsed.text).text == parsed.text  # normalising twice changes nothing


def test_parser_keeps_meaningful_queries_intact() -> None:
    parsed = parse_query("  Calm   piano\tby  Beyoncé, 1999!  ")
    assert parsed.text == "Calm piano by Beyoncé, 1999!"
    assert parsed.words == ("calm", "piano", "by", "beyoncé", "1999")
    assert parsed.phrase == "calm piano by beyoncé 1999"
    assert parsed.notes == ()


def test_parser_explains_what_it_cut() -> None:
    long = parse_query("slow strings " * 2000)
    assert len(long.text) <= MAX_QUERY_CHARS and long.text.endswith("strings")
    assert any("shortened" in note for note in long.notes)
    many = parse_query(" ".join(f"word{i}" for i in range(100)))
    assert len(many.words) == MAX_TERMS
    assert any(str(MAX_TERMS) in note for note in many.notes)


def test_parser_strips_syntax_but_keeps_words() -> None:
    parsed = parse_query("'\";-- piano* (strings) OR \"sad\"")
    assert parsed.words == ("piano", "strings", "or", "sad")
    assert parse_query("'\";--*()").words == ()
    assert parse_query(None).empty
    assert parse_query("東京 ナイト").words == ("東京", "ナイト")


def test_parser_reads_what_the_words_ask_of_tempo_key_and_vocals() -> None:
    cases = {
        "fast techno": MusicIntent(tempo="fast"),
        "slow sad piano": MusicIntent(tempo="slow"),
        "mid-tempo funk": MusicIntent(tempo="mid-tempo"),
        "medium tempo jazz": MusicIntent(tempo="mid-tempo"),
        "120 bpm": MusicIntent(bpm=(114.0, 126.0)),
        "house at around 120BPM": MusicIntent(bpm=(114.0, 126.0)),
        "fast, 110-130 bpm": MusicIntent(bpm=(110.0, 130.0)),  # the number is the more exact
        "minor": MusicIntent(mode="minor"),
        "a sad piece in a minor key": MusicIntent(mode="minor"),
        "A minor key": MusicIntent(mode="minor"),  # the article, capitalised
        "strings in A minor": MusicIntent(tonic="A", mode="minor"),
        "F# major": MusicIntent(tonic="F#", mode="major"),
        "Bb minor ballad": MusicIntent(tonic="A#", mode="minor"),
        "c sharp minor": MusicIntent(tonic="C#", mode="minor"),
        "E flat major": MusicIntent(tonic="D#", mode="major"),
        "a b minor piece": MusicIntent(tonic="B", mode="minor"),  # an accidental follows its letter
        "instrumental": MusicIntent(vocals="instrumental"),
        "rock with no vocals": MusicIntent(vocals="instrumental"),
        "with vocals": MusicIntent(vocals="vocal"),
        "Eb major at 90 bpm with vocals": MusicIntent(bpm=(85.5, 94.5), tonic="D#", mode="major", vocals="vocal"),
        "calm piano": MusicIntent(),
        "breakfast music 2020 bpm": MusicIntent(),  # no word "fast", no tempo a track has
        "track 5 by Amy": MusicIntent(),
    }
    for text, intent in cases.items():
        parsed = parse_query(text)
        assert parsed.music == intent, text
    assert parse_query("slow sad piano").words == ("slow", "sad", "piano")  # the words stay keywords


def test_keys_and_filter_values_are_read_as_the_catalog_spells_them() -> None:
    assert [parse_key(k) for k in ("A minor", "f# major", "Bb", "c sharp min", "Am", "E flat")] == \
        [("A", "minor"), ("F#", "major"), ("A#", None), ("C#", "minor"), ("A", "minor"), ("D#", None)]
    assert tonic_name(" g ") == "G"
    for bad in ("H", "AM", "A minor", "", "C##"):
        with pytest.raises(SearchError):
            tonic_name(bad)
    sql, params = Filters(tonic="Db", mode=" Minor", vocals="INSTRUMENTAL", bpm_min=90).sql()
    assert params == {"f_bpm_min": 90.0, "f_tonic": "C#", "f_mode": "minor", "f_vocals": "instrumental"}
    assert all(f"${name}" in sql for name in params)
