"""Text from attributes: varied captions, question/answer pairs, and the reverse (labels read from text).

Every attribute value has its own phrases (`PHRASES`), chosen so that no phrase of one value occurs inside
a phrase of another value of the same attribute; `extract_labels` relies on that to read the labels back
from a caption or answer, which both the tests and caption evaluation use.
"""

from __future__ import annotations

import re

import numpy as np

from .spec import TrackSpec, labels

__all__ = ["PHRASES", "FAMILY_WORDS", "caption", "summary_caption", "qa_pairs", "labels", "extract_labels"]

# Adjective-like phrases (before a noun, or after "It is").
TEMPO_WORDS = {
    "slow": ("slow", "unhurried", "slow-paced", "leisurely"),
    "medium": ("mid-tempo", "moderately paced", "medium-tempo", "moderate-tempo"),
    "fast": ("fast", "up-tempo", "brisk", "fast-paced", "quick"),
}
MOOD_WORDS = {
    "happy": ("happy", "cheerful", "joyful", "sunny"),
    "sad": ("sad", "melancholic", "sorrowful", "mournful"),
    "calm": ("calm", "peaceful", "serene", "tranquil"),
    "energetic": ("energetic", "lively", "high-energy", "vigorous"),
    "tense": ("tense", "suspenseful", "uneasy", "anxious"),
}
STYLE_WORDS = {
    "classical": ("classical", "classical-style"),
    "ambient": ("ambient",),
    "jazz": ("jazz", "jazzy"),
    "latin": ("Latin", "Latin-flavoured"),
    "rock": ("rock",),
    "pop": ("pop",),
    "electronic": ("electronic", "electronica"),
}
# Noun phrases that read after "with".
DRUM_WORDS = {
    "none": ("no drums", "no percussion at all", "no drum kit"),
    "rock": ("a steady backbeat", "a backbeat drum groove", "a driving kit backbeat"),
    "electronic": ("a four-on-the-floor kick", "a drum-machine beat", "a four-on-the-floor dance beat"),
    "latin": ("conga and clave percussion", "hand percussion with congas", "a clave-and-conga groove"),
}
DYNAMICS_WORDS = {
    "soft": ("soft dynamics", "quiet dynamics", "gentle dynamics"),
    "medium": ("moderate dynamics", "medium dynamics", "even dynamics"),
    "loud": ("loud dynamics", "forceful dynamics", "strong dynamics"),
}
TEXTURE_WORDS = {
    "solo": ("no accompaniment", "a solo, unaccompanied line"),
    "sparse": ("sparse accompaniment", "light backing", "a sparse arrangement"),
    "dense": ("a dense arrangement", "a full arrangement", "rich, layered backing"),
}
METER_WORDS = {
    "4/4": ("a 4/4 meter", "four beats to the bar", "a common-time pulse"),
    "3/4": ("a 3/4 meter", "three beats to the bar", "a waltz-time lilt"),
}
REGISTER_WORDS = {
    "low": ("a low-register melody", "the melody in a low register"),
    "mid": ("a mid-register melody", "the melody in the middle register"),
    "high": ("a high-register melody", "the melody in a high register"),
}
FAMILY_PHRASES = {
    "piano": ("piano", "the piano"),
    "strings": ("strings", "a string section"),
    "brass": ("brass", "a brass section"),
    "woodwind": ("woodwinds", "a woodwind instrument"),
    "guitar": ("guitar", "a guitar"),
    "organ": ("organ", "an organ"),
    "synth": ("synth", "a synthesizer"),
}
# Words that identify a family when reading text back (family nouns and every lead instrument name).
FAMILY_WORDS = {
    "piano": ("piano",),
    "strings": ("strings", "string section", "violin", "viola", "cello"),
    "brass": ("brass", "trumpet", "trombone", "tuba", "french horn"),
    "woodwind": ("woodwind", "woodwinds", "flute", "piccolo", "clarinet", "oboe", "bassoon", "saxophone"),
    "guitar": ("guitar",),
    "organ": ("organ",),
    "synth": ("synth", "synthesizer"),
}
# What `extract_labels` searches for, per attribute and value.
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "instrument_family": FAMILY_WORDS,
    "tempo_class": TEMPO_WORDS,
    "mood": MOOD_WORDS,
    "style": STYLE_WORDS,
    "drums": DRUM_WORDS,
    "dynamics": DYNAMICS_WORDS,
    "texture": TEXTURE_WORDS,
    "meter": {"4/4": ("4/4", "four beats to the bar", "common-time", "common time"),
              "3/4": ("3/4", "three beats to the bar", "waltz-time", "waltz time")},
    "register": {"low": ("low-register", "low register"), "mid": ("mid-register", "middle register"),
                 "high": ("high-register", "high register")},
    "mode": {"major": ("major",), "minor": ("minor",)},
}
NOUNS = ("piece", "track", "tune", "composition", "instrumental")
_KEY_RE = re.compile(r"\b([A-G](?:#|b)?) (major|minor)\b")


