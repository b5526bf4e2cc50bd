"""The adapter's three checkpoint formats, loaded without ever unpickling untrusted data.

1. Training-code `.pth`: `torch.load(...)["model"]` holds `llama_proj.weight` [D_llm, D_enc] and
   `llama_proj.bias` [D_llm]; read with `weights_only=True`, so a malicious pickle is refused.
2. A published full-model folder (m-a-p/MusiLingo-*-v1): sharded safetensors plus
   `model.safetensors.index.json`; keys are routed by prefix and only the needed shards are opened.
3. This project's format: `NAME.safetensors` with keys `weight`, `bias`, and `NAME.json` beside it
   holding the dims, the pooling window and the profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

ADAPTER_PREFIXES = ("llama_proj.", "model.llama_proj.")
PUBLISHED_PREFIXES = {"encoder": "model.audio_encoder.", "llm": "model.llama_model.", "adapter": "model.llama_proj."}


class CheckpointError(ValueError):
    """A checkpoint is unreadable, unsafe or does not fit the model; the message says which and why."""


def read_index(folder: Path) -> dict[str, str]:
    """The weight map (key -> shard file) of a sharded safetensors folder."""
    index = Path(folder) / "model.safetensors.index.json"
    if not index.is_file():
        raise CheckpointError(f"{folder} has no model.safetensors.index.json")
    return json.loads(index.read_text())["weight_map"]


def load_prefixed(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose key starts with `prefix` from a sharded safetensors folder, prefix removed."""
    folder = Path(folder)
    by_shard: dict[str, list[str]] = {}
    for key, shard in read_index(folder).items():
        if key.startswith(prefix):
            by_shard.setdefault(shard, []).append(key)
    out: dict[str, torch.Tensor] = {}
    for shard, keys in by_shard.items():
        with safe_open(str(folder / shard), framework="pt") as f:
            for key in keys:
                out[key[len(prefix):]] = f.get_tensor(key)
    return out


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError for unsafe or broken files
        raise CheckpointError(
            f"refusing to load {path}: not a plain tensor checkpoint (loaded with weights_only=True): "
            f"{str(exc).splitlines()[0][:200]}") from exc
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict")
    return state


def _strip(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    for prefix in ADAPTER_PREFIXES:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    raise CheckpointError(f"{source}: no adapter keys (llama_proj.weight / llama_proj.bias) found")


def read_adapter_state(location: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Return ({'weight', 'bias'}, metadata) from any of the three formats."""
    path = Path(location)
    meta: dict = {}
    if path.is_dir():
        state = load_prefixed(path, PUBLISHED_PREFIXES["adapter"])
        if not state:
            raise CheckpointError(f"{path}: the index names no '{PUBLISHED_PREFIXES['adapter']}*' keys")
    elif path.suffix in (".pth", ".pt", ".bin"):
        state = _strip(_load_pth(path), path)
    elif path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        if "weight" not in state:
            state = _strip(state, path)
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
    else:
        raise CheckpointError(f"{path}: unknown adapter format (expected .pth, .safetensors or a folder)")
    missing = {"weight", "bias"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: adapter is missing {sorted(missing)}")
    return {"weight": state["weight"], "bias": state["bias"]}, meta


def load_adapter(location: Path, d_enc: int, d_llm: int) -> tuple[nn.Linear, dict]:
    """An fp32 nn.Linear(d_enc, d_llm) filled from a checkpoint; a shape mismatch names both shapes."""
    state, meta = read_adapter_state(location)
    expected = {"weight": (d_llm, d_enc), "bias": (d_llm,)}
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{location}: adapter {key} has shape {tuple(state[key].shape)} but the encoder/LLM pair "
                f"needs {shape} (encoder dim {d_enc}, LLM dim {d_llm})")
    adapter = nn.Linear(d_enc, d_llm)
    adapter.load_state_dict({k: v.float() for k, v in state.items()})
    return adapter, meta


def save_adapter(adapter: nn.Linear, path: Path, **meta: object) -> None:
    """Write this project's format: safetensors weights plus a JSON of dims, pooling window and profile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in adapter.state_dict().items()}
    save_file(tensors, str(path))
    info = {"d_enc": adapter.in_features, "d_llm": adapter.out_features, **meta}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
