"""Is an attribute in the lite features at all? Linear probes on cached tokens, independent of the LLM.

For each clip of a synthetic corpus: the mean of its cached audio tokens (front-end + 325-frame pooling,
`python -m training cache-features`), standardised with the training clips' statistics; then one
logistic regression per attribute (L-BFGS, L2 1e-3) trained on the training clips and scored on the
held-out ones, beside the majority class. Also the front-end's own major/minor call without any
training: the best major key fit against the best minor one (`best_major_minor`).

A probe bounds what a linear adapter can pass on; `training eval --forced-choice` measures what the
trained adapter does pass on. Results: docs/benchmarks.md, "Training the lite adapter".

    python bench/probe_lite_features.py --train data/synth/train data/features/synth-train \
        --heldout data/synth/heldout data/features/synth-heldout [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import load_profile  # noqa: E402
from model.frontend import REVISION, feature_slice  # noqa: E402
from training.datasets import read_dataset  # noqa: E402
from training.features import FeatureCache  # noqa: E402

ATTRIBUTES = ("instrument_family", "tempo_class", "mode", "register", "dynamics", "drums", "texture", "style",
              "mood", "meter")


def clips(root: str, cache_root: str, profile) -> tuple[torch.Tensor, list[dict]]:
    """One row per clip (its tokens' mean) and the clip's labels."""
    cache = FeatureCache.open(cache_root, profile)
    rows, labels, seen = [], [], set()
    for it in read_dataset("synth", root, "all").items:
        if it.audio_key in seen or it.audio_key not in cache:
            continue
        seen.add(it.audio_key)
        rows.append(cache.get(it.audio_key).float().mean(0))
        labels.append(it.meta["labels"])
    return torch.stack(rows), labels


def probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, n_classes: int) -> torch.Tensor:
    torch.manual_seed(0)
    linear = torch.nn.Linear(x_train.shape[1], n_classes)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train) + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return linear(x_test).argmax(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", nargs=2, metavar=("CORPUS", "CACHE"), required=True)
    ap.add_argument("--heldout", nargs=2, metavar=("CORPUS", "CACHE"), required=True)
    ap.add_argument("--profile", default="lite")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    profile = load_profile(args.profile)
    x_train, l_train = clips(*args.train, profile)
    x_test, l_test = clips(*args.heldout, profile)
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-6)
    z_train, z_test = (x_train - mean) / std, (x_test - mean) / std
    report: dict = {"frontend_revision": REVISION, "dim": x_train.shape[1], "train_clips": len(l_train),
                    "heldout_clips": len(l_test), "probes": {}}
    for attr in ATTRIBUTES:
        classes = sorted({lab[attr] for lab in l_train})
        y_train = torch.tensor([classes.index(lab[attr]) for lab in l_train])
        y_test = torch.tensor([classes.index(lab[attr]) if lab[attr] in classes else -1 for lab in l_test])
        predicted = probe(z_train, y_train, z_test, len(classes))
        majority = max((y_test == c).float().mean().item() for c in range(len(classes)))
        report["probes"][attr] = {"classes": len(classes), "accuracy": round((predicted == y_test).float().mean().item(), 3),
                                  "majority": round(majority, 3)}
    best = x_test[:, feature_slice("best_major_minor")]
    said = ["major" if b[0] > b[1] else "minor" for b in best.tolist()]
    report["frontend_mode_call"] = round(sum(s == lab["mode"] for s, lab in zip(said, l_test, strict=True)) / len(said), 3)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"front-end revision {REVISION}, {report['dim']} features, {len(l_train)} train / {len(l_test)} held-out clips")
    print("| attribute | probe accuracy | majority class |\n|---|---|---|")
    for attr, r in report["probes"].items():
        print(f"| {attr} ({r['classes']}) | {r['accuracy']:.3f} | {r['majority']:.3f} |")
    print(f"front-end major/minor call (best key fits, no training): {report['frontend_mode_call']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
