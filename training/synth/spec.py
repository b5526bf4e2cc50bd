"""What a synthetic track is: the `TrackSpec` attributes, their vocabularies, and seeded sampling.

Style and mood are not drawn: they are derived from the drawn attributes by fixed rules, so a model that
hears the instrument, tempo, mode, drums and texture can, in principle, infer them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FAMILIES = ("piano", "strings", "brass", "woodwind", "guitar", "organ", "synth")
TEMPO_CLASSES = ("slow", "medium", "fast")
MODES = ("major", "minor")
METERS = ("4/4", "3/4")
DYNAMICS = ("soft", "medium", "loud")
DRUMS = ("none", "rock", "electronic", "latin")
TEXTURES = ("solo", "sparse", "dense")
REGISTERS = ("low", "mid", "high")
STYLES = ("classical", "ambient", "jazz", "latin", "rock", "pop", "electronic")
MOODS = ("happy", "sad", "calm", "energetic", "tense")
KEYS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Drumless tracks are drawn a little more often: they carry the classical, ambient and jazz styles.
DRUM_WEIGHTS = (0.34, 0.22, 0.2, 0.24)
# BPM ranges per tempo class, inclusive: slow < 85, medium 85-125, fast > 125.
TEMPO_RANGES = {"slow": (60, 84), "medium": (85, 125), "fast": (126, 168)}

# Lead instruments: General MIDI programs (0-based) per family and register, with a plain name.
LEAD_PROGRAMS: dict[str, dict[str, tuple[tuple[int, str], ...]]] = {
    "piano": {
        "low": ((0, "grand piano"), (1, "bright piano")),
        "mid": ((0, "grand piano"), (1, "bright piano"), (4, "electric piano")),
        "high": ((0, "grand piano"), (1, "bright piano"), (4, "electric piano")),
    },
    "strings": {
        "low": ((42, "cello"), (48, "string section")),
        "mid": ((41, "viola"), (40, "violin"), (48, "string section")),
        "high": ((40, "violin"), (49, "string section")),
    },
    "brass": {
        "low": ((57, "trombone"), (58, "tuba"), (61, "brass section")),
        "mid": ((60, "french horn"), (56, "trumpet"), (61, "brass section")),
        "high": ((56, "trumpet"), (61, "brass section")),
    },
    "woodwind": {
        "low": ((70, "bassoon"), (71, "clarinet")),
        "mid": ((71, "clarinet"), (68, "oboe"), (65, "alto saxophone")),
        "high": ((73, "flute"), (72, "piccolo"), (68, "oboe")),
    },
    "guitar": {
        "low": ((24, "nylon-string guitar"), (25, "steel-string guitar"), (29, "overdriven guitar")),
        "mid": ((24, "nylon-string guitar"), (26, "hollow-body guitar"), (27, "clean electric guitar"),
                (29, "overdriven guitar")),
        "high": ((24, "nylon-string guitar"), (25, "steel-string guitar"), (27, "clean electric guitar")),
    },
    "organ": {
        "low": ((16, "drawbar organ"), (19, "church organ"), (18, "electric organ")),
        "mid": ((16, "drawbar organ"), (19, "church organ"), (18, "electric organ")),
        "high": ((16, "drawbar organ"), (19, "church organ"), (18, "electric organ")),
    },
    "synth": {
        "low": ((81, "sawtooth synth lead"), (87, "bass-and-lead synth")),
        "mid": ((80, "square-wave synth lead"), (81, "sawtooth synth lead")),
        "high": ((80, "square-wave synth lead"), (81, "sawtooth synth lead")),
    },
}

# Accompaniment (chords) and bass programs per style.
CHORD_PROGRAMS: dict[str, tuple[int, ...]] = {
    "classical": (48, 0, 46),  # string ensemble, piano, harp
    "ambient": (89, 88, 91),  # warm pad, new age pad, choir pad
    "jazz": (0, 4, 26),  # piano, electric piano, jazz guitar
    "latin": (24, 0),  # nylon guitar, piano
    "rock": (29, 30, 18),  # overdriven guitar, distortion guitar, rock organ
    "pop": (0, 4, 25),  # piano, electric piano, steel guitar
    "electronic": (81, 90, 80),  # saw lead, polysynth, square lead
}
BASS_PROGRAMS: dict[str, tuple[int, ...]] = {
    "classical": (43, 42),  # contrabass, cello
    "ambient": (89, 38),  # warm pad, synth bass
    "jazz": (32,),  # acoustic bass
    "latin": (32, 33),  # acoustic bass, finger bass
    "rock": (34, 33),  # picked bass, finger bass
    "pop": (33, 34),
    "electronic": (38, 39),  # synth bass 1 and 2
}

LABEL_FIELDS = ("instrument_family", "tempo_class", "mode", "key", "meter", "dynamics", "drums", "texture",
                "register", "style", "mood")


@dataclass(frozen=True)
class TrackSpec:
    """The known attributes of one synthetic track; `compose.compose_midi` turns it into MIDI."""

    seed: int  # drives every compositional choice not named here (melody, progression, voicing)
    seconds: float
    instrument_family: str
    lead_program: int
    lead_instrument: str
    tempo_bpm: int
    tempo_class: str
    key: str
    mode: str
    meter: str
    dynamics: str
    drums: str
    texture: str
    register: str
    style: str
    mood: str
    chord_program: int
    bass_program: int

    @property
    def key_pc(self) -> int:
        return KEYS.index(self.key)

    @property
    def beats_per_bar(self) -> int:
        return int(self.meter.split("/")[0])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrackSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def tempo_class_of(bpm: float) -> str:
    if bpm < 85:
        return "slow"
    if bpm <= 125:
        return "medium"
    return "fast"


def derive_style(family: str, drums: str, tempo_class: str, texture: str) -> str:
    """The style label is a fixed function of attributes a listener can hear."""
    if drums == "electronic":
        return "electronic"
    if drums == "rock":
        return "rock" if family in ("guitar", "organ", "synth") else "pop"
    if drums == "latin":
        return "jazz" if family in ("brass", "woodwind") else "latin"
    if family == "synth" or (tempo_class == "slow" and texture != "dense"):
        return "ambient"
    if family in ("brass", "woodwind") and tempo_class != "slow":
        return "jazz"
    return "classical"


def derive_mood(mode: str, tempo_class: str, dynamics: str, drums: str) -> str:
    """Minor and slow is sad, major and slow calm, major and fast happy or energetic, and so on."""
    if mode == "major":
        if tempo_class == "slow":
            return "calm"
        if tempo_class == "medium":
            return "happy"
        return "happy" if dynamics == "soft" else "energetic"
    if tempo_class == "slow":
        return "sad"
    if tempo_class == "medium":
        return "sad" if dynamics == "soft" else "tense"
    return "energetic" if dynamics == "loud" and drums != "none" else "tense"


def _pick(u: float, options) -> object:
    options = tuple(options)
    return options[min(int(u * len(options)), len(options) - 1)]


def sample_spec(rng: np.random.Generator, seconds: float = 10.0, **fixed) -> TrackSpec:
    """Draw one TrackSpec. Keyword arguments pin attributes (e.g. `drums="none"`, `tempo_bpm=70`).

    Every draw is made in a fixed order whatever is pinned, so pinning one attribute leaves the others
    as they would have been. Style and mood are always derived, never pinned.
    """
    unknown = set(fixed) - set(TrackSpec.__dataclass_fields__) - {"style", "mood"}
    if unknown:
        raise TypeError(f"unknown TrackSpec fields: {sorted(unknown)}")
    if "style" in fixed or "mood" in fixed:
        raise ValueError("style and mood are derived from the other attributes and cannot be pinned")
    u = rng.random(16)
    seed = int(rng.integers(0, 2**31 - 1))
    family = fixed.get("instrument_family", _pick(u[0], FAMILIES))
    tempo_class = _pick(u[1], TEMPO_CLASSES)
    low, high = TEMPO_RANGES[tempo_class]
    bpm = int(low + min(int(u[2] * (high - low + 1)), high - low))
    if "tempo_bpm" in fixed:
        bpm = int(fixed["tempo_bpm"])
        tempo_class = tempo_class_of(bpm)
    elif "tempo_class" in fixed:
        tempo_class = fixed["tempo_class"]
        low, high = TEMPO_RANGES[tempo_class]
        bpm = int(low + min(int(u[2] * (high - low + 1)), high - low))
    if tempo_class != tempo_class_of(bpm):
        raise ValueError(f"tempo_class {tempo_class!r} does not match {bpm} BPM")
    key = fixed.get("key", _pick(u[3], KEYS))
    mode = fixed.get("mode", _pick(u[4], MODES))
    meter = fixed.get("meter", _pick(u[5], METERS))
    dynamics = fixed.get("dynamics", _pick(u[6], DYNAMICS))
    drums = fixed.get("drums", _pick_weighted(u[7], DRUMS, DRUM_WEIGHTS))
    # A solo line with a drum kit is odd: solo texture is only drawn for drumless tracks.
    texture = fixed.get("texture", _pick(u[8], TEXTURES if drums == "none" else TEXTURES[1:]))
    register = fixed.get("register", _pick(u[9], REGISTERS))
    _check("instrument_family", family, FAMILIES)
    _check("key", key, KEYS)
    _check("mode", mode, MODES)
    _check("meter", meter, METERS)
    _check("dynamics", dynamics, DYNAMICS)
    _check("drums", drums, DRUMS)
    _check("texture", texture, TEXTURES)
    _check("register", register, REGISTERS)
    lead_program, lead_instrument = _pick(u[10], LEAD_PROGRAMS[family][register])
    if "lead_program" in fixed:
        lead_program = int(fixed["lead_program"])
        names = {p: n for r in LEAD_PROGRAMS[family].values() for p, n in r}
        lead_instrument = fixed.get("lead_instrument", names.get(lead_program, family))
    style = derive_style(family, drums, tempo_class, texture)
    mood = derive_mood(mode, tempo_class, dynamics, drums)
    return TrackSpec(
        seed=int(fixed.get("seed", seed)),
        seconds=float(fixed.get("seconds", seconds)),
        instrument_family=family,
        lead_program=int(lead_program),
        lead_instrument=str(fixed.get("lead_instrument", lead_instrument)),
        tempo_bpm=bpm,
        tempo_class=tempo_class,
        key=key,
        mode=mode,
        meter=meter,
        dynamics=dynamics,
        drums=drums,
        texture=texture,
        register=register,
        style=style,
        mood=mood,
        chord_program=int(fixed.get("chord_program", _pick(u[11], CHORD_PROGRAMS[style]))),
        bass_program=int(fixed.get("bass_program", _pick(u[12], BASS_PROGRAMS[style]))),
    )


def _pick_weighted(u: float, options, weights) -> object:
    edges = np.cumsum(weights) / np.sum(weights)
    return tuple(options)[min(int(np.searchsorted(edges, u, side="right")), len(options) - 1)]


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def labels(spec: TrackSpec) -> dict[str, str]:
    """The categorical ground truth of a track, for classifiers and evaluation."""
    return {name: getattr(spec, name) for name in LABEL_FIELDS}


def clip_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """An independent generator per (corpus seed, clip index, purpose); clip i never depends on n."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, stream)))
