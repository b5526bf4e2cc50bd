"""What an analysis says in words: instruments, genre, mood, vocals, tempo and key, each only when heard.

The musicnn taggers answer in 100 tags of two vocabularies; people search and read in plain words. The
vocabularies below group the tags (a word may come from tags of both taggers: its probability is the
largest), and a word is said only when its probability reaches its group's threshold. The same
description makes the lite profile's captions, the track columns a catalog filters on (`vocals`,
`auto_genre`), and the context the chat model is given, so what each says agrees.

Tempo words use the synthetic corpus's classes (training/synth/spec.py): slow below 85 BPM, fast above 125.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# word -> the tags that mean it, by tagger
INSTRUMENTS = {
    "piano": {"MTT_musicnn": ("piano",)},
    "guitar": {"MTT_musicnn": ("guitar",), "MSD_musicnn": ("guitar",)},
    "strings": {"MTT_musicnn": ("strings",)},
    "violin": {"MTT_musicnn": ("violin",)},
    "cello": {"MTT_musicnn": ("cello",)},
    "harp": {"MTT_musicnn": ("harp",)},
    "flute": {"MTT_musicnn": ("flute",)},
    "sitar": {"MTT_musicnn": ("sitar",)},
    "harpsichord": {"MTT_musicnn": ("harpsichord",)},
    "synth": {"MTT_musicnn": ("synth",)},
    "drums": {"MTT_musicnn": ("drums",)},
}
GENRES = {
    "classical": {"MTT_musicnn": ("classical", "classic")},
    "electronic": {"MTT_musicnn": ("electronic",), "MSD_musicnn": ("electronic", "electronica", "electro")},
    "techno": {"MTT_musicnn": ("techno",)},
    "house": {"MSD_musicnn": ("House",)},
    "dance": {"MTT_musicnn": ("dance",), "MSD_musicnn": ("dance",)},
    "ambient": {"MTT_musicnn": ("ambient",), "MSD_musicnn": ("ambient",)},
    "new age": {"MTT_musicnn": ("new age",)},
    "rock": {"MTT_musicnn": ("rock",), "MSD_musicnn": ("rock", "alternative rock", "classic rock", "hard rock")},
    "progressive rock": {"MSD_musicnn": ("Progressive rock",)},
    "indie": {"MSD_musicnn": ("indie", "indie rock", "indie pop", "alternative")},
    "metal": {"MTT_musicnn": ("metal",), "MSD_musicnn": ("metal", "heavy metal")},
    "punk": {"MSD_musicnn": ("punk",)},
    "pop": {"MTT_musicnn": ("pop",), "MSD_musicnn": ("pop",)},
    "jazz": {"MSD_musicnn": ("jazz",)},
    "blues": {"MSD_musicnn": ("blues",)},
    "soul": {"MSD_musicnn": ("soul", "rnb")},
    "funk": {"MSD_musicnn": ("funk",)},
    "hip-hop": {"MSD_musicnn": ("Hip-Hop",)},
    "folk": {"MSD_musicnn": ("folk",)},
    "country": {"MTT_musicnn": ("country",), "MSD_musicnn": ("country",)},
    "indian": {"MTT_musicnn": ("indian",)},
    "opera": {"MTT_musicnn": ("opera",)},
    "experimental": {"MSD_musicnn": ("experimental",)},
}
MOODS = {
    "mellow": {"MSD_musicnn": ("Mellow", "chill", "chillout", "easy listening")},
    "beautiful": {"MSD_musicnn": ("beautiful",)},
    "sad": {"MSD_musicnn": ("sad",)},
    "happy": {"MSD_musicnn": ("happy",)},
    "party": {"MSD_musicnn": ("party",)},
    "soft": {"MTT_musicnn": ("soft", "quiet")},
    "loud": {"MTT_musicnn": ("loud",)},
    "weird": {"MTT_musicnn": ("weird",)},
}
VOCAL = {"MTT_musicnn": ("vocal", "vocals", "singing", "female", "male", "woman", "man", "voice", "male vocal",
                         "female vocal", "male voice", "female voice", "choir", "choral", "opera"),
         "MSD_musicnn": ("female vocalists", "male vocalists", "female vocalist")}
INSTRUMENTAL = {"MTT_musicnn": ("no vocals", "no vocal", "no voice"), "MSD_musicnn": ("instrumental",)}

DESCRIBE_REVISION = 2  # bump when what a description says changes: captions written from it are redone

HEAD_TAGGER = "instrument_head"  # the family classifier on the taggers' embedding (model/instrument_head.py)
# musicnn's instrument words by family, so a confident family from the head drops the words it contradicts
FAMILY_OF = {"piano": "piano", "harpsichord": "piano", "guitar": "guitar", "sitar": "guitar", "strings": "strings",
             "violin": "strings", "cello": "strings", "harp": "strings", "flute": "woodwind", "synth": "synth"}

# The probability a word needs to be said. Chosen by measurement (bench/bench_analysis.py; docs/benchmarks.md,
# "What the analysis buys").
THRESHOLDS = {"instrument": 0.3, "genre": 0.3, "mood": 0.3, "vocal": 0.4, "instrumental": 0.3, "family": 0.6}
MAX_WORDS = {"instrument": 3, "genre": 2, "mood": 1}
SLOW_BELOW, FAST_ABOVE = 85.0, 125.0
TEMPO_WORDS = ("slow", "mid-tempo", "fast")  # the tempo classes as captions and chat answers say them

Tags = dict[str, dict[str, float]]  # tagger -> {tag: probability}, as TrackAnalysis.tags gives them


def word_scores(tags: Tags, vocabulary: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, float]:
    """Each word's probability: the largest of its tags'."""
    return {word: max((tags.get(tagger, {}).get(t, 0.0) for tagger, names in sources.items() for t in names),
                      default=0.0) for word, sources in vocabulary.items()}


def _heard(tags: Tags, vocabulary: dict, group: str) -> list[tuple[str, float]]:
    scores = word_scores(tags, vocabulary)
    kept = sorted(((w, p) for w, p in scores.items() if p >= THRESHOLDS[group]), key=lambda wp: -wp[1])
    return kept[:MAX_WORDS[group]]


def tempo_word(bpm: float | None) -> str | None:
    if not bpm:
        return None
    slow, medium, fast = TEMPO_WORDS
    return slow if bpm < SLOW_BELOW else fast if bpm > FAST_ABOVE else medium


@dataclass
class Description:
    instruments: list[tuple[str, float]] = field(default_factory=list)
    genres: list[tuple[str, float]] = field(default_factory=list)
    moods: list[tuple[str, float]] = field(default_factory=list)
    vocals: str | None = None  # vocal | instrumental | None (not sure)
    bpm: float | None = None
    tonic: str | None = None
    mode: str | None = None

    @property
    def genre(self) -> str | None:
        return self.genres[0][0] if self.genres else None

    def caption(self) -> str:
        """One sentence, e.g. "A fast electronic techno track with synth and drums, instrumental, in F minor
        at about 140 BPM."; parts not heard with confidence are left out."""
        words = [w for w, _ in self.moods] + [w for w in [tempo_word(self.bpm)] if w] + [w for w, _ in self.genres]
        noun = "song" if self.vocals == "vocal" else "piece"
        head = " ".join([*words, noun])
        head = ("An " if head[0] in "aeiou" else "A ") + head
        parts = [head + (" with " + _join([w for w, _ in self.instruments]) if self.instruments else "")]
        if self.vocals == "instrumental":
            parts.append("instrumental")
        elif self.vocals == "vocal":
            parts.append("with vocals")
        where = []
        if self.tonic and self.mode:
            where.append(f"in {self.tonic} {self.mode}")
        if self.bpm:
            where.append(f"at about {self.bpm:.0f} BPM")
        if where:
            parts.append(" ".join(where))
        return ", ".join(parts) + "."

    def context(self, tags: Tags, n: int = 8) -> str:
        """What the chat model is told it heard: the top tags with probabilities, the tempo and the key."""
        lines = []
        for tagger, probs in tags.items():
            top = sorted(probs.items(), key=lambda kv: -kv[1])[:n]
            lines.append(f"{tagger} tags: " + ", ".join(f"{t} {p:.2f}" for t, p in top))
        if self.bpm:
            lines.append(f"Tempo: about {self.bpm:.0f} BPM ({tempo_word(self.bpm)}).")
        if self.tonic and self.mode:
            lines.append(f"Key: {self.tonic} {self.mode}.")
        if self.vocals:
            lines.append(f"Vocals: {'yes' if self.vocals == 'vocal' else 'none (instrumental)'}.")
        return "\n".join(lines)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(tags: Tags, bpm: float | None = None, tonic: str | None = None, mode: str | None = None) -> Description:
    vocal = max(word_scores(tags, {"v": VOCAL}).values())
    instrumental = max(word_scores(tags, {"i": INSTRUMENTAL}).values())
    vocals = None
    if vocal >= THRESHOLDS["vocal"] and vocal > instrumental:
        vocals = "vocal"
    elif instrumental >= THRESHOLDS["instrumental"] and instrumental > vocal:
        vocals = "instrumental"
    return Description(_instruments(tags), _heard(tags, GENRES, "genre"), _heard(tags, MOODS, "mood"), vocals,
                       bpm or None, tonic, mode)


def _instruments(tags: Tags) -> list[tuple[str, float]]:
    """musicnn's instrument words; when the head is sure of the lead family, that family first and only the
    words that agree with it (drums and other words of no family stay)."""
    heard = _heard(tags, INSTRUMENTS, "instrument")
    families = tags.get(HEAD_TAGGER, {})
    if not families:
        return heard
    family, p = max(families.items(), key=lambda fp: fp[1])
    if p < THRESHOLDS["family"]:
        return heard
    agree = [(w, q) for w, q in heard if FAMILY_OF.get(w, family) == family and w != family]
    return ([(family, p)] + agree)[:MAX_WORDS["instrument"]]
