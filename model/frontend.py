"""The lite profile's audio front-end: hand-built music features at MERT's 75 frames/s, no weights.

No MERT weights can be had offline, so `lite` describes each frame with features a music listener
cares about, each group scaled to roughly unit range by fixed constants so that mean pooling and the
linear adapter work on them unchanged:

- timbre and register: 64 log-mel bands, spectral centroid, flatness and loudness
- articulation: in 16 groups of 4 mel bands, the onset strength and the spread of the level over
  about 0.25 s (plucked and struck notes decay, bowed and blown ones hold or waver)
- harmony: 12-bin chroma (smoothed over about 6 s) and its correlation with the 24 Krumhansl key
  profiles, plus the best major and best minor fit, so major/minor is one subtraction away. Chroma
  reads 100-1000 Hz only, each bin spread over its nearest pitch classes with a 0.3-semitone Gaussian:
  below 100 Hz an FFT bin spans several semitones, and above 1 kHz the overtones (a fifth and a major
  third above each note) outweigh the notes; what this did for clip-level major/minor is in
  docs/benchmarks.md, "Training the lite adapter" (front-end revision 2).
- rhythm: onset strength in three bands (drums show in the high band) and a local tempogram
  (autocorrelation of the onset envelope over about 6 s at 32 log-spaced tempi from 50 to 230 BPM)

The frame grid matches MERT exactly: frame i is centred on sample 320*i + 200 at 24 kHz, and a
clip of N samples gives floor((N - 400) / 320) + 1 frames, so 10 s -> 749 frames, 30 s -> 2249.
`REVISION` is part of the lite profile's encoder version: bump it whenever the features change, so
stored embeddings and feature caches from older features are recomputed rather than misread.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 24000
HOP = 320
RECEPTIVE_FIELD = 400
N_FFT = 2048
N_MELS = 64
N_TEMPI = 32
TEMPO_WINDOW = 450  # frames, 6 s
CHROMA_SMOOTH = 451  # frames, about 6 s
CHROMA_SIGMA = 0.3  # semitones
LEVEL_SPREAD = 19  # frames, about 0.25 s
REVISION = 2
# The output's feature groups, in order, with their widths: the adapter sees one flat vector, tests and
# probes find a group by name (`feature_slice`).
LAYOUT = (("logmel", N_MELS), ("timbre", 3), ("onset", 16), ("level_spread", 16), ("chroma", 12),
          ("key_fit", 24), ("best_major_minor", 2), ("band_onset", 3), ("tempogram", N_TEMPI))

# Krumhansl-Kessler key profiles (tonic first).
_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


def num_frames(n_samples: int) -> int:
    """MERT's conv arithmetic: one frame per hop once the 400-sample receptive field is filled."""
    return 0 if n_samples < RECEPTIVE_FIELD else (n_samples - RECEPTIVE_FIELD) // HOP + 1


def feature_slice(name: str) -> slice:
    """Where a feature group of `LAYOUT` sits in the front-end's output."""
    start = 0
    for group, width in LAYOUT:
        if group == name:
            return slice(start, start + width)
        start += width
    raise KeyError(name)


