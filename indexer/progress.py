"""A scan's pace for its progress bar: audio hours done, speed in x realtime, and the time left.

Speed and time left are measured over the last `WINDOW_SECONDS` of commits, so they follow the pace the
scan keeps now (models warm, a stretch of long mixes) rather than an average that includes loading the
models. Time left is the bytes still to read at the recent bytes per second: a file's cost follows its
size, not its count, so a library of short songs followed by a few hour-long mixes is not promised to end
early. Where nothing is left to read (captions redone from stored tokens) or nothing was read in the
window, it is the files left at the recent files per second.

The UI's library page shows the same figures from the `scans` row (ui/views/library_page.py, `pace`):
it has only the row's counts, and `ui/` does not import `indexer/`, so it computes its own.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from tqdm import tqdm

# Several commits (one per `commit_every` tracks) even on a slow CPU, so one batch of long or short
# tracks does not swing the figures; short enough to follow a change of pace within minutes.
WINDOW_SECONDS = 120.0


class _Mark(NamedTuple):
    at: float  # time.monotonic() of a commit
    files: int  # totals of the planned work done up to it
    read: int  # bytes
    audio: float  # seconds


@dataclass(frozen=True)
class Figures:
    audio_hours: float  # indexed since the scan started
    realtime: float | None  # audio seconds per wall second over the window; None before the first commit
    eta_seconds: float | None  # None until something was done in the window

    def text(self) -> str:
        """What the bar shows after its counts, e.g. "1.25 h audio, 37.2x realtime, ETA 12:40"."""
        speed = "--" if self.realtime is None else f"{self.realtime:.1f}"
        left = "--:--" if self.eta_seconds is None else tqdm.format_interval(self.eta_seconds)
        return f"{self.audio_hours:.2f} h audio, {speed}x realtime, ETA {left}"


class Pace:
    """The planned work of one scan (`files` to do, `size` bytes of them to read) and its commits so far."""

    def __init__(self, files: int, size: int, *, now: float | None = None, window: float = WINDOW_SECONDS) -> None:
        self.files, self.size, self.window = files, size, window
        self._marks = deque([_Mark(time.monotonic() if now is None else now, 0, 0, 0.0)])

    def advance(self, files: int, read: int, audio_seconds: float, *, now: float | None = None) -> None:
        """Count one commit: `files` done, `read` bytes of them, `audio_seconds` indexed."""
        last = self._marks[-1]
        self._marks.append(_Mark(time.monotonic() if now is None else now, last.files + files, last.read + read,
                                 last.audio + audio_seconds))
        # keep the newest mark at or before the window's start, so the window spans at least one commit
        while len(self._marks) > 2 and self._marks[1].at <= self._marks[-1].at - self.window:
            self._marks.popleft()

    def figures(self) -> Figures:
        first, last = self._marks[0], self._marks[-1]
        span = last.at - first.at
        if span <= 0:
            return Figures(last.audio / 3600, None, None)
        unread = self.size - last.read
        if unread > 0 and last.read > first.read:
            eta = unread * span / (last.read - first.read)
        elif last.files > first.files:
            eta = max(self.files - last.files, 0) * span / (last.files - first.files)
        else:
            eta = None
        return Figures(last.audio / 3600, (last.audio - first.audio) / span, eta)
