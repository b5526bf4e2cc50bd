"""The instrument-family head (`model/instrument_head.py`) on the held-out set, beside musicnn's own tags.

The held-out set (`training/heldout`) has its own composer and the TimGM6mb soundfont; the head was trained
on the other generator and other soundfonts. Several heads (`--weights A B`: an old and a new one) are
scored on the same clips in one run. Clips are rendered once into --cache and analysed once (the same
`Analyzer` path as training, audio resampled to 16 kHz with soxr, as the indexer does).

Held-out families map to the head's: reed and pipe are woodwind; bass and mallet have no class, so they
are left out of every accuracy and reported apart (what the head calls them, and how often confidently).
Baselines, in the same run: musicnn's tags mapped to families (the top of piano/harpsichord -> piano,
guitar/sitar -> guitar, strings/violin/cello/harp -> strings, flute -> woodwind, synth -> synth, as
model/describe.py scores words), chance (1/7) and the best constant answer (the set's commonest family).

Usage: PYTHONPATH=. python bench/bench_instrument_head.py [--n 100] [--seed 0] [--seconds 30]
           [--cache /tmp/bench_instrument_head] [--weights model/weights/instrument-head.safetensors ...] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from model.analysis import TAGGERS, Analyzer
from model.describe import INSTRUMENTS, word_scores
from model.instrument_head import FAMILIES, WEIGHTS, InstrumentHead
from model.musicnn import load_config
from training.heldout import generate
from training.synth.spec import LEAD_PROGRAMS
from training.train_instrument_head import MODELS_DIR, cached_features, confidence_table, record_key

HELDOUT_TO_HEAD = {**{f: f for f in FAMILIES}, "reed": "woodwind", "pipe": "woodwind"}
TAG_WORD_FAMILY = {"piano": "piano", "harpsichord": "piano", "guitar": "guitar", "sitar": "guitar",
                   "strings": "strings", "violin": "strings", "cello": "strings", "harp": "strings",
                   "flute": "woodwind", "synth": "synth"}


def tag_family(tags: np.ndarray) -> str:
    """The family of the top instrument word musicnn's tags give (the tags of both taggers, MTT then MSD)."""
    labels = [load_config(name).labels for name in TAGGERS]
    bounds = np.cumsum([0] + [len(ls) for ls in labels])
    by_tagger = {name: dict(zip(labels[i], map(float, tags[bounds[i]:bounds[i + 1]]), strict=True))
                 for i, name in enumerate(TAGGERS)}
    scores = word_scores(by_tagger, {w: INSTRUMENTS[w] for w in TAG_WORD_FAMILY})
    return TAG_WORD_FAMILY[max(scores, key=scores.get)]


def wilson(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of an accuracy measured on n clips."""
    if n == 0:
        return float("nan"), float("nan")
    p = right / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def evaluate(records: list[dict], probs: np.ndarray, tag_preds: list[str], threshold: float) -> dict:
    """Every figure of the report, from the held-out labels and the two methods' answers."""
    truth = [HELDOUT_TO_HEAD.get(r["family"]) for r in records]
    head = [FAMILIES[i] for i in probs.argmax(axis=1)]
    top = probs.max(axis=1)
    inside = [i for i, t in enumerate(truth) if t]
    n = len(inside)
    right = {"head": sum(head[i] == truth[i] for i in inside), "tags": sum(tag_preds[i] == truth[i] for i in inside)}
    commonest, count = Counter(truth[i] for i in inside).most_common(1)[0]
    confident = [i for i in inside if top[i] >= threshold]
    result: dict = {
        "clips": len(records), "clips_in_head_families": n,
        "accuracy": {
            "head": right["head"] / n, "head_95ci": wilson(right["head"], n),
            "musicnn_tags": right["tags"] / n, "musicnn_tags_95ci": wilson(right["tags"], n),
            "chance": 1 / len(FAMILIES), f"constant '{commonest}'": count / n},
        "confident": {"threshold": threshold, "coverage": len(confident) / n,
                      "accuracy": sum(head[i] == truth[i] for i in confident) / max(len(confident), 1)},
        "per_family": {}, "per_heldout_family": {}, "confusions": {}, "outside_head_families": {},
    }
    for family in FAMILIES:
        idx = [i for i in inside if truth[i] == family]
        result["per_family"][family] = {
            "clips": len(idx), "head": sum(head[i] == family for i in idx) / max(len(idx), 1),
            "musicnn_tags": sum(tag_preds[i] == family for i in idx) / max(len(idx), 1)}
    for family in sorted({r["family"] for r in records}):
        idx = [i for i, r in enumerate(records) if r["family"] == family]
        said = Counter(head[i] for i in idx)
        result["per_heldout_family"][family] = {"clips": len(idx), "head_says": dict(said.most_common())}
        if not truth[idx[0]]:
            result["outside_head_families"][family] = {
                "clips": len(idx), "head_says": dict(said.most_common()),
                "confident": sum(top[i] >= threshold for i in idx) / len(idx)}
    wrong = Counter((truth[i], head[i]) for i in inside if head[i] != truth[i])
    result["confusions"] = {f"{t} -> {p}": c for (t, p), c in wrong.most_common()}
    labels = np.array([FAMILIES.index(truth[i]) for i in inside])
    result["confidence_table"] = confidence_table(probs[inside], labels)
    seen = {p for registers in LEAD_PROGRAMS.values() for leads in registers.values() for p, _ in leads}
    for name, keep in (("programs_in_training", True), ("programs_not_in_training", False)):
        idx = [i for i in inside if (records[i]["program"] in seen) == keep]
        result[name] = {"clips": len(idx), "head": sum(head[i] == truth[i] for i in idx) / max(len(idx), 1)}
    by_instrument: dict[str, list[bool]] = {}
    for i in inside:
        by_instrument.setdefault(records[i]["instrument"], []).append(head[i] == truth[i])
    result["per_instrument"] = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_instrument.items())}
    return result


