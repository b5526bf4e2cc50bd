"""The query parser: any input becomes bounded, normalised text and safe keyword terms, never an error."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from search.query import MAX_QUERY_CHARS, MAX_TERMS, parse_query

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
