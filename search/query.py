"""The query parser: whatever a user types becomes bounded, normalised text and a short list of words.

Every later stage (the text embedder, keyword SQL, field matching) sees only what this returns, so no
input (10,000 characters, SQL or FTS syntax such as `'";--*()`, control characters, emoji, any script)
can make a query fail: user text never reaches SQL as code, only as bound parameters or as these words,
which hold nothing but letters and digits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

# MiniLM reads at most 256 word pieces (about 1,000 characters of English); a search query longer than
# a few sentences is almost always a paste by mistake, so keep the head and say so.
MAX_QUERY_CHARS = 300
# Each keyword term is one posting-list scan; 32 distinct words covers any real query.
MAX_TERMS = 32

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits in any script, like the FTS tokenizer
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ParsedQuery:
    """`text` is what gets embedded; `words` are lower-case keyword terms; `notes` explain any change."""

    text: str
    words: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.text

    @property
    def phrase(self) -> str:
        """The words joined by single spaces: what an exact title or artist match is compared with."""
        return " ".join(self.words)


def _clean_char(ch: str) -> str:
    """Control, format, surrogate and unassigned code points become spaces; everything else is kept."""
    return " " if unicodedata.category(ch).startswith("C") else ch


def parse_query(raw: object) -> ParsedQuery:
    """Normalise (NFKC, no control characters, single spaces), bound the length and extract words."""
    notes: list[str] = []
    text = "" if raw is None else str(raw)
    if len(text) > 20 * MAX_QUERY_CHARS:  # skip normalising megabytes we would throw away
        text = text[: 20 * MAX_QUERY_CHARS]
    text = unicodedata.normalize("NFKC", text)
    text = _SPACE.sub(" ", "".join(_clean_char(ch) for ch in text)).strip()
    if len(text) > MAX_QUERY_CHARS:
        cut = text[:MAX_QUERY_CHARS]
        space = cut.rfind(" ")
        text = (cut[:space] if space > MAX_QUERY_CHARS // 2 else cut).strip()
        notes.append(f"The query was shortened to its first {len(text)} characters.")
    words: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word not in words:
            words.append(word)
    if len(words) > MAX_TERMS:
        words = words[:MAX_TERMS]
        notes.append(f"Only the first {MAX_TERMS} distinct words are used for keyword matching.")
    return ParsedQuery(text=text, words=tuple(words), notes=tuple(notes))
