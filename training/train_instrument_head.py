"""Train the instrument-family head (`model/instrument_head.py`) on musicnn embeddings of synthetic clips.

    python -m training.train_instrument_head --out model/weights/instrument-head.safetensors \
        [--clips 1400] [--free-clips 700] [--seconds 15] [--cache /tmp/instrument-head] [--seed 0]

Why: musicnn's own tags name General MIDI instruments poorly and have no word for brass, organ or most
woodwinds, but its penultimate layers (`TrackAnalysis.embedding`, 400-d) still hear timbre. A small
classifier on them names the lead's family.

Data: clips of the training generator (`training/synth`, FluidR3_GM), the family pinned round-robin so
the 7 families are balanced: `--clips` drawn as `sample_spec` draws them (seed S), and `--free-clips`
whose accompaniment and bass instruments are drawn apart from the lead's family (seed S + 1; see
`training_records`). Clips are rendered once into CACHE/synth/audio and analysed once into
CACHE/synth/features (per clip, the embedding of every 3-s patch), so an interrupted run resumes.

Selection, without the held-out set: every candidate (which tagger's half of the embedding, L2 strength,
clip or patch examples, a tiny MLP) is scored by leave-program-out cross-validation. Each fold holds out
whole General MIDI programs (one or two per family: a cello, a tuba, a clarinet...), so a candidate wins
by recognising instruments it was not trained on, the nearest this corpus comes to another soundfont; a
plain stratified 5-fold split is reported beside it. The winner is refitted on every clip. The confidence
threshold shipped in the file is the lowest top probability at which the plain split's predictions were
right at least `TARGET_PRECISION` of the time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
from safetensors.numpy import load_file, save_file

from model.analysis import ANALYSIS_REVISION, Analyzer, musicnn_version
from model.instrument_head import HEAD_REVISION, InstrumentHead
from model.musicnn import log_mel, patches
from training.synth.corpus import clip_id, render_clip
from training.synth.render import DEFAULT_SAMPLE_RATE, find_fluidsynth, find_soundfont, read_wav
from training.synth.spec import BASS_PROGRAMS, CHORD_PROGRAMS, FAMILIES, clip_rng, sample_spec

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"  # tests/conftest.py's musicnn cache
EMBED_HALF = 200  # each tagger's penultimate layer: MTT first, then MSD (model.analysis.TAGGERS order)
FOLDS = 3
ACCOMPANIMENT_STREAM = 3  # clip_rng stream of the accompaniment draw (the corpus uses 0 to 2)
CHORDS = sorted({p for programs in CHORD_PROGRAMS.values() for p in programs})
BASSES = sorted({p for programs in BASS_PROGRAMS.values() for p in programs})
TARGET_PRECISION = 0.9
L2_GRID = (1e-3, 1e-2, 1e-1)
MLP_MARGIN = 0.03  # an MLP is chosen over a linear head only when clearly better
SUBSETS = {"MTT+MSD": slice(0, 2 * EMBED_HALF), "MTT": slice(0, EMBED_HALF), "MSD": slice(EMBED_HALF, None)}


# -- data --------------------------------------------------------------------------------------------


def training_records(n: int, seed: int, seconds: float, free_accompaniment: bool) -> list[dict]:
    """Clip i has family FAMILIES[i % 7]; everything else is drawn from (seed, i) as the corpus draws it,
    except, with `free_accompaniment`, the accompaniment and bass instruments: drawn from all those the
    corpus uses, whatever the style.

    In the corpus the accompaniment follows the style, which follows the lead's family (synth leads get
    pads, brass and woodwind jazz comping), so a head could name the family from the accompaniment; in
    other music, the held-out set's included, the two are unrelated. The wav's name carries a digest of
    the attributes, so a cached render is never taken for another clip's.
    """
    records = []
    for i in range(n):
        pinned = {"instrument_family": FAMILIES[i % len(FAMILIES)]}
        if free_accompaniment:
            rng = clip_rng(seed, i, ACCOMPANIMENT_STREAM)
            pinned.update(chord_program=int(rng.choice(CHORDS)), bass_program=int(rng.choice(BASSES)))
        attributes = sample_spec(clip_rng(seed, i), seconds=seconds, **pinned).to_dict()
        cid = clip_id(seed, i)
        digest = hashlib.sha1(json.dumps(attributes, sort_keys=True).encode()).hexdigest()[:8]
        records.append({"id": cid, "file": f"audio/{cid}-{digest}.wav", "sample_rate": DEFAULT_SAMPLE_RATE,
                        "attributes": attributes})
    return records


def render_all(records: list[dict], cache: Path, workers: int) -> None:
    """Render the clips whose wav is missing (FluidSynth processes in threads, as `generate_corpus` does)."""
    find_fluidsynth()
    find_soundfont()
    todo = [r for r in records if not (cache / r["file"]).is_file()]
    say(f"render: {len(records) - len(todo)} of {len(records)} cached, {len(todo)} to render")
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(lambda r: render_clip(r, cache), todo), start=1):
            if done % 50 == 0 or done == len(todo):
                say(f"render: {done}/{len(todo)} in {time.monotonic() - start:.0f}s")


def record_key(record: dict) -> str:
    """A clip's name in the feature cache: its id and a digest of everything that made its audio."""
    digest = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]
    return f"{record['id']}-{digest}"


