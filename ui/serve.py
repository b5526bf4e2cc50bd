"""Safe file access for the player: a path is served only if it really lies inside a configured library root.

The catalog stores absolute paths, but a path can reach the page from a query string, a stale catalog
or a crafted tag, so every read goes through `resolve_in_roots`, which refuses `..` segments (also when
URL-encoded), relative paths, control characters, and symlinks whose target leaves the roots.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

AUDIO_MIME = {
    ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".wav": "audio/wav", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac", ".aiff": "audio/aiff",
    ".aif": "audio/aiff", ".wma": "audio/x-ms-wma", ".webm": "audio/webm",
}


class ForbiddenPath(PermissionError):
    """The path is outside the library roots or malformed; the message is safe to show."""


def _decoded_forms(raw: str) -> list[str]:
    """The raw string and each successive URL-decoding of it, so double-encoded `..` is seen too."""
    forms = [raw]
    for _ in range(4):
        nxt = unquote(forms[-1])
        if nxt == forms[-1]:
            break
        forms.append(nxt)
    return forms


def resolve_in_roots(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]) -> Path:
    """Return the real path of an existing regular file inside one of `roots`, or raise ForbiddenPath."""
    raw = os.fspath(path)
    if not raw or any(ord(c) < 32 for c in raw):
        raise ForbiddenPath("refused: empty path or control characters")
    for form in _decoded_forms(raw):
        if ".." in form.replace("\\", "/").split("/"):
            raise ForbiddenPath("refused: parent-directory segments are not allowed")
    if not os.path.isabs(raw):
        raise ForbiddenPath("refused: only absolute paths from the catalog are served")
    real_roots = [Path(r).resolve() for r in roots if os.fspath(r)]
    if not real_roots:
        raise ForbiddenPath("refused: no library roots are configured")
    try:
        real = Path(raw).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ForbiddenPath("refused: file not found") from exc
    if not any(real.is_relative_to(root) for root in real_roots):
        raise ForbiddenPath("refused: file is outside the library roots")
    if not real.is_file():
        raise ForbiddenPath("refused: not a regular file")
    return real


def read_audio(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]],
               max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and MIME type for `st.audio`; files over `max_bytes` are refused to bound memory."""
    real = resolve_in_roots(path, roots)
    size = real.stat().st_size
    if size > max_bytes:
        raise ForbiddenPath(f"refused: file is {size / 2**20:.0f} MB, over the {max_bytes / 2**20:.0f} MB player limit")
    return real.read_bytes(), AUDIO_MIME.get(real.suffix.lower(), "audio/mpeg")
