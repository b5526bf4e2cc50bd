"""What is on disk, and how it differs from the catalog: the walk, the content fingerprint and the plan.

The walk follows symbolic links but enters each real folder once (keyed by device and inode), so a
link back to a parent cannot loop, and a file reachable by two paths is indexed once. Paths are kept
as found under their root (not resolved), since that is what the user sees and plays.

The plan compares cheap facts first: size and mtime equal means unchanged. When they differ, or a
path is new, a fingerprint (blake2b of the size and three 64 KiB blocks) decides between "touched",
"changed", "moved" (the same content under a new path, whose old path is gone) and "new".
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field

AUDIO_EXTENSIONS = frozenset({
    ".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".wave", ".aif", ".aiff", ".aifc",
    ".m4a", ".m4b", ".mp4", ".aac", ".wma",
})
FINGERPRINT_BLOCK = 64 * 1024


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute, as found under root
    root: str
    size: int
    mtime: float

    @property
    def format(self) -> str:
        return os.path.splitext(self.path)[1].lower().lstrip(".")


@dataclass(frozen=True)
class Failure:
    """A file (or folder) that could not be indexed, with a reason fit to show a user."""

    path: str
    root: str | None
    stage: str  # discover | decode | encode | caption
    reason: str
    size: int | None = None
    mtime: float | None = None
    track_id: int | None = None  # a catalog track this file was; it is dropped with the failure


@dataclass
class Walk:
    files: list[FileEntry] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # roots that exist: only their tracks can be "gone"
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed


def absolute(path: str | os.PathLike) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk(roots: list[str]) -> Walk:
    """Audio files under each root (a root may also be one file); hidden files and folders are skipped."""
    out = Walk()
    seen: set[tuple[int, int]] = set()
    for root in dict.fromkeys(absolute(r) for r in roots):
        if not is_utf8(root):
            out.failures.append(Failure(printable(root), None, "discover", "name is not valid UTF-8: rename it"))
            continue
        try:
            st = os.stat(root)
        except OSError as exc:
            out.failures.append(Failure(root, root, "discover", f"library folder unavailable: {_os_reason(exc)}"))
            continue
        out.roots.append(root)
        if stat.S_ISDIR(st.st_mode):
            _walk_dir(root, root, out, seen)
        else:
            _add_file(root, os.path.dirname(root), st, out, seen)
    out.files.sort(key=lambda e: e.path)
    return out


def _walk_dir(root: str, top: str, out: Walk, seen: set[tuple[int, int]]) -> None:
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue  # a link loop or a second link to a folder already walked
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.unreadable.append(folder)
            out.failures.append(Failure(folder, root, "discover", f"cannot list folder: {_os_reason(exc)}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not is_utf8(entry.name):
                out.failures.append(Failure(printable(entry.path), root, "discover",
                                            "name is not valid UTF-8: rename it to index it"))
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                    continue
                if os.path.splitext(entry.name)[1].lower() not in AUDIO_EXTENSIONS:
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                link = "broken symbolic link: " if entry.is_symlink() else "cannot read: "
                out.failures.append(Failure(entry.path, root, "discover", link + _os_reason(exc)))
                continue
            _add_file(entry.path, root, st, out, seen)


def _add_file(path: str, root: str, st: os.stat_result, out: Walk, seen: set[tuple[int, int]]) -> None:
    if not stat.S_ISREG(st.st_mode):
        out.failures.append(Failure(path, root, "discover", "not a regular file (a pipe, socket or device): skipped"))
        return
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    out.files.append(FileEntry(path, root, st.st_size, st.st_mtime))


def is_utf8(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as surrogates; DuckDB cannot)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def printable(path: str) -> str:
    """A path that can be stored and shown, with undecodable bytes written as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def fingerprint(path: str, size: int) -> str:
    """blake2b of the size and the first, middle and last 64 KiB: cheap on huge files, finds moved ones."""
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - FINGERPRINT_BLOCK // 2), max(0, size - FINGERPRINT_BLOCK)}):
            f.seek(offset)
            h.update(f.read(FINGERPRINT_BLOCK))
    return h.hexdigest()


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass(frozen=True)
class Known:
    """A catalog track, as far as the plan needs it."""

    id: int
    path: str
    size: int
    mtime: float
    fingerprint: str | None
    status: str
    encoder_version: str | None
    pipeline_version: str | None
    analysis_version: str | None = None


