"""The frozen audio side: encoder (MERT-v1 or the lite front-end) + temporal compression, chunked.

`Encoder.encode` turns waveforms into compressed audio tokens [T', D]: the layer-mean frames at
75 frames/s, mean-pooled over non-overlapping windows of `pool_window` frames (325 = about 4.33 s),
with a remainder averaged into one extra token, so T' = ceil(T / window).

Chunking keeps memory bounded whatever the track length (MERT attention over a 10-minute track in
one pass needs about 90 GB). Each chunk spans a whole number of pooling windows (30 s -> 7 windows,
30.33 s), so pooling per chunk and concatenating gives exactly the tokens of pooling the whole track;
`context_seconds` of audio on each side give the encoder context and their frames are dropped. A
chunk boundary is also a hop boundary, so every kept frame sees the same samples as in one pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from model.audio import decode_audio
from model.config import Profile, resolve_path


def pool_frames(frames: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over non-overlapping windows of `window` frames along dim -2; a remainder forms one more token."""
    if window < 1:
        raise ValueError(f"pooling window must be >= 1, got {window}")
    t = frames.shape[-2]
    full = t // window
    parts = []
    if full:
        shape = frames.shape[:-2] + (full, window, frames.shape[-1])
        parts.append(frames[..., : full * window, :].reshape(shape).mean(dim=-2))
    if t % window:
        parts.append(frames[..., full * window:, :].mean(dim=-2, keepdim=True))
    if not parts:
        return frames.new_zeros(frames.shape[:-2] + (0, frames.shape[-1]))
    return torch.cat(parts, dim=-2)


def load_encoder_network(profile: Profile) -> torch.nn.Module:
    """The frozen frame encoder a profile names; each must offer sample_rate, hop, dim and num_frames()."""
    if profile.encoder == "lite":
        from model.frontend import LiteFrontend

        return LiteFrontend()
    if profile.encoder == "mert":
        from model.mert import MERTModel

        return MERTModel.from_pretrained(resolve_path(profile.encoder_path))
    raise ValueError(f"profile {profile.name}: unknown encoder kind '{profile.encoder}' (expected lite or mert)")


class Encoder:
    """Chunked, batched encoding with bounded memory; returns fp32 CPU tokens."""

    def __init__(self, network: torch.nn.Module, profile: Profile, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 4) -> None:
        self.net = network.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.profile = profile
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.window = profile.pool_window
        hop = network.hop
        frames_per_chunk = max(1, round(profile.chunk_seconds * network.sample_rate / hop / self.window)) * self.window
        self.chunk_samples = frames_per_chunk * hop
        self.context_samples = int(round(profile.context_seconds * network.sample_rate / hop)) * hop

    @classmethod
    def from_profile(cls, profile: Profile, device: str = "cpu", batch_size: int = 4) -> Encoder:
        dtype = torch.float16 if device.startswith("cuda") and profile.encoder == "mert" else torch.float32
        return cls(load_encoder_network(profile), profile, device, dtype, batch_size)

    @property
    def sample_rate(self) -> int:
        return self.net.sample_rate

    @property
    def dim(self) -> int:
        return self.net.dim

    def version(self) -> str:
        return self.profile.version("encoder")

    def num_tokens(self, n_samples: int) -> int:
        return math.ceil(self.net.num_frames(n_samples) / self.window)

    def _chunks(self, n: int) -> list[tuple[int, int, int, int]]:
        """(start, end) of the audio fed to the encoder, and (first, count) of the frames kept from it."""
        total = self.net.num_frames(n)
        hop, out = self.net.hop, []
        for s in range(0, max(total, 1) * hop, self.chunk_samples):
            keep = min(self.chunk_samples // hop, total - s // hop)
            if keep <= 0:
                break
            a = max(0, s - self.context_samples)
            b = min(n, s + (keep + 1) * hop + self.context_samples)  # + hop covers the last frame's field
            out.append((a, b, (s - a) // hop, keep))
        return out

    @torch.no_grad()
    def encode(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """Compressed tokens [T'_i, D] for each mono waveform at `sample_rate` (T' may be 0 for < 17 ms)."""
        jobs = []  # (track index, chunk order, samples, first frame, frame count)
        for i, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            for k, (a, b, first, keep) in enumerate(self._chunks(wave.shape[-1])):
                jobs.append((i, k, wave[a:b], first, keep))
        pooled: dict[tuple[int, int], torch.Tensor] = {}
        jobs.sort(key=lambda j: len(j[2]))  # equal-length chunks batch together without padding
        start = 0
        while start < len(jobs):
            length = len(jobs[start][2])
            group = [j for j in jobs[start:start + self.batch_size] if len(j[2]) == length]
            batch = torch.from_numpy(np.stack([j[2] for j in group])).to(self.device, self.dtype)
            frames = self.net(batch).float()
            for (i, k, _, first, keep), f in zip(group, frames, strict=True):
                pooled[(i, k)] = pool_frames(f[first:first + keep].cpu(), self.window)
            start += len(group)
        out = []
        for i in range(len(waves)):
            parts = [pooled[key] for key in sorted(k for k in pooled if k[0] == i)]
            out.append(torch.cat(parts) if parts else torch.zeros(0, self.dim))
        return out

    def load(self, path: str | Path, max_seconds: float | None = None) -> np.ndarray:
        return decode_audio(path, self.sample_rate, max_seconds=max_seconds)

    def encode_file(self, path: str | Path, max_seconds: float | None = None) -> torch.Tensor:
        return self.encode([self.load(path, max_seconds)])[0]


def track_vector(tokens: torch.Tensor | np.ndarray) -> np.ndarray:
    """One L2-normalised float32 vector per track (mean of its audio tokens), for 'more like this'."""
    t = torch.as_tensor(tokens, dtype=torch.float32)
    v = t.mean(dim=0) if t.shape[0] else torch.zeros(t.shape[-1])
    return (v / v.norm().clamp(min=1e-8)).numpy().astype(np.float32)
