"""Train the instrument-family head (`model/instrument_head.py`) on musicnn embeddings of synthetic clips.

    python -m training.train_instrument_head --out model/weights/instrument-head.safetensors \
        [--soundfonts SF ...] [--clips 490] [--free-clips 210] [--seconds 15] [--cache /tmp/instrument-head]

Why: musicnn's own tags name General MIDI instruments poorly and have no word for brass, organ or most
woodwinds, but its penultimate layers (`TrackAnalysis.embedding`, 400-d) still hear timbre. A small
classifier on them names the lead's family.

Data: clips of the training generator (`training/synth`), the family pinned round-robin so the 7
families are balanced: `--clips` drawn as `sample_spec` draws them (seed S), and `--free-clips` whose
accompaniment and bass instruments are drawn apart from the lead's family (seed S + 1; see
`training_records`). Every clip is rendered by each of `--soundfonts` (default `SOUNDFONTS`: FluidR3_GM,
MuseScore_General_Lite, OPL-3 FM), because a head trained on one soundfont learns that soundfont's
samples and misses the same instruments played by another. The held-out set's soundfont is refused.
Renderings are made once into CACHE/synth/audio/SOUNDFONT and analysed once into CACHE/synth/features
(per rendering, the embedding of every 3-s patch), so an interrupted run resumes.

Selection, without the held-out set: every candidate (both taggers' halves of the embedding or MTT's
alone, L2 strength, a tiny MLP) is scored by leave-soundfont-out cross-validation (fit on the other
soundfonts' renderings of other clips, validate on the held soundfont), the honest proxy for timbres
never heard. Leave-program-out folds (whole General MIDI programs held out: a cello, a tuba, a
clarinet...) and a stratified 3-fold split (a clip's renderings kept together) are reported beside it.
The winner is refitted on every rendering. The confidence threshold written in the file is the lowest
top probability at which its leave-soundfont-out predictions were right at least `TARGET_PRECISION` of
the time.

The shipped head is not these defaults' head: it was trained on FluidR3_GM alone (2,100 clips), and the
three-soundfont head measured no better on the held-out set (docs/benchmarks.md, "Instrument family head").
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
from training.synth.compose import compose_midi
from training.synth.corpus import clip_id
from training.synth.render import (
    DEFAULT_SAMPLE_RATE,
    find_fluidsynth,
    find_soundfont,
    read_wav,
    render_midi,
    write_wav,
)
from training.synth.spec import BASS_PROGRAMS, CHORD_PROGRAMS, FAMILIES, TrackSpec, clip_rng, sample_spec

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"  # tests/conftest.py's musicnn cache
EMBED_HALF = 200  # each tagger's penultimate layer: MTT first, then MSD (model.analysis.TAGGERS order)
FOLDS = 3
ACCOMPANIMENT_STREAM = 3  # clip_rng stream of the accompaniment draw (the corpus uses 0 to 2)
CHORDS = sorted({p for programs in CHORD_PROGRAMS.values() for p in programs})
BASSES = sorted({p for programs in BASS_PROGRAMS.values() for p in programs})
TARGET_PRECISION = 0.9
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
MLP_MARGIN = 0.03  # an MLP is chosen over a linear head only when clearly better
# FluidR3_GM (Debian fluid-soundfont-gm); MuseScore_General_Lite (musescore-general-soundfont-small: its
# own pianos, solo strings, reeds, flutes and synths, though its string section, church organ and several
# guitars are FluidR3's samples, lossy); OPL-3_FM_128M (opl3-soundfont: FM synthesis, no samples at all)
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
              "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2")
# never trained on: the held-out set's soundfont, and csound's sf_GMbank, which shares 320 of its samples
HELD_OUT_SOUNDFONTS = {"TimGM6mb", "sf_GMbank"}
Split = tuple[np.ndarray, np.ndarray]  # (trained on, validated on): boolean masks over the renderings
SUBSETS = {"MTT+MSD": slice(0, 2 * EMBED_HALF), "MTT": slice(0, EMBED_HALF)}


# -- data --------------------------------------------------------------------------------------------


def training_records(n: int, seed: int, seconds: float, free_accompaniment: bool, soundfont: str) -> list[dict]:
    """Clip i has family FAMILIES[i % 7]; everything else is drawn from (seed, i) as the corpus draws it,
    except, with `free_accompaniment`, the accompaniment and bass instruments: drawn from all those the
    corpus uses, whatever the style. `soundfont` (a file name) renders it: every soundfont plays the same
    clips, so they differ in timbre alone.

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
        records.append({"id": cid, "file": f"audio/{Path(soundfont).stem}/{cid}-{digest}.wav",
                        "sample_rate": DEFAULT_SAMPLE_RATE, "soundfont": soundfont, "attributes": attributes})
    return records