def print_report(result: dict) -> None:
    acc = result["accuracy"]
    lo, hi = acc["head_95ci"]
    print(f"held-out clips: {result['clips']}, in the head's 7 families: {result['clips_in_head_families']}")
    print(f"accuracy: head {acc['head']:.3f} (95% CI {lo:.2f}-{hi:.2f}), musicnn tags {acc['musicnn_tags']:.3f}, "
          + ", ".join(f"{k} {v:.3f}" for k, v in acc.items() if k not in ("head", "musicnn_tags")
                      and not k.endswith("95ci")))
    conf = result["confident"]
    print(f"top probability >= {conf['threshold']}: coverage {conf['coverage']:.2f}, accuracy {conf['accuracy']:.3f}")
    print("by top probability: " + ", ".join(f">= {row['threshold']}: coverage {row['coverage']:.2f} accuracy "
                                             f"{row['accuracy']:.2f}" for row in result["confidence_table"][1:]))
    for name in ("programs_in_training", "programs_not_in_training"):
        print(f"lead {name.replace('_', ' ')}: {result[name]['clips']} clips, head {result[name]['head']:.3f}")
    print("\n| family | clips | head | musicnn tags |\n|---|---:|---:|---:|")
    for family, row in result["per_family"].items():
        print(f"| {family} | {row['clips']} | {row['head']:.2f} | {row['musicnn_tags']:.2f} |")
    print("\nconfusions (truth -> head):", ", ".join(f"{k} {v}" for k, v in result["confusions"].items()))
    print("per held-out instrument (right/clips):", ", ".join(f"{k} {v}" for k, v in result["per_instrument"].items()))
    for family, row in result["outside_head_families"].items():
        print(f"outside the head's families: {family} ({row['clips']} clips) called {row['head_says']}, "
              f"confident {row['confident']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="held-out clips")
    parser.add_argument("--seed", type=int, default=0, help="held-out set seed")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length")
    parser.add_argument("--cache", default="/tmp/bench_instrument_head", help="rendered clips and features")
    parser.add_argument("--weights", nargs="+", default=[str(WEIGHTS)], help="heads' safetensors, each scored")
    parser.add_argument("--workers", type=int, default=2, help="parallel FluidSynth processes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache = Path(args.cache) / "heldout"
    heads = {weights: InstrumentHead.from_file(weights) for weights in args.weights}
    started = time.monotonic()
    records = generate(cache, args.n, seed=args.seed, seconds=args.seconds, workers=args.workers)
    rendered = time.monotonic()
    feats = cached_features([cache / r["file"] for r in records], [record_key(r) for r in records], cache,
                            Analyzer(MODELS_DIR))
    analysed = time.monotonic()
    tag_preds = [tag_family(t) for t in feats.tags]
    results = []
    for weights, head in heads.items():
        result = evaluate(records, head.matrix(feats.embedding), tag_preds, head.threshold)
        result.update({
            "weights": weights, "head_revision": head.revision, "seed": args.seed, "seconds": args.seconds,
            "times_s": {"render": round(rendered - started, 1), "analyse": round(analysed - rendered, 1)},
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread",
            "date": str(datetime.date.today())})
        results.append(result)
        if not args.json:
            print(f"== {weights} (revision {head.revision})")
            print_report(result)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