def _one(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _instrument(spec: TrackSpec, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return _one(rng, FAMILY_PHRASES[spec.instrument_family])
    return f"{_article(spec.lead_instrument)} {spec.lead_instrument}"


def _key(spec: TrackSpec, rng: np.random.Generator) -> str:
    return _one(rng, ("in {k}", "in the key of {k}", "set in {k}")).format(k=f"{spec.key} {spec.mode}")


def _with_items(spec: TrackSpec, rng: np.random.Generator, extras: float = 0.5) -> list[str]:
    """The drums phrase always; dynamics, texture, meter, register and BPM each with probability `extras`."""
    items = [_one(rng, DRUM_WORDS[spec.drums])]
    optional = [
        _one(rng, DYNAMICS_WORDS[spec.dynamics]),
        _one(rng, TEXTURE_WORDS[spec.texture]),
        _one(rng, METER_WORDS[spec.meter]),
        _one(rng, REGISTER_WORDS[spec.register]),
        _one(rng, ("a tempo of {b} BPM", "{b} beats per minute")).format(b=spec.tempo_bpm),
    ]
    keep = rng.random(len(optional)) < extras
    items += [phrase for phrase, k in zip(optional, keep, strict=True) if k]
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def caption(spec: TrackSpec, rng: np.random.Generator) -> str:
    """One caption naming instrument, tempo, key and mode, style, mood and drums, plus some extras.

    e.g. "A slow, sad ambient piece led by the piano, in A minor, with soft dynamics and no drums."
    """
    tempo = _one(rng, TEMPO_WORDS[spec.tempo_class])
    mood = _one(rng, MOOD_WORDS[spec.mood])
    style = _one(rng, STYLE_WORDS[spec.style])
    noun = _one(rng, NOUNS)
    instrument = _instrument(spec, rng)
    key = _key(spec, rng)
    extra = _join(_with_items(spec, rng))
    template = int(rng.integers(5))
    if template == 0:
        first, second = (tempo, mood) if rng.random() < 0.5 else (mood, tempo)
        text = f"{_article(first)} {first}, {second} {style} {noun} led by {instrument}, {key}, with {extra}."
    elif template == 1:
        text = f"Featuring {instrument}, this {tempo} {style} {noun} {key} sounds {mood}, with {extra}."
    elif template == 2:
        text = f"{mood} and {tempo}, this {style} {noun} {key} features {instrument}, with {extra}."
    elif template == 3:
        text = f"{tempo} {style} {noun} {key} for {instrument}; {mood} in character, with {extra}."
    else:
        key_sentence = _one(rng, ("It is in {k}.", "The key is {k}.")).format(k=f"{spec.key} {spec.mode}")
        sentences = [f"It is {tempo}.", key_sentence, f"The mood is {mood}."]
        sentences += [f"It has {item}." for item in _with_items(spec, rng)]
        order = rng.permutation(len(sentences))
        text = f"{_article(style)} {style} {noun} featuring {instrument}. " + " ".join(
            _cap(sentences[i]) for i in order)
    return _cap(text)



SUMMARY_TEMPO = {"slow": "slow", "medium": "medium-tempo", "fast": "fast"}
SUMMARY_ATTRIBUTES = ("instrument_family", "tempo_class", "mode")  # what `summary_caption` names


def summary_caption(values: dict[str, str]) -> str:
    """One fixed-form sentence naming tempo class, instrument family and mode, e.g.
    "A slow brass piece in a minor key."

    Why: a small adapter trained on a CPU learns these three facts from a short fixed-form target in a
    few hundred steps, where the varied captions spread the loss over phrasing (docs/benchmarks.md,
    "Training the lite adapter").
    """
    return (f"A {SUMMARY_TEMPO[values['tempo_class']]} {values['instrument_family']} piece "
            f"in a {values['mode']} key.")

def _qa_instrument(spec, rng):
    q = _one(rng, ("What is the main instrument?", "Which instrument plays the melody?",
                   "What instrument leads this piece?", "Which instrument family carries the lead?",
                   "What is the lead instrument?"))
    name = spec.lead_instrument
    a = _one(rng, ("The lead instrument is {a} {n}.", "The melody is played by {a} {n}.",
                   "{A} {n} carries the melody, from the {f} family.", "It is led by {a} {n} ({f})."))
    return q, a.format(a=_article(name), A=_cap(_article(name)), n=name, f=spec.instrument_family)


def _qa_tempo(spec, rng):
    word = _one(rng, TEMPO_WORDS[spec.tempo_class])
    if rng.random() < 0.3:
        asked = _one(rng, ("slow", "fast"))
        q = f"Is this track {asked}?"
        yes = asked == spec.tempo_class
        return q, (f"Yes, it is {word}, at about {spec.tempo_bpm} BPM." if yes
                   else f"No, it is {word}, at about {spec.tempo_bpm} BPM.")
    q = _one(rng, ("What is the tempo?", "How fast is this track?", "Is this piece fast or slow?",
                   "What's the tempo in BPM?", "How would you describe the pace?"))
    a = _one(rng, ("It is {w}, at about {b} BPM.", "The tempo is {w}: roughly {b} beats per minute.",
                   "About {b} BPM, so {w}."))
    return q, a.format(w=word, b=spec.tempo_bpm)


def _qa_key(spec, rng):
    key = f"{spec.key} {spec.mode}"
    if rng.random() < 0.3:
        asked = _one(rng, ("major", "minor"))
        q = f"Is this in a {asked} key?"
        return q, (f"Yes, it is in {key}." if asked == spec.mode else f"No, it is in {key}.")
    q = _one(rng, ("What key is it in?", "Is it in a major or a minor key?", "What is the tonality?",
                   "Which key and mode is this written in?"))
    a = _one(rng, ("It is in {k}.", "The key is {k}.", "{k}: the tonic is {t} and the mode is {m}."))
    return q, _cap(a.format(k=key, t=spec.key, m=spec.mode))


def _qa_drums(spec, rng):
    q = _one(rng, ("Are there drums?", "Does this track have percussion?", "What kind of beat does it have?",
                   "Is there a drum part?"))
    phrase = _one(rng, DRUM_WORDS[spec.drums])
    if spec.drums == "none":
        a = _one(rng, ("No, there are no drums.", "There is no percussion at all.",
                       "No: it has no drum kit."))
    else:
        a = _one(rng, ("Yes, it has {p}.", "Yes: {p}.", "The rhythm comes from {p}.")).format(p=phrase)
    return q, a


def _qa_mood(spec, rng):
    q = _one(rng, ("What is the mood?", "How does this piece feel?", "What emotion does it convey?",
                   "What is the atmosphere of this track?"))
    word = _one(rng, MOOD_WORDS[spec.mood])
    a = _one(rng, ("It sounds {m}.", "The mood is {m}.", "It feels {m}.", "{a} {m} atmosphere."))
    return q, _cap(a.format(m=word, a=_article(word)))


def _qa_style(spec, rng):
    q = _one(rng, ("What genre is this?", "What style of music is this?", "How would you classify this track?",
                   "Which genre does this belong to?"))
    word = _one(rng, STYLE_WORDS[spec.style])
    a = _one(rng, ("It is {a} {s} piece.", "The style is {s}.", "This is {s} music.", "I would call it {s}."))
    return q, a.format(a=_article(word), s=word)


def _qa_meter(spec, rng):
    q = _one(rng, ("What is the time signature?", "What meter is it in?", "Is it in 3/4 or 4/4?",
                   "How many beats are in a bar?"))
    beats = "three" if spec.meter == "3/4" else "four"
    feel = "waltz time" if spec.meter == "3/4" else "common time"
    a = _one(rng, ("It is in {m}.", "The meter is {m} ({f}).", "{B} beats to the bar: {m}."))
    return q, a.format(m=spec.meter, f=feel, B=_cap(beats))


def _qa_dynamics(spec, rng):
    q = _one(rng, ("How loud is it played?", "What are the dynamics like?", "Is it played softly or loudly?"))
    word = _one(rng, DYNAMICS_WORDS[spec.dynamics])
    return q, _one(rng, ("It is played with {d}.", "The performance has {d}.")).format(d=word)


def _qa_texture(spec, rng):
    q = _one(rng, ("Is the lead accompanied?", "How dense is the arrangement?", "What is the texture like?"))
    word = _one(rng, TEXTURE_WORDS[spec.texture])
    return q, _one(rng, ("It has {t}.", "The lead plays with {t}.")).format(t=word)


def _qa_register(spec, rng):
    q = _one(rng, ("What register does the melody sit in?", "Is the melody high or low?"))
    word = _one(rng, REGISTER_WORDS[spec.register])
    return q, _one(rng, ("It has {r}.", "The track features {r}.")).format(r=word)


QA_MAKERS = {
    "instrument_family": _qa_instrument, "tempo_class": _qa_tempo, "mode": _qa_key, "drums": _qa_drums,
    "mood": _qa_mood, "style": _qa_style, "meter": _qa_meter, "dynamics": _qa_dynamics,
    "texture": _qa_texture, "register": _qa_register,
}


def qa_pairs(spec: TrackSpec, rng: np.random.Generator) -> list[dict[str, str]]:
    """One question/answer pair per attribute, in shuffled order: [{"attribute", "question", "answer"}]."""
    names = list(QA_MAKERS)
    out = []
    for i in rng.permutation(len(names)):
        q, a = QA_MAKERS[names[i]](spec, rng)
        out.append({"attribute": names[i], "question": q, "answer": a})
    return out


def _has(text: str, phrase: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase.lower()) + r"(?![\w-])", text) is not None


def extract_labels(text: str) -> dict[str, str]:
    """Read attribute values back from free text: each attribute whose phrases match exactly one value.

    Also returns "key" when a "<tonic> major|minor" phrase is present.
    """
    low = text.lower()
    found: dict[str, str] = {}
    for attribute, values in PHRASES.items():
        hits = [value for value, phrases in values.items() if any(_has(low, p) for p in phrases)]
        if len(hits) == 1:
            found[attribute] = hits[0]
    match = _KEY_RE.search(text)
    if match:
        found["key"] = match.group(1)
    return found
