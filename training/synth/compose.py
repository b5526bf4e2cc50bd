"""Compose a `TrackSpec` into General MIDI bytes whose content really carries the attributes.

Mode: melody on the major or (harmonic) minor scale over major- or minor-mode progressions that start
and end on the tonic chord. Tempo: the MIDI tempo is the spec's BPM and every part moves on the beat grid.
Drums: present only on GM channel 10 and only when the spec asks. Register, dynamics (velocities),
texture (how many parts) and style (accompaniment, bass and rhythm patterns) all change the notes.
Everything not named by the spec comes from `np.random.default_rng(spec.seed)`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from midiutil import MIDIFile

from .spec import TrackSpec

LEAD, CHORDS, BASS, PAD, DRUM_TRACK = 0, 1, 2, 3, 4
DRUM_CHANNEL = 9  # GM channel 10, zero-based

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6),
    "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10), "dom7": (0, 4, 7, 10), "hdim7": (0, 3, 6, 10),
}
# Chords as (root in semitones above the tonic, quality); every progression starts on the tonic chord.
PROGRESSIONS = {
    "major": (
        ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),
        ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),
        ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
        ((0, "maj"), (5, "maj"), (0, "maj"), (7, "maj")),
    ),
    "minor": (
        ((0, "min"), (5, "min"), (7, "maj"), (0, "min")),
        ((0, "min"), (8, "maj"), (5, "min"), (7, "maj")),
        ((0, "min"), (5, "min"), (0, "min"), (7, "maj")),
        ((0, "min"), (10, "maj"), (8, "maj"), (7, "maj")),
    ),
}
JAZZ_PROGRESSIONS = {
    "major": (
        ((0, "maj7"), (9, "min7"), (2, "min7"), (7, "dom7")),
        ((0, "maj7"), (5, "maj7"), (2, "min7"), (7, "dom7")),
    ),
    "minor": (
        ((0, "min7"), (5, "min7"), (2, "hdim7"), (7, "dom7")),
        ((0, "min7"), (8, "maj7"), (2, "hdim7"), (7, "dom7")),
    ),
}
REGISTER_CENTER = {"low": 50, "mid": 65, "high": 78}
BASE_VELOCITY = {"soft": 42, "medium": 74, "loud": 108}
# Rhythm cells (beats) per bar for the melody; long cells for ambient, busy ones for driving styles.
CELLS = {
    4: {
        "long": ((4,), (2, 2), (3, 1), (2, 1, 1)),
        "mixed": ((1, 1, 1, 1), (2, 1, 1), (1, 0.5, 0.5, 2), (1.5, 0.5, 1, 1), (1, 1, 2), (2, 2)),
        "busy": ((0.5,) * 8, (1, 0.5, 0.5, 1, 1), (0.5, 0.5, 1, 0.5, 0.5, 1), (1.5, 0.5, 1, 1),
                 (1, 1, 0.5, 0.5, 1)),
    },
    3: {
        "long": ((3,), (2, 1), (1, 2)),
        "mixed": ((1, 1, 1), (2, 1), (1, 0.5, 0.5, 1), (1.5, 0.5, 1)),
        "busy": ((0.5,) * 6, (1, 0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 1, 1), (1.5, 0.5, 0.5, 0.5)),
    },
}
STYLE_DENSITY = {"ambient": ("long",), "classical": ("mixed", "long"), "pop": ("mixed",),
                 "latin": ("mixed", "busy"), "jazz": ("busy", "mixed"), "rock": ("mixed", "busy"),
                 "electronic": ("busy",)}
REVERB = {"ambient": 110, "classical": 70}


@dataclass
class _Ctx:
    spec: TrackSpec
    rng: np.random.Generator
    midi: MIDIFile
    bpb: int
    bars: int
    progression: tuple
    swing: bool

    def velocity(self, offset: int = 0, accent: bool = False) -> int:
        v = BASE_VELOCITY[self.spec.dynamics] + offset + (8 if accent else 0)
        v += int(self.rng.integers(-5, 6))
        return int(np.clip(v, 1, 127))

    def time(self, beat: float) -> float:
        """Swing warps each beat so that its off-beat eighth lands two thirds of the way through."""
        if not self.swing:
            return beat
        whole = math.floor(beat)
        frac = beat - whole
        return whole + (frac * 4.0 / 3.0 if frac <= 0.5 else 2.0 / 3.0 + (frac - 0.5) * 2.0 / 3.0)

    def note(self, track: int, channel: int, pitch: int, start: float, duration: float, velocity: int):
        begin = self.time(start)
        end = self.time(start + duration)
        self.midi.addNote(track, channel, int(pitch), round(begin, 6), round(max(end - begin, 0.05), 6),
                          velocity)


def compose_midi(spec: TrackSpec) -> bytes:
    """Return Standard MIDI File bytes for `spec`; identical specs give identical bytes."""
    rng = np.random.default_rng(spec.seed)
    bpb = spec.beats_per_bar
    seconds_per_bar = bpb * 60.0 / spec.tempo_bpm
    bars = max(4, math.ceil(spec.seconds / seconds_per_bar) + 1)  # one spare bar, trimmed after rendering
    pool = JAZZ_PROGRESSIONS if spec.style == "jazz" else PROGRESSIONS
    progression = pool[spec.mode][int(rng.integers(len(pool[spec.mode])))]
    midi = MIDIFile(5, deinterleave=False, file_format=1)
    ctx = _Ctx(spec, rng, midi, bpb, bars, progression, swing=spec.style == "jazz" and spec.drums == "none")
    midi.addTempo(LEAD, 0, spec.tempo_bpm)
    midi.addTimeSignature(LEAD, 0, bpb, 2, 24)
    reverb = REVERB.get(spec.style, 45)
    for track, channel, program in ((LEAD, 0, spec.lead_program), (CHORDS, 1, spec.chord_program),
                                    (BASS, 2, spec.bass_program), (PAD, 3, 48 if spec.style != "ambient" else 89)):
        midi.addTrackName(track, 0, ("lead", "chords", "bass", "pad")[track])
        midi.addProgramChange(track, channel, 0, program)
        midi.addControllerEvent(track, channel, 0, 91, reverb)
        midi.addControllerEvent(track, channel, 0, 7, 100)
    midi.addTrackName(DRUM_TRACK, 0, "drums")
    _melody(ctx)
    if spec.texture != "solo":
        _chords(ctx, full=spec.texture == "dense")
        _bass(ctx)
    if spec.texture == "dense":
        _pad(ctx)
    if spec.drums != "none":
        _drums(ctx)
    buf = io.BytesIO()
    midi.writeFile(buf)
    return buf.getvalue()


def _chord_at(ctx: _Ctx, bar: int) -> tuple[int, tuple[int, ...]]:
    """(root pitch class, chord pitch classes) in absolute pitch classes for a bar."""
    rel_root, quality = ctx.progression[bar % len(ctx.progression)]
    root = (ctx.spec.key_pc + rel_root) % 12
    return root, tuple((root + i) % 12 for i in QUALITIES[quality])


def _scale_pcs(ctx: _Ctx, bar: int) -> set[int]:
    scale = list(SCALES[ctx.spec.mode])
    rel_root, quality = ctx.progression[bar % len(ctx.progression)]
    if ctx.spec.mode == "minor" and rel_root == 7:
        scale[6] = 11  # harmonic minor over the dominant: the raised leading tone
    return {(ctx.spec.key_pc + s) % 12 for s in scale}


def _pitches(pcs, low: int, high: int) -> list[int]:
    return [p for p in range(low, high + 1) if p % 12 in pcs]


def _nearest(options: list[int], target: float) -> int:
    return min(options, key=lambda p: (abs(p - target), p))


def _melody(ctx: _Ctx) -> None:
    spec, rng, bpb = ctx.spec, ctx.rng, ctx.bpb
    center = REGISTER_CENTER[spec.register]
    low, high = center - 8, center + 10
    densities = STYLE_DENSITY[spec.style]
    density = densities[int(rng.integers(len(densities)))]
    cells = CELLS[bpb][density]
    cadence = CELLS[bpb]["long"]
    motif = [cells[int(rng.integers(len(cells)))] for _ in range(2)]
    legato = 0.55 if spec.style in ("electronic", "latin") else 0.95
    prev = center
    direction = 1
    for bar in range(ctx.bars):
        phrase_pos = bar % 4
        if phrase_pos == 3:
            rhythm = cadence[int(rng.integers(len(cadence)))]
        else:
            rhythm = motif[phrase_pos % 2]
        _, chord = _chord_at(ctx, bar)
        scale = _scale_pcs(ctx, bar)
        chord_tones = _pitches(chord, low, high)
        scale_tones = _pitches(scale, low, high)
        beat = 0.0
        for i, dur in enumerate(rhythm):
            start = bar * bpb + beat
            beat += dur
            last_of_phrase = phrase_pos == 3 and i == len(rhythm) - 1
            if last_of_phrase and bar % len(ctx.progression) == 3 and ctx.progression[3][0] == 0:
                pitch = _nearest(_pitches({spec.key_pc}, low, high), prev)
            elif phrase_pos == 0 and i == 0:
                # Each phrase opens on the third of the tonic chord: the note that says major or minor.
                pitch = _nearest(_pitches({chord[1]}, low, high), prev)
            elif float(start).is_integer():
                target = prev + direction * int(rng.integers(1, 5))
                moves = [p for p in chord_tones if p != prev] or chord_tones
                pitch = _nearest(moves, target)
            else:
                idx = scale_tones.index(_nearest(scale_tones, prev))
                idx = int(np.clip(idx + direction, 0, len(scale_tones) - 1))
                pitch = scale_tones[idx]
            if pitch >= high - 1:
                direction = -1
            elif pitch <= low + 1:
                direction = 1
            elif rng.random() < 0.25:
                direction = -direction
            prev = pitch
            if not last_of_phrase and i > 0 and spec.style != "ambient" and rng.random() < 0.08:
                continue  # an occasional rest
            ctx.note(LEAD, 0, pitch, start, dur * legato, ctx.velocity(accent=float(start % bpb) == 0.0))


def _voicing(chord: tuple[int, ...], low: int = 55) -> list[int]:
    return sorted(low + ((pc - low) % 12) for pc in chord)


def _chords(ctx: _Ctx, full: bool) -> None:
    spec, bpb = ctx.spec, ctx.bpb
    for bar in range(ctx.bars):
        root, chord = _chord_at(ctx, bar)
        voicing = _voicing(chord)
        t0 = bar * bpb
        vel = ctx.velocity(-14)
        if not full or spec.style == "ambient":
            for p in voicing:
                ctx.note(CHORDS, 1, p, t0, bpb * 0.98, vel)
            continue
        if spec.style == "classical":
            if bpb == 3:  # oom-pah-pah
                for b in (1, 2):
                    for p in voicing:
                        ctx.note(CHORDS, 1, p, t0 + b, 0.8, vel)
            else:  # Alberti figure in eighths
                lo, mid, hi = voicing[0], voicing[1], voicing[-1]
                for k, p in enumerate((lo, hi, mid, hi) * 2):
                    ctx.note(CHORDS, 1, p, t0 + 0.5 * k, 0.5, vel)
        elif spec.style == "rock":
            low_root = 40 + ((root - 40) % 12)  # E2..D#3
            third = (chord[1] - root) % 12  # keep the third on top so the mode stays audible
            power = (low_root, low_root + 7, low_root + 12, low_root + 12 + third)
            for k in range(bpb * 2):
                for p in power:
                    ctx.note(CHORDS, 1, p, t0 + 0.5 * k, 0.42, ctx.velocity(-10, accent=k % 2 == 0))
        elif spec.style == "pop":
            hits = (0, 1.5, 3) if bpb == 4 else (0, 1, 2)
            for h in hits:
                for p in voicing:
                    ctx.note(CHORDS, 1, p, t0 + h, 0.9, vel)
        elif spec.style == "electronic":
            arp = voicing + [p + 12 for p in voicing]
            for k in range(bpb * 4):
                ctx.note(CHORDS, 1, arp[k % len(arp)], t0 + 0.25 * k, 0.2, ctx.velocity(-16))
        elif spec.style == "jazz":
            hits = (0, 1.5, 3) if bpb == 4 else (0, 1.5)
            for h in hits:
                for p in voicing:
                    ctx.note(CHORDS, 1, p, t0 + h, 0.45, vel)
        else:  # latin: tresillo stabs
            hits = (0, 1.5, 3, 3.5) if bpb == 4 else (0, 1.5, 2.5)
            for h in hits:
                for p in voicing:
                    ctx.note(CHORDS, 1, p, t0 + h, 0.35, vel)


def _bass(ctx: _Ctx) -> None:
    spec, bpb, rng = ctx.spec, ctx.bpb, ctx.rng
    for bar in range(ctx.bars):
        root, chord = _chord_at(ctx, bar)
        r = 33 + ((root - 33) % 12)  # A1..G#2
        fifth = r + 7
        t0 = bar * bpb
        vel = ctx.velocity(-4)
        style = spec.style
        if spec.texture == "sparse" and style not in ("rock", "electronic"):
            ctx.note(BASS, 2, r, t0, bpb * 0.95, vel)
        elif style in ("classical", "ambient"):
            ctx.note(BASS, 2, r, t0, bpb * 0.95, vel)
        elif style == "rock":
            for k in range(bpb * 2):
                ctx.note(BASS, 2, r, t0 + 0.5 * k, 0.45, ctx.velocity(-4, accent=k == 0))
        elif style == "pop":
            ctx.note(BASS, 2, r, t0, 1.8 if bpb == 4 else 0.9, vel)
            ctx.note(BASS, 2, fifth if bpb == 4 else r, t0 + 2, 1.8 if bpb == 4 else 0.9, vel)
        elif style == "electronic":
            for k in range(bpb):
                ctx.note(BASS, 2, r + (12 if k % 2 else 0), t0 + k + 0.5, 0.4, vel)
        elif style == "jazz":
            next_root, _ = _chord_at(ctx, bar + 1)
            nr = 33 + ((next_root - 33) % 12)
            scale = sorted(_pitches(_scale_pcs(ctx, bar), r, r + 12))
            walk = [r] + [scale[int(rng.integers(1, len(scale)))] for _ in range(bpb - 2)]
            walk.append(nr + (1 if rng.random() < 0.5 else -1))  # chromatic approach to the next root
            for k, p in enumerate(walk):
                ctx.note(BASS, 2, p, t0 + k, 0.9, vel)
        else:  # latin tumbao
            next_root, _ = _chord_at(ctx, bar + 1)
            nr = 33 + ((next_root - 33) % 12)
            ctx.note(BASS, 2, r, t0, 1.4, vel)
            ctx.note(BASS, 2, fifth, t0 + 1.5, 1.4, vel)
            if bpb == 4:
                ctx.note(BASS, 2, nr, t0 + 3, 0.9, vel)


def _pad(ctx: _Ctx) -> None:
    for bar in range(ctx.bars):
        _, chord = _chord_at(ctx, bar)
        vel = ctx.velocity(-24)
        for p in _voicing(chord, low=60):
            ctx.note(PAD, 3, p, bar * ctx.bpb, ctx.bpb * 0.98, vel)


KICK, SNARE, CLAP, HAT, OPEN_HAT, CRASH, RIDE = 36, 38, 39, 42, 46, 49, 51
CONGA_MUTE, CONGA_OPEN, CONGA_LOW, CLAVE, MARACAS, COWBELL = 62, 63, 64, 75, 70, 56


def _drums(ctx: _Ctx) -> None:
    spec, bpb = ctx.spec, ctx.bpb
    hits: list[tuple[int, float, int]] = []  # (note, beat in bar, velocity offset)
    for bar in range(ctx.bars):
        hits.clear()
        if spec.drums == "rock":
            hits += [(HAT, 0.5 * k, -18) for k in range(bpb * 2)]
            if bpb == 4:
                hits += [(KICK, 0, 0), (KICK, 2, 0), (KICK, 2.5, -8), (SNARE, 1, 0), (SNARE, 3, 0)]
            else:
                hits += [(KICK, 0, 0), (SNARE, 1, -4), (SNARE, 2, -4)]
            if bar % 4 == 0:
                hits.append((CRASH, 0, -6))
            if bar % 4 == 3:
                hits += [(SNARE, bpb - 1 + 0.25 * k, -10) for k in range(1, 4)]
        elif spec.drums == "electronic":
            hits += [(KICK, k, 0) for k in range(bpb)]
            hits += [(CLAP, k, -4) for k in range(1, bpb, 2)]
            hits += [(OPEN_HAT, k + 0.5, -14) for k in range(bpb)]
            hits += [(HAT, k + q, -24) for k in range(bpb) for q in (0.25, 0.75)]
        else:  # latin-ish: son clave, congas, maracas
            if bpb == 4:
                clave = (0, 1.5, 3) if bar % 2 == 0 else (1, 2)
                hits += [(CONGA_MUTE, 1, -12), (CONGA_OPEN, 3, -6), (CONGA_OPEN, 3.5, -6), (CONGA_LOW, 0.5, -10),
                         (KICK, 0, -12), (KICK, 2.5, -14)]
            else:
                clave = (0, 1.5)
                hits += [(CONGA_MUTE, 1, -12), (CONGA_OPEN, 2, -6), (CONGA_OPEN, 2.5, -6), (KICK, 0, -12)]
            hits += [(CLAVE, c, -6) for c in clave]
            hits += [(MARACAS, 0.5 * k, -22) for k in range(bpb * 2)]
        for note, beat, offset in hits:
            ctx.note(DRUM_TRACK, DRUM_CHANNEL, note, bar * bpb + beat, 0.25,
                     ctx.velocity(offset + 4, accent=beat == 0))
