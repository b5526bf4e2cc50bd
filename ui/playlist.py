"""M3U export of a result list, so a search can be played in any media player."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class PlaylistEntry(Protocol):
    path: str
    title: str | None
    artist: str | None
    duration: float | None


def _one_line(text: str | None) -> str:
    """Tag text on one line: a newline inside a tag would otherwise inject a playlist entry."""
    return _CONTROL.sub(" ", text or "").strip()


def to_m3u(entries: Iterable[PlaylistEntry]) -> str:
    """Extended M3U: #EXTINF:seconds,artist - title followed by the absolute path of each entry."""
    lines = ["#EXTM3U"]
    for entry in entries:
        seconds = -1 if entry.duration is None else int(round(entry.duration))
        title = _one_line(entry.title) or _one_line(entry.path.rsplit("/", 1)[-1])
        artist = _one_line(entry.artist)
        label = f"{artist} - {title}" if artist else title
        lines.append(f"#EXTINF:{seconds},{label}")
        lines.append(_one_line(entry.path))
    return "\n".join(lines) + "\n"
