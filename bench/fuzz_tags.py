"""Fuzz the tag and path handling: raw ID3 frames and FLAC Vorbis comments built from fuzz bytes, real
audio after them, any file name; read_tags, clean_text, tags_from_path, parse_query and the player's
path check must never raise and must return bounded, clean, storable text.

    python bench/fuzz_tags.py --seconds 60            # atheris (libFuzzer, coverage-guided) if installed
    python bench/fuzz_tags.py --seconds 60 --engine hypothesis   # without atheris: hypothesis draws inputs

The hypothesis engine prints one JSON line (engine, inputs tried, seconds, failures); atheris prints
libFuzzer's `Done N runs in S second(s)`. A broken invariant exits non-zero; atheris saves the input
under --crash-dir, hypothesis prints the shrunk input.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRAME_IDS = [b"TIT2", b"TPE1", b"TALB", b"TPE2", b"TCON", b"TDRC", b"TYER", b"TRCK", b"TXXX", b"COMM", b"APIC",
             b"PRIV", b"\x00\x00\x00\x00", b"ZZZZ"]
VORBIS_KEYS = [b"TITLE", b"ARTIST", b"ALBUM", b"GENRE", b"DATE", b"TRACKNUMBER", b"ALBUMARTIST",
               b"METADATA_BLOCK_PICTURE", b"", b"=", b"\xff\xfe"]


class Bytes:
    """Draws typed values from the fuzz input (like atheris.FuzzedDataProvider, but engine-neutral)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def int(self, below: int) -> int:
        return int.from_bytes(self.take(2).ljust(2, b"\0"), "little") % max(below, 1)

    def blob(self, most: int) -> bytes:
        return self.take(self.int(most + 1))


def syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3_file(src: Bytes, audio: bytes) -> bytes:
    """An ID3v2.3/2.4 tag of fuzz frames (size fields sometimes lying) in front of real MP3 frames."""
    version = 3 + src.int(2)
    frames = b""
    for _ in range(src.int(8)):
        body = bytes([src.int(5)]) + src.blob(400)
        size = len(body) if src.int(8) else src.int(1 << 16)
        size_bytes = syncsafe(size) if version == 4 else struct.pack(">I", size)
        frames += FRAME_IDS[src.int(len(FRAME_IDS))] + size_bytes + src.take(2).ljust(2, b"\0") + body
    total = len(frames) if src.int(8) else src.int(1 << 20)
    return b"ID3" + bytes([version, 0, src.int(256) & 0xF0]) + syncsafe(total) + frames + audio


def flac_file(src: Bytes, template: bytes) -> bytes:
    """The template FLAC's STREAMINFO and audio with a fuzz Vorbis comment block (counts may lie)."""
    pos, streaminfo = 4, b""
    while pos + 4 <= len(template):
        head = template[pos]
        length = int.from_bytes(template[pos + 1:pos + 4], "big")
        if head & 0x7F == 0:
            streaminfo = template[pos + 4:pos + 4 + length]
        pos += 4 + length
        if head & 0x80:
            break
    comments = [VORBIS_KEYS[src.int(len(VORBIS_KEYS))] + b"=" + src.blob(300) for _ in range(src.int(12))]
    count = len(comments) if src.int(8) else src.int(1 << 16)
    body = struct.pack("<I", 5) + b"fuzz!" + struct.pack("<I", count)
    body += b"".join(struct.pack("<I", len(c) if src.int(10) else src.int(1 << 16)) + c for c in comments)
    return (b"fLaC" + bytes([0]) + len(streaminfo).to_bytes(3, "big") + streaminfo
            + bytes([0x84]) + len(body).to_bytes(3, "big") + body + template[pos:])


