"""Audio in: decode a file to mono float32 with FFmpeg (PyAV), else libsndfile; resample with soxr; bounded window.

Decoding stops once `max_seconds` of audio have been read, so a 3-hour DJ mix costs no more memory
than the window it is indexed from. libsndfile is the second opinion for files FFmpeg finds no audio
in: its Ogg demuxer refuses Vorbis files whose identification header is longer than the 30 bytes it
expects, which libvorbis, and so libsndfile, plays. Both paths downmix, clip and resample the same way.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import soxr

if TYPE_CHECKING:
    import av

# Frames are downmixed in blocks of at least this many samples: converting frame by frame (about a
# thousand samples each) spent more time in numpy's per-call overhead than FFmpeg spent decoding.
_BLOCK_SAMPLES = 1 << 16
_PART_CHARS = 180  # each decoder's reason in a two-decoder refusal, so the whole stays one short line

# FFmpeg's sample formats (planar ones end in "p"): the numpy type of a sample, and its full scale.
_SAMPLES = {"u8": (np.uint8, 128.0), "s16": (np.int16, 32768.0), "s32": (np.int32, 2.0**31),
            "s64": (np.int64, 2.0**63), "flt": (np.float32, 1.0), "dbl": (np.float64, 1.0)}


class AudioDecodeError(Exception):
    """The file could not be decoded to audio; the message is a reason fit for the catalog."""


class DecodedAudio(NamedTuple):
    wave: np.ndarray  # mono float32 at the asked rate, finite and in [-1, 1]
    decoder: str  # which library read it: "ffmpeg" or "libsndfile"


def decode_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None,
                 offset_seconds: float = 0.0) -> np.ndarray:
    """Return mono float32 samples at `sample_rate`, at most `max_seconds` long, finite and in [-1, 1]."""
    return read_audio(path, sample_rate, max_seconds, offset_seconds).wave


def read_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None,
               offset_seconds: float = 0.0) -> DecodedAudio:
    """`decode_audio`, saying which decoder read the file: FFmpeg, or libsndfile where FFmpeg finds no audio.

    When neither reads it, the AudioDecodeError names both reasons ("ffmpeg: ...; libsndfile: ...").
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise AudioDecodeError(f"cannot open as media: {_reason(exc)}") from exc
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block forever, a device never end
        raise AudioDecodeError("not a regular file")
    if info.st_size == 0:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        wave, native_rate = _ffmpeg(path, sample_rate, max_seconds, offset_seconds)
        decoder = "ffmpeg"
    except AudioDecodeError as ffmpeg_error:
        try:
            wave, native_rate = _libsndfile(path, max_seconds, offset_seconds)
        except AudioDecodeError as sndfile_error:
            raise AudioDecodeError(f"ffmpeg: {str(ffmpeg_error)[:_PART_CHARS]}; "
                                   f"libsndfile: {str(sndfile_error)[:_PART_CHARS]}") from ffmpeg_error
        decoder = "libsndfile"
    np.clip(wave, -1.0, 1.0, out=wave)  # +-Inf become +-1; NaN stays NaN, and becomes silence next
    wave[np.isnan(wave)] = 0.0
    if native_rate != sample_rate:
        wave = soxr.resample(wave, native_rate, sample_rate).astype(np.float32, copy=False)
        np.clip(wave, -1.0, 1.0, out=wave)  # the resampling filter rings past full scale on clipped input
    return DecodedAudio(wave, decoder)


