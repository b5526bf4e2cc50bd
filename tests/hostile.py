"""A hostile music library on demand: every bad input a real collection holds, written as real files.

Each builder writes one case into a folder and returns `(path, Expect)`: what a correct engine does
with it (decode it to the right audio, or refuse it with a clear reason). The decode tests, the scan
tests, the fault tests and `bench/fuzz_tags.py` all draw from here, so one list of cases is tested at
every level. Files are made with PyAV (the same FFmpeg the engine decodes with) and mutagen; nothing
here needs an ffmpeg or sox binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tests.harness import lite_variant

RATE = 24000  # the rate the engine decodes to


@dataclass(frozen=True)
class Expect:
    """What a correct engine does with one case; `seconds` is the decoded length range, `freq` a tone in it."""

    case: str
    outcome: Literal["audio", "error", "skip-file"]  # skip-file: discovery must pass over it without reading
    what: str  # the behaviour, in words, for docs/reliability.md
    seconds: tuple[float, float] | None = None
    freq: float | None = None
    reason: tuple[str, ...] = ()  # any of these words appears in the error reason (lower case)
    skip: str = ""  # non-empty: this environment cannot produce the case, and why
    scan_may_refuse: tuple[str, ...] = ()  # the indexer may instead fail it with one of these words


Built = tuple[Path, Expect]


# ---------------------------------------------------------------- signals and raw writers


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """A sine on every channel, [channels, n] float32: content whose frequency survives resampling."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    wave = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None], channels, axis=0)


