"""The scan's analysis stage: musicnn tags, tempo and key stored per track, versioned, redone when stale."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sqlalchemy import text

from catalog.store import Catalog
from indexer.indexing import Models
from indexer.pipeline import scan, stored_analyses
from indexer.writer import AUTO_TAG_MIN
from model.analysis import TrackAnalysis, analysis_version
from model.describe import HEAD_TAGGER
from model.instrument_head import FAMILIES
from model.musilingo import MusiLingo
from search import SearchEngine


def _rows(settings, query: str) -> list:
    with Catalog(settings.catalog_path).read() as conn:
        return conn.execute(text(query)).all()


@pytest.fixture
def counted(monkeypatch, indexer_models):
    """How many waves the encoder and the analyzer are each given."""
    seen = {"encode": 0, "analyse": 0}
    encoder, analyzer = indexer_models.encoder, indexer_models.analyzer
    encode, analyse = encoder.encode, analyzer.analyze

    def counting_encode(batch):
        seen["encode"] += len(batch)
        return encode(batch)

    def counting_analyse(batch):
        seen["analyse"] += len(batch)
        return analyse(batch)

    monkeypatch.setattr(encoder, "encode", counting_encode)
    monkeypatch.setattr(analyzer, "analyze", counting_analyse)
    return seen


def test_scan_stores_the_analysis_and_writes_lite_captions_from_it(audio_library, indexer_settings, indexer_models,
                                                                  text_embedder):
    lib = audio_library
    for i, name in enumerate(("01 A.flac", "02 B.mp3", "03 C.ogg")):
        lib(f"Artist/Album/{name}", seconds=7.0, seed=i)
    summary = scan([str(lib.root)], indexer_settings, indexer_models.profile, models=indexer_models, greedy=True)
    assert len(summary.indexed) == 3 and summary.failed == [] and summary.batch_sizes["analysis"]["start"] >= 1
    rows = _rows(indexer_settings, "SELECT t.id, t.bpm, t.tonic, t.mode, t.analysis_version, c.text, "
                                   "a.taggers, a.patch_seconds, a.probabilities, a.embedding "
                                   "FROM tracks t JOIN captions c ON c.track_id = t.id "
                                   "JOIN analyses a ON a.track_id = t.id ORDER BY t.id")
    assert len(rows) == 3
    for tid, bpm, tonic, mode, version, caption, taggers, patch_seconds, probs, embedding in rows:
        assert bpm > 0 and tonic in ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
        assert mode in ("major", "minor") and version == analysis_version()
        assert json.loads(taggers) == ["MTT_musicnn", "MSD_musicnn"] and json.loads(patch_seconds) == [0.0, 2.992]
        assert np.frombuffer(probs, dtype=np.float16).shape == (2 * 100,)
        assert np.frombuffer(embedding, dtype=np.float32).shape == (400,)
        stored = TrackAnalysis.from_record(dict(analysis_version=version, taggers=taggers, patch_seconds=patch_seconds,
                                                probabilities=probs, embedding=embedding, bpm=bpm, tonic=tonic,
                                                mode=mode))
        # the lite caption is what the stored analysis says, including its key and tempo
        assert caption == stored.describe().caption() and f"in {tonic} {mode}" in caption
        tags = _rows(indexer_settings, f"SELECT tagger, tag, probability FROM auto_tags WHERE track_id = {tid}")
        assert tags and all(p >= AUTO_TAG_MIN for _, _, p in tags)
        expected = {(t, tag) for t, probs in stored.all_tags().items() for tag, p in probs.items()
                    if p >= AUTO_TAG_MIN + 1e-3}  # the taggers' tags and the instrument head's families
        assert expected <= {(t, tag) for t, tag, _ in tags}
        families = {tag: p for t, tag, p in tags if t == HEAD_TAGGER}
        assert set(families) <= set(FAMILIES) and max(families.values()) >= 1 / len(FAMILIES)
    # a family word finds a track by the head's auto-tag, and says so with its probability
    tid, family, p = _rows(indexer_settings, f"SELECT track_id, tag, probability FROM auto_tags WHERE tagger = "
                                             f"'{HEAD_TAGGER}' ORDER BY probability DESC LIMIT 1")[0]
    hit = next(h for h in SearchEngine(indexer_settings, text_embedder=text_embedder).search(family).hits
               if h.track_id == tid)
    assert f'auto-tag "{family}" ({HEAD_TAGGER} {p:.2f})' in hit.reasons, hit.reasons


def test_a_stale_analysis_is_redone_without_encoding_again(audio_library, indexer_settings, indexer_models, counted):
    lib = audio_library
    for i in range(3):
        lib(f"A/B/{i:02d} T.flac", seconds=4.0, seed=10 + i)
    first = scan([str(lib.root)], indexer_settings, indexer_models.profile, models=indexer_models, greedy=True)
    assert counted == {"encode": 3, "analyse": 3} and first.reanalysed == []
    tokens = _rows(indexer_settings, "SELECT track_id, tokens FROM embeddings ORDER BY track_id")
    # an older analyzer (or a catalog from before the analysis): the next scan analyses those tracks again
    with Catalog(indexer_settings.catalog_path).write() as conn:
        conn.execute(text("UPDATE tracks SET analysis_version = 'old', bpm = NULL WHERE id IN "
                          "(SELECT min(id) FROM tracks)"))
        conn.execute(text("UPDATE tracks SET analysis_version = NULL, tonic = NULL WHERE id = "
                          "(SELECT max(id) FROM tracks)"))
        conn.execute(text("DELETE FROM auto_tags WHERE track_id = (SELECT max(id) FROM tracks)"))
        conn.execute(text("UPDATE captions SET text = 'stale caption'"))
    counted.update(encode=0, analyse=0)
    second = scan([str(lib.root)], indexer_settings, indexer_models.profile, models=indexer_models, greedy=True)
    ids = [r[0] for r in _rows(indexer_settings, "SELECT id FROM tracks ORDER BY id")]
    assert sorted(second.reanalysed) == [ids[0], ids[-1]] and second.indexed == []
    assert counted == {"encode": 0, "analyse": 2}
    assert _rows(indexer_settings, "SELECT track_id, tokens FROM embeddings ORDER BY track_id") == tokens
    assert _rows(indexer_settings, "SELECT count(*) FROM tracks WHERE analysis_version = "
                                   f"'{analysis_version()}' AND bpm > 0 AND tonic IS NOT NULL")[0][0] == 3
    assert _rows(indexer_settings, f"SELECT count(*) FROM auto_tags WHERE track_id = {ids[-1]}")[0][0] > 0
    # the lite captions of re-analysed tracks were written anew; the untouched track keeps its (stale) one
    captions = dict(_rows(indexer_settings, "SELECT track_id, text FROM captions"))
    assert captions[ids[0]] != "stale caption" and captions[ids[-1]] != "stale caption"
    assert captions[ids[1]] == "stale caption"
    counted.update(encode=0, analyse=0)
    third = scan([str(lib.root)], indexer_settings, indexer_models.profile, models=indexer_models, greedy=True)
    assert third.reanalysed == [] and counted == {"encode": 0, "analyse": 0}


def test_model_captions_stay_the_models_and_the_analysis_is_stored_beside(
        audio_library, indexer_settings, indexer_models, lite_model, text_embedder):
    """The `model` caption source (the musilingo profile's): the caption is MusiLingo's own, untouched by the
    analysis; the text a track is found by adds what the analysis heard."""
    profile = replace(lite_model.profile, caption_source="model")
    musilingo = MusiLingo(profile, lite_model.llm, lite_model.tokenizer, lite_model.encoder.dim,
                          lite_model.adapter)
    models = Models(profile, indexer_settings, encoder=indexer_models.encoder, musilingo=musilingo,
                    text=text_embedder, analyzer=indexer_models.analyzer)
    lib = audio_library
    path = lib("A/B/01 T.wav", seconds=4.0, seed=3)
    scan([str(lib.root)], indexer_settings, profile, models=models, greedy=True)
    (tid, caption, vector), = _rows(indexer_settings, "SELECT track_id, text, text_vector FROM captions")
    n_tokens, dim, tokens = _rows(indexer_settings, "SELECT n_tokens, dim, tokens FROM embeddings")[0]
    audio = torch.from_numpy(np.frombuffer(tokens, dtype=np.float16).reshape(n_tokens, dim).astype(np.float32))
    assert caption == musilingo.caption([audio], greedy=True)[0].text
    with Catalog(indexer_settings.catalog_path).read() as conn:
        analysis = stored_analyses(conn, [tid])[tid]
    said = analysis.describe().caption()
    assert said not in caption and analysis.bpm > 0
    expected = text_embedder.encode([f"{caption} {said}"])[0]
    np.testing.assert_allclose(np.frombuffer(vector, dtype=np.float32), expected, atol=1e-5)
    assert path.exists()