def _mel_filterbank(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> torch.Tensor:
    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(torch.tensor(fmin)).item(), hz_to_mel(torch.tensor(fmax)).item(), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb / fb.sum(dim=1, keepdim=True).clamp(min=1e-8)  # [n_mels, n_bins]


def _chroma_filterbank(n_fft: int, sr: int, fmin: float = 100.0, fmax: float = 1000.0) -> torch.Tensor:
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    valid = (freqs >= fmin) & (freqs <= fmax)
    midi = 69 + 12 * torch.log2(freqs[valid] / 440.0)
    distance = torch.remainder(midi[None] - torch.arange(12.0)[:, None] + 6.0, 12.0) - 6.0  # [12, bins]
    fb = torch.zeros(12, freqs.numel())
    fb[:, valid] = torch.exp(-0.5 * (distance / CHROMA_SIGMA) ** 2)
    return fb


def _key_profiles() -> torch.Tensor:
    rows = []
    for base in (_MAJOR, _MINOR):
        p = torch.tensor(base)
        p = (p - p.mean()) / p.std()
        rows.extend(torch.roll(p, k) for k in range(12))
    return torch.stack(rows)  # [24, 12]: C major .. B major, C minor .. B minor


def window_mean(x: torch.Tensor, window: int, pad: int) -> torch.Tensor:
    """`F.avg_pool1d(x, window, stride=1, padding=pad, count_include_pad=False)` along the last dim, from a
    float64 running sum: linear in the length instead of in length x window (the 6-s windows here are
    450 frames wide), and no less exact."""
    total = F.pad(F.pad(x.double(), (pad, pad)).cumsum(-1), (1, 0))
    counts = F.pad(F.pad(torch.ones(x.shape[-1], dtype=torch.float64, device=x.device), (pad, pad)).cumsum(-1), (1, 0))
    sums = total[..., window:] - total[..., :-window]
    return (sums / (counts[window:] - counts[:-window])).to(x.dtype)


class LiteFrontend(nn.Module):
    """A frozen, weight-free encoder with MERT's interface: `forward(wave[B, N]) -> [B, T, D]`."""

    sample_rate = SAMPLE_RATE
    frame_rate = SAMPLE_RATE / HOP
    hop = HOP

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("mel_fb", _mel_filterbank(N_MELS, N_FFT, SAMPLE_RATE, 30.0, 11000.0), persistent=False)
        self.register_buffer("chroma_fb", _chroma_filterbank(N_FFT, SAMPLE_RATE), persistent=False)
        self.register_buffer("chroma_bins", self.chroma_fb.sum(0).nonzero()[:, 0], persistent=False)
        self.register_buffer("keys", _key_profiles(), persistent=False)
        bpm = torch.logspace(math.log10(50.0), math.log10(230.0), N_TEMPI)
        self.register_buffer("lags", torch.round(60.0 * self.frame_rate / bpm).long(), persistent=False)
        band_edges = torch.tensor([0, 12, 40, N_MELS])  # mel bands: low, mid, high
        self.register_buffer("band_edges", band_edges, persistent=False)
        self.dim = sum(width for _, width in LAYOUT)

    @staticmethod
    def num_frames(n_samples: int) -> int:
        return num_frames(n_samples)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 1:
            wave = wave[None]
        if num_frames(wave.shape[-1]) == 0:
            return wave.new_zeros(wave.shape[0], 0, self.dim)
        # One clip at a time: batching buys nothing here (every step already spans the clip's frames), and a
        # batch's spectra outgrow the sizes the allocator keeps for reuse, so each step faults its memory in
        # anew (see model.runtime.keep_freed_memory).
        return torch.cat([self._features(w[None]) for w in wave])

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        t = num_frames(wave.shape[-1])
        # Pad so frame i is centred on sample HOP*i + RECEPTIVE_FIELD/2, as MERT's frames are.
        left = N_FFT // 2 - RECEPTIVE_FIELD // 2
        padded = F.pad(wave.float(), (left, N_FFT // 2))
        spec = torch.stft(padded, N_FFT, HOP, window=self.window, center=False, return_complex=True)[..., :t]
        power = spec.real.square() + spec.imag.square()  # [B, bins, T]: |X|^2 without abs()'s hypot
        mel = torch.einsum("mf,bft->btm", self.mel_fb, power)
        logmel = torch.log10(mel + 1e-8)
        timbre = self._timbre(power, logmel)
        articulation = self._articulation(logmel)
        harmony = self._harmony(power)
        rhythm = self._rhythm(logmel)
        return torch.cat([(logmel + 5.0) / 2.0, timbre, articulation, harmony, rhythm], dim=-1)

    def _timbre(self, power: torch.Tensor, logmel: torch.Tensor) -> torch.Tensor:
        freqs = torch.linspace(0, SAMPLE_RATE / 2, power.shape[1], device=power.device)
        total = power.sum(dim=1).clamp(min=1e-10)  # [B, T]
        centroid = (power * freqs[None, :, None]).sum(dim=1) / total
        flat = torch.exp(torch.log(power + 1e-10).mean(dim=1)) / (power.mean(dim=1) + 1e-10)
        loud = torch.log10(total)
        feats = [torch.log2(centroid.clamp(min=50.0) / 1000.0), flat * 10.0, (loud + 2.0) / 3.0]
        return torch.stack(feats, dim=-1)

    def _articulation(self, logmel: torch.Tensor) -> torch.Tensor:
        groups = logmel.reshape(*logmel.shape[:2], 16, N_MELS // 16).mean(-1)  # [B, T, 16]
        onset = F.pad(F.relu(groups[:, 1:] - groups[:, :-1]), (0, 0, 1, 0))
        x = groups.transpose(1, 2)
        mean = F.avg_pool1d(x, LEVEL_SPREAD, stride=1, padding=LEVEL_SPREAD // 2, count_include_pad=False)
        square = F.avg_pool1d(x * x, LEVEL_SPREAD, stride=1, padding=LEVEL_SPREAD // 2, count_include_pad=False)
        spread = (square - mean * mean).clamp(min=0.0).sqrt().transpose(1, 2)
        return torch.cat([onset * 5.0, spread * 3.0], dim=-1)

    def _harmony(self, power: torch.Tensor) -> torch.Tensor:
        band = self.chroma_bins  # the chroma filters are zero outside 100-1000 Hz
        chroma = torch.einsum("cf,bft->bct", self.chroma_fb[:, band], power[:, band].sqrt())
        chroma = window_mean(chroma, CHROMA_SMOOTH, CHROMA_SMOOTH // 2)
        chroma = chroma / chroma.sum(dim=1, keepdim=True).clamp(min=1e-8)  # [B, 12, T]
        centred = chroma - chroma.mean(dim=1, keepdim=True)
        centred = centred / centred.norm(dim=1, keepdim=True).clamp(min=1e-8)
        corr = torch.einsum("kc,bct->btk", self.keys / self.keys.norm(dim=1, keepdim=True), centred)
        best = torch.stack([corr[..., :12].amax(-1), corr[..., 12:].amax(-1)], dim=-1)
        return torch.cat([chroma.transpose(1, 2) * 4.0, corr, best * 2.0], dim=-1)

    def _rhythm(self, logmel: torch.Tensor) -> torch.Tensor:
        flux = F.relu(logmel[:, 1:] - logmel[:, :-1])
        flux = F.pad(flux, (0, 0, 1, 0))  # [B, T, M]
        bands = torch.stack([flux[..., a:b].mean(-1) for a, b in zip(self.band_edges[:-1].tolist(),
                                                                     self.band_edges[1:].tolist(), strict=True)], -1)
        onset = flux.mean(-1)  # [B, T]
        onset = onset - F.avg_pool1d(onset[:, None], 31, stride=1, padding=15, count_include_pad=False)[:, 0]
        onset = F.relu(onset)
        return torch.cat([bands * 5.0, self._tempogram(onset)], dim=-1)

    def _tempogram(self, onset: torch.Tensor) -> torch.Tensor:
        """Autocorrelation of the onset envelope in a window around each frame, at each tempo's lag."""
        b, t = onset.shape
        half = TEMPO_WINDOW // 2
        max_lag = int(self.lags.max())
        x = F.pad(onset, (half, half + max_lag))
        span = t + TEMPO_WINDOW - 1  # the samples the first t windows cover
        prods = torch.stack([x[:, :span] * x[:, :span]] + [x[:, :span] * x[:, lag:lag + span]
                                                            for lag in self.lags.tolist()], 1)
        means = window_mean(prods, TEMPO_WINDOW, 0)  # [B, 1 + tempi, T]: energy, then one row per lag
        acf = means[:, 1:] / means[:, :1].clamp(min=1e-8)
        return acf.transpose(1, 2) * 3.0
