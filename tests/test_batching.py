"""Batch sizes and the out-of-memory back-off: halve, retry the same items, never lose one.

No GPU here: a callable (or an LLM wrapper) that raises CUDA's out-of-memory error above a given size
stands in for the GPU's memory; everything else is the real code and, in the scan, the real models.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from sqlalchemy import select
from transformers import LlamaConfig

from catalog.store import Catalog, errors, tracks
from indexer.indexing import Models
from indexer.pipeline import scan
from model.batching import (
    MAX_GPU_BATCH,
    AdaptiveBatch,
    Failed,
    caption_item_bytes,
    fit_batch_size,
    initial_batch_size,
    is_out_of_memory,
)
from model.musilingo import MusiLingo


class GPU:
    """Holds `limit` items per call; more raise the error a CUDA allocation raises. Records each call."""

    def __init__(self, limit: int, error: type[Exception] = torch.OutOfMemoryError, always: object = None) -> None:
        self.limit, self.error, self.always = limit, error, always
        self.calls: list[list] = []
        self.processed: list = []

    def __call__(self, items: list) -> list:
        self.calls.append(list(items))
        if len(items) > self.limit or self.always in items:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.processed += items
        return [f"out-{x}" for x in items]


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_the_batch_and_retries_the_same_items(error: type[Exception]) -> None:
    gpu, batch = GPU(limit=3, error=error), AdaptiveBatch(8)
    done, failed = batch.run(gpu, list(range(10)))
    assert gpu.processed == list(range(10))  # each item once, in order
    assert done == [(i, f"out-{i}") for i in range(10)] and failed == []
    assert [len(c) for c in gpu.calls] == [8, 4, 2, 2, 2, 2, 2]
    assert batch.report() == {"start": 8, "final": 2}
    done, _ = batch.run(gpu, list(range(3)))  # the smaller size sticks: no second failure
    assert [len(c) for c in gpu.calls[7:]] == [2, 1] and len(done) == 3


def test_an_item_that_never_fits_fails_alone_with_the_reason() -> None:
    gpu, batch = GPU(limit=2, always=5), AdaptiveBatch(4)
    done, failed = batch.run(gpu, list(range(10)))
    assert gpu.processed == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert [x for x, _ in done] == gpu.processed
    assert len(failed) == 1 and failed[0].item == 5 and failed[0].out_of_memory
    assert failed[0].reason.startswith("out of memory even alone (batch size 1): OutOfMemoryError: CUDA out of memory")
    assert batch.size == 1


def test_other_errors_fail_the_bad_item_and_keep_the_size() -> None:
    def fn(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("bad input")
        return [x * 10 for x in items]

    batch = AdaptiveBatch(4)
    done, failed = batch.run(fn, list(range(6)))
    assert done == [(i, i * 10) for i in range(6) if i != 3]
    assert failed == [Failed(3, "ValueError: bad input", False)] and batch.size == 4

    def broken(items: list[int]) -> list[int]:
        raise ValueError("the model is broken")

    with pytest.raises(ValueError, match="broken"):  # nothing works alone: not the inputs' fault
        AdaptiveBatch(4).run(broken, list(range(6)))


def test_batch_size_from_free_memory() -> None:
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(ValueError("x"))

    def unused() -> int:
        raise AssertionError("the estimate is for GPUs only")

    assert initial_batch_size(8, "cpu", unused) == 8
    vicuna = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)
    row = caption_item_bytes(vicuna, torch.float16, audio_tokens=208, new_tokens=64)
    assert row == 2 * (2 * 32 * 4096 * 2) * (208 + 64 + 64)  # KV cache x 2, about 0.35 GB
    assert fit_batch_size(10 * 2**30, row) == 24  # 80 % of 10 GiB
    assert fit_batch_size(65 * 2**30, row) == MAX_GPU_BATCH
    assert fit_batch_size(2**20, row) == 1


class MemoryBoundLLM(torch.nn.Module):
    """The real LLM on a pretend GPU that holds `budget` prompt positions (rows x width) per generate call."""

    def __init__(self, llm: torch.nn.Module, budget: int) -> None:
        super().__init__()
        self.inner, self.config, self.budget = llm, llm.config, budget
        self.shapes: list[tuple[int, int]] = []

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.inner.get_input_embeddings()

    def generate(self, inputs_embeds: torch.Tensor, **kwargs: object) -> torch.Tensor:
        rows, width = inputs_embeds.shape[:2]
        self.shapes.append((rows, width))
        if rows * width > self.budget:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows * width} positions")
        return self.inner.generate(inputs_embeds=inputs_embeds, **kwargs)


def test_scan_backs_off_on_out_of_memory_and_retries_the_failed_track_next_time(
        audio_library, indexer_settings, indexer_models, lite_model, text_embedder) -> None:
    for i in range(4):
        audio_library(f"Band/Album/0{i + 1} Short.flac", seconds=3.0, seed=i)
    long = audio_library("Band/Album/02b Long.wav", seconds=150.0, seed=9)
    settings = replace(indexer_settings, caption_batch_size=4)
    # A short row is the caption prompt plus 1 audio token, the long track's has 35 audio tokens. The
    # pretend GPU holds two short rows but not four, and not the long row even alone.
    short = lite_model._prompt_pieces(torch.zeros(1, lite_model.adapter.in_features),
                                      lite_model.profile.caption_instruction, None)[1]
    long_width = short + 34
    assert long_width > 2 * short
    llm = MemoryBoundLLM(lite_model.llm, budget=2 * short)
    profile = replace(lite_model.profile, caption_source="model")  # captions from the LLM, as musilingo's
    gpu_like = MusiLingo(profile, llm, lite_model.tokenizer, lite_model.adapter.in_features, lite_model.adapter)
    models = Models(profile, settings, encoder=lite_model.encoder, musilingo=gpu_like, text=text_embedder,
                    analyzer=indexer_models.analyzer)
    root = str(audio_library.root)

    first = scan([root], settings, profile, models=models, greedy=True)
    assert llm.shapes == [(4, long_width), (2, short), (2, long_width), (1, long_width), (1, short),
                          (1, short)]
    assert first.state == "finished" and len(first.indexed) == 4
    assert first.batch_sizes["caption"] == {"start": 4, "final": 1}
    assert first.to_dict()["batch_sizes"]["caption"]["final"] == 1
    [failure] = first.failed
    assert failure["path"] == str(long) and failure["stage"] == "caption"
    assert failure["reason"].startswith("out of memory even alone (batch size 1)")
    with Catalog(settings.catalog_path).read() as conn:
        # Stored without size and mtime: the next scan does not take it for "failed before, unchanged".
        assert conn.execute(select(errors.c.path, errors.c.size, errors.c.mtime)).all() == [(str(long), None, None)]

    cpu = MusiLingo(profile, lite_model.llm, lite_model.tokenizer, lite_model.adapter.in_features, lite_model.adapter)
    second = scan([root], settings, profile, greedy=True, models=Models(
        profile, settings, encoder=lite_model.encoder, musilingo=cpu, text=text_embedder,
        analyzer=indexer_models.analyzer))
    assert second.state == "finished" and len(second.indexed) == 1 and second.failed == []
    assert second.unchanged == 4 and second.skipped_failed == 0
    with Catalog(settings.catalog_path).read() as conn:
        assert conn.execute(select(errors.c.path)).all() == []
        assert conn.execute(select(tracks.c.path).where(tracks.c.status == "done")).scalars().all().count(
            str(long)) == 1
