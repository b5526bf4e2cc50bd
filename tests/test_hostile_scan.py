"""A library made of hostile files, scanned by the real `python -m indexer` in a subprocess.

The scan must finish, index every good and every decodable file, give each bad file an errors row
with a clear reason that `status --json` lists, and leave DuckDB and FAISS agreeing. The library
server (`ui/serve.py`) must refuse every way out of the library roots.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from indexer.discover import printable
from tests import hostile

# A compact library for every `make test`: one case of each kind (the full list runs under -m slow).
COMPACT = ["zero_byte", "truncated_mp3", "random_flac", "text_as_mp3", "video_with_audio", "video_only",
           "wrong_extension", "one_millisecond", "three_hours", "rate_192k", "channels_8", "float_nan_inf",
           "huge_tags", "control_char_tags", "invalid_utf8_vorbis", "newline_name", "long_name",
           "fifo", "directory_named_audio", "symlink_loop", "dangling_symlink"]


@dataclass
class Scanned:
    root: Path
    data: Path
    cases: dict[str, hostile.Built]
    good: list[Path]
    rc: int
    out: dict
    stderr: str


def scan_library(tmp: Path, names: list[str]) -> Scanned:
    root = tmp / "library"
    cases = hostile.build(root, names)
    good = hostile.good_tracks(root / "good")
    data = hostile.make_data_dir(tmp / "data")
    done = subprocess.run(hostile.scan_cmd([root], data), cwd=hostile.REPO, env=hostile.cli_env(),
                          capture_output=True, text=True, timeout=1200)
    return Scanned(root, data, cases, good, done.returncode, hostile.parse_json(done.stdout), done.stderr)


@pytest.fixture(scope="module")
def compact(tmp_path_factory: pytest.TempPathFactory) -> Scanned:
    return scan_library(tmp_path_factory.mktemp("compact"), COMPACT)


def check_scan(s: Scanned) -> None:
    """Every expectation of a hostile-library scan, checked against the catalog file itself."""
    assert s.rc == 0, f"scan exited {s.rc}: {s.out} {s.stderr[-3000:]}"
    assert s.out.get("ok") and s.out.get("state") == "finished", s.out
    assert "Traceback" not in s.stderr, s.stderr[-3000:]
    done = {p for (p,) in hostile.rows(s.data, "SELECT path FROM tracks WHERE status = 'done'")}
    failed = {p: (stage, reason) for p, stage, reason in hostile.rows(s.data, "SELECT path, stage, reason FROM errors")}
    for path in s.good:
        assert str(path) in done, f"good file not indexed: {path}"
    wrong = []
    for name, (path, expect) in s.cases.items():
        if expect.skip:
            continue
        key = printable(str(path))  # how the catalog stores a name that is not valid UTF-8
        refused = failed.get(key, ("", ""))[1].lower()
        if expect.outcome == "audio" and key not in done and not any(w in refused for w in expect.scan_may_refuse):
            wrong.append(f"{name}: expected indexed, got {failed.get(key, 'nothing')}")
        elif expect.outcome == "error":
            reason = failed.get(key, ("", ""))[1].lower()
            if key in done or not any(w in reason for w in expect.reason):
                wrong.append(f"{name}: expected an errors row with one of {expect.reason}, got {failed.get(key)}")
        elif expect.outcome == "skip-file" and key in done:
            wrong.append(f"{name}: a non-file was indexed")
    for path, (_stage, reason) in failed.items():
        if not reason or "Traceback" in reason or len(reason) > 500:
            wrong.append(f"unclear reason for {path!r}: {reason!r}")
    assert not wrong, "\n".join(wrong)
    rc, status, err = hostile.indexer("status", "--limit", "1000", data=s.data)
    assert rc == 0 and status["ok"], err[-2000:]
    assert status["failed"] == len(failed)
    assert {f["path"] for f in status["failures"]} == set(failed)
    assert status["tracks"].get("done") == len(done)
    rc, verify, err = hostile.indexer("verify", data=s.data)
    assert rc == 0 and verify["ok"] and verify["problems"] == [], (verify, err[-2000:])
    assert hostile.consistency(s.data) == []


def test_compact_hostile_library_scans_cleanly(compact: Scanned) -> None:
    check_scan(compact)


def test_scan_json_survives_newlines_in_paths(compact: Scanned) -> None:
    """A file name holding a newline must not split the one-object --json output."""
    newline_path, _ = compact.cases["newline_name"]
    assert str(newline_path) in {p for (p,) in hostile.rows(compact.data, "SELECT path FROM tracks")}
    assert compact.out.get("counts", {}).get("failed") == len(compact.out.get("failed", []))


def test_three_hour_file_indexes_a_bounded_window(compact: Scanned) -> None:
    path, _ = compact.cases["three_hours"]
    got = hostile.rows(compact.data, f"SELECT duration, indexed_seconds FROM tracks WHERE path = '{path}'")
    assert got, "the 3-hour file was not indexed"
    duration, indexed = got[0]
    assert duration is None or duration > 3 * 3600 - 60
    assert indexed is not None and 0 < indexed < 3600


def test_second_scan_is_a_no_op(compact: Scanned) -> None:
    """Failed files are remembered: a rescan re-reads nothing and changes nothing."""
    before = hostile.rows(compact.data, "SELECT id, path, status FROM tracks ORDER BY id")
    errors_before = hostile.rows(compact.data, "SELECT path, reason FROM errors ORDER BY path")
    done = subprocess.run(hostile.scan_cmd([compact.root], compact.data), cwd=hostile.REPO, env=hostile.cli_env(),
                          capture_output=True, text=True, timeout=600)
    out = hostile.parse_json(done.stdout)
    assert done.returncode == 0 and out["state"] == "finished", done.stderr[-2000:]
    assert out["indexed"] == [] and out["removed"] == []
    assert hostile.rows(compact.data, "SELECT id, path, status FROM tracks ORDER BY id") == before
    assert hostile.rows(compact.data, "SELECT path, reason FROM errors ORDER BY path") == errors_before


@pytest.mark.slow
def test_full_hostile_library_scans_cleanly(tmp_path: Path) -> None:
    check_scan(scan_library(tmp_path, [n for n in hostile.BUILDERS if n != "undecodable_name"]))


def test_non_utf8_file_name_does_not_break_the_scan(tmp_path: Path) -> None:
    """One undecodable name must cost one errors row (or be indexed), never the scan."""
    check_scan(scan_library(tmp_path, ["undecodable_name"]))


# ---------------------------------------------------------------- serving files: only inside the roots


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """A library root with one real track, and a secret file beside it (outside the root)."""
    root = tmp_path / "music"
    hostile.good_tracks(root, 1)
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2")
    return root, secret


def test_serving_refuses_every_way_out_of_the_roots(roots: tuple[Path, Path]) -> None:
    from ui.serve import ForbiddenPath, read_audio, resolve_in_roots

    root, secret = roots
    track = root / "good-0.wav"
    body, mime = read_audio(str(track), [root], max_bytes=50 << 20)
    assert body == track.read_bytes() and mime == "audio/wav"
    (root / "escape.mp3").symlink_to(secret)
    (root / "outside-dir").symlink_to(secret.parent, target_is_directory=True)
    attempts = [
        str(secret),  # absolute, outside
        f"{root}/../secret.txt",  # parent segment
        f"{root}/%2e%2e/secret.txt",  # URL-encoded
        f"{root}/%252e%252e/secret.txt",  # double-encoded
        f"{root}/..%2fsecret.txt",  # encoded slash
        f"{root}\\..\\secret.txt",  # backslashes
        str(root / "escape.mp3"),  # symlink out of the root
        str(root / "outside-dir" / "secret.txt"),  # through a symlinked folder
        "secret.txt",  # relative
        f"{root}/good-0.wav\x00.txt",  # NUL
        f"{root}/good-0.wav\n",  # newline
        "",
        str(root),  # the root folder itself, not a file
        str(root) + "-sibling/x.wav",  # a sibling whose name starts with the root's
        "/proc/self/environ",
    ]
    served = []
    for attempt in attempts:
        try:
            resolve_in_roots(attempt, [root])
            served.append(attempt)
        except ForbiddenPath as exc:
            assert "refused" in str(exc)
            assert "hunter2" not in str(exc)
    assert served == [], f"served outside the roots: {served}"


def test_serving_refuses_hostile_library_entries(tmp_path: Path) -> None:
    """The FIFO, the directory named .flac and the symlink loop are never opened for the player."""
    from ui.serve import ForbiddenPath, resolve_in_roots

    built = hostile.build(tmp_path, ["fifo", "directory_named_audio", "symlink_loop", "dangling_symlink"])
    for name, (path, _) in built.items():
        with pytest.raises(ForbiddenPath):
            resolve_in_roots(str(path), [tmp_path])
        assert name


def test_serving_bounds_memory(tmp_path: Path) -> None:
    from ui.serve import ForbiddenPath, read_audio

    path, _ = hostile.three_hours(tmp_path)
    with pytest.raises(ForbiddenPath, match="limit"):
        read_audio(str(path), [tmp_path], max_bytes=1 << 20)


def test_serving_unicode_and_long_names(tmp_path: Path) -> None:
    from ui.serve import resolve_in_roots

    for builder in (hostile.unicode_name, hostile.long_name, hostile.undecodable_name, hostile.spaces_name):
        path, _ = builder(tmp_path)
        assert resolve_in_roots(os.fspath(path), [tmp_path]) == path.resolve()
