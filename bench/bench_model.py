"""Model speed and memory on this machine (issue: model core).

1. Caption a 30 s clip with the `lite` profile's adapter, cold start excluded: decode + encode +
   caption by the profile's caption template (42 sentences scored), as `training eval` does; `lite`
   shows captions written from the analysis instead (`caption_source`). Baselines in
   the same process: the same tokens captioned by free greedy generation, and the LLM generating as
   many tokens as the caption has from a text-only prompt, so the ratios show what the template and
   the audio path add.
2. Peak memory of encoding a 20-minute file in bounded chunks, against the one-pass baseline
   estimate for MERT-v1-330M attention.

Usage: python bench/bench_model.py [--greedy] [--minutes 20]
Figures: docs/benchmarks.md, "Model: caption speed and memory".
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from model.config import load_profile
from model.musilingo import MusiLingo
from model.settings import load_settings


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    """A chord progression with a pulse: music-like content so the decoder does real work."""
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    freqs = 220.0 * 2 ** (np.array([0, 4, 7, 12]) / 12)
    signal = sum(np.sin(2 * np.pi * f * t) for f in freqs) * (0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0))
    signal = 0.1 * signal + 0.005 * rng.standard_normal(t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
        w.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    settings = load_settings()
    t0 = time.perf_counter()
    model = MusiLingo.from_profile(load_profile("lite"), cache_dir=settings.models_dir)
    cold = time.perf_counter() - t0
    free = MusiLingo(replace(model.profile, caption_template=""), model.llm, model.tokenizer,
                     model.adapter.in_features, model.adapter)
    tmp = Path(tempfile.mkdtemp())
    clip = write_wav(tmp / "clip30.wav", 30.0)
    rows = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        wave_ = model.encoder.load(clip)
        t1 = time.perf_counter()
        tokens = model.encoder.encode([wave_])
        t2 = time.perf_counter()
        gen = model.caption(tokens, greedy=args.greedy)[0]
        t3 = time.perf_counter()
        prompt = model.tokenizer("Describe a piece of music.", return_tensors="pt")
        n = max(1, len(gen.token_ids))
        model.llm.generate(**prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=model.tokenizer.pad_token_id)
        t4 = time.perf_counter()
        free_text = free.caption(tokens, greedy=True)[0].text
        rows.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0, t4 - t3, time.perf_counter() - t4, n))
    med = np.median(np.array(rows), axis=0)
    print(f"cold start (load models): {cold:.1f} s")
    print("| step | median s |\n|---|---|")
    for name, value in zip(["decode", "encode", "caption", "total caption", "baseline: text-only generate",
                            "baseline: free greedy caption"], med[:6], strict=True):
        print(f"| {name} | {value:.2f} |")
    print(f"| caption tokens | {int(med[6])} |")
    print(f"ratio caption / text-only generate of the same length: {med[2] / med[4]:.2f}; "
          f"caption / free greedy caption: {med[2] / med[5]:.2f}")
    print(f"last caption: {gen.text!r} ({gen.extra.get('decoding', 'generated')}); free: {free_text!r}")
    if args.minutes <= 0:  # --minutes 0: caption speed only
        return

    long = write_wav(tmp / "long.wav", args.minutes * 60)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    tokens = model.encoder.encode_file(long, max_seconds=None)
    took = time.perf_counter() - t0
    print(f"{args.minutes:.0f}-min file: {tokens.shape[0]} tokens in {took:.1f} s; "
          f"peak RSS before {before:.0f} MB, after {peak_rss_mb():.0f} MB")
    frames = model.encoder.net.num_frames(int(args.minutes * 60 * 24000))
    one_pass_gb = 16 * frames * frames * 2 / 1e9  # one fp16 attention map of 16 heads, MERT-v1-330M
    print(f"baseline: one-pass MERT-330M attention over {frames} frames needs about {one_pass_gb:.0f} GB "
          f"for a single layer's scores; chunks of {model.encoder.chunk_samples / 24000:.1f} s need "
          f"{16 * (model.encoder.chunk_samples / 320) ** 2 * 2 / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
