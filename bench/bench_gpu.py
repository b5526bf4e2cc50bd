"""Indexing throughput of the full-size `musilingo` architecture, in audio-hours per GPU-hour.

MERT-v1-330M and a 7B LLaMA with randomly initialised weights of the real sizes (speed does not
depend on the weights' values), run through the project's own Encoder and MusiLingo.generate, split
into decode (CPU worker processes, real PyAV decoding of an mp3), encode and caption time.
Random weights never emit the stop string, so every caption is forced to `--caption-tokens` tokens
(typical MusiLingo captions are 40-80 tokens); the figure is therefore per caption of that length.
Batch sizes come from the scan's own code (`model.batching`): chosen from free GPU memory unless
given, halved on out-of-memory; the JSON reports where each started and ended.

On a lent GPU:   python bench/bench_gpu.py --out $OUT/gpu.json        (about 5 minutes on one H100)
Smoke test here: python bench/bench_gpu.py --tiny                     (CPU, tiny sizes, about 1 minute)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from model.audio import decode_audio
from model.batching import AdaptiveBatch, caption_item_bytes, encode_item_bytes, initial_batch_size
from model.config import Profile, load_profile
from model.encoder import Encoder
from model.llm import local_folder
from model.mert import MERTConfig, MERTModel
from model.musilingo import MusiLingo

MERT_330M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                 conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=True,
                 num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=2048)
TINY_MERT = {**MERT_330M, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "conv_dim": [32] * 7}
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=2048)


def make_mp3(path: Path, seconds: float) -> Path:
    import av

    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    x = (0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mp3", rate=sr, layout="mono")
        stream.bit_rate = 128000
        frame_size = 1152
        for i in range(0, x.size, frame_size):
            frame = av.AudioFrame.from_ndarray(x[None, i:i + frame_size], format="fltp", layout="mono")
            frame.sample_rate = sr
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _decode_seconds(path: str) -> float:
    return decode_audio(path, 24000).size / 24000


def bench_decode(path: Path, n: int, workers: int) -> dict:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        seconds = sum(pool.map(_decode_seconds, [str(path)] * n))
    wall = time.perf_counter() - t0
    return {"workers": workers, "audio_s_per_wall_s": seconds / wall, "per_worker": seconds / wall / workers}


def bench_encode(encoder: Encoder, waves: list[np.ndarray], first_batch: int | None) -> tuple[dict, list]:
    """Encode `waves` with the scan's batch sizing and back-off; the report and the tokens."""
    chunk = encoder.chunk_samples + 2 * encoder.context_samples
    sizes = AdaptiveBatch(first_batch or initial_batch_size(16, encoder.device, lambda: encode_item_bytes(chunk)))

    def encode(part: list[np.ndarray]) -> list[torch.Tensor]:
        encoder.batch_size = sizes.size  # chunks per forward pass, as in the scan (indexer.indexing.Indexing)
        return encoder.encode(part)

    sizes.run(encode, waves[:2])  # warm-up
    sync(encoder.device)
    t0 = time.perf_counter()
    done, failed = sizes.run(encode, waves)
    sync(encoder.device)
    seconds = time.perf_counter() - t0
    audio_s = sum(w.size for w, _ in done) / 24000
    return {"clips": len(waves), "batch": sizes.report(), "failed": len(failed), "seconds": seconds,
            "audio_hours_per_gpu_hour": audio_s / seconds}, [t for _, t in done]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="CPU smoke test with tiny models")
    p.add_argument("--clips", type=int, default=64, help="30 s clips to encode")
    p.add_argument("--encode-batch", type=int, help="first encode batch (default: from free GPU memory, 16 on CPU)")
    p.add_argument("--caption-rows", type=int, default=128, help="captions to generate")
    p.add_argument("--caption-batch", type=int, help="first caption batch (default: from free GPU memory, 64 on CPU)")
    p.add_argument("--caption-tokens", type=int, default=64)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the SmolLM2 cache)")
    p.add_argument("--out", default=os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "gpu.json"))
    args = p.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float16 if device == "cuda" else torch.float32
    if args.tiny:
        args.clips, args.encode_batch, args.caption_rows, args.caption_batch, args.caption_tokens = 4, 2, 8, 4, 8
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or local_folder(load_profile("lite").llm))
    report: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "tiny": args.tiny}
    if device == "cuda":
        report["free_gpu_memory_gb"] = torch.cuda.mem_get_info()[0] / 1e9

    tmp = Path(tempfile.mkdtemp())
    mp3 = make_mp3(tmp / "clip.mp3", 30.0)
    report["decode"] = bench_decode(mp3, 8 if args.tiny else 64, min(os.cpu_count() or 1, 16))

    profile = Profile(name="bench", encoder="mert", llm="random", prompt="musilingo", chunk_seconds=30.0,
                      context_seconds=0.0)
    net = MERTModel(MERTConfig.from_dict(TINY_MERT if args.tiny else MERT_330M))
    report["encode"], tokens = bench_encode(Encoder(net, profile, device, dtype),
                                            [decode_audio(mp3, 24000)] * args.clips, args.encode_batch)
    del net
    if device == "cuda":
        torch.cuda.empty_cache()

    config = LlamaConfig(vocab_size=len(tokenizer), **(TINY_LLAMA if args.tiny else LLAMA_7B),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device(device):
        llm = LlamaForCausalLM(config).to(dtype).eval().requires_grad_(False)
    model = MusiLingo(profile, llm, tokenizer, tokens[0].shape[-1])
    rows = [tokens[i % len(tokens)] for i in range(args.caption_rows)]
    row_bytes = caption_item_bytes(config, dtype, int(tokens[0].shape[0]), args.caption_tokens)
    sizes = AdaptiveBatch(args.caption_batch or initial_batch_size(64, device, lambda: row_bytes))

    def caption(part: list[torch.Tensor]) -> list[list[int]]:
        out = llm.generate(**_prompt(model, part), max_new_tokens=args.caption_tokens,
                           min_new_tokens=args.caption_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return out.tolist()

    model.caption(rows[:2], greedy=True, max_new_tokens=2)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    done, failed = sizes.run(caption, rows)
    sync(device)
    caption_s = time.perf_counter() - t0
    report["caption"] = {"rows": args.caption_rows, "batch": sizes.report(), "failed": len(failed),
                         "tokens": args.caption_tokens, "seconds": caption_s,
                         "generated_per_row": len(done[0][1]) if done else 0,
                         "audio_hours_per_gpu_hour": len(done) * 30.0 / caption_s}
    e, c = report["encode"]["audio_hours_per_gpu_hour"], report["caption"]["audio_hours_per_gpu_hour"]
    report["combined_audio_hours_per_gpu_hour"] = 1 / (1 / e + 1 / c)
    report["decode_workers_to_keep_up"] = report["combined_audio_hours_per_gpu_hour"] / report["decode"]["per_worker"]
    if device == "cuda":
        report["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


def _prompt(model: MusiLingo, batch: list[torch.Tensor]) -> dict:
    embeds, mask, _ = model._prompt_batch(batch, [model.profile.caption_instruction] * len(batch), [None] * len(batch))
    return {"inputs_embeds": embeds, "attention_mask": mask}


if __name__ == "__main__":
    main()
