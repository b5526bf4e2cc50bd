"""A native MERT-v1 audio encoder that loads the published checkpoints without remote code.

MERT-v1 (m-a-p/MERT-v1-95M, m-a-p/MERT-v1-330M) is a HuBERT-shaped model: a 7-layer conv feature
extractor (hop 320 samples at 24 kHz -> 75 frames/s), a feature projection, a weight-normed
convolutional position embedding and a transformer encoder. Its own `trust_remote_code` module breaks
on transformers >= 4.48, and transformers 5.x's Hubert returns the last hidden state *before* the final
LayerNorm, which would shift MusiLingo's layer mean. This module re-implements the inference path in
plain PyTorch with the checkpoint's own parameter names, so `load_state_dict` needs no key mapping
(apart from the newer weight-norm parametrization names, which are renamed on load).

Inference only: no dropout, LayerDrop or SpecAugment masking (MusiLingo keeps MERT frozen).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

__all__ = ["MERTConfig", "MERTModel", "read_state_dict"]

logger = logging.getLogger(__name__)

# Keys a MERT checkpoint carries that inference never reads (the SpecAugment mask vector).
_KNOWN_UNUSED = ("masked_spec_embed",)

# The newer torch weight-norm parametrization names, mapped to the published (old) names.
_PARAMETRIZATION_RENAMES = (
    (".parametrizations.weight.original0", ".weight_g"),
    (".parametrizations.weight.original1", ".weight_v"),
)

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU, which is what "gelu" means in MERT/HF configs
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass(frozen=True)
class MERTConfig:
    """The fields of MERT-v1's config.json (and preprocessor_config.json) that shape inference.

    Defaults are the MERT-v1-95M values; every other config key (dropouts, masking, CTC, ...) only
    matters for training and is ignored.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_proj_layer_norm: bool = True
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    layer_norm_eps: float = 1e-5
    feature_extractor_cqt: bool = False
    deepnorm: bool = False
    # Only rescales attention logits before the softmax max-subtraction (fp16 safety): same maths.
    attention_relax: float = -1.0
    # From preprocessor_config.json (config.json's "sample_rate" is accepted as an alias).
    sampling_rate: int = 24000
    # The published MERT-v1 preprocessor configs say false; this default is used only when a
    # checkpoint folder has no preprocessor_config.json.
    do_normalize: bool = False

    def __post_init__(self) -> None:
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.feature_extractor_cqt:
            raise ValueError(
                "MERT config has feature_extractor_cqt=true (CQT bins concatenated to the conv features, "
                "a MERT-v0-era variant); this encoder supports only feature_extractor_cqt=false, as in MERT-v1"
            )
        if self.deepnorm:
            raise ValueError(
                "MERT config has deepnorm=true (scaled residuals); no published MERT-v1 checkpoint uses it "
                "and this encoder does not implement it"
            )
        if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)):
            raise ValueError(
                f"conv_dim, conv_kernel and conv_stride must have equal lengths, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups "
                f"{self.num_conv_pos_embedding_groups}"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in _ACTIVATIONS:
                raise ValueError(f"unsupported {name} {getattr(self, name)!r}; known: {sorted(_ACTIVATIONS)}")

    @classmethod
    def from_dict(cls, config: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> MERTConfig:
        """Build from config.json's dict (unknown keys ignored), overlaid with the preprocessor dict."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in known}
        if "sampling_rate" not in kwargs and "sample_rate" in config:
            kwargs["sampling_rate"] = config["sample_rate"]
        for key in ("sampling_rate", "do_normalize"):
            if preprocessor and key in preprocessor:
                kwargs[key] = preprocessor[key]
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path, preprocessor_path: str | Path | None = None) -> MERTConfig:
        """Read config.json; the sibling preprocessor_config.json is read too when it exists."""
        path = Path(path)
        config = json.loads(path.read_text())
        pre_path = (
            Path(preprocessor_path) if preprocessor_path else path.with_name("preprocessor_config.json")
        )
        preprocessor = json.loads(pre_path.read_text()) if pre_path.is_file() else None
        if preprocessor is None:
            logger.info("%s not found: do_normalize defaults to %s", pre_path, cls.do_normalize)
        return cls.from_dict(config, preprocessor)


def _conv_out_length(n: int, kernel: int, stride: int) -> int:
    """Output length of an unpadded Conv1d (floor division, like torch)."""
    return max((n - kernel) // stride + 1, 0)


class _ConvLayer(nn.Module):
    """One feature-extractor conv, optionally normalised (group norm on layer 0, or layer norm)."""

    def __init__(self, cfg: MERTConfig, i: int) -> None:
        super().__init__()
        c_in = cfg.conv_dim[i - 1] if i > 0 else 1
        c_out = cfg.conv_dim[i]
        self.conv = nn.Conv1d(c_in, c_out, cfg.conv_kernel[i], stride=cfg.conv_stride[i], bias=cfg.conv_bias)
        self.norm_kind = cfg.feat_extract_norm if (cfg.feat_extract_norm == "layer" or i == 0) else None
        if self.norm_kind == "group":
            # One group per channel: each channel is normalised over time (eps 1e-5 as in HuBERT).
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif self.norm_kind == "layer":
            self.layer_norm = nn.LayerNorm(c_out)
        self.act = _ACTIVATIONS[cfg.feat_extract_activation]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.act(x)


class _FeatureEncoder(nn.Module):
    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(_ConvLayer(cfg, i) for i in range(len(cfg.conv_dim)))

    def forward(self, wave: Tensor) -> Tensor:
        x = wave[:, None, :]  # [B, 1, N]
        for layer in self.conv_layers:
            x = layer(x)
        return x  # [B, C, T]


class _FeatureProjection(nn.Module):
    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        self.use_layer_norm = cfg.feat_proj_layer_norm
        if self.use_layer_norm:
            self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_layer_norm:
            x = self.layer_norm(x)
        return self.projection(x)


class _WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight norm over dim 2 (weight = g * v / ||v||), stored as weight_g/weight_v.

    Holding g and v as plain parameters keeps the published key names and avoids torch's weight-norm
    hooks, which do not survive meta-device construction or `.to(dtype)` cleanly.
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.padding = kernel // 2
        v = torch.randn(channels, channels // groups, kernel) * math.sqrt(2.0 / (channels // groups * kernel))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> Tensor:
        # The norm spans channels x in-channels (36,864 values for 330M): take it in fp32 so fp16 is safe.
        v = self.weight_v.float()
        w = v * (self.weight_g.float() / torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        return w.to(self.weight_v.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
            # torch's CPU bf16 grouped conv was seen to be badly wrong with few channels per group
            # (e.g. 2 per group, kernel 128); one fp32 conv per forward is cheap insurance.
            w, b = self.weight().float(), self.bias.float()
            return F.conv1d(x.float(), w, b, padding=self.padding, groups=self.groups).to(x.dtype)
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class _PositionalConvEmbedding(nn.Module):
    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        self.conv = _WeightNormConv1d(cfg.hidden_size, k, cfg.num_conv_pos_embedding_groups)
        self.trim = 1 if k % 2 == 0 else 0  # padding k//2 on both sides yields one extra frame for even k
        self.act = _ACTIVATIONS[cfg.feat_extract_activation]

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.act(y).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        b, t, d = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)  # [B, H, T, hd]

        mask = None if key_mask is None else key_mask[:, None, None, :]  # True = attend
        # Default scale 1/sqrt(head_dim), no dropout: exactly softmax(q k^T / sqrt(hd)) v.
        y = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), attn_mask=mask
        )
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class _FeedForward(nn.Module):
    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class _EncoderLayer(nn.Module):
    """Pre-LN ("stable layer norm", 330M) or post-LN (95M) transformer block; same parameters."""

    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.do_stable_layer_norm
        self.attention = _Attention(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = _FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        if self.pre_ln:
            x = x + self.attention(self.layer_norm(x), key_mask)
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x, key_mask))
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: MERTConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.do_stable_layer_norm
        self.pos_conv_embed = _PositionalConvEmbedding(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def states(self, x: Tensor, key_mask: Tensor | None) -> Iterator[Tensor]:
        """Yield the L+1 hidden states exactly as transformers 4.x's `output_hidden_states` listed them.

        Pre-LN: [input of layer 1, outputs of layers 1..L-1, LayerNorm(output of layer L)].
        Post-LN: [LayerNorm(embeddings) = input of layer 1, outputs of layers 1..L].
        """
        if key_mask is not None:
            x = x.masked_fill(~key_mask[:, :, None], 0.0)  # padded frames must not leak into the pos conv
        x = x + self.pos_conv_embed(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        for layer in self.layers:
            yield x
            x = layer(x, key_mask)
        yield self.layer_norm(x) if self.pre_ln else x


class MERTModel(nn.Module):
    """MERT-v1 encoder returning MusiLingo's feature: the unweighted mean of all L+1 hidden states.

    Attributes: `sample_rate` (Hz the model expects), `hop` (samples per frame), `frame_rate`
    (frames/s), `dim` (hidden size), `do_normalize` (from the checkpoint's preprocessor config).
    """

    def __init__(self, config: MERTConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = _FeatureEncoder(config)
        self.feature_projection = _FeatureProjection(config)
        self.encoder = _Encoder(config)
        self.sample_rate: int = int(config.sampling_rate)
        self.hop: int = math.prod(config.conv_stride)
        self.frame_rate: float = self.sample_rate / self.hop
        self.dim: int = config.hidden_size
        self.do_normalize: bool = bool(config.do_normalize)
        self.unused_keys: list[str] = []  # checkpoint keys the last load ignored

    # ---------------------------------------------------------------- lengths
    def num_frames(self, n_samples: int) -> int:
        """Frames the conv stack yields for n_samples (24 kHz: 10 s -> 749, 1 s -> 74)."""
        n = int(n_samples)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            n = _conv_out_length(n, k, s)
        return n

    @property
    def min_samples(self) -> int:
        """The conv stack's receptive field: the shortest input that yields one frame (400 for MERT-v1)."""
        n = 1
        for k, s in zip(reversed(self.config.conv_kernel), reversed(self.config.conv_stride), strict=True):
            n = (n - 1) * s + k
        return n

    def _frame_mask(self, attention_mask: Tensor, n_frames: int) -> Tensor:
        """Sample-level mask [B, N] (1 = real audio) -> frame-level bool mask [B, T] (True = real)."""
        lengths = attention_mask.long().sum(-1)
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]

    # ---------------------------------------------------------------- forward
    def normalize(self, wave: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Zero-mean/unit-variance per clip (eps 1e-7), only when the checkpoint's do_normalize is true.

        With an attention mask the statistics use the real samples only and padding is set to 0, as
        the Wav2Vec2 feature extractor does. The result is float32.
        """
        wave = wave.float()
        if not self.do_normalize:
            return wave
        if attention_mask is None:
            mean = wave.mean(-1, keepdim=True)
            var = wave.var(-1, unbiased=False, keepdim=True)
            return (wave - mean) / torch.sqrt(var + 1e-7)
        m = attention_mask.to(wave.dtype)
        n = m.sum(-1, keepdim=True).clamp_min(1.0)
        mean = (wave * m).sum(-1, keepdim=True) / n
        var = (((wave - mean) * m) ** 2).sum(-1, keepdim=True) / n
        return (wave - mean) / torch.sqrt(var + 1e-7) * m

    def _states(self, wave: Tensor, attention_mask: Tensor | None) -> Iterator[Tensor]:
        if wave.dim() != 2:
            raise ValueError(f"expected a [batch, samples] waveform, got shape {tuple(wave.shape)}")
        if wave.shape[-1] < self.min_samples:
            raise ValueError(f"need at least {self.min_samples} samples per clip, got {wave.shape[-1]}")
        param = self.feature_projection.projection.weight
        x = self.normalize(wave, attention_mask).to(device=param.device, dtype=param.dtype)
        x = self.feature_projection(self.feature_extractor(x).transpose(1, 2))  # [B, T, D]
        key_mask = None
        if attention_mask is not None:
            key_mask = self._frame_mask(attention_mask.to(x.device), x.shape[1])
        return self.encoder.states(x, key_mask)

    def hidden_states(self, wave: Tensor, attention_mask: Tensor | None = None) -> list[Tensor]:
        """All L+1 hidden states [B, T, D] in transformers-4.x order (see `_Encoder.states`)."""
        return list(self._states(wave, attention_mask))

    def forward(self, wave: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """wave [B, N] at `sample_rate` -> [B, T, D], the plain mean over all L+1 hidden states.

        `attention_mask` [B, N] marks real samples (1) versus right padding (0); as in MERT's own code,
        the first conv's group norm still spans the padding, so a padded clip's features differ a little
        from the same clip alone: batch equal-length clips where that matters. The mean is accumulated
        in fp32 one state at a time, so the L+1 states are never held together.
        """
        total: Tensor | None = None
        count = 0
        for h in self._states(wave, attention_mask):
            total = h.float() if total is None else total + h.float()
            count += 1
        assert total is not None
        return (total / count).to(self.feature_projection.projection.weight.dtype)

    # ---------------------------------------------------------------- loading
    def load_checkpoint(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Load a published MERT state dict by its own key names; returns the keys it did not use.

        Accepts both weight-norm spellings (weight_g/weight_v and parametrizations.weight.original0/1).
        Missing keys and shape mismatches raise ValueError naming them. Works on a meta-device model:
        the checkpoint tensors are assigned, not copied.
        """
        renamed: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            for old, new in _PARAMETRIZATION_RENAMES:
                key = key.replace(old, new)
            renamed[key] = value
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        missing = sorted(set(expected) - set(renamed))
        if missing:
            shown = ", ".join(missing[:20]) + (f" ... ({len(missing)} in all)" if len(missing) > 20 else "")
            raise ValueError(f"MERT checkpoint is missing {len(missing)} key(s): {shown}")
        for key, shape in expected.items():
            got = tuple(renamed[key].shape)
            if got != shape:
                raise ValueError(
                    f"MERT checkpoint key {key!r} has shape {got}, but the model expects {shape}"
                )
        unused = sorted(set(renamed) - set(expected))
        unknown = [k for k in unused if k not in _KNOWN_UNUSED]
        if unknown:
            logger.warning(
                "MERT checkpoint: ignoring %d unexpected key(s): %s", len(unknown), ", ".join(unknown)
            )
        if unused:
            logger.info("MERT checkpoint: unused keys %s", ", ".join(unused))
        self.load_state_dict({k: renamed[k] for k in expected}, strict=True, assign=True)
        self.unused_keys = unused
        return unused

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MERTModel:
        """Load a local MERT-v1 checkpoint folder (config.json, optional preprocessor_config.json, weights).

        Never contacts a model hub. The model is built on the meta device and the checkpoint tensors are
        assigned, so weights are held once; it is returned frozen in eval mode, fp32 on CPU by default.
        """
        folder = Path(folder)
        config = MERTConfig.from_json(folder / "config.json")
        state_dict = read_state_dict(folder)
        with torch.device("meta"):
            model = cls(config)
        model.load_checkpoint(state_dict)
        model = model.to(device=device or "cpu", dtype=dtype or torch.float32)
        return model.eval().requires_grad_(False)


def _shard_paths(folder: Path, index_file: Path) -> list[Path]:
    """Shard files named by a *.index.json weight_map, checked to lie inside the folder."""
    weight_map = json.loads(index_file.read_text())["weight_map"]
    root = folder.resolve()
    paths = []
    for name in dict.fromkeys(weight_map.values()):
        path = (folder / name).resolve()
        if root not in path.parents:
            raise ValueError(f"{index_file}: shard {name!r} lies outside {folder}")
        paths.append(path)
    return paths


def _load_bin(path: Path) -> dict[str, Tensor]:
    # weights_only: a checkpoint must never be able to run code on load.
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """Read the weights of a checkpoint folder onto the CPU, in the first format found of:
    model.safetensors, model.safetensors.index.json (shards), pytorch_model.bin, pytorch_model.bin.index.json.
    """
    folder = Path(folder)
    loaders: list[tuple[str, Callable[[Path], dict[str, Tensor]], bool]] = [
        ("model.safetensors", load_safetensors, False),
        ("model.safetensors.index.json", load_safetensors, True),
        ("pytorch_model.bin", _load_bin, False),
        ("pytorch_model.bin.index.json", _load_bin, True),
    ]
    for name, load, sharded in loaders:
        path = folder / name
        if not path.is_file():
            continue
        if not sharded:
            return load(path)
        state: dict[str, Tensor] = {}
        for shard in _shard_paths(folder, path):
            state.update(load(shard))
        return state
    raise FileNotFoundError(
        f"no MERT weights in {folder}: expected one of " + ", ".join(name for name, _, _ in loaders)
    )
