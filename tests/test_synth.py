"""training.synth: determinism, MIDI that carries the attributes, audible attributes in rendered audio,
text that names the right attributes, and the committed demo library."""

from __future__ import annotations

import json
import wave
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from training.synth import (
    SynthUnavailable,
    caption,
    clip_record,
    clip_rng,
    compose_midi,
    extract_labels,
    generate_corpus,
    labels,
    qa_pairs,
    render_midi,
    sample_spec,
    summary_caption,
    unavailable_reason,
)
from training.synth import render as render_mod
from training.synth.__main__ import main as cli_main
from training.synth.spec import FAMILIES, KEYS, TEMPO_RANGES, derive_mood, derive_style

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "library"
SR = 24000
NO_SYNTH = unavailable_reason()
needs_synth = pytest.mark.skipif(NO_SYNTH is not None, reason=f"cannot render MIDI here: {NO_SYNTH}")


# ---------------------------------------------------------------- a minimal Standard MIDI File reader

def _vlq(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, i


def parse_midi(data: bytes) -> dict:
    """Notes as (tick, channel, pitch, velocity), tempos (µs per quarter) and time signatures."""
    assert data[:4] == b"MThd"
    division = int.from_bytes(data[12:14], "big")
    i = 14
    notes, tempos, meters = [], [], []
    while i < len(data):
        assert data[i:i + 4] == b"MTrk"
        length = int.from_bytes(data[i + 4:i + 8], "big")
        j, end, tick, status = i + 8, i + 8 + length, 0, 0
        while j < end:
            delta, j = _vlq(data, j)
            tick += delta
            if data[j] & 0x80:
                status = data[j]
                j += 1
            if status == 0xFF:
                kind = data[j]
                size, j = _vlq(data, j + 1)
                body = data[j:j + size]
                j += size
                if kind == 0x51:
                    tempos.append(int.from_bytes(body, "big"))
                elif kind == 0x58:
                    meters.append(f"{body[0]}/{2 ** body[1]}")
            elif status in (0xF0, 0xF7):
                size, j = _vlq(data, j)
                j += size
            else:
                kind, channel = status & 0xF0, status & 0x0F
                width = 1 if kind in (0xC0, 0xD0) else 2
                args = data[j:j + width]
                j += width
                if kind == 0x90 and args[1] > 0:
                    notes.append((tick, channel, args[0], args[1]))
        i = end
    return {"division": division, "notes": notes, "tempos": tempos, "meters": meters}


# ---------------------------------------------------------------- determinism and sampling

def test_same_seed_same_specs_midi_and_text():
    for i in range(12):
        a, b = sample_spec(clip_rng(5, i)), sample_spec(clip_rng(5, i))
        assert a == b
        assert compose_midi(a) == compose_midi(b)
        assert caption(a, clip_rng(5, i, 1)) == caption(b, clip_rng(5, i, 1))
        assert qa_pairs(a, clip_rng(5, i, 2)) == qa_pairs(b, clip_rng(5, i, 2))
    assert clip_record(5, 3, 10.0) == clip_record(5, 3, 10.0)


def test_different_seed_differs():
    specs5 = [sample_spec(clip_rng(5, i)) for i in range(12)]
    specs6 = [sample_spec(clip_rng(6, i)) for i in range(12)]
    assert specs5 != specs6
    assert [compose_midi(s) for s in specs5] != [compose_midi(s) for s in specs6]
    assert compose_midi(specs5[0]) != compose_midi(replace(specs5[0], seed=specs5[0].seed + 1))
    assert clip_record(5, 0, 10.0)["caption"] != clip_record(6, 0, 10.0)["caption"]


def test_pinning_keeps_other_draws_and_derivations_hold():
    base = sample_spec(clip_rng(9, 1))
    pinned = sample_spec(clip_rng(9, 1), instrument_family="organ")
    assert pinned.instrument_family == "organ"
    assert (pinned.key, pinned.mode, pinned.tempo_bpm, pinned.seed) == (base.key, base.mode, base.tempo_bpm,
                                                                         base.seed)
    with pytest.raises(ValueError):
        sample_spec(clip_rng(9, 1), mood="happy")
    for i in range(1500):
        s = sample_spec(clip_rng(1, i))
        low, high = TEMPO_RANGES[s.tempo_class]
        assert low <= s.tempo_bpm <= high
        assert s.style == derive_style(s.instrument_family, s.drums, s.tempo_class, s.texture)
        assert s.mood == derive_mood(s.mode, s.tempo_class, s.dynamics, s.drums)
        if s.mode == "minor" and s.tempo_class == "slow":
            assert s.mood == "sad"
        if s.mode == "major" and s.tempo_class == "fast":
            assert s.mood in ("happy", "energetic")
        if s.texture == "solo":
            assert s.drums == "none"


# ---------------------------------------------------------------- the MIDI carries the attributes

MAJOR = {0, 2, 4, 5, 7, 9, 11}
HARMONIC_MINOR_PLUS = {0, 2, 3, 5, 7, 8, 10, 11}


def test_midi_carries_tempo_meter_mode_and_drums():
    seen_drums = Counter()
    for i in range(60):
        spec = sample_spec(clip_rng(3, i))
        midi = parse_midi(compose_midi(spec))
        assert midi["tempos"] == [round(60_000_000 / spec.tempo_bpm)] or \
            midi["tempos"] == [int(60_000_000 / spec.tempo_bpm)]
        assert midi["meters"] == [spec.meter]
        drum_notes = [n for n in midi["notes"] if n[1] == 9]
        assert bool(drum_notes) == (spec.drums != "none"), spec
        seen_drums[spec.drums] += 1
        # Lead, chords and pad stay in the mode: a minor track never sounds the major third, and back.
        pcs = {(n[2] - spec.key_pc) % 12 for n in midi["notes"] if n[1] in (0, 1, 3)}
        if spec.mode == "major":
            assert pcs <= MAJOR, (spec, pcs - MAJOR)
            assert 4 in pcs
        else:
            assert pcs <= HARMONIC_MINOR_PLUS, (spec, pcs - HARMONIC_MINOR_PLUS)
            assert 3 in pcs and 4 not in pcs
        if spec.texture == "solo":
            assert {n[1] for n in midi["notes"]} == {0}
    assert set(seen_drums) == {"none", "rock", "electronic", "latin"}


def test_midi_register_and_dynamics():
    spec = sample_spec(clip_rng(4, 0), drums="none", texture="solo")
    means = {}
    for register in ("low", "mid", "high"):
        notes = parse_midi(compose_midi(replace(spec, register=register)))["notes"]
        means[register] = np.mean([n[2] for n in notes])
    assert means["low"] < means["mid"] < means["high"]
    vel = {d: np.mean([n[3] for n in parse_midi(compose_midi(replace(spec, dynamics=d)))["notes"]])
           for d in ("soft", "medium", "loud")}
    assert vel["soft"] + 20 < vel["medium"] < vel["loud"] - 20


# ---------------------------------------------------------------- rendered audio is real and audible

def onset_count(x: np.ndarray, sr: int = SR) -> int:
    """Onsets from a log-magnitude spectral-flux envelope: peaks above a local median, 50 ms apart."""
    n, hop = 1024, sr // 100
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    mag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(np.diff(mag, axis=0), 0.0).sum(axis=1)
    local = np.array([np.median(flux[max(0, i - 10):i + 11]) for i in range(flux.size)])
    d = flux - local
    threshold = 0.3 * d.max()
    onsets: list[int] = []
    for i in range(1, d.size - 1):
        if d[i] > threshold and d[i] >= d[i - 1] and d[i] > d[i + 1] and (not onsets or i - onsets[-1] >= 5):
            onsets.append(i)
    return len(onsets)


def hf_transient_energy(x: np.ndarray, sr: int = SR) -> float:
    """Share of spectral flux above 5 kHz: cymbals, hats and snares put it there, tonal parts barely do."""
    n, hop = 512, 128
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    flux = np.maximum(np.diff(mag, axis=0), 0.0)
    high = np.fft.rfftfreq(n, 1 / sr) > 5000
    return float(flux[:, high].sum() / (flux.sum() + 1e-12))


def chroma_mode(x: np.ndarray, tonic: int, sr: int = SR) -> str:
    """Krumhansl-Kessler profile correlation at the known tonic."""
    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    n = 4096
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::1024] * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    sel = (freqs > 80) & (freqs < 2000)
    pcs = np.round(69 + 12 * np.log2(freqs[sel] / 440)).astype(int) % 12
    chroma = np.zeros(12)
    np.add.at(chroma, pcs, np.sqrt(power[sel]))
    r_major = np.corrcoef(chroma, np.roll(major, tonic))[0, 1]
    r_minor = np.corrcoef(chroma, np.roll(minor, tonic))[0, 1]
    return "major" if r_major > r_minor else "minor"


