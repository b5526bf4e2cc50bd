"""model.tempo_key on signals with known answers: synthesised drum loops and chord progressions, silence,
very short input, and clips of the held-out set rendered by FluidSynth with the TimGM6mb soundfont."""

from __future__ import annotations

import time

import numpy as np
import pytest

from model.tempo_key import (
    PITCH_CLASSES,
    TEMPO_KEY_VERSION,
    TEMPO_WINDOW_S,
    TEMPO_WINDOWS,
    estimate_key,
    estimate_tempo,
    tempo_windows,
)
from training.heldout import Clip, compose_midi, unavailable_reason

SR = 16000
NO_SYNTH = unavailable_reason()


def drum_loop(bpm: float, seconds: float = 12.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Kick on beats 1 and 3, snare on 2 and 4, a closed hi-hat on every eighth, a little noise under it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.25 * sr)) / sr
    kick = np.sin(2 * np.pi * 50 * t + 6 * (1 - np.exp(-t * 40))) * np.exp(-t * 18)
    snare = (0.5 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 28)
    hat = np.diff(rng.standard_normal(t.size + 1)) * np.exp(-t * 90) * 0.2
    x = 0.003 * rng.standard_normal(int(seconds * sr))
    for i, start in enumerate(np.arange(0.1, seconds, 30.0 / bpm)):
        n0 = int(round(start * sr))
        n = min(t.size, x.size - n0)
        hit = hat if i % 2 else (kick if i % 4 == 0 else snare) + hat
        x[n0:n0 + n] += hit[:n] * 0.4
    return x.astype(np.float32)


def tone(midi: int, seconds: float, sr: int = SR) -> np.ndarray:
    """A plucked harmonic tone: six partials falling off as 0.6^h, a 10 ms attack and a slow decay."""
    t = np.arange(int(seconds * sr)) / sr
    f = 440.0 * 2 ** ((midi - 69) / 12)
    partials = sum(0.6 ** h * np.sin(2 * np.pi * f * (h + 1) * t) for h in range(6) if f * (h + 1) < sr / 2)
    return partials * np.minimum(t / 0.01, 1.0) * np.exp(-t * 1.5)


PROGRESSIONS = {  # (root above the tonic, chord intervals): functional cadences that name the key
    "major": ((0, (0, 4, 7)), (9, (0, 3, 7)), (5, (0, 4, 7)), (7, (0, 4, 7)), (0, (0, 4, 7))),
    "minor": ((0, (0, 3, 7)), (5, (0, 3, 7)), (8, (0, 4, 7)), (7, (0, 4, 7)), (0, (0, 3, 7))),
}


def progression(tonic: str, mode: str, chord_s: float = 1.0, repeats: int = 2) -> np.ndarray:
    """Close-position chords around middle C over their root two octaves down."""
    base = 48 + PITCH_CLASSES.index(tonic)
    chords = []
    for root, intervals in PROGRESSIONS[mode] * repeats:
        pitches = [60 + (base + root + i - 60) % 12 for i in intervals] + [base - 12 + root % 12]
        chords.append(sum(tone(p, chord_s) for p in pitches))
    x = np.concatenate(chords)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def test_version_is_a_short_string():
    assert isinstance(TEMPO_KEY_VERSION, str) and 0 < len(TEMPO_KEY_VERSION) <= 16


@pytest.mark.parametrize("bpm", [87.5, 97.3, 121.7, 143.2])
def test_tempo_of_drum_loops(bpm):
    est = estimate_tempo(drum_loop(bpm), SR)
    assert abs(est - bpm) <= 0.01 * bpm, (bpm, est)  # at 143 BPM that is 0.4 of a 10 ms frame


@pytest.mark.parametrize("bpm", [62.0, 171.4])
def test_tempo_far_from_120_bpm_is_right_to_an_octave(bpm):
    """A bare loop this slow or fast reads as well at twice or half the tempo: the prior picks nearer 120."""
    est = estimate_tempo(drum_loop(bpm), SR)
    assert min(abs(est - f * bpm) / (f * bpm) for f in (1, 2, 1 / 2)) <= 0.01, (bpm, est)


