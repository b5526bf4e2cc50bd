"""model/instrument_head.py with the shipped weights: the file's form, the arithmetic, and that it tells
rendered instruments of different families apart through the real musicnn analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from model.instrument_head import EMBEDDING_SIZE, FAMILIES, HEAD_REVISION, WEIGHTS, InstrumentHead
from tests.conftest import MODELS_DIR
from training.synth import compose_midi, render_midi, sample_spec, unavailable_reason
from training.synth.spec import FAMILIES as SYNTH_FAMILIES
from training.synth.spec import clip_rng
from training.train_instrument_head import patch_features

NO_SYNTH = unavailable_reason()
needs_synth = pytest.mark.skipif(NO_SYNTH is not None, reason=f"cannot render MIDI here: {NO_SYNTH}")


@pytest.fixture(scope="module")
def head() -> InstrumentHead:
    return InstrumentHead.from_file()


def test_shipped_file_is_small_and_names_its_families() -> None:
    assert WEIGHTS.stat().st_size < 32_000
    with safe_open(str(WEIGHTS), framework="numpy") as f:
        metadata = f.metadata()
    assert tuple(json.loads(metadata["families"])) == FAMILIES == SYNTH_FAMILIES
    assert metadata["revision"] == HEAD_REVISION
    assert 0.0 < float(metadata["threshold"]) < 1.0
    assert "FluidR3_GM" in metadata["trained_on"]


def test_probabilities_are_normalised_deterministic_and_batchable(head: InstrumentHead) -> None:
    rng = np.random.default_rng(0)
    batch = (head.mean + head.scale * rng.standard_normal((5, EMBEDDING_SIZE))).astype(np.float32)
    matrix = head.matrix(batch)
    assert matrix.shape == (5, len(FAMILIES))
    assert np.all(matrix >= 0) and np.allclose(matrix.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(matrix, head.matrix(batch.copy()))
    one = head.probabilities(batch[2])
    assert list(one) == list(FAMILIES) and one == pytest.approx(head.probabilities(batch)[2], abs=1e-6)
    assert abs(sum(one.values()) - 1.0) < 1e-5
    assert len(head.probabilities(batch)) == 5
    family, p = max(one.items(), key=lambda kv: kv[1])
    assert head.family(batch[2]) == ((family, p) if p >= head.threshold else None)


def test_a_file_with_other_families_is_refused(tmp_path) -> None:
    path = tmp_path / "head.safetensors"
    save_file(load_file(str(WEIGHTS)), str(path), metadata={"families": json.dumps(list(reversed(FAMILIES)))})
    with pytest.raises(ValueError, match="families"):
        InstrumentHead.from_file(path)


@needs_synth
def test_head_tells_rendered_families_apart(head: InstrumentHead) -> None:
    """A solo piano and a solo brass line, not in the training corpus (another seed): each clip's own
    family is its likeliest, by the full analysis path (render, resample, musicnn, head)."""
    import soxr

    from model.analysis import Analyzer

    waves = {}
    for i, family in enumerate(("piano", "brass")):
        spec = sample_spec(clip_rng(4242, i), seconds=6.0, instrument_family=family, drums="none",
                           texture="solo", register="mid")
        audio = render_midi(compose_midi(spec), seconds=spec.seconds, sample_rate=24000)
        waves[family] = soxr.resample(audio, 24000, 16000).astype(np.float32)
    analyzer = Analyzer(MODELS_DIR)
    analyses = analyzer.analyze(list(waves.values()))
    # the trainer learns from per-patch embeddings: their mean must be exactly what the catalog stores
    np.testing.assert_allclose(patch_features(analyzer, waves["piano"])[0].mean(axis=0), analyses[0].embedding,
                               atol=1e-6)
    probs = {family: head.probabilities(a.embedding) for family, a in zip(waves, analyses, strict=True)}
    for family, p in probs.items():
        assert max(p, key=p.get) == family, p
    assert probs["piano"]["piano"] - probs["brass"]["piano"] > 0.3
    assert probs["brass"]["brass"] - probs["piano"]["brass"] > 0.3
