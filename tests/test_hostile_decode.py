"""Every hostile case through the real decoder: the right audio, or AudioDecodeError with a clear reason.

Never another exception type and never a hang: a watchdog (faulthandler) kills the run with a
traceback if one decode takes over a minute, even when it is stuck inside FFmpeg's C code.
"""

from __future__ import annotations

import faulthandler
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model.audio import AudioDecodeError, decode_audio
from tests import hostile

RATE = hostile.RATE
HANG_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, hostile.Built]:
    return hostile.build(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """Kill the process with every thread's traceback if a test hangs (works inside C code too)."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def decode(path: Path, max_seconds: float | None = 60.0) -> np.ndarray | AudioDecodeError:
    """The decoder's result, or its AudioDecodeError; any other exception propagates and fails the test."""
    try:
        return decode_audio(path, RATE, max_seconds=max_seconds)
    except AudioDecodeError as exc:
        return exc


@pytest.mark.parametrize("name", list(hostile.BUILDERS))
def test_case_decodes_correctly_or_is_refused_clearly(cases: dict[str, hostile.Built], name: str) -> None:
    path, expect = cases[name]
    if expect.skip:
        pytest.skip(expect.skip)
    started = time.monotonic()
    got = decode(path)
    assert time.monotonic() - started < 20, f"{expect.case}: decoding took {time.monotonic() - started:.1f}s"
    if expect.outcome == "audio" and expect.seconds and expect.seconds[1] > 3600:
        # The long file: only the bounded window is decoded, never the three hours.
        assert isinstance(got, np.ndarray), got
        assert got.size == 60 * RATE
        return
    if expect.outcome == "audio":
        assert isinstance(got, np.ndarray), f"{expect.case}: refused with {got}"
        assert got.dtype == np.float32 and got.ndim == 1
        assert np.isfinite(got).all(), f"{expect.case}: non-finite samples"
        assert np.abs(got).max() <= 1.0, f"{expect.case}: peak {np.abs(got).max()} beyond full scale"
        lo, hi = expect.seconds or (0.0, float("inf"))
        assert lo <= got.size / RATE <= hi, f"{expect.case}: {got.size / RATE:.4f}s not in [{lo}, {hi}]"
        if expect.freq:
            assert abs(hostile.dominant_freq(got) - expect.freq) < 5, f"{expect.case}: content changed"
    else:
        assert isinstance(got, AudioDecodeError), f"{expect.case}: decoded {got.size} samples, expected a refusal"
        reason = str(got).lower()
        assert any(word in reason for word in expect.reason), f"{expect.case}: unclear reason {reason!r}"
        assert "\n" not in reason and len(reason) <= 400
        assert os.fspath(path).lower() not in reason, "the reason repeats the path instead of saying why"


def test_channels_are_averaged_not_summed(tmp_path: Path) -> None:
    """Downmix is the channel mean: a 0.4 tone on 8 channels stays 0.4, not a clipped square wave."""
    for n in range(1, 9):
        path, _ = hostile.channels(tmp_path, n)
        wave = decode_audio(path, RATE)
        assert np.abs(wave).max() == pytest.approx(0.4, abs=0.01), n
    # Opposite-phase channels cancel, as a mono mix of them does.
    stereo = hostile.tone(1.0, 48000, channels=2, amp=0.4)
    stereo[1] *= -1
    assert np.abs(decode_audio(hostile.write_wav(tmp_path / "phase.wav", stereo, 48000), RATE)).max() < 1e-3


def test_resampling_keeps_length_and_pitch(tmp_path: Path) -> None:
    for rate in (8000, 11025, 22050, 44100, 48000, 96000, 192000):
        path = hostile.write_wav(tmp_path / f"r{rate}.wav", hostile.tone(2.0, rate, freq=700.0), rate)
        wave = decode_audio(path, RATE)
        assert abs(wave.size - 2 * RATE) <= 1, rate
        assert abs(hostile.dominant_freq(wave) - 700.0) < 2, rate


def test_nan_and_inf_become_silence_and_full_scale(tmp_path: Path) -> None:
    """NaN is replaced by 0, +-Inf by +-1, and the tone around them is untouched."""
    wave = hostile.tone(0.5, RATE, amp=0.5)
    wave[0, 100:110] = np.nan
    wave[0, 200] = np.inf
    wave[0, 300] = -np.inf
    got = decode_audio(hostile.write_wav(tmp_path / "f.wav", wave, RATE, float32=True), RATE)
    assert (got[100:110] == 0).all() and got[200] == 1.0 and got[300] == -1.0
    np.testing.assert_allclose(got[400:], wave[0, 400:], atol=1e-6)


def test_one_millisecond_is_kept_whole(tmp_path: Path) -> None:
    path = hostile.write_wav(tmp_path / "ms.wav", hostile.tone(0.001, RATE), RATE)
    assert decode_audio(path, RATE).size == 24


def test_fifo_is_refused_without_blocking(cases: dict[str, hostile.Built]) -> None:
    """A named pipe with no writer would block open() forever; it is refused from its file type."""
    path, _ = cases["fifo"]
    started = time.monotonic()
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        decode_audio(path, RATE)
    assert time.monotonic() - started < 1


def test_long_file_costs_only_its_window(cases: dict[str, hostile.Built]) -> None:
    """Three hours of MP3: a 30 s window decodes in well under a second's worth of work per minute."""
    path, _ = cases["three_hours"]
    started = time.monotonic()
    wave = decode_audio(path, RATE, max_seconds=30)
    assert wave.size == 30 * RATE and time.monotonic() - started < 5
    later = decode_audio(path, RATE, max_seconds=10, offset_seconds=2 * 3600)
    assert later.size == 10 * RATE


def test_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="(?i)no such file"):
        decode_audio(tmp_path / "never-existed.mp3", RATE)


def test_file_deleted_between_listing_and_decoding(tmp_path: Path) -> None:
    """The scan lists a file, then the user deletes it: the decode is a clean refusal."""
    path, _ = hostile.unicode_name(tmp_path)
    path.unlink()
    with pytest.raises(AudioDecodeError):
        decode_audio(path, RATE)


def test_file_rewritten_with_garbage_after_listing(tmp_path: Path) -> None:
    path, _ = hostile.truncated_flac(tmp_path)
    path.write_bytes(b"\x00" * 10_000)
    with pytest.raises(AudioDecodeError):
        decode_audio(path, RATE)
