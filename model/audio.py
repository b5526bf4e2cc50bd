"""Audio in: decode any file PyAV can read to mono float32, resample with soxr, within a bounded window.

Decoding stops once `max_seconds` of audio have been read, so a 3-hour DJ mix costs no more memory
than the window it is indexed from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr


class AudioDecodeError(Exception):
    """The file could not be decoded to audio; the message is a reason fit for the catalog."""


def decode_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None,
                 offset_seconds: float = 0.0) -> np.ndarray:
    """Return mono float32 samples at `sample_rate`, at most `max_seconds` long, finite and in [-1, 1]."""
    import av

    path = Path(path)
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
        resampler = av.AudioResampler(format="flt", layout="mono", rate=native_rate)
        limit = None if max_seconds is None else int(max_seconds * native_rate)
        have = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                pieces.append(chunk)
                have += chunk.size
            if limit is not None and have >= limit:
                break
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
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
    return wave


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
