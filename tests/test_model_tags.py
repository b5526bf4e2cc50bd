"""`python -m model tags` and the track analysis behind it, on real audio files through the real decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.__main__ import main
from model.analysis import Analyzer, analysis_version
from model.tempo_key import TEMPO_KEY_VERSION
from tests.conftest import MODELS_DIR, write_audio


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(MODELS_DIR)


def test_tags_json_names_tags_tempo_key_and_versions(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MUSILINGO_CACHE_DIR", str(MODELS_DIR.parent))
    song = write_audio(tmp_path / "song.mp3", seconds=7.0, seed=3)
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + b"\0" * 64)
    assert main(["tags", str(song), str(broken), "--json"]) == 1  # one file failed
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(song), str(broken)]
    ok, bad = rows
    assert set(ok["tags"]) == {"MTT_musicnn", "MSD_musicnn"}
    assert len(ok["tags"]["MTT_musicnn"]) == len(ok["tags"]["MSD_musicnn"]) == 50
    assert all(0.0 <= p <= 1.0 for p in ok["tags"]["MSD_musicnn"].values())
    assert "Progressive rock" in ok["tags"]["MSD_musicnn"] and "no vocals" in ok["tags"]["MTT_musicnn"]
    assert ok["bpm"] > 0 and ok["mode"] in ("major", "minor") and ok["key"] in (
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    assert ok["patches"] == 2 and ok["patch_seconds"] == [0.0, 2.99]  # 7 s: two whole non-overlapping patches
    assert ok["versions"] == {"analysis": analysis_version(), "musicnn": "0.1.0", "tempo_key": TEMPO_KEY_VERSION}
    assert "error" in bad and "tags" not in bad


def test_tags_text_output(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MUSILINGO_CACHE_DIR", str(MODELS_DIR.parent))
    song = write_audio(tmp_path / "a.ogg", seconds=4.0, seed=1)
    assert main(["tags", str(song), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(song) and "BPM" in out[1]
    assert out[2].startswith("  MTT_musicnn: ") and out[2].count(",") == 2


def test_file_tags_are_the_mean_of_its_patches(analyzer: Analyzer) -> None:
    rate = analyzer.sample_rate
    t = np.arange(rate * 9) / rate
    # three different 3-s sections: the patches must see each one, and the file's tags average them
    wave = np.concatenate([0.3 * np.sin(2 * np.pi * 220 * t[:3 * rate]),
                           0.5 * np.clip(np.sign(np.sin(2 * np.pi * 55 * t[:3 * rate])), -1, 1),
                           0.01 * np.random.default_rng(0).standard_normal(3 * rate)]).astype(np.float32)
    one = analyzer.analyze([wave])[0]
    probs = one.probabilities["MTT_musicnn"]
    assert probs.shape == (3, 50)
    assert np.abs(probs[0] - probs[1]).max() > 0.1
    tags = one.tags("MTT_musicnn")
    assert tags["loud"] == pytest.approx(float(probs[:, one.labels["MTT_musicnn"].index("loud")].mean()))
    assert one.embedding.shape == (400,)
    # batching several tracks together gives each the same answer as alone
    other = (0.2 * np.sin(2 * np.pi * 330 * t[:5 * rate])).astype(np.float32)
    together = analyzer.analyze([other, wave])
    np.testing.assert_allclose(together[1].probabilities["MTT_musicnn"], probs, atol=1e-5)
    assert together[1].bpm == one.bpm and (together[1].key, together[1].mode) == (one.key, one.mode)


def test_ask_answers_a_tempo_question_by_choice_with_the_analysis(tmp_path: Path, monkeypatch, capsys) -> None:
    """`python -m model ask --json` on the lite profile: the analysis is told beside the audio, and a tempo
    question is answered with one of the tempo sentences (chosen), with the audio-token count and ids."""
    from model.answers import topic_of

    monkeypatch.setenv("MUSILINGO_CACHE_DIR", str(MODELS_DIR.parent))
    song = write_audio(tmp_path / "song.wav", seconds=6.0, seed=2)
    question = "Is this piece slow, medium tempo or fast?"
    assert main(["ask", str(song), question, "--json", "--data-dir", str(tmp_path / "data")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "lite" and "Tempo: about" in out["context"]
    assert out["decoding"] == "choice" and out["topic"] == "tempo" and out["choices"] == 3
    assert out["answer"] in topic_of(question).answers and out["audio_tokens"] >= 1 and out["token_ids"]
