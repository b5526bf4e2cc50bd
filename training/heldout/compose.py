"""A second composer, written apart from `training/synth`, for held-out evaluation clips.

Nothing here is shared with the training corpus's composer: its own styles (waltz, march, ballad, funk,
disco, shuffle, chorale, folk, motorik), its own harmony (phrases walk a table of functional chord moves
and end on half or authentic cadences, periods repeat in an A A B A form), its own melody (motif rhythms,
chord tones on strong beats, stepwise passing tones between them, phrases that end on the tonic) and
its own drum, bass and accompaniment patterns. Tempo is any BPM from 60 to 180 to a tenth, in all 24 keys.

Minor keys use the natural minor scale, with the leading tone raised over the dominant chord only
(harmonic minor there), so every melody note lies in natural minor plus the raised seventh.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from midiutil import MIDIFile

COMPOSER_VERSION = "h1"  # bump when the music for a given Clip changes (cached renders are then redone)
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
LEADING_TONE = 11
MIN_BPM, MAX_BPM = 60.0, 180.0
DRUM_CHANNEL = 9  # General MIDI channel 10, counted from zero
PARTS = ("lead", "comp", "bass", "drums")
CHANNELS = {"lead": 0, "comp": 1, "bass": 2, "drums": DRUM_CHANNEL}
BASS_LOW = 33  # the bass line's roots lie in A1..G#2

# Lead instruments per family: (GM program counted from zero, name, lowest and highest melody note).
LEADS: dict[str, tuple[tuple[int, str, int, int], ...]] = {
    "piano": ((0, "grand piano", 60, 84), (2, "electric grand piano", 60, 84), (4, "electric piano", 57, 81),
              (6, "harpsichord", 60, 84), (7, "clavinet", 55, 79)),
    "mallet": ((8, "celesta", 67, 91), (11, "vibraphone", 60, 84), (12, "marimba", 60, 84),
               (13, "xylophone", 67, 91)),
    "organ": ((16, "drawbar organ", 60, 84), (19, "church organ", 55, 79), (21, "accordion", 60, 81),
              (22, "harmonica", 60, 84)),
    "guitar": ((24, "nylon-string guitar", 52, 76), (25, "steel-string guitar", 52, 76),
               (26, "jazz guitar", 52, 76), (27, "clean electric guitar", 55, 79)),
    "bass": ((32, "acoustic bass", 43, 62), (33, "fingered bass", 43, 62), (35, "fretless bass", 45, 64)),
    "strings": ((40, "violin", 62, 86), (41, "viola", 55, 76), (42, "cello", 48, 69),
                (45, "pizzicato strings", 55, 79), (46, "harp", 55, 84)),
    "brass": ((56, "trumpet", 58, 80), (57, "trombone", 48, 69), (60, "french horn", 52, 72),
              (61, "brass section", 55, 77)),
    "reed": ((64, "soprano saxophone", 60, 84), (65, "alto saxophone", 55, 77),
             (66, "tenor saxophone", 50, 72), (68, "oboe", 60, 82), (70, "bassoon", 45, 65),
             (71, "clarinet", 52, 79)),
    "pipe": ((72, "piccolo", 74, 96), (73, "flute", 62, 86), (74, "recorder", 62, 84),
             (75, "pan flute", 60, 84), (79, "ocarina", 62, 84)),
    "synth": ((80, "square lead", 55, 79), (81, "sawtooth lead", 55, 79), (82, "calliope lead", 60, 84),
              (84, "charang lead", 55, 79), (87, "bass-and-lead synth", 48, 72)),
}
FAMILIES = tuple(LEADS)

# Where each chord (scale degree counted from zero: 0 = I, 4 = V) tends to go next, per mode; a move
# listed twice is drawn twice as often. Minor's VII (degree 6) is the subtonic, which moves to III.
NEXT_CHORD = {
    "major": {0: (3, 4, 5, 1, 3), 1: (4, 6, 4), 2: (5, 3), 3: (4, 1, 0, 4), 4: (0, 5, 0), 5: (1, 3, 4),
              6: (0,)},
    "minor": {0: (3, 4, 5, 6, 3), 1: (4,), 2: (5, 3), 3: (4, 0, 4), 4: (0, 5, 0), 5: (1, 3, 4), 6: (2, 0)},
}
PREDOMINANTS = (1, 3)  # ii and IV: the chords before a cadence's dominant
B_SECTION_START = (3, 5)  # the contrasting period opens on IV or vi (iv or VI in minor)


@dataclass(frozen=True)
class Style:
    """How one style sounds: tempo range, meters, grooves, and the chance that it has drums."""

    bpm: tuple[float, float]
    meters: tuple[int, ...]  # beats per bar
    drum_chance: float
    chords_per_bar: tuple[int, ...]
    rhythms: tuple[tuple[float, ...], ...]  # melody bars, in beats; a negative duration is a rest
    cadences: tuple[tuple[float, ...], ...]  # the last bar of a phrase
    comp: dict[int, tuple]  # per meter: (beat, length, what): "all", "top" or an arpeggio index
    bass: dict[int, tuple]  # per meter: (beat, length, role): R root, 5 fifth, 8 octave, N approach, W walk
    drums: dict[int, dict[int, str]]  # per meter: GM drum note -> one bar of steps (X accent, x hit, o ghost)
    comp_programs: tuple[int, ...]
    bass_programs: tuple[int, ...]
    sevenths: bool = False
    legato: float = 0.9
    level: int = 90  # lead velocity


def _arp(order: tuple[int, ...], step: float, length: float) -> tuple:
    return tuple((i * step, length, idx) for i, idx in enumerate(order))


T = 1.0 / 3.0  # a triplet eighth
STYLES: dict[str, Style] = {
    "waltz": Style(
        bpm=(84.0, 176.0), meters=(3,), drum_chance=0.5, chords_per_bar=(1,),
        rhythms=((2.0, 1.0), (1.0, 1.0, 1.0), (1.5, 0.5, 1.0), (1.0, 2.0), (0.5, 0.5, 1.0, 1.0)),
        cadences=((3.0,), (2.0, -1.0)),
        comp={3: ((1.0, 0.7, "all"), (2.0, 0.7, "all"))},
        bass={3: ((0.0, 0.95, "R"),)},
        drums={3: {36: "X...........", 42: "....x...x...", 38: "....o...o..."}},
        comp_programs=(0, 21, 48), bass_programs=(58, 32)),
    "march": Style(
        bpm=(100.0, 136.0), meters=(2, 4), drum_chance=0.9, chords_per_bar=(1,),
        rhythms=((1.0, 1.0), (0.75, 0.25, 1.0), (0.5, 0.5, 1.0), (1.5, 0.5)),
        cadences=((2.0,), (1.0, -1.0)),
        comp={2: ((0.5, 0.3, "all"), (1.5, 0.3, "all")), 4: ((1.0, 0.5, "all"), (3.0, 0.5, "all"))},
        bass={2: ((0.0, 0.45, "R"), (1.0, 0.45, "5")), 4: ((0.0, 0.9, "R"), (2.0, 0.9, "5"))},
        drums={2: {36: "X...x...", 38: "x..ox.o.", 49: "x......."},
               4: {36: "X.......x.......", 38: "x..ox..ox.o.x...", 42: "..x...x...x...x."}},
        comp_programs=(61, 57), bass_programs=(58,), legato=0.7, level=100),
    "ballad": Style(
        bpm=(60.0, 84.0), meters=(4,), drum_chance=0.5, chords_per_bar=(1, 2),
        rhythms=((2.0, 1.0, 1.0), (1.5, 0.5, 2.0), (1.0, 1.0, 2.0), (0.5, 0.5, 1.0, 2.0), (3.0, 0.5, 0.5)),
        cadences=((4.0,), (2.0, 2.0), (3.0, -1.0)),
        comp={4: _arp((0, 1, 2, 3, 2, 1, 2, 3), 0.5, 0.9)},
        bass={4: ((0.0, 1.9, "R"), (2.0, 1.9, "5"))},
        drums={4: {36: "X.......x.x.....", 37: "....x.......x...", 42: "x.x.x.x.x.x.x.x."}},
        comp_programs=(0, 4, 48, 89), bass_programs=(33, 35), level=85),
    "funk": Style(
        bpm=(86.0, 124.0), meters=(4,), drum_chance=1.0, chords_per_bar=(1,),
        rhythms=((0.75, 0.75, 0.5, -1.0, 1.0), (0.5, 0.25, 0.25, 1.0, 0.5, 1.5), (-0.5, 0.5, 0.75, 0.75, 1.5),
                 (0.25, 0.25, 0.5, 1.0, -0.5, 0.5, 1.0)),
        cadences=((1.5, 0.5, 2.0), (1.0, -3.0)),
        comp={4: ((0.5, 0.2, "top"), (1.75, 0.2, "top"), (2.5, 0.2, "top"), (3.25, 0.2, "top"),
                  (3.75, 0.2, "top"))},
        bass={4: ((0.0, 0.4, "R"), (0.75, 0.2, "8"), (1.5, 0.3, "R"), (2.0, 0.4, "5"), (2.75, 0.2, "8"),
                  (3.5, 0.4, "N"))},
        drums={4: {36: "X..x..x...x..x..", 38: "....X..o.o..X..o", 42: "xoxoxoxoxoxoxoxo"}},
        comp_programs=(7, 4, 27), bass_programs=(36, 33), sevenths=True, legato=0.6, level=100),
    "disco": Style(
        bpm=(108.0, 132.0), meters=(4,), drum_chance=1.0, chords_per_bar=(1,),
        rhythms=((0.5, 0.5, 1.0, -0.5, 0.5, 1.0), (1.0, 1.0, 1.0, 1.0), (1.5, 0.5, 1.5, 0.5),
                 (-0.5, 0.5, 0.5, 0.5, 2.0)),
        cadences=((2.0, 2.0), (1.0, 1.0, 2.0)),
        comp={4: ((0.5, 0.4, "all"), (1.5, 0.4, "all"), (2.5, 0.4, "all"), (3.5, 0.4, "all"))},
        bass={4: tuple((0.5 * k, 0.4, "R" if k % 2 == 0 else "8") for k in range(8))},
        drums={4: {36: "X...X...X...X...", 39: "....X.......X...", 46: "..x...x...x...x.",
                   42: "x...x...x...x..."}},
        comp_programs=(48, 4, 27), bass_programs=(33, 38), legato=0.7, level=100),
    "shuffle": Style(
        bpm=(66.0, 140.0), meters=(4,), drum_chance=0.8, chords_per_bar=(1,),
        rhythms=((2 * T, T, 2 * T, T, 2.0), (1.0, 2 * T, T, 1.0, 1.0), (2 * T, T, 1.0, 2 * T, T, 1.0),
                 (1.0, 1.0, 2 * T, T, 1.0)),
        cadences=((2.0, 2.0), (1.0, 3.0)),
        comp={4: ((0.0, 0.6, "all"), (1 + 2 * T, 0.3, "all"), (2.0, 0.6, "all"), (3 + 2 * T, 0.3, "all"))},
        bass={4: ((0.0, 0.9, "R"), (1.0, 0.9, "W"), (2.0, 0.9, "5"), (3.0, 0.9, "N"))},
        drums={4: {36: "X.....x.....", 38: "...X.....X..", 51: "x.xx.xx.xx.x"}},
        comp_programs=(0, 16, 26), bass_programs=(32, 33), sevenths=True, level=95),
    "chorale": Style(
        bpm=(60.0, 96.0), meters=(4,), drum_chance=0.0, chords_per_bar=(2, 4),
        rhythms=((1.0, 1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (2.0, 2.0), (1.0, 1.0, 2.0)),
        cadences=((4.0,), (2.0, 2.0)),
        comp={4: tuple((float(b), 0.95, "all") for b in range(4))},
        bass={4: tuple((float(b), 0.95, "R") for b in range(4))},
        drums={4: {}},
        comp_programs=(19, 52, 48), bass_programs=(43, 42), level=85),
    "folk": Style(
        bpm=(90.0, 160.0), meters=(4,), drum_chance=0.5, chords_per_bar=(1, 2),
        rhythms=((1.0, 0.5, 0.5, 1.0, 1.0), (0.5, 0.5, 0.5, 0.5, 2.0), (1.5, 0.5, 2.0), (1.0, 1.0, 1.0, 1.0)),
        cadences=((4.0,), (2.0, 2.0)),
        comp={4: ((0.0, 0.9, "all"), (1.0, 0.4, "all"), (1.5, 0.4, "all"), (2.5, 0.4, "all"),
                  (3.0, 0.4, "all"), (3.5, 0.4, "all"))},
        bass={4: ((0.0, 0.9, "R"), (2.0, 0.9, "5"))},
        drums={4: {36: "X.......X.......", 38: "....x.......x...", 54: "..x...x...x...x."}},
        comp_programs=(25, 24), bass_programs=(32,), level=95),
    "motorik": Style(
        bpm=(120.0, 180.0), meters=(4,), drum_chance=0.9, chords_per_bar=(1,),
        rhythms=((0.5,) * 8, (1.0, 0.5, 0.5, 1.0, 1.0), (-0.5, 0.5, 0.5, 0.5, 2.0), (1.5, 0.5, 1.0, 1.0)),
        cadences=((4.0,), (2.0, 2.0)),
        comp={4: _arp((0, 1, 2, 1) * 4, 0.25, 0.2)},
        bass={4: tuple((0.5 * k, 0.4, "8" if k % 4 == 3 else "R") for k in range(8))},
        drums={4: {36: "X.......X.x.....", 38: "....X.......X...", 42: "x.x.x.x.x.x.x.x."}},
        comp_programs=(90, 81, 88), bass_programs=(38, 39), legato=0.8, level=95),
}
DRUM_VELOCITY = {"X": 110, "x": 88, "o": 50}
CRASH, SNARE = 49, 38


def tempo_class(bpm: float) -> str:
    """The same boundaries as the training corpus (training/synth/spec.py), so results compare."""
    if bpm < 85:
        return "slow"
    if bpm <= 125:
        return "medium"
    return "fast"


@dataclass(frozen=True)
class Clip:
    """The labels of one held-out clip, and the seed of everything else about it."""

    seed: int
    seconds: float
    bpm: float
    tonic: str
    mode: str
    meter: int
    style: str
    family: str
    program: int
    instrument: str
    drums: bool
    tempo_class: str

    def to_dict(self) -> dict:
        return asdict(self)


class Note(NamedTuple):
    """One note of a part ("lead", "comp", "bass" or "drums"), timed in beats."""

    part: str
    pitch: int
    start: float  # beats
    length: float  # beats
    velocity: int


def draw_clip(rng: np.random.Generator, seconds: float = 30.0) -> Clip:
    """Tempo log-uniform over 60-180 BPM, then a style whose range holds it; key, lead and drums uniform."""
    bpm = round(float(np.exp(rng.uniform(np.log(MIN_BPM), np.log(MAX_BPM)))), 1)
    fitting = [name for name, s in STYLES.items() if s.bpm[0] <= bpm <= s.bpm[1]]
    style = fitting[int(rng.integers(len(fitting)))]
    family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    program, instrument, _, _ = LEADS[family][int(rng.integers(len(LEADS[family])))]
    meters = STYLES[style].meters
    return Clip(
        seed=int(rng.integers(2**31 - 1)), seconds=float(seconds), bpm=bpm,
        tonic=NOTE_NAMES[int(rng.integers(12))], mode=MODES[int(rng.integers(2))],
        meter=meters[int(rng.integers(len(meters)))], style=style, family=family, program=program,
        instrument=instrument, drums=bool(rng.random() < STYLES[style].drum_chance),
        tempo_class=tempo_class(bpm))


def compose_midi(clip: Clip) -> bytes:
    """Standard MIDI File bytes for the clip; the same clip always gives the same bytes."""
    return to_midi(clip, compose_notes(clip))


def to_midi(clip: Clip, notes: list[Note]) -> bytes:
    """One track per part; the accompaniment and bass instruments are drawn from the style's own."""
    style = STYLES[clip.style]
    rng = np.random.default_rng(clip.seed + 1)
    programs = {"lead": clip.program, "comp": _choice(rng, style.comp_programs),
                "bass": _choice(rng, style.bass_programs)}
    midi = MIDIFile(len(PARTS), deinterleave=False, file_format=1)
    midi.addTempo(0, 0, clip.bpm)
    midi.addTimeSignature(0, 0, clip.meter, 2, 24)
    for track, part in enumerate(PARTS):
        midi.addTrackName(track, 0, part)
        if part in programs:
            midi.addProgramChange(track, CHANNELS[part], 0, programs[part])
            midi.addControllerEvent(track, CHANNELS[part], 0, 91, 40)  # a little reverb
    for note in notes:
        midi.addNote(PARTS.index(note.part), CHANNELS[note.part], note.pitch, round(note.start, 4),
                     round(note.length, 4), note.velocity)
    buf = io.BytesIO()
    midi.writeFile(buf)
    return buf.getvalue()