def write_wav(path: Path, data: np.ndarray, rate: int, float32: bool = False) -> Path:
    """A plain RIFF/WAVE file with any channel count (no channel mask, as many tools write them).

    Written by hand so a float file can carry NaN and Inf bit patterns, which no encoder would produce.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.atleast_2d(data)
    channels = data.shape[0]
    if float32:
        body = np.ascontiguousarray(data.T, dtype="<f4").tobytes()
        tag, width = 3, 4
    else:
        body = np.ascontiguousarray(np.clip(data.T, -1, 1) * 32767, dtype="<i2").tobytes()
        tag, width = 1, 2
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * width, channels * width, width * 8)
    head = b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE"
    path.write_bytes(head + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
                     + struct.pack("<I", len(body)) + body)
    return path


_LAYOUTS = {1: "mono", 2: "stereo"}


def encode(path: Path, data: np.ndarray, rate: int, codec: str, fmt: str | None = None,
           bit_rate: int | None = None) -> Path:
    """Encode [channels, n] float32 with PyAV into `path` (container from the suffix unless `fmt`)."""
    import av

    data = np.atleast_2d(data).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=_LAYOUTS[data.shape[0]])
        if bit_rate:
            stream.bit_rate = bit_rate
        step = 1152
        for start in range(0, data.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + step]),
                                               format="fltp", layout=_LAYOUTS[data.shape[0]])
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def encode_video(path: Path, seconds: float, with_audio: bool) -> Path:
    """An MPEG-4 Part 2 video (moving gradient) in an .mp4, optionally with an AAC 440 Hz track."""
    import av

    fps, rate = 10, 48000
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono") if with_audio else None
        wave = tone(seconds, rate)
        for i in range(int(seconds * fps)):
            img = np.full((48, 64, 3), (i * 20) % 256, dtype=np.uint8)
            img[:, : (i * 3) % 64] = 255
            out.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            if audio is not None:
                chunk = wave[:, i * rate // fps:(i + 1) * rate // fps]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, i * rate // fps
                out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            out.mux(audio.encode(None))
    return path


def replace_same_length(path: Path, old: bytes, new: bytes) -> None:
    """Swap bytes in place, keeping every block size in the file valid (to plant invalid UTF-8 in tags)."""
    assert len(old) == len(new)
    blob = path.read_bytes()
    assert blob.count(old) >= 1, f"{old!r} not in {path}"
    path.write_bytes(blob.replace(old, new))


# ---------------------------------------------------------------- the cases


def zero_byte(folder: Path) -> Built:
    path = folder / "zero-byte.mp3"
    path.write_bytes(b"")
    return path, Expect("zero-byte file", "error", "refused: empty file", reason=("empty", "no audio", "invalid",
                                                                                "cannot open", "no data"))


def _truncated(folder: Path, suffix: str, codec: str, keep: float, rate: int = 44100) -> Path:
    whole = folder / f"whole-{suffix}.{suffix}"
    encode(whole, tone(4.0, rate), rate, codec)
    blob = whole.read_bytes()
    whole.unlink()
    path = folder / f"truncated-{suffix}.{suffix}"
    path.write_bytes(blob[: int(len(blob) * keep)])
    return path


def truncated_mp3(folder: Path) -> Built:
    path = _truncated(folder, "mp3", "mp3", 0.5)
    return path, Expect("truncated mp3 (half)", "audio", "decodes the part that is there", (1.0, 3.0), 440.0)


def truncated_flac(folder: Path) -> Built:
    path = _truncated(folder, "flac", "flac", 0.5)
    return path, Expect("truncated flac (half)", "audio", "decodes the part that is there", (0.5, 3.0), 440.0)


def truncated_ogg(folder: Path) -> Built:
    path = _truncated(folder, "ogg", "libopus", 0.5, rate=48000)
    return path, Expect("truncated ogg/opus (half)", "audio", "decodes the part that is there", (0.5, 3.0), 440.0)


def header_only_flac(folder: Path) -> Built:
    path = encode(folder / "header-only.flac", tone(1.0, 44100), 44100, "flac")
    path.write_bytes(path.read_bytes()[:60])
    return path, Expect("flac cut inside its header", "error", "refused with the decoder's reason",
                        reason=("invalid", "no audio", "cannot open", "decode", "samples"))


def random_bytes(folder: Path, suffix: str = "mp3", size: int = 64 * 1024, seed: int = 7) -> Built:
    path = folder / f"random-bytes.{suffix}"
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path, Expect(f"random bytes named .{suffix}", "error", "refused: not media",
                        reason=("invalid", "cannot open", "no audio", "decode", "samples"))


def text_as_mp3(folder: Path) -> Built:
    path = folder / "readme.mp3"
    path.write_text("These are my liner notes, not an MP3.\n" * 200)
    return path, Expect("text file named .mp3", "error", "refused: not media",
                        reason=("invalid", "cannot open", "no audio", "decode", "samples"))


def video_with_audio(folder: Path) -> Built:
    path = encode_video(folder / "clip-with-sound.mp4", 2.0, with_audio=True)
    return path, Expect("video (mpeg4) with an AAC track", "audio", "indexes the audio track", (1.8, 2.2), 440.0)


def video_only(folder: Path) -> Built:
    path = encode_video(folder / "silent-film.mp4", 2.0, with_audio=False)
    return path, Expect("video with no audio stream", "error", "refused: no audio stream", reason=("no audio",))


def wrong_extension(folder: Path) -> Built:
    path = encode(folder / "really-an-mp3.flac", tone(2.0, 44100), 44100, "mp3", fmt="mp3")
    return path, Expect(".flac holding MP3 data", "audio", "content is probed, extension ignored", (1.9, 2.1), 440.0)


def one_millisecond(folder: Path) -> Built:
    path = write_wav(folder / "one-ms.wav", tone(0.001, 44100), 44100)
    return path, Expect("1 ms of audio", "audio", "decodes to 24 samples; the scan refuses it as too short",
                        (0.0005, 0.002), scan_may_refuse=("too short",))


def three_hours(folder: Path) -> Built:
    """Three hours of MP3 silence in about 10 MB and a few milliseconds: one steady frame, repeated.

    A raw encoder stream has no Xing header, so nothing in the file claims a length it lacks; frames
    of digital silence are byte-identical once the encoder has settled, so repeating one is exact.
    """
    import av

    rate, seconds = 8000, 3 * 3600
    ctx = av.CodecContext.create("libmp3lame", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = rate, "mono", "s16p", 8000
    packets: list[bytes] = []
    frame_size = ctx.frame_size or 576
    for i in range(60):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, frame_size), np.int16), format="s16p", layout="mono")
        frame.sample_rate, frame.pts = rate, i * frame_size
        packets += [bytes(p) for p in ctx.encode(frame)]
    steady = next(p for i, p in enumerate(packets[10:-3], 10) if packets[i - 1] == p == packets[i + 1])
    path = folder / "three-hour-mix.mp3"
    count = seconds * rate // frame_size
    with path.open("wb") as f:
        for _ in range(count // 1000):
            f.write(steady * 1000)
        f.write(steady * (count % 1000))
    return path, Expect("3-hour file (10 MB MP3)", "audio", "only the bounded window is decoded",
                        (3 * 3600 - 5, 3 * 3600 + 5))


def sample_rate(folder: Path, rate: int) -> Built:
    path = write_wav(folder / f"rate-{rate}.wav", tone(1.5, rate, freq=1000.0), rate)
    return path, Expect(f"{rate} Hz WAV", "audio", "resampled to 24 kHz", (1.49, 1.51), 1000.0)


def channels(folder: Path, n: int) -> Built:
    path = write_wav(folder / f"channels-{n}.wav", tone(1.0, 48000, channels=n, amp=0.4), 48000)
    return path, Expect(f"{n}-channel WAV", "audio", "downmixed to mono", (0.99, 1.01), 440.0)


def silence(folder: Path) -> Built:
    path = write_wav(folder / "silence.wav", np.zeros((2, 48000 * 2), np.float32), 48000)
    return path, Expect("digital silence", "audio", "indexed as silence (all zeros)", (1.99, 2.01))


def full_scale_noise(folder: Path) -> Built:
    noise = np.random.default_rng(3).choice(np.array([-1.0, 1.0], np.float32), size=(2, 48000 * 2))
    path = write_wav(folder / "full-scale-noise.wav", noise, 48000)
    return path, Expect("full-scale noise", "audio", "decoded, clipped to [-1, 1]", (1.99, 2.01))


def float_nan_inf(folder: Path) -> Built:
    wave = tone(1.0, 48000, amp=0.5)
    wave[0, 1000:1100] = np.nan
    wave[0, 2000:2010] = np.inf
    wave[0, 3000:3010] = -np.inf
    wave[0, 4000:4010] = 1e30
    path = write_wav(folder / "float-nan-inf.wav", wave, 48000, float32=True)
    return path, Expect("float WAV holding NaN, Inf and 1e30", "audio", "non-finite samples removed, clipped",
                        (0.99, 1.01), 440.0)


def huge_tags(folder: Path) -> Built:
    from mutagen.id3 import COMM, ID3, TIT2, TXXX

    path = encode(folder / "huge-tags.mp3", tone(1.0, 44100), 44100, "mp3")
    tags = ID3()
    tags.add(TIT2(encoding=3, text="Huge " + "x" * (1 << 20)))
    tags.add(COMM(encoding=3, lang="eng", desc="", text="c" * (1 << 20)))
    tags.add(TXXX(encoding=3, desc="blob", text="y" * (1 << 20)))
    tags.save(str(path))
    return path, Expect("1 MB tags (ID3 title, comment, TXXX)", "audio",
                        "audio indexed; stored tags truncated to a bound", (0.9, 1.2), 440.0)


def huge_vorbis_comment(folder: Path) -> Built:
    from mutagen.flac import FLAC

    path = encode(folder / "huge-comment.flac", tone(1.0, 44100), 44100, "flac")
    f = FLAC(str(path))
    f["title"] = "Huge " + "z" * (1 << 20)
    f["artist"] = ["a" * 1000] * 300
    f.save()
    return path, Expect("1 MB Vorbis comment, 300 artists", "audio", "audio indexed; tags bounded",
                        (0.99, 1.01), 440.0)


CONTROL = "Ti\x00tle\x01\x07\x1b[31mRED\x1b[0m\r\n\t\u202eevil\u200b\ufeff"
PLACEHOLDER = b"PLACEHOLDER-0123"
INVALID_UTF8 = b"\xff\xfe\xc3\x28\xa0\xa1\xed\xa0\x80\xf0\x28\x8c\xbc\x80\xc0\xaf"


def control_char_tags(folder: Path) -> Built:
    from mutagen.id3 import ID3, TALB, TIT2, TPE1

    path = encode(folder / "control-chars.mp3", tone(1.0, 44100), 44100, "mp3")
    tags = ID3()
    tags.add(TIT2(encoding=3, text=CONTROL))
    tags.add(TPE1(encoding=3, text="\x00\x00\x00"))
    tags.add(TALB(encoding=1, text="\ud7ff\ue000 album"))
    tags.save(str(path))
    return path, Expect("tags with NUL, ANSI escapes, RTL override", "audio",
                        "indexed; control characters stripped from tags", (0.9, 1.2), 440.0)


def invalid_utf8_tags(folder: Path) -> Built:
    from mutagen.id3 import ID3, TIT2

    mp3 = encode(folder / "bad-utf8.mp3", tone(1.0, 44100), 44100, "mp3")
    tags = ID3()
    tags.add(TIT2(encoding=3, text=PLACEHOLDER.decode()))
    tags.save(str(mp3))
    replace_same_length(mp3, PLACEHOLDER, INVALID_UTF8)
    return mp3, Expect("ID3 frame marked UTF-8 holding invalid bytes", "audio",
                       "indexed; undecodable tag bytes replaced", (0.9, 1.2), 440.0)


def invalid_utf8_vorbis(folder: Path) -> Built:
    from mutagen.flac import FLAC

    path = encode(folder / "bad-utf8.flac", tone(1.0, 44100), 44100, "flac")
    f = FLAC(str(path))
    f["title"] = PLACEHOLDER.decode()
    f["artist"] = PLACEHOLDER.decode()[::-1]
    f.save()
    replace_same_length(path, PLACEHOLDER, INVALID_UTF8)
    replace_same_length(path, PLACEHOLDER[::-1], INVALID_UTF8[::-1])
    return path, Expect("Vorbis comment holding invalid UTF-8", "audio",
                        "indexed; undecodable tag bytes replaced", (0.99, 1.01), 440.0)


def _good(path: Path) -> Path:
    return write_wav(path, tone(1.0, 22050, freq=660.0), 22050)


def unicode_name(folder: Path) -> Built:
    path = _good(folder / "Björk – Jóga (\u0627\u0644\u0639\u0631\u0628\u064a\u0629) 🎵 日本語.wav")
    return path, Expect("unicode file name (accents, RTL, emoji, CJK)", "audio", "indexed under its real name",
                        (0.99, 1.01), 660.0)


def nfd_name(folder: Path) -> Built:
    path = _good(folder / "Cafe\u0301 de\u0301compose\u0301.wav")
    return path, Expect("NFD-normalised file name", "audio", "indexed; the path is kept byte-exact",
                        (0.99, 1.01), 660.0)


def spaces_name(folder: Path) -> Built:
    path = _good(folder / "  lead and trail spaces  .wav")
    return path, Expect("leading/trailing spaces in name", "audio", "indexed", (0.99, 1.01), 660.0)


def newline_name(folder: Path) -> Built:
    path = _good(folder / "line\nbreak\tand tab.wav")
    return path, Expect("newline and tab in file name", "audio", "indexed; JSON output stays one object",
                        (0.99, 1.01), 660.0)


def long_name(folder: Path) -> Built:
    stem = "é" * 125 + "x"  # 251 bytes + ".wav" = 255 bytes: the longest component Linux allows
    path = _good(folder / f"{stem}.wav")
    assert len(os.fsencode(path.name)) == 255
    return path, Expect("255-byte file name component", "audio", "indexed", (0.99, 1.01), 660.0)


def undecodable_name(folder: Path) -> Built:
    """A name that is not UTF-8 at all (Latin-1 bytes from an old disk): Python sees surrogate escapes."""
    path = Path(os.fsdecode(os.fsencode(folder) + b"/latin1-caf\xe9-\xff.wav"))
    _good(path)
    return path, Expect("file name with invalid UTF-8 bytes", "audio", "indexed by its raw bytes, or refused "
                        "with a reason; never a crash", (0.99, 1.01), 660.0, scan_may_refuse=("utf-8",))


def deep_path(folder: Path) -> Built:
    """A path of about 3000 bytes: each component legal, the whole longer than many tools expect."""
    deep = folder
    for i in range(11):
        deep = deep / (f"{i:02d}-" + "d" * 250)
    deep.mkdir(parents=True)
    path = _good(deep / "deep.wav")
    return path, Expect("path over 2800 bytes deep", "audio", "indexed", (0.99, 1.01), 660.0)


def is_privileged() -> bool:
    """True when file permissions do not stop this process (root, CAP_DAC_OVERRIDE), tested for real."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f".perm-probe-{os.getpid()}"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
        return True
    except PermissionError:
        return False
    finally:
        probe.unlink()


