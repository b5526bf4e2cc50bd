"""Questions whose answer is one of a few values (tempo, key, lead instrument, vocals) and the sentences the
model chooses among for them, in profiles with `answer_choices` (lite).

Why: asked "Is this piece slow, medium tempo or fast?", SmolLM2-135M runs on past its answer and names
several values, so an answer that names the right one often names a wrong one too. Scoring each possible
answer sentence as the reply (the audio tokens, the analysis told beside them and the question as the
prompt; `MusiLingo.choose`) keeps the decision with the model and gives one value, as the caption template
does for captions. A question about anything else is answered freely.

A question is matched by its words: the first topic whose cue words it holds, in the order below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model.instrument_head import FAMILIES
from model.tempo_key import PITCH_CLASSES


@dataclass(frozen=True)
class Topic:
    name: str
    cues: tuple[str, ...]  # words (whole, lower case) that make a question this topic's
    answers: tuple[str, ...]  # the sentences chosen among


# The sentences echo the words the analysis context uses ("Tempo: about 69 BPM (slow).", "Key: C major.",
# "instrument_head tags: piano 0.90, ..."; model/describe.py), which the 135M model then finds likeliest.
# Chosen on the first 30 held-out clips (bench/bench_answers.py; reported on the other 70): "The tempo is
# mid-tempo." was right 0.83 of the time where "It is at a medium tempo." was 0.33, and naming the key with
# its tonic 1.00 where "It is in a minor key." was 0.43.
TOPICS = (
    Topic("tempo", ("tempo", "fast", "slow", "bpm", "speed", "pace", "quick"),
          tuple(f"The tempo is {word}." for word in ("slow", "mid-tempo", "fast"))),
    Topic("mode", ("major", "minor", "key", "mode", "tonality"),
          tuple(f"It is in {tonic} {mode}." for tonic in PITCH_CLASSES for mode in ("major", "minor"))),
    Topic("vocals", ("vocal", "vocals", "sing", "singing", "singer", "voice", "instrumental", "lyrics"),
          ("It has vocals.", "It is instrumental, without vocals.")),
    Topic("instrument", ("instrument", "instruments", "lead", "plays", "playing", "played"),
          tuple(f"The {family} plays the lead." for family in FAMILIES)),
)
_WORD = re.compile(r"[a-z]+")


def topic_of(question: str) -> Topic | None:
    """The topic a question asks about, or None for a question to answer freely."""
    words = set(_WORD.findall(question.lower()))
    return next((t for t in TOPICS if words & set(t.cues)), None)
