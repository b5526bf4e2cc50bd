"""Questions whose answer is one of a few values (tempo, key, lead instrument, vocals) and the sentences the
model chooses among for them, in profiles with `answer_choices` (lite).

Why: asked "Is this piece slow, medium tempo or fast?", SmolLM2-135M runs on past its answer and names
several values, so an answer that names the right one often names a wrong one too. Scoring each possible
answer sentence as the reply (the audio tokens, the analysis told beside them and the question as the
prompt; `MusiLingo.choose`) keeps the decision with the model and gives one value, as the caption template
does for captions. A question about anything else is answered freely.

What the analysis heard (`Heard`) goes to the model twice: as text beside the audio tokens, and, for a chosen
answer, as a belief over the topic's values that multiplies the model's likelihood of each sentence
(squared: BELIEF_WEIGHT). A 135M model reads the numbers in its prompt unreliably (told the head's families
but not weighed by them, its answers named the lead's family far less often than the head is right;
docs/benchmarks.md), so without the belief its answer could contradict the caption and the track page
beside it; with it, the model decides where the analysis is unsure. Each sentence's likelihood is first
divided by its likelihood after the question alone (`MusiLingo.answer_prior`): the LLM favours some sentences
whatever it hears (piano or guitar as the lead), and what should count is what the track changed.

A question is matched by its words: the first topic whose cue words it holds, in the order below.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

from model.describe import HEAD_TAGGER, TEMPO_WORDS, Description, Tags, describe, tempo_word
from model.instrument_head import FAMILIES
from model.tempo_key import PITCH_CLASSES

# The belief in a number the analysis measured (tempo class, key) or a word it said (vocals): its value gets
# this probability and the others share the rest: about as often as tempo class and key are right held-out
# (docs/benchmarks.md, "What the analysis buys"), short of certain so that a model that is sure can overrule it.
TRUST = 0.9
# How much the belief weighs against the model's calibrated likelihood: its log-probability is multiplied by
# this. Chosen on the first 30 held-out clips, measured on the other 70 (docs/benchmarks.md, bench_answers).
BELIEF_WEIGHT = 2.0


@dataclass(frozen=True)
class Topic:
    name: str
    cues: tuple[str, ...]  # words (whole, lower case) that make a question this topic's
    sentence: str  # an answer, with {} for the value
    values: tuple[str, ...]  # what the answer can say

    @property
    def answers(self) -> tuple[str, ...]:
        """The sentences chosen among, one per value."""
        return tuple(self.sentence.format(v) for v in self.values)


# The sentences echo the words the analysis context uses ("Tempo: about 69 BPM (slow).", "Key: C major.",
# "instrument_head tags: piano 0.90, ..."; model/describe.py), which the 135M model then finds likeliest.
# Chosen on the first 30 held-out clips (bench/bench_answers.py; reported on the other 70): sentences in the
# context's words ("The tempo is mid-tempo.", the key with its tonic) were chosen right far more often than
# plainer ones ("It is at a medium tempo.", "It is in a minor key.").
TOPICS = (
    Topic("tempo", ("tempo", "fast", "slow", "bpm", "speed", "pace", "quick"), "The tempo is {}.", TEMPO_WORDS),
    Topic("mode", ("major", "minor", "key", "mode", "tonality"), "It is in {}.",
          tuple(f"{tonic} {mode}" for tonic in PITCH_CLASSES for mode in ("major", "minor"))),
    Topic("vocals", ("vocal", "vocals", "sing", "singing", "singer", "voice", "instrumental", "lyrics"), "It {}.",
          ("has vocals", "is instrumental, without vocals")),
    Topic("instrument", ("instrument", "instruments", "lead", "plays", "playing", "played"),
          "The {} plays the lead.", FAMILIES),
)
_WORD = re.compile(r"[a-z]+")


def topic_of(question: str) -> Topic | None:
    """The topic a question asks about, or None for a question to answer freely."""
    words = set(_WORD.findall(question.lower()))
    return next((t for t in TOPICS if words & set(t.cues)), None)


@dataclass(frozen=True)
class Heard:
    """A track's analysis as chat uses it: the tags of each tagger (the instrument head's families among
    them), tempo and key."""

    tags: Tags
    bpm: float | None = None
    tonic: str | None = None
    mode: str | None = None

    @cached_property
    def description(self) -> Description:
        return describe(self.tags, self.bpm, self.tonic, self.mode)

    def text(self) -> str:
        """What the chat model is told beside the audio tokens (`Description.context`)."""
        return self.description.context(self.tags)

    def belief(self, topic: Topic) -> list[float] | None:
        """A probability for each of the topic's values, or None where the analysis heard nothing of it."""
        if topic.name == "instrument":
            families = self.tags.get(HEAD_TAGGER, {})
            total = sum(families.get(f, 0.0) for f in topic.values)
            return [families.get(f, 0.0) / total for f in topic.values] if total > 0 else None
        said = {"tempo": tempo_word(self.bpm),
                "mode": f"{self.tonic} {self.mode}" if self.tonic and self.mode else None,
                "vocals": {"vocal": topic.values[0], "instrumental": topic.values[1]}.get(
                    self.description.vocals or "")}[topic.name]
        if said not in topic.values:
            return None
        rest = (1.0 - TRUST) / (len(topic.values) - 1)
        return [TRUST if v == said else rest for v in topic.values]

    def log_belief(self, topic: Topic) -> list[float] | None:
        """`belief` as log-probabilities (a value it rules out gets a large negative number, not -inf)."""
        belief = self.belief(topic)
        return None if belief is None else [math.log(max(p, 1e-9)) for p in belief]