def test_tempo_at_another_sample_rate():
    est = estimate_tempo(drum_loop(104.6, sr=22050), 22050)
    assert abs(est - 104.6) <= 0.01 * 104.6, est


@pytest.mark.parametrize("mode", ["major", "minor"])
@pytest.mark.parametrize("tonic", ["C", "D#", "E", "F#", "A", "A#"])
def test_key_of_chord_progressions(tonic, mode):
    assert estimate_key(progression(tonic, mode), SR) == (tonic, mode)


def test_a_long_track_is_timed_in_windows_centred_in_its_parts():
    """Past TEMPO_WINDOWS windows' length, only windows centred in equal parts are heard: a long silent
    intro and outro around a drum loop neither cost the tempo nor enter a window."""
    size = int(TEMPO_WINDOW_S * SR)
    short = np.ones(TEMPO_WINDOWS * size, np.float32)
    assert len(tempo_windows(short, SR)) == 1 and tempo_windows(short, SR)[0].size == short.size
    loop = drum_loop(113.0, seconds=3 * TEMPO_WINDOWS * TEMPO_WINDOW_S)
    quiet = np.zeros(loop.size, np.float32)
    track = np.concatenate([quiet, loop, quiet])  # the loop fills the middle third exactly
    windows = tempo_windows(track, SR)
    assert len(windows) == TEMPO_WINDOWS and all(w.size == size for w in windows)
    middle = windows[TEMPO_WINDOWS // 2]
    assert np.array_equal(middle, track[(track.size - size) // 2:(track.size - size) // 2 + size])
    assert abs(estimate_tempo(track, SR) - 113.0) <= 0.01 * 113.0
    assert estimate_key(np.concatenate([quiet, np.resize(progression("E", "minor"), loop.size), quiet]), SR) \
        == ("E", "minor")  # the key is heard from the whole track


def test_silence_and_very_short_input():
    for wave in (np.zeros(SR * 10, np.float32), np.zeros(100, np.float32), np.zeros(0, np.float32)):
        assert estimate_tempo(wave, SR) == 0.0
        assert estimate_key(wave, SR) == ("C", "major")
    blip = progression("G", "major", chord_s=0.06, repeats=1)  # 0.3 s of music
    assert blip.size < SR // 2
    tonic, mode = estimate_key(blip, SR)
    assert tonic in PITCH_CLASSES and mode in ("major", "minor")
    assert estimate_tempo(blip, SR) >= 0.0


def test_it_is_fast():
    """Target: under 0.15 s of CPU per minute of audio for both; the bound here leaves room for a busy box."""
    x = np.concatenate([drum_loop(118.0, seconds=30.0), drum_loop(118.0, seconds=30.0, seed=1)])
    x = x + np.resize(progression("D", "minor"), x.size)
    estimate_tempo(x[:SR], SR)
    start = time.process_time()
    estimate_tempo(x, SR)
    estimate_key(x, SR)
    assert time.process_time() - start < 0.6


@pytest.mark.skipif(NO_SYNTH is not None, reason=f"cannot render held-out clips here: {NO_SYNTH}")
@pytest.mark.parametrize("clip", [
    Clip(seed=11, seconds=12.0, bpm=97.5, tonic="F#", mode="minor", meter=4, style="funk", family="brass",
         program=56, instrument="trumpet", drums=True, tempo_class="medium"),
    Clip(seed=12, seconds=12.0, bpm=141.3, tonic="A#", mode="major", meter=3, style="waltz", family="reed",
         program=71, instrument="clarinet", drums=False, tempo_class="fast"),
], ids=["funk-drums", "waltz-no-drums"])
def test_rendered_heldout_clips(clip):
    from training.heldout.dataset import default_soundfont
    from training.synth.render import render_midi

    sf = default_soundfont()
    wave = render_midi(compose_midi(clip), seconds=clip.seconds, sample_rate=SR, soundfont=sf)
    assert abs(estimate_tempo(wave, SR) - clip.bpm) <= 0.04 * clip.bpm  # MIREX accuracy 1
    assert estimate_key(wave, SR) == (clip.tonic, clip.mode)
