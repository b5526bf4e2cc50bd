"""The lead instrument's family from a track's musicnn embedding: a small classifier on top of the taggers.

Why: musicnn's tags (MagnaTagATune, Million Song Dataset vocabularies) have no word for brass, organ or
most woodwinds and name General MIDI instruments poorly, yet its penultimate layers hear timbre. This head
reads `TrackAnalysis.embedding` (model/analysis.py: both taggers' penultimate layers, averaged over the
patches, 400 values) and gives a probability per family in `FAMILIES`.

How it was made (`training/train_instrument_head.py`): one linear layer on the standardised embedding
(L2 1e-3), fitted on every 3-s patch of 2,100 clips of the training generator (`training/synth`, the
FluidR3_GM soundfont, 15 s each, 300 per family), chosen among linear heads on either tagger's half,
per-clip or per-patch examples, and small MLPs by cross-validation that holds out whole instruments.
Its accuracy on validation and on a held-out set (another composer, another soundfont), beside musicnn's
own tags and chance, is in docs/benchmarks.md ("Instrument family head"); it does not carry well to an
unheard soundfont (strings are the weakest).

Trust: it knows only synthetic General MIDI renderings, so on real recordings believe it only when it is
confident. `InstrumentHead.threshold` (stored in the file) is the confidence chosen on training-generator
clips before the held-out run; `family()` says None below it, which a caption should take as "not sure"
and leave the instrument out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FAMILIES = ("piano", "strings", "brass", "woodwind", "guitar", "organ", "synth")
HEAD_REVISION = "1"  # bump when the head's inputs, form or training change, so older descriptions can be redone
WEIGHTS = Path(__file__).parent / "weights" / "instrument-head.safetensors"
EMBEDDING_SIZE = 400


class InstrumentHead:
    """(embedding - mean) / scale, then linear layers with ReLU between them, then a softmax over families."""

    def __init__(self, tensors: dict[str, np.ndarray], threshold: float = 0.0, revision: str = HEAD_REVISION):
        self.mean, self.scale = tensors["mean"], tensors["scale"]
        depth = sum(name.startswith("weight") for name in tensors)
        self.layers = [(tensors[f"weight{k}"], tensors[f"bias{k}"]) for k in range(depth)]
        if self.mean.shape != (EMBEDDING_SIZE,) or self.layers[-1][0].shape[0] != len(FAMILIES):
            raise ValueError(f"a head maps {EMBEDDING_SIZE} values to {len(FAMILIES)} families, this one "
                             f"{self.mean.shape} to {self.layers[-1][0].shape[0]}")
        self.threshold = threshold
        self.revision = revision

    @classmethod
    def from_file(cls, path: str | Path = WEIGHTS) -> InstrumentHead:
        """A head saved by the trainer; its metadata must name the same families in the same order."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        families = tuple(json.loads(metadata.get("families", "[]")))
        if families != FAMILIES:
            raise ValueError(f"{path}: the head's families {families} are not {FAMILIES}")
        return cls(load_file(str(path)), float(metadata.get("threshold", 0.0)), metadata.get("revision", ""))

    def matrix(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 7) probabilities for (n, 400) embeddings (rows sum to 1)."""
        h = (np.atleast_2d(np.asarray(embeddings, dtype=np.float32)) - self.mean) / self.scale
        for k, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T + bias
            if k < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        h = np.exp(h - h.max(axis=1, keepdims=True))
        return h / h.sum(axis=1, keepdims=True)

    def probabilities(self, embedding: np.ndarray) -> dict[str, float] | list[dict[str, float]]:
        """{family: probability} for one 400-d embedding; a list of them for a batch (n, 400)."""
        rows = [{f: float(p) for f, p in zip(FAMILIES, row, strict=True)} for row in self.matrix(embedding)]
        return rows[0] if np.ndim(embedding) == 1 else rows

    def family(self, embedding: np.ndarray) -> tuple[str, float] | None:
        """The likeliest family and its probability when it reaches the threshold, else None (not sure)."""
        probs = self.matrix(embedding)[0]
        best = int(probs.argmax())
        return (FAMILIES[best], float(probs[best])) if probs[best] >= self.threshold else None
