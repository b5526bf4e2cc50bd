"""How the catalog's text is cut into words, the same way on both sides: the keyword snapshot's SQL
(DuckDB's FTS extension, catalog/keywords.py) and a query's Python (search/). A name or a word that
tokenises one way when written and another way when searched would never match, so both read it here.

Also the words each auto-tag is searched by (`tag_text`): the tag and the plain words model/describe.py
says for it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from model.describe import GENRES, INSTRUMENTAL, INSTRUMENTS, MOODS, VOCAL

# Tokens are runs of letters and digits in any script (the extension's default drops digits and
# non-Latin letters, which would make "1999" or a Japanese artist name unsearchable).
TOKEN_IGNORE = r"[^\p{L}\p{N}]+"
STEMMER = "porter"
STOPWORDS = "english"

NAME_COLUMNS = ("title", "artist", "album_artist", "album", "genre")

MIN_NAME_CHARS = 3  # "a" or "x" as a whole title would be named by nearly every query

# Tracks the snapshot lacks are matched by substring (search/rank.py), every word found counting alike;
# of their auto-tags only those heard this surely take part, model/describe.py's lowest threshold for
# saying a word, so a tag at 0.05 does not count as much as the caption's own words.
AUTO_TEXT_MIN = 0.3

def norm_sql(expr: str) -> str:
    """Lower case, accents stripped, every run of non-letters/digits one space: how names are compared."""
    return f"trim(regexp_replace(lower(strip_accents(coalesce({expr}, ''))), '{TOKEN_IGNORE}', ' ', 'g'))"


# The same tokens in Python, for queries and highlighting: DuckDB compiles a Unicode class like
# TOKEN_IGNORE anew for every statement, a query's cost to spend elsewhere (docs/benchmarks.md, "Why the
# search path is built this way"). With Python's Unicode database (14.0 in Python 3.11), `[^\W_]` is
# exactly \p{L} or \p{N}, and `duck_lower` and `strip_accents` below give DuckDB's lower() and
# strip_accents() on every code point it assigns (tests/test_keywords.py checks each one against DuckDB).
# DuckDB knows a newer Unicode: a text with a code point unassigned here may tokenise differently there,
# so `split_words` returns None for it and callers ask DuckDB.
_WORD = re.compile(r"[^\W_]+")
# str.lower() applies two full mappings DuckDB's per-character lower() does not: dotted capital I to
# "i" plus a combining dot, and capital sigma to final sigma at the end of a word.
_SIMPLE_LOWER = {0x130: "i", 0x3A3: "\u03c3"}


def duck_lower(text: str) -> str:
    """DuckDB's lower(): each character's simple lower-case mapping."""
    return text.lower() if text.isascii() else text.translate(_SIMPLE_LOWER).lower()


def strip_accents(text: str) -> str:
    """DuckDB's strip_accents() (utf8proc: canonical decomposition, marks Mn, Mc and Me dropped, composed)."""
    if text.isascii():
        return text
    kept = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch)[0] != "M")
    return unicodedata.normalize("NFC", kept)


def known_text(text: str) -> bool:
    """Whether this Python's Unicode database assigns every code point of `text` (see `split_words`)."""
    return text.isprintable() or not any(unicodedata.category(ch) == "Cn" for ch in text)


def split_words(text: str, keep_accents: bool = False) -> list[str] | None:
    """The tokens DuckDB's FTS makes of `text` (`norm_sql`'s words): runs of letters and digits of
    `lower(strip_accents(text))`, or of `lower(text)` with `keep_accents`; None if `text` holds a code point
    unassigned in this Python's Unicode database, which DuckDB may class otherwise."""
    if not known_text(text):
        return None
    return _WORD.findall(duck_lower(text if keep_accents else strip_accents(text)))


def name_hash(key: str) -> int:
    """The 64-bit hash `kw_names` is sorted and looked up by: DuckDB's md5_number_upper, which the rebuild
    uses (the first 8 bytes of the name's MD5, little-endian; stable across versions, unlike hash()).

    `kw_names` keeps the hash instead of the name: the chance that a word run of a query shares its hash
    with another name of the library is about runs * names / 2**64 (2e-11 for 100 runs against 3
    million names), and such a collision would cost no more than an unearned name boost.
    """
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "little")


def names_sql(source: str, id_column: str, prefix: str) -> str:
    """(track_id, field, key) rows: each track's normalised names, album artist counted as artist.

    `source` has `id_column` and normalised name columns called `prefix + column`.
    """
    cols = ", ".join(f"{prefix}{c} AS {c}" for c in NAME_COLUMNS)
    return f"""SELECT track_id, CASE WHEN field = 'album_artist' THEN 'artist' ELSE field END AS field, key
        FROM (UNPIVOT (SELECT {id_column} AS track_id, {cols} FROM {source})
              ON {", ".join(NAME_COLUMNS)} INTO NAME field VALUE key)
        WHERE length(key) >= {MIN_NAME_CHARS}"""

def quote(text: str) -> str:
    """`text` for use inside a single-quoted SQL literal."""
    return text.replace("'", "''")


def _tag_words() -> dict[tuple[str, str], str]:
    """(tagger, tag) -> its text (`tag_text`) for the tags model/describe.py gives words to."""
    words: dict[tuple[str, str], list[str]] = {}
    for vocabulary in (INSTRUMENTS, GENRES, MOODS, {"vocals": VOCAL}):
        for word, sources in vocabulary.items():
            for tagger, names in sources.items():
                for name in names:
                    words.setdefault((tagger, name), [name]).append(word)
    for tagger, names in INSTRUMENTAL.items():  # "no vocals" must not match "vocals"
        words.update({(tagger, name): ["instrumental"] for name in names})
    return {key: " ".join(dict.fromkeys(ws)) for key, ws in words.items()}


TAG_WORDS = _tag_words()
TAG_WORDS_SQL = "(SELECT * FROM (VALUES {}) v(tagger, tag, words))".format(", ".join(
    f"('{quote(tagger)}', '{quote(tag)}', '{quote(text)}')" for (tagger, tag), text in TAG_WORDS.items()))


def tag_text(tagger: str, tag: str) -> str:
    """What an auto-tag is searched by: the tag and the plain words model/describe.py says for it (a tag of
    "no vocals" only as "instrumental")."""
    return TAG_WORDS.get((tagger, tag), tag)


def auto_text_sql(scope: str = "") -> str:
    """(track_id, auto_text): the texts of each track's auto-tags heard with at least AUTO_TEXT_MIN, for
    substring matching; `scope`: a condition on `a.track_id` (or "")."""
    return f"""SELECT a.track_id, string_agg(coalesce(w.words, a.tag), ' ' ORDER BY a.tagger, a.tag)
            AS auto_text
        FROM auto_tags a LEFT JOIN {TAG_WORDS_SQL} w ON w.tagger = a.tagger AND w.tag = a.tag
        WHERE a.probability >= {AUTO_TEXT_MIN} {f"AND {scope}" if scope else ""} GROUP BY a.track_id"""
