"""The query parser: whatever a user types becomes bounded, normalised text and a short list of words.

Every later stage (the text embedder, keyword SQL, field matching) sees only what this returns, so no
input (10,000 characters, SQL or FTS syntax such as `'";--*()`, control characters, emoji, any script)
can make a query fail: user text never reaches SQL as code, only as bound parameters or as these words,
which hold nothing but letters and digits.

It also reads what the words ask of the tempo, key and vocals the analysis heard (`MusicIntent`,
search/music.py): "fast", "slow", "mid-tempo"; "120 bpm", "110-130 bpm"; "minor", "in a minor key",
"A minor", "F# major"; "instrumental", "no vocals", "with vocals". These become ranking boosts, and the
words stay keyword terms and part of the embedded text, so a caption that says "slow" still matches
"slow". A key needs its letter in upper case or an accidental ("A minor", "f# major", "c minor"): "a
minor" in lower case, and "a minor key" in any case, read as the article, so they ask for the mode only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from search.music import BPM_TOLERANCE, MusicIntent
from search.types import ACCIDENTAL, tonic_of

# MiniLM reads at most 256 word pieces (about 1,000 characters of English); a search query longer than
# a few sentences is almost always a paste by mistake, so keep the head and say so.
MAX_QUERY_CHARS = 300
# Each keyword term is one posting-list scan; 32 distinct words covers any real query.
MAX_TERMS = 32

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits in any script, like the FTS tokenizer
_SPACE = re.compile(r"\s+")
_NUMBER = r"(\d{2,3}(?:\.\d+)?)"
_BPM = re.compile(rf"(?<![\d.]){_NUMBER}\s*(?:(?:-|–|to)\s*{_NUMBER}\s*)?(?:bpm|beats per minute)\b",
                  re.IGNORECASE)
BPM_RANGE = (30.0, 300.0)  # numbers outside it before "bpm" are not tempos a track has
_TEMPO = re.compile(r"\b(slow|fast|up-?tempo|down-?tempo|mid-?tempo|mid tempo|medium[- ]tempo|moderate tempo)"
                    r"\b", re.IGNORECASE)
_KEY_WORDS = re.compile(rf"(?<![^\W_])([A-Ga-g])({ACCIDENTAL})?\s*(?i:(major|minor))\b(\s+(?i:key))?")
_MODE = re.compile(r"\b(major|minor)\b", re.IGNORECASE)
_INSTRUMENTAL = re.compile(r"\b(instrumentals?|(?:no|without) (?:vocals?|voices?|singing|singers?))\b",
                           re.IGNORECASE)
_VOCAL = re.compile(r"\b(vocals?|singing)\b", re.IGNORECASE)  # not "singers": "throat singers" names a style


@dataclass(frozen=True)
class ParsedQuery:
    """`text` is what gets embedded; `words` are lower-case keyword terms; `notes` explain any change."""

    text: str
    words: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    music: MusicIntent = field(default=MusicIntent())  # what the words ask of tempo, key and vocals

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


def _tempo(text: str) -> dict:
    """A BPM range ("120 bpm": within BPM_TOLERANCE; "110-130 bpm") or else a tempo word's class."""
    for found in _BPM.finditer(text):
        lo, hi = (float(v) for v in found.groups(found.group(1)))
        lo, hi = min(lo, hi), max(lo, hi)
        if BPM_RANGE[0] <= lo and hi <= BPM_RANGE[1]:
            return {"bpm": (lo * (1 - BPM_TOLERANCE), hi * (1 + BPM_TOLERANCE)) if lo == hi else (lo, hi)}
    found = _TEMPO.search(text)
    if found is None:
        return {}
    word = found.group(1).lower()
    return {"tempo": "slow" if word.startswith(("slow", "down")) else
            "fast" if word.startswith(("fast", "up")) else "mid-tempo"}


def _key(text: str) -> dict:
    """A key ("A minor", "F# major") or else a mode ("minor", "a minor key")."""
    for found in _KEY_WORDS.finditer(text):
        letter, accidental, mode, key = found.groups()
        if letter in "aA" and not accidental and (letter == "a" or key):  # the article: "a minor key"
            continue
        return {"tonic": tonic_of(letter, accidental), "mode": mode.lower()}
    found = _MODE.search(text)
    return {"mode": found.group(1).lower()} if found else {}


def _vocals(text: str) -> dict:
    if _INSTRUMENTAL.search(text):
        return {"vocals": "instrumental"}
    return {"vocals": "vocal"} if _VOCAL.search(text) else {}


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
    music = MusicIntent(**_tempo(text), **_key(text), **_vocals(text))
    return ParsedQuery(text=text, words=tuple(words), notes=tuple(notes), music=music)
