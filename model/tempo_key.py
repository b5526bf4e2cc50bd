"""Tempo (BPM) and key (tonic + mode) of a track by plain signal processing (numpy, and soxr to resample).

Tempo: an onset-strength envelope (log-magnitude spectral flux in 16 log-spaced bands from 80 Hz to
7 kHz; 32 ms frames, 10 ms hop), its autocorrelation (of the whole track up to a minute long, else summed
over three 20-s windows centred in its thirds), and for each candidate tempo from 40 to 240 BPM
a comb: the autocorrelation at 1, 2, 3 and 4 beat periods (weights 1, 1/2, 1/3, 1/4, so a period whose
multiples also recur wins over a stray peak) and at half a period (weight 1/2: a beat is subdivided,
which a period of 1.5 beats is not), times a log-normal prior around 120 BPM one octave wide. The
winning period is refined below a frame by parabolic interpolation of the autocorrelation peaks at its
multiples.

Key: a chroma of the whole track from a 512 ms STFT of it resampled to 4 kHz (half overlap; a pitch
above F#6 is not counted anyway): square-rooted magnitudes summed over time, whitened
(only what stands above a local mean about 18 Hz wide counts, so spectral peaks do and drums, noise and
window skirts do not), then each bin from A1 to F#6 is credited to its nearest equal-tempered pitch with
a triangular weight. The chroma's Pearson correlation with the 24 rotations of Temperley's major and
minor key profiles names tonic and mode. Root compression, the whitening, the pitch range and the
profiles were chosen by measurement on labelled synthetic sets (bench/bench_tempo_key.py).

Cost: a small fraction of the taggers' for both, whatever a track's length (docs/benchmarks.md, "Tempo and
key estimation", which also measures what the windows and the 4 kHz chroma change on long real tracks);
memory is bounded by working in blocks of frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soxr

TEMPO_KEY_VERSION = "tk3"
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
BLOCK_SAMPLES = 1 << 21  # STFT frames are transformed this many samples (8 MB) at a time

# Onset envelope and tempo search.
ONSET_FRAME_S = 0.032
ONSET_HOP_S = 0.010
ONSET_BANDS = 16
ONSET_FMIN, ONSET_FMAX = 80.0, 7000.0
MIN_BPM, MAX_BPM = 40.0, 240.0
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.0
# (multiple of the beat period, weight) of the autocorrelation terms scored for a candidate tempo. The
# half period asks for a subdivision: it keeps a period of 1.5 beats (3:2) from beating the true one.
COMB = ((0.5, 0.5), (1.0, 1.0), (2.0, 1 / 2), (3.0, 1 / 3), (4.0, 1 / 4))
TEMPO_WINDOWS, TEMPO_WINDOW_S = 3, 20.0  # a longer track's tempo is heard in this many windows of it

# Chroma and key.
KEY_FRAME_S = 0.512
KEY_RATE = 4000  # Hz: the chroma's signal, enough for its highest pitch (F#6) at a quarter of 16 kHz's cost
WHITEN_HZ = 17.6
KEY_LOWEST, KEY_HIGHEST = 33, 90  # MIDI pitches: A1 (55 Hz) to F#6 (1.48 kHz); above, mostly harmonics
# Temperley's (2007) major and minor key profiles, tonic first. On the synthetic sets they name the key
# far more often than the Krumhansl-Kessler profiles and a little more often than Albrecht-Shanahan's.
MAJOR_PROFILE = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
MINOR_PROFILE = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])


def estimate_tempo(wave: np.ndarray, sample_rate: int, windows: int | None = TEMPO_WINDOWS) -> float:
    """Beats per minute of mono audio in [-1, 1]; 0.0 when there are no onsets to measure (silence).

    `windows=None` hears every frame of a long track (the benchmark's reference)."""
    acf, fps = None, 0.0
    for window in tempo_windows(wave, sample_rate, windows):
        envelope, fps = onset_envelope(window, sample_rate)
        part = _autocorrelation(envelope)
        if part is not None:
            acf = part if acf is None else acf + part
    if acf is None:
        return 0.0
    acf = acf / acf[0]
    bpms = np.geomspace(MIN_BPM, MAX_BPM, int(np.log(MAX_BPM / MIN_BPM) / np.log(1.005)) + 1)  # 0.5 % apart
    lags = 60.0 * fps / bpms
    keep = lags < acf.size - 2
    if not keep.any():
        return 0.0
    bpms, lags = bpms[keep], lags[keep]
    frames = np.arange(acf.size)
    score = sum(w * np.interp(k * lags, frames, acf, right=0.0) for k, w in COMB)
    score = score * np.exp(-0.5 * (np.log2(bpms / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    best = int(np.argmax(score))
    if score[best] <= 0.0:
        return 0.0
    return float(60.0 * fps / _refine_period(acf, lags[best]))


def estimate_key(wave: np.ndarray, sample_rate: int, key_rate: int = KEY_RATE) -> tuple[str, str]:
    """(tonic, mode) such as ("F#", "minor"); ("C", "major") when there is no pitched content at all."""
    best = int(np.argmax(key_scores(chromagram(wave, sample_rate, key_rate))))
    return PITCH_CLASSES[best % 12], ("major", "minor")[best // 12]


def tempo_windows(wave: np.ndarray, sample_rate: int, count: int | None = TEMPO_WINDOWS) -> list[np.ndarray]:
    """The signal whole when it is up to `count` * TEMPO_WINDOW_S long (or `count` is None), else `count`
    windows of it, each centred in an equal part (an intro or outro alone does not set a track's tempo)."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    size = int(round(TEMPO_WINDOW_S * sample_rate))
    if count is None or x.size <= count * size:
        return [x]
    centres = (np.arange(count) + 0.5) * x.size / count
    return [x[start:start + size] for start in (centres - size / 2).astype(int)]


def onset_envelope(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Half-wave rectified log-band spectral flux, one value per hop, and its frame rate (Hz)."""
    n_fft = 1 << int(round(np.log2(ONSET_FRAME_S * sample_rate)))
    hop = max(1, int(round(ONSET_HOP_S * sample_rate)))
    bank = _band_matrix(n_fft, sample_rate)
    # einsum, not a BLAS matmul: BLAS threads would spin on every core for this small product.
    bands = [np.einsum("tf,fb->tb", mag, bank) for mag in _magnitudes(wave, n_fft, hop)]
    if sum(b.shape[0] for b in bands) < 3:
        return np.zeros(0, dtype=np.float32), sample_rate / hop
    logb = np.log1p(1000.0 * np.concatenate(bands))
    flux = np.maximum(np.diff(logb, axis=0), 0.0).sum(axis=1)
    return flux.astype(np.float32), sample_rate / hop


def chromagram(wave: np.ndarray, sample_rate: int, key_rate: int = KEY_RATE) -> np.ndarray:
    """12 pitch-class weights (C first) for the whole signal, summing to 1 (all zeros for silence); from the
    signal resampled to `key_rate` when it is faster."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate > key_rate:
        x, sample_rate = soxr.resample(x, sample_rate, key_rate).astype(np.float32, copy=False), key_rate
    n_fft = 1 << int(round(np.log2(KEY_FRAME_S * sample_rate)))
    if x.size < n_fft:  # a clip shorter than one frame is still one frame
        x = np.pad(x, (0, n_fft - x.size))
    spec = sum(np.sqrt(mag).sum(axis=0) for mag in _magnitudes(x, n_fft, n_fft // 2))
    width = max(3, int(round(WHITEN_HZ * n_fft / sample_rate)) | 1)
    spec = np.maximum(spec - np.convolve(spec, np.ones(width) / width, mode="same"), 0.0)
    midi = 69.0 + 12.0 * np.log2(np.maximum(np.fft.rfftfreq(n_fft, 1.0 / sample_rate), 1.0) / 440.0)
    sel = (midi >= KEY_LOWEST - 0.5) & (midi < KEY_HIGHEST + 0.5)
    nearest = np.round(midi[sel])
    weight = np.maximum(1.0 - 2.0 * np.abs(midi[sel] - nearest), 0.0)
    chroma = np.bincount(nearest.astype(int) % 12, weights=spec[sel] * weight, minlength=12)
    total = chroma.sum()
    return chroma / total if total > 0 else chroma


def key_scores(chroma: np.ndarray) -> np.ndarray:
    """Pearson correlation of the chroma with the 24 keys: 0-11 major on C..B, 12-23 minor on C..B."""
    profiles = np.stack([np.roll(p, k) for p in (MAJOR_PROFILE, MINOR_PROFILE) for k in range(12)])
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    c = chroma - chroma.mean()
    norm = np.linalg.norm(centred, axis=1) * np.linalg.norm(c)
    return centred @ c / norm if norm.all() else np.zeros(24)


def _magnitudes(wave: np.ndarray, n_fft: int, hop: int) -> Iterator[np.ndarray]:
    """Hann-windowed STFT magnitudes (frames x bins), a block of frames at a time to bound memory."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if x.size < n_fft:
        return
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    window = np.hanning(n_fft).astype(np.float32)
    block = max(1, BLOCK_SAMPLES // n_fft)
    for start in range(0, frames.shape[0], block):
        yield np.abs(np.fft.rfft(frames[start:start + block] * window, axis=1))


def _band_matrix(n_fft: int, sample_rate: int) -> np.ndarray:
    """Triangular filters on a log-frequency axis from 80 Hz to 7 kHz (or Nyquist): bins x bands.

    From 80 Hz up, every band spans at least two bins of the 32 ms frame."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.geomspace(ONSET_FMIN, min(ONSET_FMAX, sample_rate / 2), ONSET_BANDS + 2)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))
    return np.maximum(tri, 0.0).T.astype(np.float32)


def _autocorrelation(envelope: np.ndarray) -> np.ndarray | None:
    """Autocorrelation of the mean-removed envelope (unnormalised, so windows' add up); None when flat."""
    if envelope.size < 4:
        return None
    e = envelope.astype(np.float64) - envelope.mean()
    if float(e @ e) <= 1e-9 * envelope.size:
        return None
    n = 1 << int(np.ceil(np.log2(2 * e.size)))
    spec = np.fft.rfft(e, n)
    return np.fft.irfft(spec.real ** 2 + spec.imag ** 2, n)[: e.size]


def _refine_period(acf: np.ndarray, lag: float) -> float:
    """Sub-frame beat period: the parabolic peak of the autocorrelation near each multiple, averaged."""
    estimates, weights = [], []
    for k, w in COMB[1:]:
        centre = int(round(k * lag))
        lo, hi = max(1, centre - 2), min(acf.size - 2, centre + 2)
        if lo > hi:
            break
        i = lo + int(np.argmax(acf[lo:hi + 1]))
        a, b, c = acf[i - 1], acf[i], acf[i + 1]
        curvature = a - 2 * b + c
        offset = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
        estimates.append((i + float(np.clip(offset, -0.5, 0.5))) / k)
        weights.append(w * max(float(b), 1e-6))
    return float(np.average(estimates, weights=weights)) if estimates else lag
