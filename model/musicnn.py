"""musicnn (Pons & Serra 2019) in torch: pretrained music taggers that hear real recordings, offline.

The weights come from the `musicnn` PyPI package (ISC), whose TF-1 checkpoints are read by
`model.tfcheckpoint` and converted once to safetensors in the model cache; the package itself is never
imported (it imports TensorFlow). Variants are data: `model/taggers/NAME.json` gives the labels (spelled
as the original does), sizes and checkpoint location.

The network, per 3-s patch of a 96-band log-mel spectrogram (187 frames at 16 kHz, hop 256):
  front-end  batch norm, then five conv branches each max-pooled over frequency: two "timbral" filters
             spanning 7 frames x 40 % / 70 % of the mel bands, three "temporal" filters of 128/64/32
             frames x 1 band ('same' padding as TF computes it: the extra frame goes after);
  mid-end    three 1-d convolutions (7 frames) over the concatenated branches, the last two residual,
             every layer ReLU then batch norm; the front-end and all three outputs are concatenated;
  back-end   max and mean over time (interleaved per channel, as TF's flatten orders them), batch norm,
             a dense ReLU layer + batch norm (the "penultimate" embedding), and the sigmoid tag layer.
Batch norms run in inference mode with TF's epsilon 1e-3.

Dead filters: training left many front-end filters with weights of about 1e-30, most of MSD_musicnn's; each
gives its batch-normed bias whatever it hears. `prune()` computes only the live filters and fills the dead
channels with that constant: the same outputs within float32 rounding (tests/test_musicnn.py), for far less
computing (how many filters and how much time: docs/benchmarks.md, "musicnn tagger").
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TAGGERS_DIR = Path(__file__).parent / "taggers"
SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # what the original computes for 3 s: time_to_frames(3 s) + 1 = (48000 - 256) // 256 + 1
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default
# A front-end filter is dead when its weights' L1 norm times its batch norm's scale is below this: its
# output then moves by less than this per unit of input (about 2 at most after the input batch norm).
DEAD_FILTER = 1e-7


@dataclass(frozen=True)
class MusicnnConfig:
    name: str
    labels: tuple[str, ...]
    checkpoint: str  # a profile-style location (model.config.resolve_path) of the TF checkpoint prefix
    description: str = ""
    midend_filters: int = 64
    backend_units: int = 200
    frontend_scale: float = 1.6  # filter counts: int(1.6 * 128) timbral, int(1.6 * 32) temporal per branch

    @property
    def timbral_filters(self) -> int:
        return int(self.frontend_scale * 128)

    @property
    def temporal_filters(self) -> int:
        return int(self.frontend_scale * 32)


def tagger_names() -> list[str]:
    return sorted(p.stem for p in TAGGERS_DIR.glob("*.json"))


def load_config(name: str) -> MusicnnConfig:
    path = TAGGERS_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"unknown tagger '{name}'; known: {', '.join(tagger_names())}")
    raw = json.loads(path.read_text())
    return MusicnnConfig(**{**raw, "labels": tuple(raw["labels"])})


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular filters on the Slaney mel scale, area-normalised ('slaney' norm), 0 Hz to Nyquist.

    This is the filterbank librosa.feature.melspectrogram uses by default, which musicnn was trained on.
    """
    bins = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    edges = _slaney_hz(np.linspace(_slaney_mel(0.0), _slaney_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL = torch.from_numpy(mel_filterbank())
_WINDOW = torch.hann_window(N_FFT, periodic=True)


def log_mel(wave: np.ndarray) -> np.ndarray:
    """musicnn's input: (frames, 96) log10(10000 * mel power + 1) of 16 kHz mono audio.

    The STFT is centred with reflection padding (librosa's default when musicnn was trained). The
    original casts the mel power to float16 before the log; float16 overflows to inf once 10000 * mel
    passes 65504, i.e. on any loud passage, and every tag then comes out the same constant. We stay in
    float32, which equals the original wherever the original is finite.
    Audio shorter than one 3-s patch is repeated to fill it (the "repeat-pad" musicnn was trained with).
    """
    x = _samples(wave)
    spec = torch.stft(x, N_FFT, HOP, window=_WINDOW, center=True, pad_mode="reflect", return_complex=True)
    return _log_mel_power(spec).T.contiguous().numpy()


def patch_spectrograms(wave: np.ndarray, max_patches: int = 10) -> tuple[list[int], np.ndarray]:
    """(`patch_starts`, `patches(log_mel(wave), max_patches)`), computing only the frames the patches hold
    (on a long track, a small share of its frames): each patch's samples cut from the reflection-padded
    audio and transformed uncentred, the same frames as the centred STFT of the whole."""
    x = _samples(wave)
    starts = patch_starts(1 + x.numel() // HOP, max_patches)
    padded = F.pad(x.view(1, 1, -1), (N_FFT // 2, N_FFT // 2), mode="reflect").view(-1)
    span = (PATCH_FRAMES - 1) * HOP + N_FFT
    segments = torch.stack([padded[s * HOP:s * HOP + span] for s in starts])
    spec = torch.stft(segments, N_FFT, HOP, window=_WINDOW, center=False, return_complex=True)
    return starts, _log_mel_power(spec).transpose(1, 2).contiguous().numpy()


def _samples(wave: np.ndarray) -> torch.Tensor:
    """The audio as float32, audio shorter than a patch repeated to fill it."""
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if x.numel() == 0:
        raise ValueError("no audio samples")
    need = (PATCH_FRAMES - 1) * HOP
    return x.repeat(-(-need // x.numel()))[:need] if x.numel() < need else x


def _log_mel_power(spec: torch.Tensor) -> torch.Tensor:
    """(..., 96, frames) log10(10000 * mel power + 1) of a complex STFT (..., bins, frames)."""
    return torch.log10(10000.0 * (_MEL @ (spec.real.square() + spec.imag.square())) + 1.0)


def patch_starts(n_frames: int, max_patches: int = 10) -> list[int]:
    """Start frames of the 3-s patches a track is tagged from.

    Up to `max_patches` patches fit (a track of up to 30 s with the default): every non-overlapping patch
    from frame 0, as the original does. Longer: `max_patches` patches spread evenly from the first to the
    last whole patch, so an intro or an outro cannot stand for the whole track.
    """
    whole = (n_frames - PATCH_FRAMES) // PATCH_FRAMES + 1 if n_frames >= PATCH_FRAMES else 0
    if whole <= max_patches:
        return [i * PATCH_FRAMES for i in range(max(whole, 1))]
    last = n_frames - PATCH_FRAMES
    return [int(round(i * last / (max_patches - 1))) for i in range(max_patches)]


def patches(spectrogram: np.ndarray, max_patches: int = 10) -> np.ndarray:
    """(patches, 187, 96) cut from a log-mel spectrogram at `patch_starts`."""
    return np.stack([spectrogram[s:s + PATCH_FRAMES] for s in patch_starts(len(spectrogram), max_patches)])


@dataclass
class MusicnnOutput:
    """Per patch: tag probabilities (P, labels), penultimate embedding (P, 200), pooled mid-end (P, 753)."""

    probabilities: torch.Tensor
    penultimate: torch.Tensor
    mean_pool: torch.Tensor
    max_pool: torch.Tensor


class _Branch(nn.Module):
    """One front-end filter shape: conv (ReLU), batch norm, max over the remaining frequency bins."""

    def __init__(self, filters: int, frames: int, bands: int):
        super().__init__()
        self.pad = ((frames - 1) // 2, frames - 1 - (frames - 1) // 2)  # TF 'same' (and 'valid' after a 3+3 pad)
        self.conv = nn.Conv2d(1, filters, (frames, bands))
        self.bn = nn.BatchNorm2d(filters, eps=BN_EPS)
        self.register_buffer("live", None, persistent=False)  # after `prune`: the live filters' channels
        self.register_buffer("constant", torch.zeros(filters), persistent=False)  # the dead channels' output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, *self.pad))
        live = self.bn(F.relu(self.conv(x))).amax(dim=3)
        if self.live is None:
            return live
        out = self.constant.view(1, -1, 1).repeat(live.shape[0], 1, live.shape[2])
        out[:, self.live] = live
        return out

    def prune(self) -> int:
        """Keep only the live filters (see DEAD_FILTER); the dead ones' constant output is computed once
        from the full parameters. Returns how many were dropped."""
        if self.live is not None:
            return 0
        conv, bn = self.conv, self.bn
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        effect = conv.weight.flatten(1).abs().sum(dim=1) * scale.abs()
        live = torch.nonzero(effect >= DEAD_FILTER).flatten()
        if len(live) == len(effect):
            return 0
        self.constant = (F.relu(conv.bias) - bn.running_mean) * scale + bn.bias
        self.conv = nn.Conv2d(1, len(live), conv.kernel_size).to(conv.weight.device)
        self.conv.weight.data, self.conv.bias.data = conv.weight[live].clone(), conv.bias[live].clone()
        self.bn = nn.BatchNorm2d(len(live), eps=bn.eps).to(conv.weight.device).eval()
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(self.bn, name).data = getattr(bn, name)[live].clone()
        self.live = live
        return len(effect) - len(live)


class _MidendLayer(nn.Module):
    def __init__(self, channels: int, filters: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, filters, 7, padding=3)
        self.bn = nn.BatchNorm1d(filters, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Musicnn(nn.Module):
    def __init__(self, config: MusicnnConfig):
        super().__init__()
        self.config = config
        t, s = config.timbral_filters, config.temporal_filters
        self.input_bn = nn.BatchNorm2d(1, eps=BN_EPS)
        self.frontend = nn.ModuleList([
            _Branch(t, 7, int(0.4 * N_MELS)), _Branch(t, 7, int(0.7 * N_MELS)),
            _Branch(s, 128, 1), _Branch(s, 64, 1), _Branch(s, 32, 1),
        ])
        front = 2 * t + 3 * s
        m = config.midend_filters
        self.midend = nn.ModuleList([_MidendLayer(front, m), _MidendLayer(m, m), _MidendLayer(m, m)])
        pooled = front + 3 * m
        self.pool_bn = nn.BatchNorm1d(2 * pooled, eps=BN_EPS)
        self.dense = nn.Linear(2 * pooled, config.backend_units)
        self.dense_bn = nn.BatchNorm1d(config.backend_units, eps=BN_EPS)
        self.out = nn.Linear(config.backend_units, len(config.labels))
        self.pruned = 0  # dead front-end filters dropped by `prune`
        self.eval()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def forward(self, spectrograms: torch.Tensor) -> MusicnnOutput:
        """`spectrograms`: (patches, frames, 96) log-mel, any frame count (the taggers were trained on 187)."""
        x = self.input_bn(spectrograms.unsqueeze(1))
        front = torch.cat([branch(x) for branch in self.frontend], dim=1)  # (P, 561, frames)
        layers = [front, self.midend[0](front)]
        layers.append(self.midend[1](layers[1]) + layers[1])
        layers.append(self.midend[2](layers[2]) + layers[2])
        features = torch.cat(layers, dim=1)
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF's flatten of concat([max, mean], 2)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return MusicnnOutput(torch.sigmoid(self.out(penultimate)), penultimate, mean_pool, max_pool)

    @torch.no_grad()
    def prune(self) -> Musicnn:
        """Drop the front-end's dead filters (see the module's docstring), in place; returns the model."""
        self.pruned += sum(branch.prune() for branch in self.frontend)
        return self

    @torch.inference_mode()
    def tag(self, spectrograms: np.ndarray) -> MusicnnOutput:
        return self(torch.from_numpy(np.ascontiguousarray(spectrograms, dtype=np.float32)))

    # -- weights -----------------------------------------------------------------------------------------

    def tf_names(self) -> dict[str, tuple[str, str]]:
        """Our parameter name -> (TF variable, conversion), in the order the original graph creates layers.

        TF-1 layers are named by kind and creation count (conv2d, conv2d_1, ...), so the mapping is the
        graph's layer order: input norm, the five branches, the three mid-end layers, the back-end.
        """
        convs = [f"frontend.{i}" for i in range(5)] + [f"midend.{i}" for i in range(3)]
        norms = ["input_bn"] + [f"{c}.bn" for c in convs] + ["pool_bn", "dense_bn"]
        mapping: dict[str, tuple[str, str]] = {}
        for i, ours in enumerate(convs):
            tf = f"conv2d_{i}" if i else "conv2d"
            kind = "conv2d" if ours.startswith("frontend") else "conv1d"
            mapping[f"{ours}.conv.weight"] = (f"{tf}/kernel", kind)
            mapping[f"{ours}.conv.bias"] = (f"{tf}/bias", "copy")
        for i, ours in enumerate(norms):
            tf = f"batch_normalization_{i}" if i else "batch_normalization"
            for mine, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                                 ("running_var", "moving_variance")):
                mapping[f"{ours}.{mine}"] = (f"{tf}/{theirs}", "copy")
        for ours, tf in (("dense", "dense"), ("out", "dense_1")):
            mapping[f"{ours}.weight"] = (f"{tf}/kernel", "dense")
            mapping[f"{ours}.bias"] = (f"{tf}/bias", "copy")
        return mapping

    def load_tf_checkpoint(self, prefix: str | Path) -> None:
        """Fill the weights from a TF checkpoint bundle; every parameter must be found with its shape."""
        from model.tfcheckpoint import CheckpointReader

        reader = CheckpointReader(prefix)
        layouts = {  # TF kernels: conv2d (frames, bands, in, out), dense (in, out)
            "conv2d": lambda a: a.transpose(3, 2, 0, 1),
            "conv1d": lambda a: a[:, :, 0, :].transpose(2, 1, 0),
            "dense": lambda a: a.T,
            "copy": lambda a: a,
        }
        state = {}
        for ours, (tf, kind) in self.tf_names().items():
            state[ours] = torch.from_numpy(np.ascontiguousarray(layouts[kind](reader.read(tf))))
        expected = {k: v for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise ValueError(f"{prefix}: {name} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(expected[name].shape)}")
        self.load_state_dict(state, strict=False)

    @classmethod
    def from_pretrained(cls, name: str, cache_dir: str | Path) -> Musicnn:
        """The tagger `name`, from its safetensors in `cache_dir` (converted from the package on first use)."""
        from safetensors.torch import load_file

        config = load_config(name)
        model = cls(config)
        path = convert(config, cache_dir)
        model.load_state_dict(load_file(path), strict=False)
        return model


def converted_path(name: str, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "musicnn" / f"{name}.safetensors"


def convert(config: MusicnnConfig, cache_dir: str | Path) -> Path:
    """Convert a tagger's packaged TF checkpoint to safetensors once (atomically); return its path.

    Raises ModelNotFoundError naming the install command when the `musicnn` package is absent.
    """
    from safetensors.torch import save_file

    from model.config import resolve_path

    target = converted_path(config.name, cache_dir)
    if target.is_file():
        return target
    model = Musicnn(config)
    # resolve_path drops the trailing "/" that makes the folder itself the checkpoint prefix
    model.load_tf_checkpoint(str(resolve_path(config.checkpoint)) + "/")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, dir=target.parent)
    os.close(fd)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, tmp, metadata={"source": config.checkpoint, "tagger": config.name})
    os.replace(tmp, target)
    return target
