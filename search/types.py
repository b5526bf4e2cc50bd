"""What callers give the search engine and get back: filters, hits with the reasons they matched, result
pages, and the error for requests it cannot answer. Plain data, so the UI and the CLI can use it without
knowing how the engine ranks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


class SearchError(ValueError):
    """A request the engine cannot answer (unknown track, unreadable audio); the message is for users."""


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

    def active(self) -> bool:
        return any(getattr(self, f.name) not in (None, "") for f in fields(self))

    def sql(self) -> tuple[str, dict]:
        """An `AND ...` fragment over the alias `t` and its parameters; values are always bound."""
        parts: list[str] = []
        params: dict = {}
        text_eq = {"album": "lower(t.album) = lower($f_album)", "genre": "lower(t.genre) = lower($f_genre)",
                   "artist": "(lower(t.artist) = lower($f_artist) OR lower(t.album_artist) = lower($f_artist))"}
        for name, clause in text_eq.items():
            value = getattr(self, name)
            if value not in (None, ""):
                parts.append(clause)
                params[f"f_{name}"] = str(value).strip()
        bounds = {"year_min": "t.year >= $f_year_min", "year_max": "t.year <= $f_year_max",
                  "min_duration": "t.duration >= $f_min_duration", "max_duration": "t.duration <= $f_max_duration"}
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    hits: list[Hit]
    total: int  # how many tracks match in all (pages are slices of these)
    message: str = ""  # for the user: why there are no hits, or what was changed in the query

__all__ = ["Filters", "Hit", "SearchError", "SearchResult"]
