"""Scans of real audio files with the real lite models (fresh adapter, greedy, short captions)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import func, select, text

from catalog.store import Catalog, captions, embeddings, errors, tracks
from catalog.vectors import index_ids, index_path, load_index, manifest_path
from indexer.cli import main as cli
from indexer.indexing import Models
from indexer.pipeline import scan
from model.encoder import Encoder
from model.musilingo import MusiLingo
from tests.conftest import write_audio


@pytest.fixture
def encoded(monkeypatch, indexer_models):
    """Every waveform the real encoder is given, counted on the shared Encoder object."""
    waves: list[int] = []
    encoder = indexer_models.encoder
    real = encoder.encode

    def counting(batch):
        waves.extend(len(w) for w in batch)
        return real(batch)

    monkeypatch.setattr(encoder, "encode", counting)
    return waves


def _rows(settings, query: str) -> list:
    with Catalog(settings.catalog_path).read() as conn:
        return conn.execute(text(query)).all()


def _assert_consistent(settings) -> list[int]:
    """One row per path, tokens and one caption per track, FAISS ids == DuckDB done ids; returns those ids."""
    done = [r[0] for r in _rows(settings, "SELECT id FROM tracks WHERE status = 'done' ORDER BY id")]
    assert _rows(settings, "SELECT count(*), count(DISTINCT path) FROM tracks")[0] == (len(done), len(done))
    assert _rows(settings, "SELECT count(*), count(DISTINCT track_id) FROM embeddings")[0] == (len(done), len(done))
    assert _rows(settings, "SELECT count(*), count(DISTINCT track_id) FROM captions")[0] == (len(done), len(done))
    for name in ("audio", "text"):
        index, _ = load_index(settings.data_dir, name, gpu=False)
        assert sorted(index_ids(index).tolist()) == done
    return done


def test_rescan_does_exactly_the_work_that_changed(audio_library, indexer_settings, indexer_models, encoded):
    lib = audio_library
    lib("Alpha/First/01 Keep.flac", seed=1, tags={"title": "Keeper", "artist": "Alpha Band"})
    modify = lib("Alpha/First/02 Modify.mp3", seed=2)
    move = lib("Alpha/First/03 Move.ogg", seed=3)
    gone = lib("Beta/Second/01 Delete.m4a", seed=4)
    corrupt = lib("Beta/Second/02 Corrupt.wav", seed=5)
    lib("Beta/Second/03 Other.opus", seed=6)
    run = dict(models=indexer_models, greedy=True)

    first = scan([str(lib.root)], indexer_settings, indexer_models.profile, **run)
    assert first.state == "finished" and first.failed == [] and len(first.indexed) == 6
    assert len(encoded) == 6
    stages = ("decode", "analysis", "encode", "caption", "write")  # where the time went, the decoders' included
    assert all(first.stage_seconds[stage] > 0 for stage in stages), first.stage_seconds
    ids = {os.path.basename(p): i for i, p in _rows(indexer_settings, "SELECT id, path FROM tracks")}
    assert _assert_consistent(indexer_settings) == sorted(ids.values())
    title, artist, album = _rows(indexer_settings, f"SELECT title, artist, album FROM tracks WHERE id = {ids['01 Keep.flac']}")[0]
    assert (title, artist, album) == ("Keeper", "Alpha Band", "First")
    n_tokens, dim = _rows(indexer_settings, "SELECT min(n_tokens), min(dim) FROM embeddings")[0]
    assert n_tokens >= 1 and dim == indexer_models.encoder.dim
    before = {r[0]: r[1:] for r in _rows(indexer_settings, "SELECT track_id, tokens, vector FROM embeddings")}
    stamped = dict(_rows(indexer_settings, "SELECT id, indexed_at FROM tracks"))

    write_audio(modify, seed=22)
    moved_to = lib.root / "Gamma" / "Moved" / "03 Move.ogg"
    moved_to.parent.mkdir(parents=True)
    os.rename(move, moved_to)
    os.remove(gone)
    added = lib("Beta/Second/04 New.aiff", seed=7)
    corrupt.write_bytes(os.urandom(5000))
    encoded.clear()

    second = scan([str(lib.root)], indexer_settings, indexer_models.profile, **run)
    new_id = max(second.indexed)
    assert sorted(second.indexed) == sorted([ids["02 Modify.mp3"], new_id]) and new_id not in ids.values()
    assert second.moved == [ids["03 Move.ogg"]]
    assert sorted(second.removed) == sorted([ids["01 Delete.m4a"], ids["02 Corrupt.wav"]])
    assert [(f["path"], f["stage"]) for f in second.failed] == [(str(corrupt), "decode")]
    assert second.unchanged == 2 and second.recaptioned == []
    assert len(encoded) == 2  # the modified and the added file, nothing else
    done = _assert_consistent(indexer_settings)
    assert len(done) == 5
    path, artist, album = _rows(indexer_settings, f"SELECT path, artist, album FROM tracks WHERE id = {ids['03 Move.ogg']}")[0]
    assert (path, artist, album) == (str(moved_to), "Gamma", "Moved")
    after = {r[0]: r[1:] for r in _rows(indexer_settings, "SELECT track_id, tokens, vector FROM embeddings")}
    for name in ("01 Keep.flac", "03 Move.ogg", "03 Other.opus"):
        assert after[ids[name]] == before[ids[name]]  # moved or unchanged: stored data untouched
        assert dict(_rows(indexer_settings, "SELECT id, indexed_at FROM tracks"))[ids[name]] == stamped[ids[name]]
    assert after[ids["02 Modify.mp3"]] != before[ids["02 Modify.mp3"]]
    assert _rows(indexer_settings, f"SELECT path FROM tracks WHERE id = {new_id}")[0][0] == str(added)
    (reason,) = _rows(indexer_settings, "SELECT reason FROM errors")[0]
    assert "cannot open as media" in reason or "decode" in reason

    encoded.clear()
    third = scan([str(lib.root)], indexer_settings, indexer_models.profile, **run)
    assert (third.indexed, third.moved, third.removed, third.failed) == ([], [], [], [])
    assert third.unchanged == 5 and third.skipped_failed == 1 and encoded == []

    write_audio(corrupt, seed=8)  # fixed: retried because it changed
    fourth = scan([str(lib.root)], indexer_settings, indexer_models.profile, **run)
    assert len(fourth.indexed) == 1 and fourth.failed == []
    assert _rows(indexer_settings, "SELECT count(*) FROM errors")[0][0] == 0
    assert len(_assert_consistent(indexer_settings)) == 6


def test_changed_profile_redoes_only_what_is_stale(audio_library, indexer_settings, indexer_models, lite_model,
                                                   text_embedder, encoded):
    for i, suffix in enumerate((".flac", ".wav", ".mp3")):
        audio_library(f"Artist/Album/0{i + 1} Track{suffix}", seconds=2.0, seed=10 + i)
    roots = [str(audio_library.root)]
    first = scan(roots, indexer_settings, indexer_models.profile, models=indexer_models, greedy=True)
    ids = sorted(first.indexed)
    tokens_before = _rows(indexer_settings, "SELECT track_id, tokens FROM embeddings ORDER BY track_id")

    # A new prompt: captions are stale, audio tokens are not.
    prompt = replace(lite_model.profile, caption_instruction="Describe this music in a few words.")
    llm = MusiLingo(prompt, lite_model.llm, lite_model.tokenizer, lite_model.encoder.dim, adapter=lite_model.adapter)
    models = Models(prompt, indexer_settings, encoder=lite_model.encoder, musilingo=llm, text=text_embedder)
    encoded.clear()
    second = scan(roots, indexer_settings, prompt, models=models, greedy=True)
    assert sorted(second.recaptioned) == ids and second.indexed == [] and second.audio_seconds == 0
    assert encoded == []
    assert _rows(indexer_settings, "SELECT DISTINCT pipeline_version FROM tracks") == [(prompt.version(),)]
    assert _rows(indexer_settings, "SELECT DISTINCT pipeline_version FROM captions") == [(prompt.version(),)]
    assert _rows(indexer_settings, "SELECT track_id, tokens FROM embeddings ORDER BY track_id") == tokens_before
    _assert_consistent(indexer_settings)

    # --recaption: captions again from the stored tokens, still no audio decoded.
    again = scan(roots, indexer_settings, prompt, models=models, greedy=True, recaption=True)
    assert sorted(again.recaptioned) == ids and encoded == [] and again.audio_seconds == 0

    # A new encoder setting: tokens are stale, so the audio is encoded again, keeping the track ids.
    pooled = replace(prompt, pool_window=100)
    models = Models(pooled, indexer_settings, encoder=Encoder(lite_model.encoder.net, pooled),
                    musilingo=MusiLingo(pooled, lite_model.llm, lite_model.tokenizer, lite_model.encoder.dim,
                                        adapter=lite_model.adapter), text=text_embedder)
    third = scan(roots, indexer_settings, pooled, models=models, greedy=True)
    assert sorted(third.indexed) == ids and third.recaptioned == []
    assert _rows(indexer_settings, "SELECT DISTINCT encoder_version FROM embeddings") == [(pooled.version("encoder"),)]
    assert min(n for (n,) in _rows(indexer_settings, "SELECT n_tokens FROM embeddings")) > 1
    _assert_consistent(indexer_settings)


def test_long_files_are_indexed_from_a_bounded_window(audio_library, indexer_settings, indexer_models):
    audio_library("Live/Set/01 Long Mix.flac", seconds=6.0, seed=3)
    summary = scan([str(audio_library.root)], indexer_settings, indexer_models.profile, models=indexer_models,
                   greedy=True, limit_seconds=2.0)
    assert len(summary.indexed) == 1 and summary.audio_seconds == pytest.approx(2.0, abs=0.01)
    duration, indexed = _rows(indexer_settings, "SELECT duration, indexed_seconds FROM tracks")[0]
    assert duration == pytest.approx(6.0, abs=0.05) and indexed == pytest.approx(2.0, abs=0.01)


def test_bad_files_are_recorded_and_skipped_until_they_change(audio_library, indexer_settings, indexer_models):
    good = audio_library("Fine/Album/01 Good.flac", seconds=2.0, seed=1)
    root = audio_library.root
    (root / "empty.wav").write_bytes(b"")
    (root / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(20000))
    (root / "notes.flac").write_text("these are my notes, not a FLAC file\n" * 50)
    full = write_audio(root / "half.flac", seconds=3.0, seed=2).read_bytes()
    (root / "half.flac").write_bytes(full[: len(full) // 2])  # truncated: what decodes is indexed
    run = dict(models=indexer_models, greedy=True)

    first = scan([str(root)], indexer_settings, indexer_models.profile, **run)
    assert first.state == "finished"
    failed = {os.path.basename(f["path"]): f for f in first.failed}
    assert set(failed) == {"empty.wav", "noise.mp3", "notes.flac"}
    assert failed["empty.wav"]["reason"] == "empty file (0 bytes)"
    assert all(f["stage"] == "decode" and f["reason"] for f in failed.values())
    indexed = dict(_rows(indexer_settings, "SELECT path, indexed_seconds FROM tracks"))
    assert set(indexed) == {str(good), str(root / "half.flac")} and 0 < indexed[str(root / "half.flac")] < 3.0
    stored = {os.path.basename(p): (s, r) for p, s, r in _rows(indexer_settings, "SELECT path, stage, reason FROM errors")}
    assert stored == {k: (f["stage"], f["reason"]) for k, f in failed.items()}

    second = scan([str(root)], indexer_settings, indexer_models.profile, **run)
    assert second.skipped_failed == 3 and second.failed == [] and second.indexed == []

    with open(root / "noise.mp3", "ab") as f:
        f.write(b"more noise")
    third = scan([str(root)], indexer_settings, indexer_models.profile, **run)
    assert [os.path.basename(f["path"]) for f in third.failed] == ["noise.mp3"] and third.skipped_failed == 2


def test_cli_status_forget_verify_and_faiss_repair(audio_library, indexer_settings, indexer_models, capsys):
    a = audio_library("One/Album/01 A.flac", seconds=2.0, seed=1)
    audio_library("One/Album/02 B.ogg", seconds=2.0, seed=2)
    audio_library("Two/Album/01 C.wav", seconds=2.0, seed=3)
    (audio_library.root / "bad.flac").write_bytes(b"junk" * 10)
    summary = scan([str(audio_library.root)], indexer_settings, indexer_models.profile, models=indexer_models,
                   greedy=True)
    data = ["--data-dir", str(indexer_settings.data_dir), "--json"]

    def run(*args: str) -> tuple[int, dict]:
        code = cli([*args, *data])
        return code, json.loads(capsys.readouterr().out)

    code, status = run("status")
    assert code == 0 and status["tracks"] == {"done": 3} and status["failed"] == 1
    assert status["failures"][0]["path"].endswith("bad.flac") and status["failures"][0]["reason"]
    assert status["scan"]["state"] == "finished" and status["scan"]["files_done"] == status["scan"]["files_total"] == 4
    assert status["versions"][0]["pipeline_version"] == indexer_models.profile.version()
    assert status["indexes"]["audio"]["count"] == 3 and status["indexes"]["text"]["current"]

    assert run("verify") == (0, {"ok": True, "problems": [], "repaired": [], "tracks_checked": 3})

    index_path(indexer_settings.data_dir, "audio").write_bytes(b"not a faiss index")
    manifest = json.loads(manifest_path(indexer_settings.data_dir, "text").read_text())
    manifest_path(indexer_settings.data_dir, "text").write_text(json.dumps({**manifest, "generation": 0}))
    code, report = run("verify")
    assert code == 1 and {p["index"] for p in report["problems"] if p["kind"] == "faiss"} == {"audio", "text"}
    code, report = run("verify", "--repair")
    assert code == 0 and {p["index"] for p in report["repaired"]} == {"audio", "text"}
    _assert_consistent(indexer_settings)

    index_path(indexer_settings.data_dir, "text").write_bytes(b"\0" * 100)  # the next scan repairs it too
    rescan = scan([str(audio_library.root)], indexer_settings, indexer_models.profile, models=indexer_models)
    assert set(rescan.index_repairs) == {"text"} and rescan.indexed == []
    _assert_consistent(indexer_settings)

    code, forgotten = run("forget", str(a))
    assert code == 0 and forgotten["paths"] == [str(a)] and len(forgotten["removed"]) == 1
    assert forgotten["removed"][0] in summary.indexed
    assert len(_assert_consistent(indexer_settings)) == 2
    code, forgotten = run("forget", str(audio_library.root / "bad.flac"))
    assert code == 0 and forgotten["errors_cleared"] == 1
    assert run("forget", str(audio_library.root / "nothing-here"))[0] == 1

    os.remove(audio_library.root / "Two" / "Album" / "01 C.wav")
    code, report = run("verify")
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["missing_file"]
    with Catalog(indexer_settings.catalog_path).read() as conn:
        assert conn.execute(select(func.count()).select_from(tracks)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(embeddings)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(captions)).scalar() == 2
        assert conn.execute(select(func.count()).select_from(errors)).scalar() == 0


def test_ctrl_c_keeps_committed_batches_and_the_rescan_resumes(audio_library, indexer_settings, indexer_models,
                                                                monkeypatch):
    for i in range(5):
        audio_library(f"Artist/Album/{i + 1:02d} Song.flac", seconds=1.5, seed=20 + i)
    encoder = indexer_models.encoder
    real, calls = encoder.encode, []

    def interrupted_on_second_batch(batch):  # a batch commits 2 tracks; the encoder may take them one by one
        calls.append(len(batch))
        if sum(calls) > 2:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(encoder, "encode", interrupted_on_second_batch)
    roots = [str(audio_library.root)]
    first = scan(roots, indexer_settings, indexer_models.profile, models=indexer_models, greedy=True, commit_every=2)
    assert first.state == "interrupted" and len(first.indexed) == 2
    assert _rows(indexer_settings, "SELECT state, files_done, files_total FROM scans") == [("interrupted", 2, 5)]
    assert _assert_consistent(indexer_settings) == sorted(first.indexed)  # FAISS saved on the way out

    monkeypatch.setattr(encoder, "encode", real)
    second = scan(roots, indexer_settings, indexer_models.profile, models=indexer_models, greedy=True, commit_every=2)
    assert second.state == "finished" and len(second.indexed) == 3 and second.unchanged == 2
    assert len(_assert_consistent(indexer_settings)) == 5
