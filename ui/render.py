"""Turning catalog text into safe page content, friendly names for tag keys, and a cheap waveform picture.

Tags and captions come from files anyone can write, so they are never trusted as HTML or markdown:
`html_text` escapes first and only then wraps matched words in <mark>, and `md_escape` backslash-escapes
every markdown punctuation character for the few places that render markdown (chat bubbles).
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterable

import numpy as np

_MD_SPECIAL = frozenset(string.punctuation)


def md_escape(text: str) -> str:
    """Markdown that displays `text` literally: no links, emphasis, HTML, LaTeX or colour directives."""
    out = []
    for ch in text:
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("  \n")
        else:
            out.append(ch)
    return "".join(out)


def highlight_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching whole words that start with any term, longest term first."""
    words = sorted({t.strip().lower() for t in terms if t and t.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")\w*", re.IGNORECASE)


def html_text(text: str | None, terms: Iterable[str] = ()) -> str:
    """HTML for `text` shown literally, with words that start with one of `terms` in <mark>."""
    text = text or ""
    pattern = highlight_pattern(terms)
    if pattern is None:
        return html.escape(text)
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts.append(html.escape(text[last:match.start()]))
        parts.append("<mark>" + html.escape(match.group(0)) + "</mark>")
        last = match.end()
    parts.append(html.escape(text[last:]))
    return "".join(parts)


def fmt_duration(seconds: float | None) -> str:
    """m:ss, or h:mm:ss for long mixes; an em dash when unknown."""
    if seconds is None or not np.isfinite(seconds) or seconds < 0:
        return "—"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def waveform_image(samples: np.ndarray, width: int = 960, height: int = 72,
                   color: tuple[int, int, int] = (255, 75, 75)) -> np.ndarray:
    """An RGBA picture of the min/max envelope per pixel column; transparent so it suits light and dark themes."""
    image = np.zeros((height, width, 4), dtype=np.uint8)
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        return image
    edges = np.linspace(0, samples.size, width + 1).astype(np.int64)
    edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)  # at least one sample per column
    edges = np.minimum(edges, samples.size)
    starts = np.minimum(edges[:-1], samples.size - 1)
    lo = np.minimum.reduceat(samples, starts)
    hi = np.maximum.reduceat(samples, starts)
    peak = float(max(np.abs(lo).max(), np.abs(hi).max(), 1e-6))
    mid = (height - 1) / 2
    top = np.floor(mid - hi / peak * mid).astype(np.int64)
    bottom = np.ceil(mid - lo / peak * mid).astype(np.int64)
    rows = np.arange(height)[:, None]
    mask = (rows >= top[None, :]) & (rows <= bottom[None, :])
    image[mask] = (*color, 255)
    return image


