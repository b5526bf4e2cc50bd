"""ui.serve: the player reads only regular files that really lie inside a library root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ui.serve import ForbiddenPath, read_audio, resolve_in_roots


@pytest.fixture()
def library(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "library"
    (root / "Artist" / "Album").mkdir(parents=True)
    song = root / "Artist" / "Album" / "01 Song.flac"
    song.write_bytes(b"fLaC" + b"\0" * 64)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    sibling = tmp_path / "library-evil"  # shares the root's name as a string prefix
    sibling.mkdir()
    (sibling / "x.mp3").write_bytes(b"ID3")
    (root / "escape.mp3").symlink_to(secret)
    (root / "inside-link.flac").symlink_to(song)
    (root / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    return {"root": root, "song": song, "secret": secret, "sibling": sibling / "x.mp3", "tmp": tmp_path}


def test_file_inside_root_is_served(library: dict[str, Path]) -> None:
    data, mime = read_audio(library["song"], [library["root"]], max_bytes=1024)
    assert data.startswith(b"fLaC") and mime == "audio/flac"
    assert resolve_in_roots(str(library["root"] / "inside-link.flac"), [library["root"]]) == library["song"]


@pytest.mark.parametrize("attack", [
    "{tmp}/secret.txt",  # plainly outside
    "{root}/../secret.txt",  # parent segment
    "{root}/Artist/../../secret.txt",
    "{root}/%2e%2e/secret.txt",  # URL-encoded parent
    "{root}/%252e%252e/secret.txt",  # double-encoded parent
    "{root}/..%2fsecret.txt",
    "{root}\\..\\secret.txt",  # Windows separators
    "{root}/escape.mp3",  # symlink whose target is outside
    "{root}/dir-link/secret.txt",  # symlinked directory out of the root
    "{tmp}/library-evil/x.mp3",  # prefix-sharing sibling directory
    "Artist/Album/01 Song.flac",  # relative paths are not catalog paths
    "{root}/Artist/Album/01 Song.flac\x00.txt",  # NUL byte
    "{root}/Artist/Album/missing.flac",
    "{root}/Artist",  # a directory, not a file
    "",
])
def test_paths_outside_the_roots_are_refused(library: dict[str, Path], attack: str) -> None:
    path = attack.format(root=library["root"], tmp=library["tmp"])
    with pytest.raises(ForbiddenPath):
        read_audio(path, [library["root"]], max_bytes=1024)


def test_no_roots_means_nothing_is_served(library: dict[str, Path]) -> None:
    with pytest.raises(ForbiddenPath, match="no library roots"):
        resolve_in_roots(library["song"], [])


def test_oversized_file_is_refused(library: dict[str, Path]) -> None:
    with pytest.raises(ForbiddenPath, match="player limit"):
        read_audio(library["song"], [library["root"]], max_bytes=16)


def test_symlinked_root_serves_its_own_files(library: dict[str, Path]) -> None:
    alias = library["tmp"] / "alias"
    os.symlink(library["root"], alias)
    assert resolve_in_roots(alias / "Artist" / "Album" / "01 Song.flac", [alias]) == library["song"]
