"""Tempo and key estimation (`model/tempo_key.py`) on labelled synthetic clips, beside simple baselines.

Two sets, rendered once into --out and reused: the held-out set (`training/heldout`: its own composer and
the TimGM6mb soundfont) and, for comparison, clips of the training corpus's generator (`training/synth`,
FluidR3_GM). Audio is resampled to 16 kHz with soxr, as the indexer does, before any method sees it.

Tempo: MIREX Accuracy 1 (within 4 % of the true BPM) and Accuracy 2 (within 4 % of 1, 2, 3, 1/2 or 1/3
times it). Key: the MIREX weighted score as mir_eval computes it (same key 1.0; the estimate a fifth
above, same mode, 0.5; relative major/minor 0.3; parallel 0.2), raw key accuracy and mode accuracy.
Speed: CPU seconds (process time, all threads) per minute of audio. Baselines, in the same run: tempo
120 BPM always; the highest autocorrelation peak of the same onset envelope, 40-240 BPM, without the
comb or the prior; key C major always; the strongest pitch class of the same chroma, as a major key.

Long tracks (`--long FILE...`, unlabelled: real recordings you have): how often the estimator, which hears
three 20-s windows of a track's tempo and its chroma at 4 kHz, agrees with its every-frame 16-kHz reference
(tempo within 4 %, same key), and the CPU of each.

Usage: python bench/bench_tempo_key.py [--n 100] [--seconds 30] [--out /tmp/bench_tempo_key] [--long FILE...] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

from model.audio import decode_audio
from model.tempo_key import (
    PITCH_CLASSES,
    TEMPO_KEY_VERSION,
    chromagram,
    estimate_key,
    estimate_tempo,
    onset_envelope,
)
from training.heldout import generate
from training.synth import generate_corpus
from training.synth.render import read_wav

RATE = 16000
FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}


def tempo_120(_wave: np.ndarray, _sr: int) -> float:
    return 120.0


def tempo_plain_acf(wave: np.ndarray, sr: int) -> float:
    """The lag of the highest autocorrelation of the onset envelope between 40 and 240 BPM."""
    env, fps = onset_envelope(wave, sr)
    e = env - env.mean()
    acf = np.correlate(e, e, mode="full")[e.size - 1:] if e.size else e
    lo, hi = int(60 * fps / 240), int(60 * fps / 40)
    if acf.size <= hi or not acf[lo:hi].any():
        return 0.0
    return 60.0 * fps / (lo + int(np.argmax(acf[lo:hi])))


def key_c_major(_wave: np.ndarray, _sr: int) -> tuple[str, str]:
    return "C", "major"


def key_chroma_argmax(wave: np.ndarray, sr: int) -> tuple[str, str]:
    return PITCH_CLASSES[int(np.argmax(chromagram(wave, sr)))], "major"


TEMPO_METHODS: dict[str, Callable[[np.ndarray, int], float]] = {
    "estimator": estimate_tempo, "constant 120 BPM": tempo_120,
    "onset autocorrelation, no prior": tempo_plain_acf}
KEY_METHODS: dict[str, Callable[[np.ndarray, int], tuple[str, str]]] = {
    "estimator": estimate_key, "constant C major": key_c_major, "chroma argmax as major": key_chroma_argmax}


def tempo_scores(estimates: list[float], truths: list[float]) -> dict[str, float]:
    est, ref = np.asarray(estimates), np.asarray(truths)
    acc1 = np.abs(est - ref) <= 0.04 * ref
    acc2 = np.any([np.abs(est - f * ref) <= 0.04 * f * ref for f in (1, 2, 3, 1 / 2, 1 / 3)], axis=0)
    return {"accuracy1": float(acc1.mean()), "accuracy2": float(acc2.mean())}


def key_weight(est: tuple[str, str], ref: tuple[str, str]) -> float:
    """mir_eval's weighted key score for one estimate."""
    (et, em), (rt, rm) = est, ref
    up = (PITCH_CLASSES.index(et) - PITCH_CLASSES.index(rt)) % 12
    if em == rm:
        return 1.0 if up == 0 else 0.5 if up == 7 else 0.0
    if up == 0:
        return 0.2
    return 0.3 if (rm == "major" and up == 9) or (rm == "minor" and up == 3) else 0.0


def key_scores(estimates: list[tuple[str, str]], truths: list[tuple[str, str]]) -> dict[str, float]:
    return {"weighted": float(np.mean([key_weight(e, r) for e, r in zip(estimates, truths, strict=True)])),
            "key_accuracy": float(np.mean([e == r for e, r in zip(estimates, truths, strict=True)])),
            "mode_accuracy": float(np.mean([e[1] == r[1] for e, r in zip(estimates, truths, strict=True)]))}


def load_sets(out: Path, n: int, seconds: float, seed: int, workers: int) -> dict[str, list[dict]]:
    """Each set as [{"wave", "bpm", "key", "style", "drums"}], rendered on first use."""
    heldout = generate(out / "heldout", n, seed=seed, seconds=seconds, workers=workers)
    training = generate_corpus(out / "synth", n, seed=seed, seconds=seconds, workers=workers)
    sets: dict[str, list[dict]] = {"heldout": [], "training-style": []}
    for r in heldout:
        sets["heldout"].append({"path": out / "heldout" / r["file"], "bpm": r["bpm"],
                                "key": (r["tonic"], r["mode"]), "style": r["style"], "drums": r["drums"]})
    for r in training:
        a = r["attributes"]
        sets["training-style"].append({"path": out / "synth" / r["file"], "bpm": float(a["tempo_bpm"]),
                                       "key": (FLATS.get(a["key"], a["key"]), a["mode"]),
                                       "style": a["style"], "drums": a["drums"] != "none"})
    for clips in sets.values():
        for c in clips:
            audio, sr = read_wav(c.pop("path"))
            c["wave"] = soxr.resample(audio, sr, RATE).astype(np.float32)
    return sets