@dataclass
class Features:
    """Per clip: the embedding of every analysed 3-s patch, and musicnn's tags over the clip (for the baseline)."""

    patches: list[np.ndarray]  # (P, 400) each
    tags: np.ndarray  # (n, 100): both taggers' probabilities, MTT then MSD, averaged over the patches

    @property
    def embedding(self) -> np.ndarray:
        """(n, 400): `TrackAnalysis.embedding` of each clip, the mean of its patches."""
        return np.stack([p.mean(axis=0) for p in self.patches])


def patch_features(analyzer: Analyzer, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per patch, (P, 400) penultimate layers and (P, 100) tags of both taggers: what `Analyzer.analyze`
    computes before it averages (tempo and key left out), with its patches and its batch size."""
    batch = torch.from_numpy(patches(log_mel(wave), analyzer.max_patches))
    embeds, tags = [], []
    with torch.inference_mode():
        for model in analyzer.models.values():
            outs = [model(batch[i:i + analyzer.patch_batch]) for i in range(0, len(batch), analyzer.patch_batch)]
            embeds.append(torch.cat([o.penultimate for o in outs]).numpy())
            tags.append(torch.cat([o.probabilities for o in outs]).numpy())
    return np.concatenate(embeds, axis=1), np.concatenate(tags, axis=1)


def cached_features(paths: list[Path], ids: list[str], cache: Path, analyzer: Analyzer) -> Features:
    """The features of the wavs at `paths`, analysed once per `features_version` (16 kHz via soxr, as the
    indexer resamples); `ids` name the clips in the cache (`record_key`)."""
    folder = cache / "features" / features_version(analyzer)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i, cid in enumerate(ids) if not (folder / f"{cid}.safetensors").is_file()]
    say(f"features: {len(ids) - len(todo)} of {len(ids)} cached, {len(todo)} to analyse")
    start = time.monotonic()
    for done, i in enumerate(todo, start=1):
        audio, rate = read_wav(paths[i])
        embeds, tags = patch_features(analyzer, soxr.resample(audio, rate, analyzer.sample_rate).astype(np.float32))
        tmp = folder / f".{ids[i]}.{os.getpid()}.tmp"
        save_file({"patches": embeds, "tags": tags}, str(tmp))
        os.replace(tmp, folder / f"{ids[i]}.safetensors")
        if done % 50 == 0 or done == len(todo):
            say(f"features: {done}/{len(todo)} in {time.monotonic() - start:.0f}s")
    loaded = [load_file(str(folder / f"{cid}.safetensors")) for cid in ids]
    return Features([f["patches"] for f in loaded], np.stack([f["tags"].mean(axis=0) for f in loaded]))


def features_version(analyzer: Analyzer) -> str:
    """What the embeddings depend on (not tempo and key, which `Analyzer.version` also covers)."""
    payload = f"{ANALYSIS_REVISION}|{','.join(analyzer.models)}|{analyzer.max_patches}|{musicnn_version()}"
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- models ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One way to fit the head: embedding columns, L2 strength, hidden units (0: linear), and whether it
    learns from clips (their mean embedding) or from every 3-s patch (5x the examples; a linear head on
    a clip's mean embedding then gives the mean of its patches' logits)."""

    subset: str
    l2: float
    unit: str = "clip"
    hidden: int = 0

    @property
    def name(self) -> str:
        kind = f"MLP {self.hidden}" if self.hidden else "linear"
        return f"{kind}, {self.subset}, per {self.unit}, L2 {self.l2:g}"


def candidates() -> list[Candidate]:
    linear = [Candidate(subset, l2, unit) for unit in ("clip", "patch") for subset in SUBSETS for l2 in L2_GRID]
    return linear + [Candidate("MTT+MSD", l2, "patch", hidden=64) for l2 in (1e-2, 1e-1)]


def examples(features: Features, y: np.ndarray, clips: np.ndarray, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """The training matrix and labels of `clips`: one row per clip, or one per patch."""
    if unit == "clip":
        return features.embedding[clips].astype(np.float64), y[clips]
    rows = [features.patches[i] for i in clips]
    return np.concatenate(rows).astype(np.float64), np.repeat(y[clips], [len(r) for r in rows])


def fit(x: np.ndarray, y: np.ndarray, candidate: Candidate, seed: int) -> dict[str, np.ndarray]:
    """The head's tensors: input mean and scale over all 400 columns, then one or two layers.

    Columns outside the candidate's subset get zero weights, so every head reads the whole embedding.
    Full-batch L-BFGS in float64 on one thread: the same data give the same weights.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    columns = np.zeros(x.shape[1], dtype=bool)
    columns[SUBSETS[candidate.subset]] = True
    z = torch.from_numpy((x - mean) / scale)[:, torch.from_numpy(columns)]
    target = torch.from_numpy(y)
    torch.manual_seed(seed)
    sizes = [z.shape[1], *([candidate.hidden] if candidate.hidden else []), len(FAMILIES)]
    layers = [torch.nn.Linear(a, b, dtype=torch.float64) for a, b in zip(sizes[:-1], sizes[1:], strict=False)]
    params = [p for layer in layers for p in layer.parameters()]
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=300, history_size=20, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        h = z
        for k, layer in enumerate(layers):
            h = layer(h) if k == len(layers) - 1 else torch.relu(layer(h))
        loss = torch.nn.functional.cross_entropy(h, target)
        loss = loss + 0.5 * candidate.l2 * sum(layer.weight.square().sum() for layer in layers)
        loss.backward()
        return loss

    optimiser.step(closure)
    first = np.zeros((sizes[1], x.shape[1]))
    first[:, columns] = layers[0].weight.detach().numpy()
    tensors = {"mean": mean, "scale": scale, "weight0": first, "bias0": layers[0].bias.detach().numpy()}
    for k, layer in enumerate(layers[1:], start=1):
        tensors[f"weight{k}"] = layer.weight.detach().numpy()
        tensors[f"bias{k}"] = layer.bias.detach().numpy()
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}


# -- validation --------------------------------------------------------------------------------------


def program_folds(families: list[str], programs: list[int], folds: int = FOLDS) -> np.ndarray:
    """Fold of each clip: within a family, its lead programs are dealt round-robin to the folds, so each
    fold holds out whole instruments of every family and trains on the others of that family."""
    fold_of = {}
    for family in FAMILIES:
        for k, program in enumerate(sorted({p for f, p in zip(families, programs, strict=True) if f == family})):
            fold_of[(family, program)] = k % folds
    return np.array([fold_of[(f, p)] for f, p in zip(families, programs, strict=True)])


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each clip for a plain split: each class shuffled and dealt round-robin."""
    out = np.empty(len(y), dtype=int)
    rng = np.random.default_rng(seed)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx] = np.arange(len(idx)) % folds
    return out


def out_of_fold(features: Features, y: np.ndarray, fold: np.ndarray, candidate: Candidate, seed: int) -> np.ndarray:
    """Each clip's probabilities, from its mean embedding as at inference, by the model fitted without its fold."""
    probs = np.zeros((len(y), len(FAMILIES)), dtype=np.float32)
    for k in np.unique(fold):
        held = fold == k
        x, labels = examples(features, y, np.flatnonzero(~held), candidate.unit)
        probs[held] = InstrumentHead(fit(x, labels, candidate, seed)).matrix(features.embedding[held])
    return probs


def threshold_for(probs: np.ndarray, y: np.ndarray, precision: float = TARGET_PRECISION) -> float:
    """The lowest top probability (a 0.05 grid) above which predictions are right at least `precision`."""
    top, right = probs.max(axis=1), probs.argmax(axis=1) == y
    for t in np.arange(0.3, 0.96, 0.05):
        kept = top >= t
        if kept.sum() >= 10 and right[kept].mean() >= precision:
            return round(float(t), 2)
    return 0.95


def confidence_table(probs: np.ndarray, y: np.ndarray) -> list[dict]:
    top, right = probs.max(axis=1), probs.argmax(axis=1) == y
    rows = []
    for t in (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        kept = top >= t
        rows.append({"threshold": t, "coverage": float(kept.mean()),
                     "accuracy": float(right[kept].mean()) if kept.any() else float("nan")})
    return rows


def select(features: Features, y: np.ndarray, programs: list[int], seed: int,
           log: Callable[[str], None] = say) -> tuple[Candidate, dict]:
    """Score every candidate by leave-program-out accuracy. Ties go to the earlier (simpler) candidate, and
    an MLP must beat the best linear head by `MLP_MARGIN` to be chosen.

    The threshold comes from the plain split: on instruments it has heard, rendered anew, how sure the
    head must be to be right `TARGET_PRECISION` of the time (on unheard instruments confidence says less:
    the report's leave-program-out table shows how much less).
    """
    by_program, plain = program_folds([FAMILIES[c] for c in y], programs), stratified_folds(y, 5, seed)
    scores, probs = {}, {}
    for candidate in candidates():
        probs[candidate] = (out_of_fold(features, y, by_program, candidate, seed),
                            out_of_fold(features, y, plain, candidate, seed))
        scores[candidate] = {name: float((p.argmax(axis=1) == y).mean())
                             for name, p in zip(("leave_program_out", "stratified_5_fold"), probs[candidate],
                                                strict=True)}
        log(f"  {candidate.name:40s} leave-program-out {scores[candidate]['leave_program_out']:.3f}   "
            f"stratified {scores[candidate]['stratified_5_fold']:.3f}")

    def score(c: Candidate) -> float:
        return scores[c]["leave_program_out"] - (MLP_MARGIN if c.hidden else 0.0)

    best = max(scores, key=score)  # max keeps the first of equals
    held_programs, held_clips = probs[best]
    per_family = {f: {name: float((p.argmax(axis=1)[y == i] == i).mean()) for name, p in
                      (("leave_program_out", held_programs), ("stratified_5_fold", held_clips))}
                  for i, f in enumerate(FAMILIES)}
    report = {"candidates": {c.name: v for c, v in scores.items()}, "chosen": best.name, "per_family": per_family,
              "confidence_leave_program_out": confidence_table(held_programs, y),
              "confidence_stratified": confidence_table(held_clips, y), "threshold": threshold_for(held_clips, y)}
    return best, report


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_instrument_head", description=__doc__)
    parser.add_argument("--out", required=True, help="the head's safetensors")
    parser.add_argument("--clips", type=int, default=1400,
                        help="clips drawn as the corpus draws them (a multiple of 7 balances the families)")
    parser.add_argument("--free-clips", type=int, default=700,
                        help="more clips, with the accompaniment drawn apart from the lead's family")
    parser.add_argument("--seconds", type=float, default=15.0, help="clip length")
    parser.add_argument("--seed", type=int, default=0, help="corpus and fitting seed")
    parser.add_argument("--cache", default="/tmp/instrument-head", help="rendered clips and their features")
    parser.add_argument("--workers", type=int, default=2, help="parallel FluidSynth processes")
    parser.add_argument("--report", help="also write the validation report here (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.monotonic()
    cache = Path(args.cache) / "synth"
    records = (training_records(args.clips, args.seed, args.seconds, free_accompaniment=False)
               + training_records(args.free_clips, args.seed + 1, args.seconds, free_accompaniment=True))
    render_all(records, cache, args.workers)
    rendered = time.monotonic()
    analyzer = Analyzer(MODELS_DIR)
    features = cached_features([cache / r["file"] for r in records], [record_key(r) for r in records], cache,
                               analyzer)
    analysed = time.monotonic()
    y = np.array([FAMILIES.index(r["attributes"]["instrument_family"]) for r in records])
    say(f"validation over {len(y)} clips ({FOLDS} leave-program-out folds, 5 stratified folds):")
    best, report = select(features, y, [r["attributes"]["lead_program"] for r in records], args.seed)
    tensors = fit(*examples(features, y, np.arange(len(y)), best.unit), best, args.seed)
    fitted = time.monotonic()
    train_acc = float((InstrumentHead(tensors).matrix(features.embedding).argmax(axis=1) == y).mean())
    report.update({"clips": len(y), "seconds": args.seconds, "seed": args.seed, "training_accuracy": train_acc,
                   "features_version": features_version(analyzer),
                   "times_s": {"render": round(rendered - started, 1), "analyse": round(analysed - rendered, 1),
                               "select_and_fit": round(fitted - analysed, 1)}})
    validation = {k: round(v, 4) for k, v in report["candidates"][best.name].items()}
    metadata = {"families": json.dumps(list(FAMILIES)), "revision": HEAD_REVISION, "model": best.name,
                "threshold": str(report["threshold"]), "features_version": features_version(analyzer),
                "trained_on": f"{len(y)} training/synth clips (FluidR3_GM), {args.seconds:g} s: {args.clips} as "
                              f"drawn (seed {args.seed}), {args.free_clips} with free accompaniment "
                              f"(seed {args.seed + 1})",
                "validation": json.dumps(validation)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    say(f"chosen: {best.name}; threshold {report['threshold']}; wrote {out} ({out.stat().st_size} bytes)")
    print(json.dumps(report, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