def unreadable(folder: Path) -> Built:
    path = _good(folder / "no-permission.wav")
    path.chmod(0)
    skip = ("running with CAP_DAC_OVERRIDE (root): chmod 000 does not stop reads here, so the case cannot "
            "be produced; the FIFO and directory cases cover unreadable entries instead") if is_privileged() else ""
    return path, Expect("unreadable file (chmod 000)", "error", "refused: permission denied",
                        reason=("permission",), skip=skip)


def fifo(folder: Path) -> Built:
    path = folder / "named-pipe.mp3"
    os.mkfifo(path)
    return path, Expect("named pipe called .mp3 (no writer)", "skip-file",
                        "never opened: reading it would block forever", reason=("regular file",))


def directory_named_audio(folder: Path) -> Built:
    path = folder / "album.flac"
    path.mkdir()
    return path, Expect("directory named album.flac", "skip-file", "walked as a folder, never decoded",
                        reason=("regular file", "directory"))


def symlink_loop(folder: Path) -> Built:
    a, b = folder / "loop-a.mp3", folder / "loop-b.mp3"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    (folder / "loopdir").mkdir()
    (folder / "loopdir" / "again").symlink_to("..")
    return a, Expect("symlink loop (file pair and dir -> ..)", "skip-file",
                     "not followed forever; the file loop is skipped or refused",
                     reason=("symbolic link", "loop", "regular file", "cannot open", "not found"))


