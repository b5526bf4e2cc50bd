"""FFmpeg's frames into mono samples: the planar layouts PyAV mishandles are read right."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from model.audio import read_audio
from tests import hostile


def test_a_7_1_aac_decodes_to_the_channel_mean(tmp_path: Path) -> None:
    """Eight planar channels: PyAV's `frame.planes` reads past FFmpeg's eight plane pointers there, which
    crashed the decoder process (SIGSEGV) on every 7.1 AAC, Vorbis or Opus file."""
    rate, path = 48000, tmp_path / "seven-one.m4a"
    wave = hostile.tone(2.0, rate, channels=8, amp=0.4)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="7.1")
        for start in range(0, wave.shape[1], 1024):
            # packed input: PyAV cannot build an 8-channel planar frame either; the encoder makes it planar
            chunk = np.ascontiguousarray(wave[:, start:start + 1024].T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="7.1")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as check:
        first = next(check.decode(audio=0))
        assert (first.format.name, first.layout.nb_channels) == ("fltp", 8)
    got = read_audio(path, hostile.RATE)
    assert got.decoder == "ffmpeg" and abs(got.wave.size / hostile.RATE - 2.0) < 0.05
    # the mean of eight equal tones is the tone (AAC's LFE channel keeps less of it), not eight summed
    assert 0.3 < np.abs(got.wave[hostile.RATE // 10:-hostile.RATE // 10]).max() < 0.42
    assert abs(hostile.dominant_freq(got.wave) - 440.0) < 5
