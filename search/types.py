"""What callers give the search engine and get back: filters, hits with the reasons they matched, result
pages, and the error for requests it cannot answer. Plain data, so the UI and the CLI can use it without
knowing how the engine ranks; with it, the values the analysis filters take, and keys as users spell
them ("Bb minor") read as the catalog spells them ("A#", "minor")."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from model.tempo_key import PITCH_CLASSES


class SearchError(ValueError):
    """A request the engine cannot answer (unknown track, unreadable audio, a filter value that means
    nothing); the message is for users."""


# The values of the analysis columns (catalog/store.py), as the key estimator writes them (tonics:
# model.tempo_key.PITCH_CLASSES) and model/describe.py says them.
MODES = ("major", "minor")
VOCALS = ("vocal", "instrumental")
_NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_SHARP = {"#": 1, "♯": 1, "sharp": 1, "b": -1, "♭": -1, "flat": -1}
# right after the letter; "b" is a flat only in lower case ("AB" is no key), and "a b minor" is B minor
ACCIDENTAL = r"#|♯|b|♭|[-\s]?(?i:sharp|flat)"
_KEY = re.compile(rf"([A-Ga-g])({ACCIDENTAL})?\s*((?i:major|maj|minor|min)|m)?")  # "Am": A minor; "AM" none


def tonic_of(letter: str, accidental: str | None) -> str:
    """A tonic as the catalog spells it (sharps only): ("B", "b") -> "A#", ("e", "sharp") -> "F"."""
    shift = _SHARP[re.sub(r"[-\s]", "", accidental).lower()] if accidental else 0
    return PITCH_CLASSES[(_NATURAL[letter.upper()] + shift) % 12]


def parse_key(text: str) -> tuple[str, str | None]:
    """(tonic, mode or None) of a key as typed: "A minor", "F# major", "Bb", "c sharp min", "Am"."""
    found = _KEY.fullmatch(text.strip())
    if found is None:
        raise SearchError(f"not a key: {text!r} (e.g. 'A minor', 'F# major', 'Bb')")
    letter, accidental, mode = found.groups()
    mode = ("major" if mode.lower().startswith("maj") else "minor") if mode else None
    return tonic_of(letter, accidental), mode


def tonic_name(text: str) -> str:
    """A tonic as typed ("a", "Bb", "F sharp") as the catalog spells it; a SearchError for anything else."""
    tonic, mode = parse_key(text)
    if mode:
        raise SearchError(f"a tonic is a note without a mode, not {text!r} (the mode is a filter of its own)")
    return tonic


def one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` as stored (lower case), or a SearchError naming the choices."""
    clean = value.strip().lower()
    if clean not in allowed:
        raise SearchError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return clean


@dataclass(frozen=True)
class Filters:
    """Restrictions that combine with any query; None means no restriction. Text fields ignore case."""

    artist: str | None = None  # the artist or the album artist
    album: str | None = None
    genre: str | None = None
    year_min: int | None = None
    year_max: int | None = None
    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    format: str | None = None  # file format as stored, e.g. "mp3" or "flac"
    root: str | None = None  # a library root, or any folder below one
    # What the analysis heard (catalog/store.py); a track not analysed yet passes none of these.
    bpm_min: float | None = None
    bpm_max: float | None = None
    tonic: str | None = None  # "A", "F#"; flats and lower case are read too ("Bb" is "A#")
    mode: str | None = None  # major | minor
    vocals: str | None = None  # vocal | instrumental
    auto_genre: str | None = None  # the genre word the taggers heard, e.g. "jazz" (model/describe.py)

    def active(self) -> bool:
        return any(getattr(self, f.name) not in (None, "") for f in fields(self))

    def sql(self) -> tuple[str, dict]:
        """An `AND ...` fragment over the alias `t` and its parameters; values are always bound."""
        parts: list[str] = []
        params: dict = {}
        text_eq = {"album": "lower(t.album) = lower($f_album)", "genre": "lower(t.genre) = lower($f_genre)",
                   "artist": "(lower(t.artist) = lower($f_artist) OR lower(t.album_artist) = lower($f_artist))",
                   "auto_genre": "lower(t.auto_genre) = lower($f_auto_genre)"}
        for name, clause in text_eq.items():
            value = getattr(self, name)
            if value not in (None, ""):
                parts.append(clause)
                params[f"f_{name}"] = str(value).strip()
        bounds = {"year_min": "t.year >= $f_year_min", "year_max": "t.year <= $f_year_max",
                  "min_duration": "t.duration >= $f_min_duration", "max_duration": "t.duration <= $f_max_duration",
                  "bpm_min": "t.bpm >= $f_bpm_min", "bpm_max": "t.bpm <= $f_bpm_max"}
        for name, clause in bounds.items():
            value = getattr(self, name)
            if value is not None:
                parts.append(clause)
                params[f"f_{name}"] = int(value) if name.startswith("year") else float(value)
        if self.format:
            parts.append("lower(t.format) = lower($f_format)")
            params["f_format"] = self.format.strip().lstrip(".")
        if self.root:
            parts.append("(t.root = $f_root OR starts_with(t.path, $f_root_dir))")
            root = self.root.rstrip("/") or "/"
            params.update(f_root=root, f_root_dir=root.rstrip("/") + "/")
        words = {"tonic": tonic_name, "mode": lambda v: one_of("mode", v, MODES),
                 "vocals": lambda v: one_of("vocals", v, VOCALS)}
        for name, stored in words.items():
            value = getattr(self, name)
            if value not in (None, ""):
                parts.append(f"t.{name} = $f_{name}")
                params[f"f_{name}"] = stored(str(value))
        return "".join(f" AND {p}" for p in parts), params


@dataclass
class Hit:
    """One result; `reasons` and the score fields say why it matched (for display and highlighting)."""

    track_id: int
    path: str
    title: str | None
    artist: str | None
    album: str | None
    genre: str | None
    year: int | None
    duration: float | None
    format: str | None
    root: str | None
    caption: str | None
    score: float  # what the list is ordered by: fused score, or audio similarity for like-queries
    semantic: float | None = None  # cosine of the query and the caption embedding
    keyword: float | None = None  # BM25 over caption, title, artist, album, genre and tags
    audio: float | None = None  # cosine of the track vectors, for "more like this"
    matched_terms: list[str] = field(default_factory=list)  # words as they occur in the track's text
    matched_fields: dict[str, list[str]] = field(default_factory=dict)  # field -> those words
    reasons: list[str] = field(default_factory=list)
    # what the analysis heard (None: not analysed, or not sure of vocals or genre)
    bpm: float | None = None
    tonic: str | None = None
    mode: str | None = None
    vocals: str | None = None
    auto_genre: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    hits: list[Hit]
    total: int  # how many tracks match in all (pages are slices of these)
    message: str = ""  # for the user: why there are no hits, or what was changed in the query

__all__ = ["MODES", "VOCALS", "Filters", "Hit", "SearchError", "SearchResult", "parse_key",
           "tonic_name"]
