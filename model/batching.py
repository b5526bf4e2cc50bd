"""Batch sizes that fit the GPU, and the back-off when they do not.

On CUDA the first batch size comes from the free memory (`torch.cuda.mem_get_info`) and a per-item
estimate (`encode_item_bytes`, `caption_item_bytes`); on CPU it is the configured size. An
out-of-memory error then halves the size, frees the cache and retries the same items; the smaller
size is kept for the rest of the run, since what did not fit once will not fit next time. An item
that runs out of memory even alone is given back as failed (never dropped), so the caller can record
it and try again later. Any other error is pinned on the item that causes it: the batch is run again
item by item, and if none succeeds alone the fault is not the inputs' and the error propagates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
MEMORY_SHARE = 0.8  # of the free GPU memory a batch may plan to use: the rest is allocator slack
MAX_GPU_BATCH = 128  # rows per batch on a GPU, whatever the memory: beyond this generation gains little
ENCODE_BYTES_PER_SAMPLE = 1024  # MERT-v1-330M in fp16: the 512-channel conv front-end and 25 kept layers
CAPTION_PROMPT_TOKENS = 64  # instruction and template around the audio tokens, generously


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's own error, or a RuntimeError that says so (cuBLAS, cuDNN and older torch raise those)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def encode_item_bytes(chunk_samples: int) -> int:
    """GPU memory one encoder chunk needs in a batch: about 0.75 GB for a 30 s chunk at 24 kHz."""
    return chunk_samples * ENCODE_BYTES_PER_SAMPLE


def caption_item_bytes(llm_config, dtype: torch.dtype, audio_tokens: int, new_tokens: int) -> int:
    """GPU memory one caption row needs: its KV cache over prompt and answer, doubled for the activations
    and logits alive at the same time (Vicuna-7B, 208 audio tokens, 64 new: about 0.35 GB)."""
    layers, hidden = llm_config.num_hidden_layers, llm_config.hidden_size
    heads = llm_config.num_attention_heads
    kv_heads = getattr(llm_config, "num_key_value_heads", None) or heads
    per_token = 2 * layers * (hidden // heads) * kv_heads * dtype.itemsize
    return 2 * per_token * (audio_tokens + CAPTION_PROMPT_TOKENS + new_tokens)


def initial_batch_size(configured: int, device: str, item_bytes: Callable[[], int]) -> int:
    """The configured size on CPU; on CUDA, as many items of `item_bytes()` as `MEMORY_SHARE` of the free
    memory holds (1 to `MAX_GPU_BATCH`). A batch that still does not fit is halved by `AdaptiveBatch`."""
    if not str(device).startswith("cuda"):
        return max(1, configured)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return fit_batch_size(free, item_bytes())


def fit_batch_size(free_bytes: int, item_bytes: int) -> int:
    """Items of `item_bytes` that `MEMORY_SHARE` of `free_bytes` holds, 1 to `MAX_GPU_BATCH`."""
    return max(1, min(MAX_GPU_BATCH, math.floor(free_bytes * MEMORY_SHARE / max(1, item_bytes))))


@dataclass(frozen=True)
class Failed(Generic[T]):
    """An item given back unprocessed; `out_of_memory` failures are the machine's fault, worth another try."""

    item: T
    reason: str
    out_of_memory: bool = False


@dataclass
class AdaptiveBatch:
    """A batch size that halves on out-of-memory and stays halved; `start` is kept for the report."""

    size: int
    start: int = 0

    def __post_init__(self) -> None:
        self.size = max(1, self.size)
        self.start = self.start or self.size

    def report(self) -> dict[str, int]:
        return {"start": self.start, "final": self.size}

    def run(self, fn: Callable[[list[T]], list[R]], items: list[T]) -> tuple[list[tuple[T, R]], list[Failed[T]]]:
        """`fn` over `items` in batches, in order: (item, result) for each success, a `Failed` for each failure.

        Every item ends in exactly one of the two lists.
        """
        done: list[tuple[T, R]] = []
        failed: list[Failed[T]] = []
        start = 0
        while start < len(items):
            part = items[start:start + self.size]
            try:
                done += zip(part, fn(part), strict=True)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    ok, bad = _one_by_one(fn, part, exc)
                    done += ok
                    failed += bad
                elif len(part) > 1:
                    _free_cache()
                    self.size = len(part) // 2
                    continue  # the same items again, fewer at a time
                else:
                    _free_cache()
                    failed.append(Failed(part[0], f"out of memory even alone (batch size 1): {_short(exc)}", True))
            start += len(part)
        return done, failed


def _one_by_one(fn: Callable[[list[T]], list[R]], part: list[T], first: Exception) -> tuple[
        list[tuple[T, R]], list[Failed[T]]]:
    """After a non-memory error: each item alone, so one bad input fails alone; raise if none succeeds."""
    if len(part) == 1:
        raise first
    done: list[tuple[T, R]] = []
    failed: list[Failed[T]] = []
    last: Exception = first
    for item in part:
        try:
            done.append((item, fn([item])[0]))
        except Exception as exc:
            oom = is_out_of_memory(exc)
            if oom:
                _free_cache()
            failed.append(Failed(item, _short(exc), oom))
            last = exc
    if not done:
        raise last
    return done, failed


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