def dangling_symlink(folder: Path) -> Built:
    path = folder / "gone.mp3"
    path.symlink_to(folder / "does-not-exist.mp3")
    return path, Expect("dangling symlink", "skip-file", "skipped or refused: target missing",
                        reason=("no such file", "not found", "regular file", "cannot open"))


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "zero_byte": zero_byte,
    "truncated_mp3": truncated_mp3,
    "truncated_flac": truncated_flac,
    "truncated_ogg": truncated_ogg,
    "header_only_flac": header_only_flac,
    "random_mp3": random_bytes,
    "random_flac": lambda f: random_bytes(f, "flac", seed=8),
    "random_wav": lambda f: random_bytes(f, "wav", seed=9),
    "text_as_mp3": text_as_mp3,
    "video_with_audio": video_with_audio,
    "video_only": video_only,
    "wrong_extension": wrong_extension,
    "one_millisecond": one_millisecond,
    "three_hours": three_hours,
    "rate_8k": lambda f: sample_rate(f, 8000),
    "rate_192k": lambda f: sample_rate(f, 192000),
    **{f"channels_{n}": (lambda f, n=n: channels(f, n)) for n in range(1, 9)},
    "silence": silence,
    "full_scale_noise": full_scale_noise,
    "float_nan_inf": float_nan_inf,
    "huge_tags": huge_tags,
    "huge_vorbis_comment": huge_vorbis_comment,
    "control_char_tags": control_char_tags,
    "invalid_utf8_tags": invalid_utf8_tags,
    "invalid_utf8_vorbis": invalid_utf8_vorbis,
    "unicode_name": unicode_name,
    "nfd_name": nfd_name,
    "spaces_name": spaces_name,
    "newline_name": newline_name,
    "long_name": long_name,
    "undecodable_name": undecodable_name,
    "deep_path": deep_path,
    "unreadable": unreadable,
    "fifo": fifo,
    "directory_named_audio": directory_named_audio,
    "symlink_loop": symlink_loop,
    "dangling_symlink": dangling_symlink,
}


