"""Audio in: decode any file PyAV can read to mono float32, resample with soxr, within a bounded window.

Decoding stops once `max_seconds` of audio have been read, so a 3-hour DJ mix costs no more memory
than the window it is indexed from.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soxr

if TYPE_CHECKING:
    import av


class AudioDecodeError(Exception):
    """The file could not be decoded to audio; the message is a reason fit for the catalog."""


def decode_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None,
                 offset_seconds: float = 0.0) -> np.ndarray:
    """Return mono float32 samples at `sample_rate`, at most `max_seconds` long, finite and in [-1, 1]."""
    import av

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
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise AudioDecodeError(f"cannot open as media: {_reason(exc)}") from exc
    pieces: list[np.ndarray] = []
    try:
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError("no audio stream in file")
        stream = streams[0]
        native_rate = stream.codec_context.sample_rate or stream.rate or sample_rate
        if offset_seconds > 0:
            container.seek(int(offset_seconds * av.time_base), any_frame=False)
        limit = None if max_seconds is None else int(max_seconds * native_rate)
        have = 0
        for frame in container.decode(stream):
            chunk = _mono(frame)
            if frame.sample_rate and frame.sample_rate != native_rate:  # a stream that changes rate midway
                chunk = soxr.resample(chunk, frame.sample_rate, native_rate).astype(np.float32, copy=False)
            pieces.append(chunk)
            have += chunk.size
            if limit is not None and have >= limit:
                break
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, MemoryError) as exc:
        if not pieces:
            raise AudioDecodeError(f"decode failed: {_reason(exc)}") from exc
        # A truncated tail: keep what decoded cleanly.
    finally:
        container.close()
    if not pieces:
        raise AudioDecodeError("file holds no audio samples")
    wave = np.concatenate(pieces).astype(np.float32, copy=False)
    if limit is not None:
        wave = wave[:limit]
    if wave.size == 0:
        raise AudioDecodeError("file holds no audio samples")
    wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(wave, -1.0, 1.0, out=wave)
    if native_rate != sample_rate:
        wave = soxr.resample(wave, native_rate, sample_rate).astype(np.float32, copy=False)
        np.clip(wave, -1.0, 1.0, out=wave)  # the resampling filter rings past full scale on clipped input
    return wave


_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63, "flt": 1.0, "dbl": 1.0}


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """The channel mean of a decoded frame as float32, converted here rather than by FFmpeg's resampler.

    FFmpeg's float downmix to mono sums 4+ channels past full scale (a 0.4 tone on 8 channels came out
    clipped at 1.0), and its resampler left on the frame's own layout crashed (SIGSEGV) on an 8-channel
    WAV without a channel mask; a plain mean is bounded and works for any channel count.
    """
    name = frame.format.name.rstrip("p")
    if name not in _FULL_SCALE:
        raise AudioDecodeError(f"unsupported sample format {frame.format.name}")
    data = frame.to_ndarray()
    channels = max(frame.layout.nb_channels, 1)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    if name == "flt" and channels == 1:
        return data[0].astype(np.float32, copy=False)
    wide = data.astype(np.float64)
    if name == "u8":
        wide -= 128.0
    with np.errstate(invalid="ignore", over="ignore"):
        return (wide.mean(axis=0) / _FULL_SCALE[name]).astype(np.float32)


def _reason(exc: BaseException) -> str:
    """The cause without the file name (the catalog shows the path beside it) or errno numbers."""
    text = getattr(exc, "strerror", None)  # OSError and av.error.FFmpegError both carry it
    text = (text or str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