def _render(spec) -> np.ndarray:
    return render_midi(compose_midi(spec), seconds=spec.seconds, sample_rate=SR)


def _pinned(**changes):
    """A spec with everything that matters pinned; style and mood re-derived from the pins."""
    pins = dict(seconds=6.0, instrument_family="piano", register="mid", texture="sparse", dynamics="medium",
                drums="rock", meter="4/4", tempo_bpm=100, key="A", mode="major")
    pins.update(changes)
    return sample_spec(clip_rng(21, 0), **pins)


@needs_synth
def test_rendered_audio_is_real():
    x = _render(_pinned())
    assert x.dtype == np.float32 and x.shape == (int(6.0 * SR),)
    assert np.isfinite(x).all() and np.abs(x).max() < 1.0
    assert np.sqrt((x ** 2).mean()) > 0.005
    # sound throughout, not just at the start
    quarters = x[: x.size // 4 * 4].reshape(4, -1)
    assert (np.sqrt((quarters ** 2).mean(axis=1)) > 0.002).all()


@needs_synth
def test_fast_clip_has_more_onsets():
    n_slow, n_fast = onset_count(_render(_pinned(tempo_bpm=66))), onset_count(_render(_pinned(tempo_bpm=160)))
    assert n_fast > 1.5 * n_slow, (n_slow, n_fast)


@needs_synth
def test_drums_are_audible():
    with_drums = hf_transient_energy(_render(_pinned(drums="rock")))
    without = hf_transient_energy(_render(_pinned(drums="none")))
    assert with_drums > 3 * without, (with_drums, without)


@needs_synth
def test_dynamics_and_mode_are_audible():
    rms = {d: float(np.sqrt((_render(_pinned(drums="none", dynamics=d)) ** 2).mean())) for d in ("soft", "loud")}
    assert rms["loud"] > 2.5 * rms["soft"], rms
    for mode in ("major", "minor"):
        for key in ("A", "F#"):
            x = _render(_pinned(drums="none", mode=mode, key=key, seconds=10.0))
            assert chroma_mode(x, KEYS.index(key)) == mode, (mode, key)


@needs_synth
def test_generate_corpus_cli_and_resume(tmp_path, capsys):
    out = tmp_path / "corpus"
    records = generate_corpus(out, n=3, seed=4, seconds=2.0, workers=2)
    assert [r["id"] for r in records] == ["s4-000000", "s4-000001", "s4-000002"]
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert lines == records
    for r in records:
        with wave.open(str(out / r["file"])) as w:
            assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, SR, 2 * SR)
        assert set(r) >= {"id", "file", "attributes", "labels", "caption", "qa"}
        assert r["labels"] == labels(sample_spec(clip_rng(4, int(r["id"][-6:])), seconds=2.0))
    stamp = (out / records[0]["file"]).stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main(["--out", str(out), "--n", "4", "--seed", "4", "--seconds", "2", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "3 already rendered, 1 to render" in err and "clips/s" in err
    assert (out / records[0]["file"]).stat().st_mtime_ns == stamp
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 4


def test_missing_synth_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: None)
    with pytest.raises(SynthUnavailable, match="fluidsynth fluid-soundfont-gm"):
        render_midi(b"MThd")
    with pytest.raises(SynthUnavailable, match="fluid-soundfont-gm"):
        render_mod.find_soundfont("/nonexistent/gm.sf2")


# ---------------------------------------------------------------- captions and QA name the right attributes

CORE = ("instrument_family", "tempo_class", "mode", "drums", "mood", "style")


def test_captions_name_the_attributes():
    seen = set()
    for i in range(300):
        spec = sample_spec(clip_rng(8, i))
        truth = labels(spec)
        text = caption(spec, clip_rng(8, i, 1))
        seen.add(text.split(" ")[0])
        found = extract_labels(text)
        for field in CORE + ("key",):
            assert found.get(field) == truth[field], (field, text, truth)
        for field, value in found.items():
            assert value == truth[field], (field, text, truth)
        assert text[0].isupper() and text.endswith(".")
    assert len(seen) > 15  # varied openings


def test_summary_caption_is_read_back_by_both_parsers():
    from training.metrics import parse_attribute

    for family in FAMILIES:
        for tempo in ("slow", "medium", "fast"):
            for mode in ("major", "minor"):
                truth = {"instrument_family": family, "tempo_class": tempo, "mode": mode}
                text = summary_caption(truth)
                assert text.startswith("A ") and text.endswith(" key.")
                assert {k: extract_labels(text).get(k) for k in truth} == truth, text
                assert {k: parse_attribute(text, k) for k in truth} == truth, text


def test_captions_vary_for_one_track():
    spec = sample_spec(clip_rng(8, 0))
    rng = clip_rng(8, 0, 1)
    texts = {caption(spec, rng) for _ in range(40)}
    assert len(texts) >= 35


def test_qa_pairs_answer_correctly():
    questions = set()
    for i in range(200):
        spec = sample_spec(clip_rng(12, i))
        truth = labels(spec)
        pairs = qa_pairs(spec, clip_rng(12, i, 2))
        assert {p["attribute"] for p in pairs} >= {"instrument_family", "tempo_class", "mode", "drums",
                                                   "mood", "style", "meter"}
        for p in pairs:
            questions.add(p["question"])
            assert p["question"].endswith("?")
            found = extract_labels(p["answer"])
            assert found.get(p["attribute"]) == truth[p["attribute"]], (p, truth)
            if p["attribute"] == "mode":
                assert found.get("key") == spec.key
            if p["attribute"] == "tempo_class":
                assert str(spec.tempo_bpm) in p["answer"]
    assert len(questions) > 30


# ---------------------------------------------------------------- the committed demo library

def _demo_records() -> list[dict]:
    path = DEMO / "metadata.jsonl"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `python scripts/make_demo_library.py`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _read_tags(path: Path) -> dict[str, str]:
    import mutagen

    if path.suffix == ".wav":
        tags = mutagen.File(path).tags
        frames = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "genre": "TCON", "date": "TDRC",
                  "tracknumber": "TRCK"}
        return {key: str(tags[frame].text[0]) for key, frame in frames.items()}
    audio = mutagen.File(path, easy=True)
    return {key: str(audio[key][0]) for key in ("title", "artist", "album", "genre", "date", "tracknumber")}