# Friendly names of the tag keys mutagen reports (lower-cased): ID3v2 frames, Vorbis comments and APEv2
# items, MP4 atoms, ASF attributes. The indexer stores keys as the file spells them (tags table).
TAG_NAMES = {
    # ID3v2.3/2.4 frames
    "tit1": "grouping", "tit2": "title", "tit3": "subtitle", "talb": "album", "tpe1": "artist",
    "tpe2": "album artist", "tpe3": "conductor", "tpe4": "remixer", "tcon": "genre", "tdrc": "date",
    "tyer": "year", "tdat": "date", "tory": "original year", "tdor": "original date", "tdrl": "release date",
    "trck": "track number", "tpos": "disc number", "tcom": "composer", "text": "lyricist",
    "tsse": "encoder", "tenc": "encoded by", "tbpm": "BPM", "tkey": "initial key", "tlan": "language",
    "tcop": "copyright", "tpub": "publisher", "tsrc": "ISRC", "tmoo": "mood", "tcmp": "compilation",
    "tsoa": "album sort order", "tsop": "artist sort order", "tsot": "title sort order",
    "tso2": "album artist sort order", "tsoc": "composer sort order", "tlen": "length (ms)",
    "tmed": "media type", "tope": "original artist", "toal": "original album", "tflt": "file type",
    "town": "owner", "tdtg": "tagging time", "tden": "encoding time", "tipl": "involved people",
    "tmcl": "musicians", "grp1": "grouping", "mvnm": "movement", "mvin": "movement number",
    "comm": "comment", "uslt": "lyrics", "wxxx": "URL", "woar": "artist URL", "wcom": "purchase URL",
    "popm": "rating", "pcnt": "play count", "ufid": "unique file id",
    # Vorbis comments and APEv2 items
    "title": "title", "artist": "artist", "album": "album", "albumartist": "album artist",
    "album artist": "album artist", "album_artist": "album artist", "genre": "genre", "date": "date",
    "year": "year", "tracknumber": "track number", "track": "track number", "tracktotal": "total tracks",
    "totaltracks": "total tracks", "discnumber": "disc number", "disc": "disc number",
    "disctotal": "total discs", "totaldiscs": "total discs", "composer": "composer", "performer": "performer",
    "conductor": "conductor", "lyricist": "lyricist", "comment": "comment", "description": "comment",
    "encoder": "encoder", "encoded-by": "encoded by", "encodedby": "encoded by", "copyright": "copyright",
    "license": "license", "label": "label", "organization": "label", "publisher": "publisher", "isrc": "ISRC",
    "bpm": "BPM", "initialkey": "initial key", "key": "initial key", "language": "language",
    "lyrics": "lyrics", "unsyncedlyrics": "lyrics", "mood": "mood", "grouping": "grouping",
    "compilation": "compilation", "barcode": "barcode", "catalognumber": "catalog number",
    "originaldate": "original date", "originalyear": "original year", "releasedate": "release date",
    "replaygain_track_gain": "ReplayGain track gain", "replaygain_track_peak": "ReplayGain track peak",
    "replaygain_album_gain": "ReplayGain album gain", "replaygain_album_peak": "ReplayGain album peak",
    "musicbrainz_trackid": "MusicBrainz recording id", "musicbrainz_albumid": "MusicBrainz release id",
    "musicbrainz_artistid": "MusicBrainz artist id", "musicbrainz_albumartistid": "MusicBrainz album artist id",
    "musicbrainz_releasetrackid": "MusicBrainz track id",
    # MP4 atoms
    "\xa9nam": "title", "\xa9art": "artist", "aart": "album artist", "\xa9alb": "album", "\xa9gen": "genre",
    "gnre": "genre", "\xa9day": "date", "trkn": "track number", "disk": "disc number", "\xa9wrt": "composer",
    "\xa9cmt": "comment", "\xa9too": "encoder", "\xa9enc": "encoded by", "\xa9grp": "grouping",
    "\xa9lyr": "lyrics", "cprt": "copyright", "tmpo": "BPM", "cpil": "compilation", "desc": "description",
    "ldes": "long description", "sonm": "title sort order", "soar": "artist sort order",
    "soal": "album sort order", "soaa": "album artist sort order", "soco": "composer sort order",
    "pgap": "gapless", "\xa9mvn": "movement", "\xa9wrk": "work",
    # ASF (WMA) attributes
    "author": "artist", "wm/albumtitle": "album", "wm/albumartist": "album artist", "wm/genre": "genre",
    "wm/year": "year", "wm/tracknumber": "track number", "wm/partofset": "disc number",
    "wm/composer": "composer", "wm/encodedby": "encoded by", "wm/toolname": "encoder", "wm/publisher": "publisher",
    "wm/mood": "mood", "wm/beatsperminute": "BPM", "wm/initialkey": "initial key",
}
_USER_DEFINED = {"txxx": 1, "----": 2}  # ID3 TXXX:desc and MP4 ----:mean:name are named by what follows
_WITH_LANGUAGE = {"comm", "uslt"}  # ID3 COMM:desc:lang and USLT:desc:lang end in a language code


def tag_label(key: str) -> str:
    """The friendly name of a stored tag key ("TIT2" -> "title", "COMM:iTunNORM:eng" -> "comment (iTunNORM)",
    "TXXX:replaygain_track_gain" -> "ReplayGain track gain"); keys nobody named are shown as they are."""
    head, *rest = key.split(":")
    skip = _USER_DEFINED.get(head.lower())
    if skip is not None and len(rest) >= skip:
        named = ":".join(rest[skip - 1:])
        return TAG_NAMES.get(named.lower(), named) if named else key
    name = TAG_NAMES.get(head.lower())
    if name is None:
        return key
    detail = ":".join(p for p in (rest[:-1] if head.lower() in _WITH_LANGUAGE else rest) if p)
    return f"{name} ({detail})" if detail else name


_FIRST_TAGS = ("title", "artist", "album", "album artist", "genre", "date", "year", "track number", "disc number",
               "composer")


def tag_rows(tags: dict[str, str]) -> list[dict[str, str]]:
    """A file's tags as table rows under friendly names: the usual fields first, then the rest by name."""
    rows = [{"tag": tag_label(k), "value": str(v)} for k, v in tags.items()]
    first = {name: i for i, name in enumerate(_FIRST_TAGS)}
    return sorted(rows, key=lambda r: (first.get(r["tag"], len(first)), r["tag"].lower(), r["value"]))