def render_all(records: list[dict], cache: Path, soundfonts: dict[str, Path], workers: int) -> None:
    """Render the clips whose wav is missing, each with its record's soundfont (FluidSynth processes in
    threads, as `generate_corpus` does)."""
    find_fluidsynth()
    todo = [r for r in records if not (cache / r["file"]).is_file()]
    say(f"render: {len(records) - len(todo)} of {len(records)} cached, {len(todo)} to render")

    def render(record: dict) -> None:
        spec = TrackSpec.from_dict(record["attributes"])
        audio = render_midi(compose_midi(spec), seconds=spec.seconds, sample_rate=record["sample_rate"],
                            soundfont=soundfonts[record["soundfont"]])
        write_wav(cache / record["file"], audio, record["sample_rate"])

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(render, todo), start=1):
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
    """One way to fit the head: embedding columns, L2 strength, hidden units (0: linear). Every head learns
    from each 3-s patch (6x the examples of one per clip; a linear head on a clip's mean embedding then
    gives the mean of its patches' logits)."""

    subset: str
    l2: float
    hidden: int = 0

    @property
    def name(self) -> str:
        kind = f"MLP {self.hidden}" if self.hidden else "linear"
        return f"{kind}, {self.subset}, per patch, L2 {self.l2:g}"


def candidates() -> list[Candidate]:
    """Linear heads on both taggers' halves over the L2 grid, one on MTT's half alone, one MLP. Per clip
    (rather than per patch) and MSD's half alone lost at every L2 on every split when the head was trained
    on FluidR3_GM alone, so they are not tried."""
    return [*(Candidate("MTT+MSD", l2) for l2 in L2_GRID), Candidate("MTT", 1e-2),
            Candidate("MTT+MSD", 1e-2, hidden=64)]


