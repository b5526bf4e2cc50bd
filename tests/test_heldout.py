"""training.heldout: labels agree with the MIDI the composer writes, the music follows its key and beat,
the set is seeded and deterministic, and it renders (and resumes) with its own soundfont."""

from __future__ import annotations

import json
import wave
from collections import Counter

import numpy as np
import pytest

from training.heldout import (
    Clip,
    clip_of,
    clip_record,
    compose_midi,
    compose_notes,
    draw_clip,
    generate,
    read_labels,
    tempo_class,
    unavailable_reason,
)
from training.heldout.__main__ import main as cli_main
from training.heldout.compose import LEADS, NOTE_NAMES, SCALES, STYLES
from training.heldout.dataset import default_soundfont
from training.synth.render import SynthUnavailable
from training.synth.spec import tempo_class_of

NO_SYNTH = unavailable_reason()
needs_synth = pytest.mark.skipif(NO_SYNTH is not None, reason=f"cannot render held-out clips: {NO_SYNTH}")


def parse_midi(data: bytes) -> dict:
    """A small Standard MIDI File reader: notes (tick, channel, pitch), tempos (µs per quarter), meters,
    programs per channel and the ticks per quarter note."""
    assert data[:4] == b"MThd"
    division = int.from_bytes(data[12:14], "big")
    out: dict = {"notes": [], "tempos": [], "meters": [], "programs": {}, "division": division}
    i = 14
    while i < len(data):
        assert data[i:i + 4] == b"MTrk"
        end = i + 8 + int.from_bytes(data[i + 4:i + 8], "big")
        i, tick, status = i + 8, 0, 0
        while i < end:
            delta, i = _varlen(data, i)
            tick += delta
            if data[i] & 0x80:
                status, i = data[i], i + 1
            if status == 0xFF:
                kind, (length, i) = data[i], _varlen(data, i + 1)
                if kind == 0x51:
                    out["tempos"].append(int.from_bytes(data[i:i + 3], "big"))
                elif kind == 0x58:
                    out["meters"].append(data[i])
                i += length
            elif status in (0xF0, 0xF7):
                length, i = _varlen(data, i)
                i += length
            else:
                kind, channel = status & 0xF0, status & 0x0F
                if kind == 0x90 and data[i + 1] > 0:
                    out["notes"].append((tick, channel, data[i]))
                elif kind == 0xC0:
                    out["programs"][channel] = data[i]
                i += 1 if kind in (0xC0, 0xD0) else 2
    return out


