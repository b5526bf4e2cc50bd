"""Track tags from mutagen, with the folder layout (Artist/Album/NN Title.ext) filling what is missing.

Tags in the wild are dirty: control characters, UTF-8 read as Latin-1, 10 MB comments, track number
4294967295. Everything here is cleaned and truncated, and a file mutagen cannot parse still gets its
tags from its path: the decoder, not the tag reader, decides whether a file is audio.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field

MAX_FIELD_CHARS = 300  # title, artist, album, ...
MAX_RAW_CHARS = 1000  # each raw tag value kept for keyword search
MAX_RAW_TAGS = 64
MAX_KEY_CHARS = 64
MAX_DURATION = 7 * 24 * 3600.0
# How far a header's duration may be from the decoded one before the header is overruled: encoder delay
# and padding, and mutagen's bitrate estimate for an MP3 without a Xing frame, are not worth a note.
DURATION_SLACK_SECONDS = 1.0
DURATION_SLACK_FRACTION = 0.05

# Lower-cased tag keys of ID3, Vorbis comments, MP4 atoms, ASF and APEv2, per field.
_KEYS = {
    "title": ("title", "tit2", "\xa9nam"),
    "artist": ("artist", "tpe1", "\xa9art", "author"),
    "album": ("album", "talb", "\xa9alb", "wm/albumtitle"),
    "album_artist": ("albumartist", "album artist", "album_artist", "tpe2", "aart", "wm/albumartist"),
    "genre": ("genre", "tcon", "\xa9gen", "wm/genre"),
    "year": ("date", "year", "tdrc", "tyer", "\xa9day", "wm/year", "originaldate", "tdor"),
    "track_no": ("tracknumber", "track", "trck", "trkn", "wm/tracknumber"),
}
_BINARY_KEYS = ("apic", "covr", "metadata_block_picture", "wm/picture", "cover art", "coverart", "pic")
_TRACK_TITLE = re.compile(r"^\s*(\d{1,3})\s*(?:[-._)]\s*|\s+)(.+)$")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_LEADING_INT = re.compile(r"^\s*(\d{1,9})")
_DISC_FOLDER = re.compile(r"^(cd|dis[ck])\s*\d+$", re.IGNORECASE)


@dataclass
class TrackTags:
    """What reading a file says about its track: its tags, its length, and which library decoded it.

    The decode workers fill in what only decoding finds (indexer/decode.py), so all of it travels
    together to the catalog row, whichever engine ran the scan.
    """

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    album_artist: str | None = None
    genre: str | None = None
    year: int | None = None
    track_no: int | None = None
    duration: float | None = None  # seconds: the header's, or decoding's where they disagree (`settle_duration`)
    header_duration: float | None = None  # the header's figure where decoding found another length, else None
    decoder: str | None = None  # the library that decoded the audio (model.audio: "ffmpeg" | "libsndfile")
    raw: dict[str, str] = field(default_factory=dict)  # every readable tag, cleaned

    def settle_duration(self, decoded: float) -> None:
        """Take the length of the file decoded to its end: it wins where the header has none or claims another
        (a WAV whose header promises 4 GB may hold one second), and the header's figure is kept beside it."""
        if self.duration is not None and abs(self.duration - decoded) <= max(
                DURATION_SLACK_SECONDS, DURATION_SLACK_FRACTION * decoded):
            return
        self.header_duration, self.duration = self.duration, decoded

    def columns(self) -> dict:
        """The values of the matching `tracks` columns."""
        return {k: v for k, v in asdict(self).items() if k != "raw"}


def clean_text(value: object, limit: int = MAX_FIELD_CHARS) -> str | None:
    """Printable NFC text without control characters, mojibake repaired where provable, at most `limit` chars."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("cp1252", errors="replace")
    text = str(value)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # lone surrogates from broken UTF-16 tags
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = _printable(text)
    # Repair until nothing changes, so cleaning a cleaned value is a no-op (each repair shortens the text).
    while (repaired := _printable(_repair_mojibake(text))) != text:
        text = repaired
    return text[:limit].rstrip() or None


def _printable(text: str) -> str:
    """NFC text with control, surrogate and private-use characters dropped and white space folded."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if ch in "\t\n\r" else ch for ch in text
                   if ch in "\t\n\r" or unicodedata.category(ch) not in ("Cc", "Cs", "Co") and ch != "\ufeff")
    return " ".join(text.split())