def build(folder: Path, names: list[str] | None = None) -> dict[str, Built]:
    """Write the named cases (default: all) each into its own subfolder of `folder`."""
    out: dict[str, Built] = {}
    for name in names or list(BUILDERS):
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        out[name] = BUILDERS[name](sub)
    return out


def good_tracks(folder: Path, count: int = 3) -> list[Path]:
    """A few ordinary tracks (distinct tones, distinct formats) that must always be indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    made = [write_wav(folder / "good-0.wav", tone(3.0, 44100, freq=220.0, channels=2), 44100)]
    if count > 1:
        made.append(encode(folder / "good-1.flac", tone(3.0, 44100, freq=330.0), 44100, "flac"))
    if count > 2:
        made.append(encode(folder / "good-2.mp3", tone(3.0, 44100, freq=550.0, channels=2), 44100, "mp3"))
    for i in range(3, count):
        made.append(write_wav(folder / f"good-{i}.wav", tone(2.0, 22050, freq=200.0 + 37 * i), 22050))
    return made


# ---------------------------------------------------------------- faults while something runs


def dominant_freq(wave: np.ndarray, rate: int = RATE) -> float:
    """The strongest frequency in a signal, in Hz (to check that resampling kept the content)."""
    spectrum = np.abs(np.fft.rfft(wave.astype(np.float64) * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * rate / wave.size)


@contextlib.contextmanager
def during(action: Callable[[], None], delay: float) -> Iterator[threading.Event]:
    """Run `action` in a thread after `delay` seconds while the body runs; the event is set once it ran."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        time.sleep(delay)
        try:
            action()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        thread.join(timeout=60)
        if errors:
            raise errors[0]


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll until `predicate()` holds or `timeout` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextlib.contextmanager
def small_disk(mountpoint: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` at `mountpoint` (a disk that fills up); raises PermissionError if mounting is refused."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        raise PermissionError("no mount command on this machine")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PermissionError(f"mount -t tmpfs refused: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


# ---------------------------------------------------------------- the real indexer CLI, in subprocesses

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the interpreter running the tests, so the CLI sees the same environment
PROFILE = "hostile"  # lite, with a fresh adapter and 4-token captions: the scan path, fast


def make_data_dir(data: Path) -> Path:
    """A fresh data dir with the `hostile` profile beside it (models come from the settings' cache dir)."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "profiles").mkdir(exist_ok=True)
    lite_variant(data / "profiles" / f"{PROFILE}.toml", adapter="", max_new_tokens=4, caption_template="")
    return data


def cli_env() -> dict[str, str]:
    """Offline, one torch thread per process (two cores are shared), no stray settings from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSILINGO_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO),
               TOKENIZERS_PARALLELISM="false")
    return env


def scan_cmd(roots: list[Path], data: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "indexer", "scan", *map(str, roots), "--data-dir", str(data), "--json", "--greedy",
            "--profile", PROFILE, *extra]


def indexer(*args: str, data: Path, timeout: float = 600) -> tuple[int, dict, str]:
    """Run `python -m indexer ARGS --data-dir DATA --json`; returns (exit code, the JSON object, stderr)."""
    done = subprocess.run([PYTHON, "-m", "indexer", *args, "--data-dir", str(data), "--json"], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)
    return done.returncode, parse_json(done.stdout), done.stderr


def parse_json(stdout: str) -> dict:
    """The one JSON object a --json command prints (the last non-empty line), or {} if it printed none."""
    import json

    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


def rows(data: Path, sql: str) -> list[tuple]:
    """Read the catalog directly with DuckDB, read-only: the tests check the file, not the indexer's view."""
    import duckdb

    con = duckdb.connect(str(data / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def faiss_ids(data: Path, name: str) -> list[int]:
    """The ids stored in a FAISS index file, read with faiss itself."""
    import faiss

    index = faiss.read_index(str(data / "faiss" / f"{name}.index"))
    return sorted(faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(int).tolist())


def consistency(data: Path) -> list[str]:
    """Everything that must hold between DuckDB and FAISS after any scan, killed or not; [] when it holds."""
    problems = []
    done = [r[0] for r in rows(data, "SELECT id FROM tracks WHERE status = 'done' ORDER BY id")]
    paths = rows(data, "SELECT count(*), count(DISTINCT path) FROM tracks")[0]
    if paths[0] != paths[1]:
        problems.append(f"duplicate paths: {paths[0]} rows for {paths[1]} paths")
    for table in ("embeddings", "captions"):
        ids = sorted(r[0] for r in rows(data, f"SELECT track_id FROM {table}"))
        if sorted(set(ids)) != ids:
            problems.append(f"{table}: duplicate track ids")
        if not set(done) <= set(ids):
            problems.append(f"{table}: done tracks without a row: {sorted(set(done) - set(ids))}")
    for name in ("audio", "text"):
        if not (data / "faiss" / f"{name}.index").exists():
            if done:
                problems.append(f"{name} index missing with {len(done)} done tracks")
            continue
        got = faiss_ids(data, name)
        if got != done:
            problems.append(f"{name} FAISS ids {got} != DuckDB done ids {done}")
    return problems
