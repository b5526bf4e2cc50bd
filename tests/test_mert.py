"""Tests for the native MERT-v1 encoder (model/mert.py).

A tiny MERT-v1-shaped checkpoint (real conv kernels/strides, so hop = 320) is written to disk with the
published key names and loaded through `MERTModel.from_pretrained`; transformers' own HubertModel,
loaded with the same weights, is the independent reference.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from model import mert as mert_module
from model.mert import MERTConfig, MERTModel, read_state_dict
from tests.harness import TINY_MERT_CONFIG, TINY_MERT_PREPROCESSOR

KERNELS = [10, 3, 3, 3, 3, 2, 2]
STRIDES = [5, 2, 2, 2, 2, 2, 2]

TINY_CONFIG = TINY_MERT_CONFIG
PREPROCESSOR = TINY_MERT_PREPROCESSOR

# The inference-relevant fields of the published m-a-p/MERT-v1-95M and MERT-v1-330M config.json files.
MERT_95M = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
    "conv_dim": [512] * 7,
    "conv_kernel": KERNELS,
    "conv_stride": STRIDES,
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_proj_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "layer_norm_eps": 1e-5,
    "feature_extractor_cqt": False,
    "deepnorm": False,
    "attention_relax": -1.0,
    "mask_time_prob": 0.05,
    "sample_rate": 24000,
    "model_type": "mert_model",
}
MERT_330M = {
    **MERT_95M,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "do_stable_layer_norm": True,
    "attention_relax": 32.0,
}


# ---------------------------------------------------------------- helpers
def hubert_config(cfg: dict) -> HubertConfig:
    keys = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "feat_extract_activation",
        "conv_dim",
        "conv_kernel",
        "conv_stride",
        "conv_bias",
        "feat_extract_norm",
        "feat_proj_layer_norm",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
        "do_stable_layer_norm",
        "layer_norm_eps",
        "mask_time_prob",
    ]
    return HubertConfig(**{k: cfg[k] for k in keys}, attn_implementation="eager")


def to_published(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HubertModel (torch parametrization names) -> MERT's published names (weight_g / weight_v)."""
    out = {}
    for k, v in sd.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g")
        k = k.replace(".parametrizations.weight.original1", ".weight_v")
        out[k] = v.detach().clone().contiguous()
    return out