def test_demo_library_layout_size_and_licence():
    records = _demo_records()
    assert 20 <= len(records) <= 30
    files = sorted(p for p in DEMO.rglob("*") if p.is_file())
    audio = [p for p in files if p.name not in ("metadata.jsonl", "LICENSE")]
    assert sorted(p.relative_to(DEMO).as_posix() for p in audio) == sorted(r["path"] for r in records)
    assert sum(p.stat().st_size for p in files) < 6_000_000
    assert {r["format"] for r in records} == {"mp3", "ogg", "m4a", "opus", "flac", "wav"}
    assert "CC0" in (DEMO / "LICENSE").read_text()
    artists = Counter(r["artist"] for r in records)
    assert len(artists) >= 3
    for artist in artists:
        assert len({r["album"] for r in records if r["artist"] == artist}) >= 2
    for r in records:
        artist, album, name = r["path"].split("/")
        assert (artist, album) == (r["artist"], r["album"])
        assert name == f"{r['track']:02d} {r['title']}.{r['format']}"
    for field in ("style", "mood", "instrument_family", "drums", "tempo_class", "mode"):
        assert len({r["labels"][field] for r in records}) >= 2


def test_demo_library_decodes_and_tags_match():
    import av

    for r in _demo_records():
        path = DEMO / r["path"]
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
            rate = stream.codec_context.sample_rate
        samples = np.concatenate(chunks).astype(np.float32)
        seconds = samples.size / rate / r["channels"]
        assert rate == r["sample_rate"]
        assert abs(seconds - r["seconds"]) < 0.1, (r["path"], seconds)
        assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1e-3, r["path"]
        assert _read_tags(path) == {"title": r["title"], "artist": r["artist"], "album": r["album"],
                                    "genre": r["genre"], "date": str(r["year"]),
                                    "tracknumber": f"{r['track']}/{r['track_total']}"}
        assert r["genre"].lower() == r["labels"]["style"]


@needs_synth
def test_lite_frontend_hears_the_mode_of_rendered_clips():
    """Six keys x both modes, with drums and a dense arrangement: the front-end's best major fit against
    its best minor fit names the mode of 10 of 12 clips (the first front-end, with its chroma read from
    55 Hz to 4.2 kHz and rounded to the nearest pitch class, named 7)."""
    import torch

    from model.frontend import LiteFrontend, feature_slice

    lite = LiteFrontend()
    right = 0
    for key, family in zip(("C", "E", "G", "A", "D", "F"), ("piano", "guitar", "strings", "brass", "organ",
                                                              "woodwind"), strict=True):
        for mode in ("major", "minor"):
            x = _render(_pinned(mode=mode, key=key, instrument_family=family, texture="dense", seconds=8.0))
            best_major, best_minor = lite(torch.from_numpy(x))[0].mean(0)[feature_slice("best_major_minor")]
            right += (best_major > best_minor).item() == (mode == "major")
    assert right >= 10, right