def examples(features: Features, y: np.ndarray, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training matrix and labels of `clips`: one row per patch."""
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


def stratified_folds(y: np.ndarray, clips: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each rendering for a plain split: each class's clips shuffled and dealt round-robin, a clip's
    renderings by every soundfont in one fold (no fold is validated on music it was trained on)."""
    out = np.empty(len(y), dtype=int)
    rng = np.random.default_rng(seed)
    for c in np.unique(y):
        members = y == c
        fold_of = {clip: k % folds for k, clip in enumerate(rng.permutation(np.unique(clips[members])))}
        out[members] = [fold_of[clip] for clip in clips[members]]
    return out


def fold_splits(fold: np.ndarray) -> list[Split]:
    """Each fold validated on, the others trained on."""
    return [(fold != k, fold == k) for k in np.unique(fold)]


def soundfont_splits(soundfonts: np.ndarray, clip_fold: np.ndarray) -> list[Split]:
    """One soundfont's renderings of one fold of clips validated on, the other soundfonts' renderings of the
    other clips trained on: unheard timbres playing unheard music. (Trained on the held clips' renderings
    by the other soundfonts, a head scores by knowing the music, not the instrument.)"""
    return [((soundfonts != s) & (clip_fold != k), (soundfonts == s) & (clip_fold == k))
            for s in np.unique(soundfonts) for k in np.unique(clip_fold)]


def out_of_fold(features: Features, y: np.ndarray, splits: list[Split], candidate: Candidate, seed: int) -> np.ndarray:
    """Each rendering's probabilities, from its mean embedding as at inference, by the model fitted on its
    split's training part (each rendering is validated on in one split)."""
    probs = np.zeros((len(y), len(FAMILIES)), dtype=np.float32)
    for train, held in splits:
        x, labels = examples(features, y, np.flatnonzero(train))
        probs[held] = InstrumentHead(fit(x, labels, candidate, seed)).matrix(features.embedding[held])
    return probs


def temperature_for(probs: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature (a 0.5-4 grid) that would give out-of-fold predictions their lowest log loss:
    above 1, the head is surer than it is right. Reported, not applied: model/describe.py's family threshold
    was chosen on the head's own probabilities."""
    logits = np.log(np.maximum(probs, 1e-12))

    def log_loss(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    return min((round(float(t), 2) for t in np.geomspace(0.5, 4.0, 31)), key=log_loss)


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


def select(features: Features, y: np.ndarray, programs: list[int], clips: np.ndarray, soundfonts: np.ndarray,
           seed: int, log: Callable[[str], None] = say) -> tuple[Candidate, dict]:
    """Score every candidate by leave-soundfont-out accuracy (leave-program-out with one soundfont). Ties go
    to the earlier (simpler) candidate, and an MLP must beat the best linear head by `MLP_MARGIN`.

    Leave-soundfont-out (`soundfont_splits`) trains on the other soundfonts and validates on the held one:
    the honest proxy for music rendered (or played) with timbres the head never heard. Leave-program-out holds out instruments
    and the stratified split measures instruments heard, rendered anew; both are reported beside it. The
    winner's leave-soundfont-out predictions set its threshold (how sure it must be, on a soundfont it has
    not heard, to be right `TARGET_PRECISION` of the time) and measure its overconfidence there
    (`temperature_for`).
    """
    names = sorted(set(soundfonts))
    clip_fold = stratified_folds(y, clips, FOLDS, seed)
    splits = {"leave_soundfont_out": soundfont_splits(soundfonts, clip_fold),
              "leave_program_out": fold_splits(program_folds([FAMILIES[c] for c in y], programs)),
              "stratified": fold_splits(clip_fold)}
    if len(names) < 2:
        del splits["leave_soundfont_out"]
    criterion = next(iter(splits))
    scores, probs = {}, {}
    for candidate in candidates():
        probs[candidate] = {kind: out_of_fold(features, y, s, candidate, seed) for kind, s in splits.items()}
        scores[candidate] = {kind: float((p.argmax(axis=1) == y).mean()) for kind, p in probs[candidate].items()}
        log(f"  {candidate.name:40s} " + "   ".join(f"{k.replace('_', ' ')} {v:.3f}"
                                                    for k, v in scores[candidate].items()))

    def score(c: Candidate) -> float:
        return scores[c][criterion] - (MLP_MARGIN if c.hidden else 0.0)

    best = max(scores, key=score)  # max keeps the first of equals
    chosen = probs[best]
    per_family = {f: {kind: float((p.argmax(axis=1)[y == i] == i).mean()) for kind, p in chosen.items()}
                  for i, f in enumerate(FAMILIES)}
    report = {"candidates": {c.name: v for c, v in scores.items()}, "criterion": criterion, "chosen": best.name,
              "per_family": per_family, "threshold": threshold_for(chosen[criterion], y),
              f"temperature_{criterion}": temperature_for(chosen[criterion], y),
              **{f"confidence_{kind}": confidence_table(p, y) for kind, p in chosen.items()}}
    if "leave_soundfont_out" in chosen:
        right = chosen["leave_soundfont_out"].argmax(axis=1) == y
        report["leave_soundfont_out_by_soundfont"] = {
            name: {"all": float(right[soundfonts == name].mean()),
                   **{f: float(right[(soundfonts == name) & (y == i)].mean()) for i, f in enumerate(FAMILIES)}}
            for name in names}
    return best, report


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train_instrument_head", description=__doc__)
    parser.add_argument("--out", required=True, help="the head's safetensors")
    parser.add_argument("--soundfonts", nargs="+", default=list(SOUNDFONTS),
                        help="General MIDI .sf2/.sf3 files; each renders every clip")
    parser.add_argument("--clips", type=int, default=490,
                        help="clips drawn as the corpus draws them (a multiple of 7 balances the families)")
    parser.add_argument("--free-clips", type=int, default=210,
                        help="more clips, with the accompaniment drawn apart from the lead's family")
    parser.add_argument("--seconds", type=float, default=15.0, help="clip length")
    parser.add_argument("--seed", type=int, default=0, help="corpus and fitting seed")
    parser.add_argument("--cache", default="/tmp/instrument-head", help="rendered clips and their features")
    parser.add_argument("--workers", type=int, default=2, help="parallel FluidSynth processes")
    parser.add_argument("--report", help="also write the validation report here (JSON)")
    args = parser.parse_args(argv)
    soundfonts = {Path(sf).name: find_soundfont(sf) for sf in args.soundfonts}
    if held := sorted(name for name in soundfonts if Path(name).stem in HELD_OUT_SOUNDFONTS):
        parser.error(f"{', '.join(held)}: the held-out set's soundfont or one built from its samples")
    torch.set_num_threads(1)
    started = time.monotonic()
    cache = Path(args.cache) / "synth"
    records = [r for sf in soundfonts
               for r in (training_records(args.clips, args.seed, args.seconds, False, sf)
                         + training_records(args.free_clips, args.seed + 1, args.seconds, True, sf))]
    render_all(records, cache, soundfonts, args.workers)
    rendered = time.monotonic()
    analyzer = Analyzer(MODELS_DIR)
    features = cached_features([cache / r["file"] for r in records], [record_key(r) for r in records], cache,
                               analyzer)
    analysed = time.monotonic()
    y = np.array([FAMILIES.index(r["attributes"]["instrument_family"]) for r in records])
    say(f"validation over {len(y)} renderings of {len(y) // len(soundfonts)} clips by {len(soundfonts)} "
        f"soundfonts (leave-soundfont-out, {FOLDS} leave-program-out folds, {FOLDS} stratified folds):")
    best, report = select(features, y, [r["attributes"]["lead_program"] for r in records],
                          np.array([r["id"] for r in records]), np.array([r["soundfont"] for r in records]),
                          args.seed)
    tensors = fit(*examples(features, y, np.arange(len(y))), best, args.seed)
    fitted = time.monotonic()
    train_acc = float((InstrumentHead(tensors).matrix(features.embedding).argmax(axis=1) == y).mean())
    report.update({"renderings": len(y), "soundfonts": list(soundfonts), "seconds": args.seconds,
                   "seed": args.seed, "training_accuracy": train_acc, "features_version": features_version(analyzer),
                   "times_s": {"render": round(rendered - started, 1), "analyse": round(analysed - rendered, 1),
                               "select_and_fit": round(fitted - analysed, 1)}})
    validation = {k: round(v, 4) for k, v in report["candidates"][best.name].items()}
    metadata = {"families": json.dumps(list(FAMILIES)), "revision": HEAD_REVISION, "model": best.name,
                "threshold": str(report["threshold"]),
                "features_version": features_version(analyzer),
                "trained_on": f"{args.clips + args.free_clips} training/synth clips of {args.seconds:g} s, each "
                              f"rendered by {', '.join(Path(sf).stem for sf in soundfonts)}: {args.clips} as "
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