def _ffmpeg(path: Path, sample_rate: int, max_seconds: float | None,
            offset_seconds: float) -> tuple[np.ndarray, int]:
    """The first audio stream as mono float32 at its own rate (at most `max_seconds`), and that rate."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise AudioDecodeError(f"cannot open as media: {_reason(exc)}") from exc
    mono = _Downmix()
    try:
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError("no audio stream in file")
        stream = streams[0]
        native_rate = stream.codec_context.sample_rate or stream.rate or sample_rate
        if offset_seconds > 0:
            container.seek(int(offset_seconds * av.time_base), any_frame=False)
        limit = None if max_seconds is None else int(max_seconds * native_rate)
        for frame in container.decode(stream):
            if frame.sample_rate and frame.sample_rate != native_rate:  # a stream that changes rate midway
                mono.add_resampled(frame, native_rate)
            else:
                mono.add(frame)
            if limit is not None and mono.samples >= limit:
                break
        pieces = mono.finish()
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, MemoryError) as exc:
        if not mono.samples:
            raise AudioDecodeError(f"decode failed: {_reason(exc)}") from exc
        pieces = mono.finish()  # a truncated tail: keep what decoded cleanly
    finally:
        container.close()
    if not pieces:
        raise AudioDecodeError("file holds no audio samples")
    wave = np.concatenate(pieces).astype(np.float32, copy=False)
    if limit is not None:
        wave = wave[:limit]
    if wave.size == 0:
        raise AudioDecodeError("file holds no audio samples")
    return wave, native_rate


class _Downmix:
    """Decoded frames to mono float32: each frame's samples are kept as they came, and converted (channel
    mean, full scale) a block of frames at a time, with the very operations a single frame would get.

    FFmpeg's float downmix to mono sums 4+ channels past full scale (a 0.4 tone on 8 channels came out
    clipped at 1.0), and its resampler left on the frame's own layout crashed (SIGSEGV) on an 8-channel
    WAV without a channel mask; a plain mean is bounded and works for any channel count.
    """

    def __init__(self) -> None:
        self.pieces: list[np.ndarray] = []  # converted, in order
        self.samples = 0  # mono samples taken so far, converted or not
        self.kind: tuple[str, int, bool] | None = None  # (format, channels, planar) of the pending frames
        self.pending: list[list[np.ndarray]] = []  # per frame: its planes' samples
        self.pending_samples = 0

    def add(self, frame: av.AudioFrame) -> None:
        """Take a frame at the stream's rate; converted once a block of like frames has gathered."""
        kind, planes = _planes(frame)
        if kind != self.kind:
            self._convert()
            self.kind = kind
        self.pending.append(planes)
        self.pending_samples += frame.samples
        self.samples += frame.samples
        if self.pending_samples >= _BLOCK_SAMPLES:
            self._convert()

    def add_resampled(self, frame: av.AudioFrame, rate: int) -> None:
        """Take a frame at another rate than the stream's, resampled to `rate` on its own."""
        self._convert()
        self.kind, planes = _planes(frame)
        self.pending.append(planes)
        chunk = soxr.resample(self._mono(), frame.sample_rate, rate).astype(np.float32, copy=False)
        self.pieces.append(chunk)
        self.samples += chunk.size

    def finish(self) -> list[np.ndarray]:
        """The mono pieces, in order."""
        self._convert()
        return self.pieces

    def _convert(self) -> None:
        if self.pending:
            self.pieces.append(self._mono())

    def _mono(self) -> np.ndarray:
        """The channel mean of the pending frames as float32; clears them."""
        name, channels, planar = self.kind
        frames, self.pending, self.pending_samples = self.pending, [], 0
        if planar:
            data = np.stack([np.concatenate([planes[c] for planes in frames]) for c in range(channels)])
        else:
            data = np.concatenate([planes[0] for planes in frames]).reshape(-1, channels).T
            if name not in ("flt", "dbl"):
                # Integers sum exactly in float64 in any order, so they may be laid out channel by channel,
                # where numpy adds whole rows instead of a few numbers per call; floats keep the layout
                # (and so the order of additions) a single frame gets.
                data = np.ascontiguousarray(data)
        if name == "flt" and channels == 1:
            return data[0].astype(np.float32, copy=False)
        wide = data.astype(np.float64)
        if name == "u8":
            wide -= 128.0
        with np.errstate(invalid="ignore", over="ignore"):
            return (wide.mean(axis=0) / _SAMPLES[name][1]).astype(np.float32)


def _planes(frame: av.AudioFrame) -> tuple[tuple[str, int, bool], list[np.ndarray]]:
    """A frame's (format, channels, planar) and its samples per plane, as views of its buffers.

    The planes are reached by index: `frame.planes` reads past the end of FFmpeg's plane pointers when
    a planar frame has exactly eight channels (it counts up to a NULL that is not there), which crashed
    the process on 7.1 AAC.
    """
    from av.audio.plane import AudioPlane

    fmt = frame.format
    name, planar = fmt.name.rstrip("p"), fmt.is_planar
    if name not in _SAMPLES:
        raise AudioDecodeError(f"unsupported sample format {fmt.name}")
    channels = max(frame.layout.nb_channels, 1)
    dtype = _SAMPLES[name][0]
    if planar:
        planes = [np.frombuffer(AudioPlane(frame, c), dtype, frame.samples) for c in range(channels)]
    else:
        planes = [np.frombuffer(AudioPlane(frame, 0), dtype, frame.samples * channels)]
    return (name, channels, planar), planes


def _libsndfile(path: Path, max_seconds: float | None, offset_seconds: float) -> tuple[np.ndarray, int]:
    """The file as mono float32 at its own rate (at most `max_seconds`) read with libsndfile, and that rate."""
    import soundfile

    pieces: list[np.ndarray] = []
    try:
        # Opened from a file object, so without a name: libsndfile hands any file named .mp3 that it cannot
        # identify to mpg123, which searches garbage for frames and then calls it "not a regular file".
        with path.open("rb") as raw, soundfile.SoundFile(raw) as f:
            rate = f.samplerate
            if offset_seconds > 0 and f.seekable():
                f.seek(min(int(offset_seconds * rate), f.frames))
            limit = None if max_seconds is None else int(max_seconds * rate)
            have = 0
            while limit is None or have < limit:
                block = f.read(_BLOCK_SAMPLES if limit is None else min(_BLOCK_SAMPLES, limit - have),
                               dtype="float64", always_2d=True)
                if not len(block):
                    break
                with np.errstate(invalid="ignore", over="ignore"):
                    pieces.append(block.mean(axis=1).astype(np.float32))
                have += len(block)
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        if not pieces:
            raise AudioDecodeError(getattr(exc, "error_string", "").strip(" .") or _reason(exc)) from exc
        # a truncated tail: keep what decoded cleanly
    if not pieces:
        raise AudioDecodeError("file holds no audio samples")
    return np.concatenate(pieces), rate


def _reason(exc: BaseException) -> str:
    """The cause without the file name (the catalog shows the path beside it) or errno numbers."""
    text = getattr(exc, "strerror", None)  # OSError and av.error.FFmpegError both carry it
    text = (text or str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
