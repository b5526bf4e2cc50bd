"""Indexing throughput of the full-size `musilingo` architecture, in audio-hours per GPU-hour.

MERT-v1-330M and a 7B LLaMA with randomly initialised weights of the real sizes (speed does not
depend on the weights' values), run through the project's own Encoder and MusiLingo.generate, split
into decode (CPU worker processes, real PyAV decoding of an mp3), encode and caption time.
Random weights never emit the stop string, so every caption is forced to `--caption-tokens` tokens
(typical MusiLingo captions are 40-80 tokens); the figure is therefore per caption of that length.

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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="CPU smoke test with tiny models")
    p.add_argument("--clips", type=int, default=64, help="30 s clips to encode")
    p.add_argument("--encode-batch", type=int, default=16)
    p.add_argument("--caption-batch", type=int, default=64)
    p.add_argument("--caption-tokens", type=int, default=64)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the SmolLM2 cache)")
    p.add_argument("--out", default=os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "gpu.json"))
    args = p.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float16 if device == "cuda" else torch.float32
    if args.tiny:
        args.clips, args.encode_batch, args.caption_batch, args.caption_tokens = 4, 2, 4, 8
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or local_folder(load_profile("lite").llm))
    report: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "tiny": args.tiny}

    tmp = Path(tempfile.mkdtemp())
    mp3 = make_mp3(tmp / "clip.mp3", 30.0)
    report["decode"] = bench_decode(mp3, 8 if args.tiny else 64, min(os.cpu_count() or 1, 16))

    profile = Profile(name="bench", encoder="mert", llm="random", prompt="musilingo", chunk_seconds=30.0,
                      context_seconds=0.0)
    net = MERTModel(MERTConfig.from_dict(TINY_MERT if args.tiny else MERT_330M))
    encoder = Encoder(net, profile, device, dtype, args.encode_batch)
    waves = [decode_audio(mp3, 24000)] * args.clips
    encoder.encode(waves[: args.encode_batch])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    tokens = encoder.encode(waves)
    sync(device)
    encode_s = time.perf_counter() - t0
    audio_s = sum(w.size for w in waves) / 24000
    report["encode"] = {"clips": args.clips, "batch": args.encode_batch, "seconds": encode_s,
                        "audio_hours_per_gpu_hour": audio_s / encode_s}
    del net, encoder
    if device == "cuda":
        torch.cuda.empty_cache()

    config = LlamaConfig(vocab_size=len(tokenizer), **(TINY_LLAMA if args.tiny else LLAMA_7B),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device(device):
        llm = LlamaForCausalLM(config).to(dtype).eval().requires_grad_(False)
    model = MusiLingo(profile, llm, tokenizer, tokens[0].shape[-1])
    batch = [tokens[i % len(tokens)] for i in range(args.caption_batch)]
    model.caption(batch[:2], greedy=True, max_new_tokens=2)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    out = llm.generate(**_prompt(model, batch), max_new_tokens=args.caption_tokens,
                       min_new_tokens=args.caption_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    sync(device)
    caption_s = time.perf_counter() - t0
    report["caption"] = {"batch": args.caption_batch, "tokens": args.caption_tokens, "seconds": caption_s,
                         "generated": list(out.shape),
                         "audio_hours_per_gpu_hour": args.caption_batch * 30.0 / caption_s}
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
