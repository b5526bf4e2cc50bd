"""What the offline default hears in a track: the tags of both musicnn taggers, tempo and key.

musicnn (model/musicnn.py) was trained on real recordings (MagnaTagATune, the Million Song Dataset), so
its tags hold on music outside our synthetic corpus. A track is tagged from at most `max_patches` 3-s
patches (`model.musicnn.patch_starts`: every patch of a track up to 18 s, else MAX_PATCHES spread over it);
tempo and key (model/tempo_key.py) are estimated from the whole decoded audio. `Analyzer.analyze` takes
several tracks at a time (one patch per forward on a CPU, all of them at once on a GPU).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from model.answers import Heard
from model.describe import HEAD_TAGGER, Description
from model.instrument_head import WEIGHTS as HEAD_WEIGHTS
from model.instrument_head import InstrumentHead
from model.musicnn import HOP, SAMPLE_RATE, Musicnn, load_config, patch_spectrograms
from model.tempo_key import TEMPO_KEY_VERSION, estimate_key, estimate_tempo

TAGGERS = ("MTT_musicnn", "MSD_musicnn")
MAX_PATCHES = 6  # per tagger and track, spread over it: what fewer cost in accuracy is in docs/benchmarks.md, "Scan throughput"
ANALYSIS_REVISION = 2  # bump when this module changes what it computes or what a catalog stores of it


def analysis_version(taggers: tuple[str, ...] = TAGGERS, max_patches: int = MAX_PATCHES) -> str:
    """A short stable id of what produced an analysis; a catalog re-analyses tracks stored under another."""
    head = instrument_head()
    payload = (f"{ANALYSIS_REVISION}|{','.join(taggers)}|{max_patches}|{TEMPO_KEY_VERSION}|{musicnn_version()}|"
               f"{head.revision if head else 'no head'}")
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


@cache
def instrument_head() -> InstrumentHead | None:
    """The shipped instrument-family head (model/instrument_head.py), or None where its weights are absent."""
    return InstrumentHead.from_file() if HEAD_WEIGHTS.is_file() else None


def musicnn_version() -> str:
    try:
        return metadata.version("musicnn")
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class TrackAnalysis:
    """One track's analysis. `probabilities[tagger]` is (patches, labels): the tags over time."""

    seconds: float
    patch_seconds: list[float]
    labels: dict[str, tuple[str, ...]]
    probabilities: dict[str, np.ndarray]
    embedding: np.ndarray  # the taggers' penultimate layers, averaged over patches, concatenated
    bpm: float
    key: str
    mode: str
    version: str
    extra: dict = field(default_factory=dict)

    def tags(self, tagger: str) -> dict[str, float]:
        """{tag: probability} for the whole track: the mean over its patches, as the original summarises."""
        mean = self.probabilities[tagger].mean(axis=0)
        return {label: float(p) for label, p in zip(self.labels[tagger], mean, strict=True)}

    def all_tags(self) -> dict[str, dict[str, float]]:
        """Each tagger's {tag: probability}, and the instrument head's {family: probability} under HEAD_TAGGER."""
        tags = {tagger: self.tags(tagger) for tagger in self.probabilities}
        head = instrument_head()
        if head is not None and self.embedding.size:
            tags[HEAD_TAGGER] = head.probabilities(self.embedding)
        return tags

    def describe(self) -> Description:
        """The analysis in words (model/describe.py): the caption of the `analysis` caption source, the chat context."""
        return self.heard().description

    def heard(self) -> Heard:
        """The analysis as chat uses it (model/answers.py): told beside the audio tokens, weighed into answers."""
        return Heard(self.all_tags(), self.bpm, self.key, self.mode)

    def top_tags(self, tagger: str, n: int = 5) -> list[tuple[str, float]]:
        return sorted(self.tags(tagger).items(), key=lambda kv: -kv[1])[:n]

    def matrix(self) -> np.ndarray:
        """(patches, all labels) float16: each tagger's probabilities side by side, in `probabilities` order;
        the catalog's and the Ray shards' form (with `patch_seconds`, the tagger names and the numbers)."""
        return np.concatenate(list(self.probabilities.values()), axis=1).astype(np.float16)

    @classmethod
    def from_matrix(cls, taggers: list[str], matrix: np.ndarray, patch_seconds: list[float], embedding: np.ndarray,
                    bpm: float, key: str, mode: str, version: str, seconds: float = 0.0) -> TrackAnalysis:
        """The inverse of `matrix`: labels come from the taggers' configs (model/taggers/NAME.json)."""
        labels = {name: load_config(name).labels for name in taggers}
        bounds = np.cumsum([0] + [len(v) for v in labels.values()])
        if matrix.shape[1] != bounds[-1]:
            raise ValueError(f"{matrix.shape[1]} probabilities per patch, the taggers {taggers} have {bounds[-1]}")
        probabilities = {name: matrix[:, bounds[i]:bounds[i + 1]].astype(np.float32) for i, name in enumerate(taggers)}
        return cls(seconds, list(patch_seconds), labels, probabilities, np.asarray(embedding, np.float32), bpm, key,
                   mode, version)

    def to_record(self) -> dict:
        """The analysis as the catalog stores it (`analyses` row + track columns) and Ray shards carry it."""
        return {"analysis_version": self.version, "taggers": json.dumps(list(self.probabilities)),
                "patch_seconds": json.dumps([round(s, 3) for s in self.patch_seconds]),
                "probabilities": self.matrix().tobytes(), "embedding": self.embedding.astype(np.float32).tobytes(),
                "bpm": float(self.bpm), "tonic": self.key or None, "mode": self.mode or None}

    @classmethod
    def from_record(cls, record: dict) -> TrackAnalysis:
        taggers = json.loads(record["taggers"])
        width = sum(len(load_config(name).labels) for name in taggers)
        matrix = np.frombuffer(record["probabilities"], dtype=np.float16).reshape(-1, width)
        return cls.from_matrix(taggers, matrix, json.loads(record["patch_seconds"]),
                               np.frombuffer(record["embedding"], dtype=np.float32), record["bpm"] or 0.0,
                               record["tonic"] or "", record["mode"] or "", record["analysis_version"])

    def to_json(self) -> dict:
        return {
            "tags": {t: {k: round(v, 4) for k, v in self.tags(t).items()} for t in self.probabilities},
            "bpm": round(self.bpm, 1), "key": self.key, "mode": self.mode,
            "audio_seconds": round(self.seconds, 3), "patches": len(self.patch_seconds),
            "patch_seconds": [round(s, 2) for s in self.patch_seconds],
            "versions": {"analysis": self.version, "musicnn": musicnn_version(), "tempo_key": TEMPO_KEY_VERSION},
        }


