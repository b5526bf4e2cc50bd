"""Turning catalog text into safe page content, and a cheap waveform picture.

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