def run_set(clips: list[dict]) -> dict:
    minutes = sum(c["wave"].size for c in clips) / RATE / 60.0
    result: dict = {"clips": len(clips), "minutes": round(minutes, 2), "tempo": {}, "key": {}}
    truths_bpm = [c["bpm"] for c in clips]
    truths_key = [c["key"] for c in clips]
    for name, method in TEMPO_METHODS.items():
        t0 = time.process_time()
        est = [method(c["wave"], RATE) for c in clips]
        cpu = time.process_time() - t0
        result["tempo"][name] = {**tempo_scores(est, truths_bpm), "cpu_s_per_min": cpu / minutes}
        if name == "estimator":
            tempo_est = est
    for name, method in KEY_METHODS.items():
        t0 = time.process_time()
        est = [method(c["wave"], RATE) for c in clips]
        cpu = time.process_time() - t0
        result["key"][name] = {**key_scores(est, truths_key), "cpu_s_per_min": cpu / minutes}
        if name == "estimator":
            key_est = est
    by_style: dict[str, dict] = {}
    for style in sorted({c["style"] for c in clips}):
        idx = [i for i, c in enumerate(clips) if c["style"] == style]
        by_style[style] = {"clips": len(idx),
                           **tempo_scores([tempo_est[i] for i in idx], [truths_bpm[i] for i in idx]),
                           "key_weighted": key_scores([key_est[i] for i in idx], [truths_key[i] for i in idx])
                           ["weighted"]}
    result["estimator_by_style"] = by_style
    return result


def run_long(files: list[str]) -> dict:
    """The estimator against its every-frame, 16-kHz reference on whole long tracks."""
    cpu = {"estimator": 0.0, "reference": 0.0}
    tempo_agree = key_agree = 0
    minutes = 0.0
    for name in files:
        wave = decode_audio(name, RATE, 3600.0)
        minutes += wave.size / RATE / 60.0
        t0 = time.process_time()
        est = estimate_tempo(wave, RATE), estimate_key(wave, RATE)
        t1 = time.process_time()
        ref = estimate_tempo(wave, RATE, windows=None), estimate_key(wave, RATE, key_rate=RATE)
        cpu["estimator"] += t1 - t0
        cpu["reference"] += time.process_time() - t1
        tempo_agree += abs(est[0] - ref[0]) <= 0.04 * ref[0]
        key_agree += est[1] == ref[1]
    return {"tracks": len(files), "minutes": round(minutes, 1), "tempo_agreement": tempo_agree / len(files),
            "key_agreement": key_agree / len(files),
            "cpu_s_per_min": {k: round(v / minutes, 4) for k, v in cpu.items()}}


def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and the core count."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.machine())
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="clips per set")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/bench_tempo_key", help="cache of rendered clips")
    parser.add_argument("--workers", type=int, default=2, help="FluidSynth processes while rendering")
    parser.add_argument("--long", nargs="+", default=[], metavar="FILE",
                        help="long unlabelled tracks: the estimator against its every-frame reference")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    sets = load_sets(Path(args.out), args.n, args.seconds, args.seed, args.workers)
    report = {"version": TEMPO_KEY_VERSION, "date": datetime.date.today().isoformat(),
              "machine": machine(),
              "n": args.n, "seconds": args.seconds, "seed": args.seed,
              "sets": {name: run_set(clips) for name, clips in sets.items()}}
    if args.long:
        report["long"] = run_long(args.long)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"tempo_key {report['version']}, {report['date']}, {report['machine']}, "
          f"{args.n} clips x {args.seconds:g} s per set")
    for name, res in report["sets"].items():
        print(f"\n{name} ({res['clips']} clips, {res['minutes']} min)")
        for method, s in res["tempo"].items():
            print(f"  tempo {method:34s} acc1 {s['accuracy1']:.2f}  acc2 {s['accuracy2']:.2f}  "
                  f"{s['cpu_s_per_min']:.4f} s/min")
        for method, s in res["key"].items():
            print(f"  key   {method:34s} weighted {s['weighted']:.3f}  key {s['key_accuracy']:.2f}  "
                  f"mode {s['mode_accuracy']:.2f}  {s['cpu_s_per_min']:.4f} s/min")
        for style, s in res["estimator_by_style"].items():
            print(f"    {style:12s} n={s['clips']:3d}  acc1 {s['accuracy1']:.2f}  acc2 {s['accuracy2']:.2f}  "
                  f"key {s['key_weighted']:.2f}")
    if args.long:
        res = report["long"]
        print(f"\nlong tracks ({res['tracks']}, {res['minutes']} min) against every frame at 16 kHz: tempo agrees "
              f"{res['tempo_agreement']:.2f}, key {res['key_agreement']:.2f}; CPU s/min {res['cpu_s_per_min']}")


if __name__ == "__main__":
    main()