def _varlen(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    while True:
        value, i = (value << 7) | (data[i] & 0x7F), i + 1
        if not data[i - 1] & 0x80:
            return value, i


def in_key(clip: Clip) -> set[int]:
    """Pitch classes of the key: the scale, plus the raised seventh in minor (harmonic minor)."""
    tonic = NOTE_NAMES.index(clip.tonic)
    raised = {(tonic + 11) % 12} if clip.mode == "minor" else set()
    return {(tonic + s) % 12 for s in SCALES[clip.mode]} | raised


def clips(seed: int, n: int, seconds: float = 30.0) -> list[Clip]:
    return [clip_of(clip_record(seed, i, seconds, default_soundfont(), 22050)) for i in range(n)]


def test_labels_match_the_midi():
    for clip in clips(5, 40):
        midi = parse_midi(compose_midi(clip))
        assert len(midi["tempos"]) == 1 and abs(60e6 / midi["tempos"][0] - clip.bpm) < 0.01, clip
        assert midi["meters"] == [clip.meter]
        assert midi["programs"][0] == clip.program
        assert any(p == clip.program and name == clip.instrument for p, name, _, _ in LEADS[clip.family])
        drum_notes = [n for n in midi["notes"] if n[1] == 9]
        assert bool(drum_notes) == clip.drums, clip
        pitched = [n for n in midi["notes"] if n[1] in (0, 1)]  # melody and chords
        assert {p % 12 for _, _, p in pitched} <= in_key(clip), clip
        assert clip.tempo_class == tempo_class(clip.bpm) == tempo_class_of(clip.bpm)
        assert 60.0 <= clip.bpm <= 180.0
        lo, hi = STYLES[clip.style].bpm
        assert lo <= clip.bpm <= hi


def test_the_music_keeps_key_cadence_and_beat():
    for clip in clips(6, 40):
        notes = compose_notes(clip)
        tonic = NOTE_NAMES.index(clip.tonic)
        lead = [n for n in notes if n.part == "lead"]
        assert all(n.pitch % 12 in in_key(clip) for n in lead)
        bass = [n for n in notes if n.part == "bass"]
        assert bass[0].start == 0.0 and bass[0].pitch % 12 == tonic  # the piece opens on the tonic chord
        # Each eight-bar period's second phrase ends on the tonic (an authentic cadence).
        bar_beats = clip.meter
        total_bars = int(max(n.start for n in notes) // bar_beats) + 1
        for period_end in range(8, total_bars + 1, 8):
            last = max((n for n in lead if n.start < period_end * bar_beats), key=lambda n: n.start)
            assert last.pitch % 12 == tonic, (clip, period_end)
        if clip.drums:  # the kit marks every beat
            hits = {round(n.start, 6) for n in notes if n.part == "drums"}
            assert all(float(b) in hits for b in range(total_bars * bar_beats)), clip
        else:
            assert not any(n.part == "drums" for n in notes)


def test_labels_cover_the_vocabulary():
    drawn = [draw_clip(np.random.default_rng([7, i])) for i in range(600)]
    assert {(c.tonic, c.mode) for c in drawn} == {(t, m) for t in NOTE_NAMES for m in ("major", "minor")}
    assert {c.family for c in drawn} == set(LEADS)
    assert {c.style for c in drawn} == set(STYLES)
    assert set(Counter(c.tempo_class for c in drawn)) == {"slow", "medium", "fast"}
    assert 0.3 < np.mean([c.drums for c in drawn]) < 0.9
    assert np.mean([not float(c.bpm).is_integer() for c in drawn]) > 0.8
    bpms = [c.bpm for c in drawn]
    assert min(bpms) < 65 and max(bpms) > 170


def test_deterministic_by_seed():
    a, b, other = clips(3, 5), clips(3, 5), clips(4, 5)
    assert a == b and a != other
    assert [compose_midi(c) for c in a] == [compose_midi(c) for c in b]
    assert compose_midi(a[0]) != compose_midi(other[0])


def test_missing_soundfont_is_a_clear_error(tmp_path):
    with pytest.raises(SynthUnavailable, match="soundfont"):
        generate(tmp_path, 1, soundfont=tmp_path / "missing.sf2")


@needs_synth
def test_render_resume_and_cli(tmp_path, capsys):
    out = tmp_path / "set"
    records = generate(out, 2, seed=3, seconds=3.0, sample_rate=16000)
    assert read_labels(out) == records
    assert default_soundfont().name != "FluidR3_GM.sf2"
    for r in records:
        assert r["soundfont"] == default_soundfont().name
        assert set(r) >= {"file", "bpm", "tonic", "mode", "instrument", "family", "drums", "tempo_class",
                          "style"}
        with wave.open(str(out / r["file"])) as w:
            assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 16000, 3 * 16000)
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
        assert 0.005 < np.sqrt(np.mean(pcm ** 2)) and np.abs(pcm).max() < 1.0
    stamp = (out / records[0]["file"]).stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main([str(out), "--n", "3", "--seed", "3", "--seconds", "3", "--sample-rate", "16000"]) == 0
    assert "2 already rendered, 1 to render" in capsys.readouterr().err
    assert (out / records[0]["file"]).stat().st_mtime_ns == stamp
    lines = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert lines[:2] == records and len(lines) == 3
    # A different clip length makes every wav stale: they are rendered again, none is kept.
    assert cli_main([str(out), "--n", "3", "--seed", "3", "--seconds", "2", "--sample-rate", "16000"]) == 0
    assert "0 already rendered, 3 to render" in capsys.readouterr().err