@dataclass(frozen=True)
class Job:
    entry: FileEntry
    fingerprint: str
    track_id: int | None  # the catalog track this file replaces (changed, stale or half-done)
    reason: str  # new | changed | stale | incomplete | retry | reanalyse


@dataclass
class Plan:
    index: list[Job] = field(default_factory=list)  # decode, encode, caption
    recaption: list[int] = field(default_factory=list)  # caption again from stored tokens
    reanalyse: list[Job] = field(default_factory=list)  # decode and analyse again, keep the tokens
    moves: list[tuple[int, FileEntry]] = field(default_factory=list)  # same content, new path
    touches: list[tuple[int, FileEntry]] = field(default_factory=list)  # same content, new mtime
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0
    skipped_failed: list[str] = field(default_factory=list)  # failed before and not changed since
    failures: list[Failure] = field(default_factory=list)
    stale_errors: list[str] = field(default_factory=list)  # error rows of files no longer found


def plan_scan(found: Walk, known: list[Known], failed: dict[str, tuple[int | None, float | None]],
              encoder_version: str, pipeline_version: str, recaption: bool = False,
              analysis_version: str | None = None) -> Plan:
    """Decide the work for each file: only what is new, changed or stale is redone.

    A track whose analysis is older than `analysis_version` (or missing: a catalog from before the
    analysis) is analysed again without being encoded again; None leaves analyses alone.
    """
    plan = Plan(failures=list(found.failures))
    by_path = {k.path: k for k in known}
    found_paths = {e.path for e in found.files}
    new_files: list[tuple[FileEntry, str]] = []

    def settle(k: Known, entry: FileEntry, fp: str) -> bool:
        """A catalog track whose content is on disk at `entry`: plan what is stale; True if nothing is."""
        if k.status != "done":
            plan.index.append(Job(entry, fp, k.id, "incomplete"))
        elif k.encoder_version != encoder_version:
            plan.index.append(Job(entry, fp, k.id, "stale"))
        else:
            fresh = True
            if analysis_version is not None and k.analysis_version != analysis_version:
                plan.reanalyse.append(Job(entry, fp, k.id, "reanalyse"))
                fresh = False
            if k.pipeline_version != pipeline_version or recaption:
                plan.recaption.append(k.id)
                fresh = False
            return fresh
        return False

    for entry in found.files:
        k = by_path.get(entry.path)
        if k is None and failed.get(entry.path) == (entry.size, entry.mtime):
            plan.skipped_failed.append(entry.path)
            continue
        unchanged_stat = k is not None and k.fingerprint and (k.size, k.mtime) == (entry.size, entry.mtime)
        if unchanged_stat:
            plan.unchanged += settle(k, entry, k.fingerprint)
            continue
        try:
            fp = fingerprint(entry.path, entry.size)
        except OSError as exc:
            plan.failures.append(Failure(entry.path, entry.root, "discover", f"cannot read: {_os_reason(exc)}",
                                         entry.size, entry.mtime))
            continue
        if k is None:
            new_files.append((entry, fp))
        elif fp == k.fingerprint:
            plan.touches.append((k.id, entry))
            plan.unchanged += settle(k, entry, fp)
        else:
            plan.index.append(Job(entry, fp, k.id, "changed"))

    def gone(k: Known) -> bool:
        return k.path not in found_paths and any(is_under(k.path, r) for r in found.roots) and not any(
            is_under(k.path, d) for d in found.unreadable)

    sources: dict[str, list[Known]] = defaultdict(list)  # fingerprint -> tracks a new file may have moved from
    for k in known:
        if k.fingerprint and (gone(k) or (k.path not in found_paths and not os.path.exists(k.path))):
            sources[k.fingerprint].append(k)
    moved_from: set[int] = set()
    for entry, fp in new_files:
        k = sources[fp].pop() if sources.get(fp) else None
        if k is None:
            plan.index.append(Job(entry, fp, None, "retry" if entry.path in failed else "new"))
            continue
        moved_from.add(k.id)
        plan.moves.append((k.id, entry))
        settle(k, entry, fp)
    plan.removed = [k.id for k in known if k.id not in moved_from and gone(k)]
    plan.stale_errors = [p for p in failed if p not in found_paths
                         and any(is_under(p, r) for r in found.roots)]
    return plan