def check_text(value: object, limit: int, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise AssertionError(f"{what}: bad length or type: {value!r:.200}")
    value.encode("utf-8")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co") for ch in value):
        raise AssertionError(f"{what}: control character left in {value!r:.200}")


class Target:
    """One fuzz input through every tag and path function; raises on any broken invariant."""

    def __init__(self, folder: Path) -> None:
        from tests import hostile

        self.folder = folder
        self.mp3 = hostile.encode(folder / "t.mp3", hostile.tone(0.1, 44100), 44100, "mp3").read_bytes()
        self.flac = hostile.encode(folder / "t.flac", hostile.tone(0.1, 44100), 44100, "flac").read_bytes()
        self.root = folder / "root"
        self.root.mkdir()
        self.tried = 0

    def __call__(self, data: bytes) -> None:
        from indexer import tags as T
        from search.query import MAX_QUERY_CHARS, parse_query
        from ui.serve import ForbiddenPath, resolve_in_roots

        self.tried += 1
        src = Bytes(data)
        kind = src.int(3)
        name = os.fsdecode(src.blob(120).replace(b"/", b"_").replace(b"\0", b"_") or b"x")
        suffix = [".mp3", ".flac", ".ogg"][kind]
        path = self.root / (name[:200] + suffix)
        blob = id3_file(src, self.mp3) if kind == 0 else flac_file(src, self.flac) if kind == 1 else src.blob(4000)
        try:
            path.write_bytes(blob)
        except OSError:  # a name the file system refuses (too long in bytes): that is not our bug
            path = self.root / f"fallback{suffix}"
            path.write_bytes(blob)
        try:
            got = T.read_tags(str(path), str(self.root))
            for field in ("title", "artist", "album", "album_artist", "genre"):
                check_text(getattr(got, field), T.MAX_FIELD_CHARS, field)
            if len(got.raw) > T.MAX_RAW_TAGS:
                raise AssertionError(f"{len(got.raw)} raw tags")
            for key, value in got.raw.items():
                check_text(key, T.MAX_KEY_CHARS, "raw key")
                check_text(value, T.MAX_RAW_CHARS, "raw value")
            text = data.decode("utf-8", "surrogateescape")
            check_text(T.clean_text(text), T.MAX_FIELD_CHARS, "clean_text")
            check_text(T.clean_text(data), T.MAX_FIELD_CHARS, "clean_text(bytes)")
            parsed = parse_query(text)
            if len(parsed.text) > MAX_QUERY_CHARS:
                raise AssertionError("query too long")
            try:
                real = resolve_in_roots(text if text.startswith("/") else str(self.root) + "/" + text, [self.root])
                if not real.is_relative_to(self.root.resolve()):
                    raise AssertionError(f"served outside the root: {real}")
            except ForbiddenPath:
                pass
        finally:
            path.unlink(missing_ok=True)


def run_atheris(target: Target, seconds: float, crash_dir: Path) -> None:
    """Coverage-guided; libFuzzer ends the process itself and prints `Done N runs in S second(s)`."""
    import atheris

    crash_dir.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", "-rss_limit_mb=4096",
                   f"-artifact_prefix={crash_dir}/"], target)
    atheris.Fuzz()


def run_hypothesis(target: Target, seconds: float) -> None:
    """Without atheris: hypothesis draws the inputs (and shrinks any failure) in rounds until time is up."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=4096), st.text(max_size=500).map(lambda t: t.encode("utf-8", "replace"))))
    def round_(data: bytes) -> None:
        target(data)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        round_()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    p.add_argument("--crash-dir", default="bench/fuzz-crashes", help="where atheris saves a failing input")
    args = p.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    with tempfile.TemporaryDirectory() as tmp:
        report = {"engine": engine, "seconds": args.seconds, "failures": 0}
        if engine == "atheris":
            import atheris

            # Instrument only our code and the tag parser (not torch): coverage where the bugs would be.
            with atheris.instrument_imports(include=["indexer.tags", "search.query", "ui.serve", "mutagen"]):
                import mutagen.flac  # noqa: F401
                import mutagen.id3  # noqa: F401
                import mutagen.mp3  # noqa: F401
                import mutagen.oggvorbis  # noqa: F401

                from indexer import tags  # noqa: F401
                from search import query  # noqa: F401
                from ui import serve  # noqa: F401
            target = Target(Path(tmp))
            run_atheris(target, args.seconds, Path(args.crash_dir).resolve())
            return 0  # not reached: libFuzzer exits the process (status 0, or 1 with the input saved)
        target = Target(Path(tmp))
        try:
            run_hypothesis(target, args.seconds)
        except Exception as exc:  # hypothesis has shrunk it; its report is above
            report["failures"] = 1
            print(f"invariant broken: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(json.dumps({**report, "inputs": target.tried}))
        return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