def to_hubert(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.replace("conv.weight_g", "conv.parametrizations.weight.original0")
        k = k.replace("conv.weight_v", "conv.parametrizations.weight.original1")
        out[k] = v
    return out


def make_checkpoint(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the published layout; every tensor perturbed so no norm is an identity."""
    torch.manual_seed(seed)
    ref = HubertModel(hubert_config(cfg))
    sd = to_published(ref.state_dict())
    gen = torch.Generator().manual_seed(seed + 1)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in sd.items()}


def write_folder(
    path: Path,
    cfg: dict,
    sd: dict[str, torch.Tensor],
    fmt: str = "safetensors",
    preprocessor: dict | None = PREPROCESSOR,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    if fmt == "safetensors":
        save_file(sd, str(path / "model.safetensors"))
    elif fmt == "bin":
        torch.save(sd, path / "pytorch_model.bin")
    elif fmt == "sharded":
        keys = sorted(sd)
        half = len(keys) // 2
        shards = {
            "model-00001-of-00002.safetensors": keys[:half],
            "model-00002-of-00002.safetensors": keys[half:],
        }
        weight_map = {}
        for name, ks in shards.items():
            save_file({k: sd[k] for k in ks}, str(path / name))
            weight_map.update(dict.fromkeys(ks, name))
        (path / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    else:
        raise AssertionError(fmt)
    return path


def reference(cfg: dict, sd: dict[str, torch.Tensor]) -> HubertModel:
    ref = HubertModel(hubert_config(cfg)).eval()
    ref.load_state_dict(to_hubert(sd), strict=True)
    return ref


def reference_states(
    ref: HubertModel, wave: torch.Tensor, mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """transformers 5.x hidden states, fixed the way the reference doc says: the last one -> last_hidden_state."""
    out = ref(wave, attention_mask=mask, output_hidden_states=True)
    return [*out.hidden_states[:-1], out.last_hidden_state]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = make_checkpoint(TINY_CONFIG)
    return write_folder(tmp_path_factory.mktemp("tiny") / "ckpt", TINY_CONFIG, sd), sd


def wave(batch: int = 2, seconds: float = 1.0, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(batch, int(24000 * seconds), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- 1. equivalence
@pytest.mark.parametrize("stable", [True, False], ids=["pre-LN-330M-style", "post-LN-95M-style"])
def test_matches_transformers_hubert(tmp_path, stable):
    cfg = {**TINY_CONFIG, "do_stable_layer_norm": stable}
    sd = make_checkpoint(cfg, seed=3)
    model = MERTModel.from_pretrained(write_folder(tmp_path, cfg, sd))
    ref = reference(cfg, sd)
    x = wave()
    with torch.inference_mode():
        ours = model.hidden_states(x)
        theirs = reference_states(ref, x)
        mean = model(x)
        raw_last = ref(x, output_hidden_states=True).hidden_states[-1]
    assert len(ours) == len(theirs) == cfg["num_hidden_layers"] + 1
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"hidden state {i}")
    assert mean.shape == (2, 74, 32)
    torch.testing.assert_close(mean, torch.stack(theirs).mean(0), atol=1e-5, rtol=1e-5)
    # The 5.x quirk the fix above exists for: pre-LN's raw last hidden state is the un-normed one.
    assert torch.allclose(raw_last, ours[-1], atol=1e-5) is (not stable)


def test_attention_mask_matches_transformers_hubert(tiny):
    folder, sd = tiny
    model = MERTModel.from_pretrained(folder)
    ref = reference(TINY_CONFIG, sd)
    x = wave()
    mask = torch.ones_like(x, dtype=torch.long)
    mask[1, 15000:] = 0
    x = x * mask
    with torch.inference_mode():
        ours = model(x, attention_mask=mask)
        theirs = torch.stack(reference_states(ref, x, mask)).mean(0)
    # Padded frames included: the masked maths is the reference's everywhere. (Neither is padding
    # invariant: the first conv's group norm spans the padded length, as in MERT's own code.)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_attention_matches_plain_softmax():
    cfg = MERTConfig.from_dict(TINY_CONFIG)
    attn = mert_module._Attention(cfg).eval()
    x = torch.randn(2, 9, 32)
    key_mask = torch.ones(2, 9, dtype=torch.bool)
    key_mask[1, 6:] = False

    def split(y):
        return y.view(2, 9, 4, 8).transpose(1, 2)

    q, k, v = split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))
    logits = q @ k.transpose(-1, -2) / 8**0.5
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    expected = attn.out_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 32))
    torch.testing.assert_close(attn(x, key_mask), expected, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- 2. checkpoint formats and errors
def test_all_weight_formats_load_identically(tmp_path, tiny, monkeypatch, caplog):
    folder, sd = tiny
    x = wave(batch=1)
    with torch.inference_mode():
        expected = MERTModel.from_pretrained(folder)(x)

    calls = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    parametrized = {
        k.replace("conv.weight_g", "conv.parametrizations.weight.original0").replace(
            "conv.weight_v", "conv.parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    folders = {
        "bin": write_folder(tmp_path / "bin", TINY_CONFIG, sd, "bin"),
        "sharded": write_folder(tmp_path / "sharded", TINY_CONFIG, sd, "sharded"),
        "parametrized": write_folder(tmp_path / "param", TINY_CONFIG, parametrized),
    }
    for name, f in folders.items():
        with caplog.at_level(logging.INFO, logger="model.mert"):
            model = MERTModel.from_pretrained(f)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), expected, atol=0, rtol=0, msg=name)
        assert model.unused_keys == ["masked_spec_embed"], name
        assert not any(r.levelno >= logging.WARNING for r in caplog.records), name
    assert calls and all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)
    assert set(read_state_dict(folders["sharded"])) == set(sd)


def test_loaded_model_is_frozen_fp32_on_cpu(tiny):
    model = MERTModel.from_pretrained(tiny[0])
    params = list(model.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 and not p.requires_grad for p in params)
    assert not model.training
    # Weights are held once: every parameter is the checkpoint's own tensor, none left on meta.
    assert not any(p.is_meta for p in params)


def test_wrong_shape_names_key_and_both_shapes(tmp_path, tiny):
    sd = dict(tiny[1])
    sd["encoder.layers.1.attention.q_proj.weight"] = torch.zeros(32, 31)
    with pytest.raises(
        ValueError, match=r"encoder\.layers\.1\.attention\.q_proj\.weight.*\(32, 31\).*\(32, 32\)"
    ):
        MERTModel.from_pretrained(write_folder(tmp_path, TINY_CONFIG, sd))


def test_missing_key_is_named(tmp_path, tiny):
    sd = {k: v for k, v in tiny[1].items() if k != "encoder.pos_conv_embed.conv.weight_g"}
    with pytest.raises(ValueError, match=r"missing 1 key.*encoder\.pos_conv_embed\.conv\.weight_g"):
        MERTModel.from_pretrained(write_folder(tmp_path, TINY_CONFIG, sd))


def test_unexpected_key_is_reported_not_fatal(tmp_path, tiny, caplog):
    sd = {**tiny[1], "quantizer.codevectors": torch.zeros(3)}
    with caplog.at_level(logging.WARNING, logger="model.mert"):
        model = MERTModel.from_pretrained(write_folder(tmp_path, TINY_CONFIG, sd))
    assert model.unused_keys == ["masked_spec_embed", "quantizer.codevectors"]
    assert "quantizer.codevectors" in caplog.text


def test_no_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MERTModel.from_pretrained(tmp_path)


# ---------------------------------------------------------------- 3. frame arithmetic
def conv_formula(n: int) -> int:
    for k, s in zip(KERNELS, STRIDES, strict=True):
        n = (n - k) // s + 1
    return n


def test_frame_counts(tiny):
    model = MERTModel.from_pretrained(tiny[0])
    assert (model.sample_rate, model.hop, model.frame_rate, model.dim) == (24000, 320, 75.0, 32)
    assert model.num_frames(240_000) == conv_formula(240_000) == 749
    assert model.num_frames(24_000) == conv_formula(24_000) == 74
    for n in (400, 401, 719, 720, 12_345, 720_000):
        assert model.num_frames(n) == conv_formula(n)
    assert model.min_samples == 400 and model.num_frames(399) == 0
    with torch.inference_mode():
        assert model(wave(batch=1, seconds=10.0)).shape == (1, 749, 32)
        assert model(wave(batch=1, seconds=1.0)).shape == (1, 74, 32)
        assert model(torch.zeros(1, 1234)).shape[1] == conv_formula(1234)
    with pytest.raises(ValueError, match="at least 400 samples"):
        model(torch.zeros(1, 399))


# ---------------------------------------------------------------- 4. do_normalize from the checkpoint
def test_do_normalize_read_from_preprocessor_config(tmp_path, tiny):
    sd = tiny[1]
    off = MERTModel.from_pretrained(tiny[0])
    on = MERTModel.from_pretrained(
        write_folder(tmp_path, TINY_CONFIG, sd, preprocessor={**PREPROCESSOR, "do_normalize": True})
    )
    assert off.do_normalize is False and on.do_normalize is True
    quiet = wave(scale=1e-3, seed=5) + 2e-3  # quiet, with a DC offset
    torch.testing.assert_close(off.normalize(quiet), quiet)
    normed = on.normalize(quiet)
    # Same maths as transformers' Wav2Vec2 feature extractor.
    expected = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(
        [q.numpy() for q in quiet], attention_mask=None
    )
    torch.testing.assert_close(normed, torch.from_numpy(np.stack(expected)), atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        a, b = off(quiet), on(quiet)
        torch.testing.assert_close(b, on(normed))  # normalising twice is harmless
    assert (a - b).abs().max() > 1e-3


def test_normalize_with_mask_uses_real_samples_only(tmp_path, tiny):
    on = MERTModel.from_pretrained(
        write_folder(tmp_path, TINY_CONFIG, tiny[1], preprocessor={**PREPROCESSOR, "do_normalize": True})
    )
    x = wave(batch=1, seed=2)
    padded = torch.cat([x, torch.full((1, 5000), 0.7)], dim=1)
    mask = torch.cat([torch.ones(1, 24000), torch.zeros(1, 5000)], dim=1)
    out = on.normalize(padded, mask)
    torch.testing.assert_close(out[:, :24000], on.normalize(x))
    assert torch.all(out[:, 24000:] == 0)


def test_missing_preprocessor_config_uses_default(tmp_path, tiny):
    model = MERTModel.from_pretrained(write_folder(tmp_path, TINY_CONFIG, tiny[1], preprocessor=None))
    assert model.do_normalize is False and model.sample_rate == 24000


# ---------------------------------------------------------------- 5. published configs, on meta
@pytest.mark.parametrize(
    ("cfg", "layers", "dim", "low", "high"),
    [
        (MERT_95M, 12, 768, 90e6, 100e6),
        (MERT_330M, 24, 1024, 300e6, 335e6),
    ],
    ids=["95M", "330M"],
)
def test_published_configs_build_on_meta(cfg, layers, dim, low, high):
    config = MERTConfig.from_dict(cfg)
    with torch.device("meta"):
        model = MERTModel(config)
        ref = HubertModel(hubert_config(cfg))
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    n = sum(p.numel() for p in params)
    assert low < n < high, n
    assert (model.dim, len(model.encoder.layers), model.hop, model.frame_rate) == (dim, layers, 320, 75.0)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {
        k: tuple(v.shape) for k, v in to_published(ref.state_dict()).items() if k != "masked_spec_embed"
    }
    assert ours == theirs
    assert ours["encoder.pos_conv_embed.conv.weight_g"] == (1, 1, 128)
    assert ours["encoder.pos_conv_embed.conv.weight_v"] == (dim, dim // 16, 128)
    assert "feature_extractor.conv_layers.0.layer_norm.weight" in ours  # group norm on the first conv only
    assert "feature_extractor.conv_layers.1.layer_norm.weight" not in ours
    assert "feature_extractor.conv_layers.0.conv.bias" not in ours  # conv_bias false


# ---------------------------------------------------------------- config parsing, dtypes
def test_config_parsing():
    cfg = MERTConfig.from_dict(
        {**TINY_CONFIG, "some_future_key": 1}, {"do_normalize": True, "sampling_rate": 24000}
    )
    assert cfg.conv_kernel == tuple(KERNELS) and cfg.do_normalize is True and cfg.sampling_rate == 24000
    assert MERTConfig.from_dict({"sample_rate": 16000}).sampling_rate == 16000
    with pytest.raises(ValueError, match="feature_extractor_cqt"):
        MERTConfig.from_dict({**TINY_CONFIG, "feature_extractor_cqt": True})
    with pytest.raises(ValueError, match="equal lengths"):
        MERTConfig.from_dict({**TINY_CONFIG, "conv_kernel": KERNELS[:6]})


def test_bfloat16_is_just_a_cast(tiny):
    model = MERTModel.from_pretrained(tiny[0])
    x = wave(batch=1)
    with torch.inference_mode():
        ref = model(x)
        low = copy.deepcopy(model).to(torch.bfloat16)(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).norm() < 0.05 * ref.norm()