def compose_notes(clip: Clip) -> list[Note]:
    """Every note of the clip: a melody over chords, a bass line, an accompaniment and, maybe, drums."""
    style = STYLES[clip.style]
    rng = np.random.default_rng(clip.seed)
    tonic = NOTE_NAMES.index(clip.tonic)
    bar_beats = clip.meter
    bars = math.ceil(clip.seconds * clip.bpm / 60.0 / bar_beats) + 1  # a spare bar, trimmed when rendered
    per_bar = _choice(rng, style.chords_per_bar)
    periods = {"A": _period(rng, clip.mode, per_bar, 0),
               "B": _period(rng, clip.mode, per_bar, _choice(rng, B_SECTION_START))}
    form = "AABA"
    chords: list[tuple[float, float, int]] = []  # (start beat, beats, degree)
    for bar in range(bars):
        degrees = periods[form[bar // 8 % len(form)]][bar % 8]
        for k, degree in enumerate(degrees):
            chords.append((bar * bar_beats + k * bar_beats / len(degrees), bar_beats / len(degrees), degree))
    _, _, low, high = next(lead for lead in LEADS[clip.family] if lead[0] == clip.program)
    tunes = {name: _melody(rng, clip, style, tonic, period, low, high) for name, period in periods.items()}
    notes = []
    for bar in range(0, bars, 8):
        for n in tunes[form[bar // 8 % len(form)]]:
            start = n.start + bar * bar_beats
            if start < bars * bar_beats:
                notes.append(n._replace(start=start))
    notes += _accompaniment(rng, clip, style, tonic, chords)
    notes += _bass(rng, clip, style, tonic, chords)
    if clip.drums:
        notes += _drums(rng, clip, style, bars)
    return sorted(notes, key=lambda n: (n.start, PARTS.index(n.part), n.pitch))


def chord_pcs(mode: str, degree: int, seventh: bool = False) -> tuple[int, ...]:
    """Pitch classes above the tonic of the chord on a scale degree, stacked in thirds of the scale."""
    scale = scale_for(mode, degree)
    return tuple(scale[(degree + 2 * i) % 7] for i in range(4 if seventh else 3))


def scale_for(mode: str, degree: int) -> tuple[int, ...]:
    """The scale in force over a chord: natural minor, except harmonic minor over the dominant."""
    scale = SCALES[mode]
    if mode == "minor" and degree == 4:
        return scale[:6] + (LEADING_TONE,)
    return scale


def _choice(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def _period(rng: np.random.Generator, mode: str, per_bar: int, first: int) -> list[tuple[int, ...]]:
    """Eight bars of chords: a phrase ending on a half cadence, then one ending on an authentic cadence."""
    slots = 4 * per_bar
    out: list[int] = []
    for cadence in ("half", "authentic"):
        phrase = [first if cadence == "half" else 0]
        while len(phrase) < slots:
            phrase.append(_choice(rng, NEXT_CHORD[mode][phrase[-1]]))
        if cadence == "half":
            phrase[-2:] = [_choice(rng, PREDOMINANTS), 4]
        else:
            phrase[-3:] = [_choice(rng, PREDOMINANTS), 4, 0]
        out += phrase
    return [tuple(out[b * per_bar:(b + 1) * per_bar]) for b in range(8)]


def _melody(rng: np.random.Generator, clip: Clip, style: Style, tonic: int,
            period: list[tuple[int, ...]], low: int, high: int) -> list[Note]:
    """Eight bars of tune: motif rhythm in bars 1 and 3 of each phrase, chord tones on strong beats."""
    bar_beats = clip.meter
    notes: list[Note] = []
    prev = (low + high) // 2
    direction = 1
    for phrase in range(2):
        motif, answer = _choice(rng, style.rhythms), _choice(rng, style.rhythms)
        for b, rhythm in enumerate((motif, answer, motif, _choice(rng, style.cadences))):
            bar = 4 * phrase + b
            beat = 0.0
            sounding = [i for i, d in enumerate(rhythm) if d > 0]
            for i, dur in enumerate(rhythm):
                start, beat = beat, beat + abs(dur)
                if dur < 0:
                    continue
                degrees = period[bar]
                degree = degrees[min(int(start * len(degrees) / bar_beats), len(degrees) - 1)]
                chord = {(tonic + pc) % 12 for pc in chord_pcs(clip.mode, degree, style.sevenths)}
                scale = [p for p in range(low, high + 1) if (p - tonic) % 12 in scale_for(clip.mode, degree)]
                if b == 3 and i == sounding[-1]:
                    goal = {tonic} if phrase == 1 else chord
                    pitch = _nearest([p for p in scale if p % 12 in goal], prev)
                elif float(start).is_integer() and (start == 0 or abs(dur) >= 1.0 or start == bar_beats / 2):
                    target = prev + direction * int(rng.integers(0, 5))
                    tones = [p for p in scale if p % 12 in chord]
                    pitch = _nearest([p for p in tones if p != prev] or tones, target)
                else:
                    at = scale.index(_nearest(scale, prev))
                    pitch = scale[int(np.clip(at + direction, 0, len(scale) - 1))]
                if pitch >= high - 2:
                    direction = -1
                elif pitch <= low + 2:
                    direction = 1
                elif rng.random() < 0.3:
                    direction = -direction
                prev = pitch
                velocity = style.level + (10 if start == 0 else 0) + int(rng.integers(-6, 7))
                late = abs(float(rng.normal(0.0, 0.006)))  # a player a few milliseconds behind the beat
                notes.append(Note("lead", pitch, bar * bar_beats + start + late, dur * style.legato,
                                  int(np.clip(velocity, 1, 127))))
    return notes


def _nearest(options: list[int], target: float) -> int:
    return min(options, key=lambda p: (abs(p - target), p))


def _voicing(pcs: set[int], prev: list[int] | None, low: int = 52, high: int = 77) -> list[int]:
    """The close-position inversion nearest the previous chord (smooth voice leading)."""
    candidates = []
    for base in range(low, low + 12):
        if base % 12 not in pcs:
            continue
        voiced = [base]
        for pc in sorted(pcs, key=lambda c: (c - base) % 12)[1:]:
            voiced.append(base + (pc - base) % 12)
        if voiced[-1] <= high:
            candidates.append(voiced)
    ref = prev or [64]
    return min(candidates, key=lambda v: (abs(np.mean(v) - np.mean(ref)), v[0]))


def _accompaniment(rng: np.random.Generator, clip: Clip, style: Style, tonic: int,
                   chords: list[tuple[float, float, int]]) -> list[Note]:
    pattern = style.comp[clip.meter]
    notes: list[Note] = []
    prev: list[int] | None = None
    bar_beats = clip.meter
    for start, length, degree in chords:
        voiced = _voicing({(tonic + pc) % 12 for pc in chord_pcs(clip.mode, degree, style.sevenths)}, prev)
        prev = voiced
        bar_start = math.floor(start / bar_beats) * bar_beats
        for beat, dur, what in pattern:
            t = bar_start + beat
            if not start <= t < start + length - 1e-9:
                continue
            if what == "all":
                pitches = voiced
            elif what == "top":
                pitches = voiced[1:]
            else:
                pitches = [(voiced + [voiced[0] + 12])[what % (len(voiced) + 1)]]
            velocity = int(np.clip(style.level - 30 + (6 if beat == 0 else 0) + rng.integers(-5, 6), 1, 127))
            jitter = float(rng.normal(0.0, 0.004))
            notes += [Note("comp", p, max(t + jitter, 0.0), dur, velocity) for p in pitches]
    return notes


def _bass(rng: np.random.Generator, clip: Clip, style: Style, tonic: int,
          chords: list[tuple[float, float, int]]) -> list[Note]:
    pattern = style.bass[clip.meter]
    notes: list[Note] = []
    bar_beats = clip.meter
    for i, (start, length, degree) in enumerate(chords):
        pcs = chord_pcs(clip.mode, degree)
        root = BASS_LOW + (tonic + pcs[0] - BASS_LOW) % 12
        next_degree = chords[(i + 1) % len(chords)][2]
        next_root = BASS_LOW + (tonic + chord_pcs(clip.mode, next_degree)[0] - BASS_LOW) % 12
        in_scale = scale_for(clip.mode, degree)
        scale = [p for p in range(BASS_LOW - 2, BASS_LOW + 26) if (p - tonic) % 12 in in_scale]
        bar_start = math.floor(start / bar_beats) * bar_beats
        for beat, dur, role in pattern:
            t = bar_start + beat
            if not start <= t < start + length - 1e-9:
                continue
            if role == "R":
                pitch = root
            elif role == "5":
                pitch = root + (pcs[2] - pcs[0]) % 12
            elif role == "8":
                pitch = root + 12
            elif role == "N":  # the scale step just below or above the next chord's root
                pitch = _choice(rng, tuple(p for p in scale if 0 < abs(p - next_root) <= 2) or (root,))
            else:  # W: a walking step, any chord tone of the bar above the root
                pitch = root + _choice(rng, tuple((pc - pcs[0]) % 12 for pc in pcs[1:]))
            velocity = int(np.clip(style.level - 12 + (8 if beat == 0 else 0) + rng.integers(-4, 5), 1, 127))
            notes.append(Note("bass", pitch, t, dur, velocity))
    return notes


def _drums(rng: np.random.Generator, clip: Clip, style: Style, bars: int) -> list[Note]:
    """The style's one-bar groove, a crash at each period's start and a snare fill before it."""
    grooves = style.drums[clip.meter]
    notes: list[Note] = []
    for bar in range(bars):
        for drum, steps in grooves.items():
            step = clip.meter / len(steps)
            if bar % 8 == 7 and drum == SNARE and len(steps) % 4 == 0:  # fill the bar's last beat
                fill = len(steps) // clip.meter
                steps = steps[:-fill] + "o" * (fill - 1) + "X"
            for k, hit in enumerate(steps):
                if hit != ".":
                    velocity = DRUM_VELOCITY[hit] + int(rng.integers(-5, 6))
                    notes.append(Note("drums", drum, bar * clip.meter + k * step, min(step, 0.25), velocity))
        if bar % 8 == 0:
            notes.append(Note("drums", CRASH, bar * clip.meter, 1.0, 100))
    return notes