class Analyzer:
    """Both taggers loaded once; `analyze` many tracks at a time."""

    def __init__(self, cache_dir: str | Path, device: str = "cpu", taggers: tuple[str, ...] = TAGGERS,
                 max_patches: int = MAX_PATCHES, patch_batch: int | None = None):
        self.device = device
        self.max_patches = max_patches
        # On a CPU one patch per forward is fastest (larger batches cost more per patch: the front-end's maps
        # leave the cache), on one OpenMP thread (a second helped or hurt by turns on a shared 2-core box,
        # and a scan decodes on the other core); a GPU wants all patches at once. Figures: docs/benchmarks.md,
        # "musicnn tagger".
        self.patch_batch = patch_batch or (1 if device == "cpu" else 256)
        self._threads = ThreadpoolController().select(user_api="openmp") if device == "cpu" else None
        self.models = {name: Musicnn.from_pretrained(name, cache_dir).prune().to(device) for name in taggers}
        self.version = analysis_version(taggers, max_patches)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def analyze(self, waves: list[np.ndarray]) -> list[TrackAnalysis]:
        """Analyse 16 kHz mono tracks; the patches of all of them go through each tagger in one batch."""
        cut = [patch_spectrograms(w, self.max_patches) for w in waves]
        starts = [first for first, _ in cut]
        batch = np.concatenate([spectrograms for _, spectrograms in cut])
        bounds = np.cumsum([0] + [len(st) for st in starts])
        outputs = {}
        with torch.inference_mode(), (self._threads.limit(limits=1) if self._threads else nullcontext()):
            for name, model in self.models.items():
                probs, embeds = [], []
                for start in range(0, len(batch), self.patch_batch):
                    out = model(torch.from_numpy(batch[start:start + self.patch_batch]).to(self.device))
                    probs.append(out.probabilities.float().cpu().numpy())
                    embeds.append(out.penultimate.float().cpu().numpy())
                outputs[name] = (np.concatenate(probs), np.concatenate(embeds))
        results = []
        for i, wave in enumerate(waves):
            lo, hi = bounds[i], bounds[i + 1]
            key, mode = estimate_key(wave, SAMPLE_RATE)
            results.append(TrackAnalysis(
                seconds=len(wave) / SAMPLE_RATE,
                patch_seconds=[s * HOP / SAMPLE_RATE for s in starts[i]],
                labels={name: model.labels for name, model in self.models.items()},
                probabilities={name: outputs[name][0][lo:hi] for name in self.models},
                embedding=np.concatenate([outputs[name][1][lo:hi].mean(axis=0) for name in self.models]),
                bpm=estimate_tempo(wave, SAMPLE_RATE), key=key, mode=mode, version=self.version))
        return results


def analyze_files(analyzer: Analyzer, files: list[str], max_seconds: float) -> Iterator[
        tuple[str, TrackAnalysis | None, str | None]]:
    """(file, analysis, None) for each file, in order; (file, None, reason) for one that does not decode."""
    from model.audio import AudioDecodeError, decode_audio

    for name in files:
        try:
            wave = decode_audio(name, analyzer.sample_rate, max_seconds)
        except AudioDecodeError as exc:
            yield name, None, str(exc)
            continue
        yield name, analyzer.analyze([wave])[0], None