def _repair_mojibake(text: str) -> str:
    """UTF-8 bytes that were decoded as Latin-1 ('BeyoncÃ©') decode cleanly as UTF-8 once re-encoded."""
    if not any("\x80" <= ch <= "\xff" for ch in text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def parse_year(value: str | None) -> int | None:
    m = _YEAR.search(value or "")
    year = int(m.group(1)) if m else None
    return year if year is not None and 1000 <= year <= 2100 else None


def parse_track_no(value: str | None) -> int | None:
    m = _LEADING_INT.match(value or "")
    number = int(m.group(1)) if m else None
    return number if number is not None and 0 < number < 10000 else None


def _value_text(value: object) -> str | None:
    """One tag value as text, or None when it is binary (pictures, blobs)."""
    if isinstance(value, tuple):  # MP4 trkn/disk: (number, total)
        return "/".join(str(v) for v in value if v)
    if isinstance(value, list):
        parts = dict.fromkeys(t for t in (_value_text(v) for v in value) if t)  # ASF often repeats a value
        return "; ".join(parts) if parts else None
    if hasattr(value, "text"):  # ID3 frames hold a list of values, ID3TimeStamp one string
        return _value_text(value.text if isinstance(value.text, str) else list(value.text))
    if hasattr(value, "value") and not isinstance(value, str | bytes):  # ASF attributes
        return _value_text(value.value)
    if isinstance(value, bytes):
        if value.count(0) > len(value) // 8:
            return None
        return clean_text(value, MAX_RAW_CHARS)
    if hasattr(value, "data") and isinstance(value.data, bytes):
        return None
    return clean_text(value, MAX_RAW_CHARS)


def _raw_tags(path: str) -> tuple[dict[str, str], float | None]:
    """Readable tags and the header duration; a file mutagen cannot parse has neither."""
    import mutagen

    try:
        audio = mutagen.File(path)
    except Exception:  # mutagen raises anything (struct.error, IndexError, ...) on garbage input
        return {}, None
    if audio is None:
        return {}, None
    length = getattr(getattr(audio, "info", None), "length", None)
    duration = float(length) if isinstance(length, int | float) and math.isfinite(length) else None
    if duration is not None and not 0 < duration < MAX_DURATION:
        duration = None
    raw: dict[str, str] = {}
    try:
        items = list((audio.tags or {}).items())
    except Exception:
        items = []
    for key, value in items:
        name = clean_text(key, MAX_KEY_CHARS)
        if not name or name.lower().split(":")[0] in _BINARY_KEYS:
            continue
        try:
            text = _value_text(value)
        except Exception:
            text = None
        if text and name not in raw:
            raw[name] = text
        if len(raw) >= MAX_RAW_TAGS:
            break
    return raw, duration


def tags_from_path(path: str, root: str) -> TrackTags:
    """Artist/Album/NN Title.ext (also 'NN - Title', 'Artist - Title', and CD1/Disc 2 sub-folders)."""
    rel = os.path.relpath(path, root)
    folders = [p for p in rel.split(os.sep)[:-1] if p not in ("", ".", "..")]
    if folders and _DISC_FOLDER.match(folders[-1]):
        folders.pop()
    stem = os.path.splitext(os.path.basename(path))[0]
    out = TrackTags()
    m = _TRACK_TITLE.match(stem)
    if m:
        out.track_no, stem = parse_track_no(m.group(1)), m.group(2)
    if not folders and " - " in stem:
        artist, stem = stem.split(" - ", 1)
        out.artist = clean_text(artist)
    out.title = clean_text(stem.replace("_", " "))
    if folders:
        out.album = clean_text(folders[-1])
    if len(folders) >= 2:
        out.artist = clean_text(folders[-2])
    return out


def read_tags(path: str, root: str) -> TrackTags:
    """Tags from the file, each missing field filled from the path."""
    raw, duration = _raw_tags(path)
    lowered: dict[str, str] = {}
    for key, value in raw.items():
        lowered.setdefault(key.lower(), value)
    pick = {name: next((lowered[k] for k in keys if k in lowered), None) for name, keys in _KEYS.items()}
    tags = TrackTags(
        title=clean_text(pick["title"]), artist=clean_text(pick["artist"]), album=clean_text(pick["album"]),
        album_artist=clean_text(pick["album_artist"]), genre=clean_text(pick["genre"]),
        year=parse_year(pick["year"]), track_no=parse_track_no(pick["track_no"]), duration=duration, raw=raw)
    fallback = tags_from_path(path, root)
    for name in ("title", "artist", "album", "track_no"):
        if getattr(tags, name) is None:
            setattr(tags, name, getattr(fallback, name))
    return tags
