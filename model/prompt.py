"""Prompt templates as data. `musilingo` is the reference layout, byte for byte:

    [BOS] + emb("###Human: <Audio>") + audio tokens + emb("</Audio> {question} ###Assistant: ")

Each text piece is tokenized on its own without special tokens. Targets end with the stop string
("###"). Later turns of a chat append "{answer}###Human: {question} ###Assistant: " after the first
turn, so the audio tokens stay in the first Human turn only.
Stage-1 pre-training has no prompt at all: [BOS] + audio tokens + caption + "\n".
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

MAX_TEMPLATE_SENTENCES = 512  # each is one scored row per caption: a bound on a profile's caption cost
_SLOT = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Template:
    before_audio: str
    after_audio: str  # formatted with {question}
    next_turn: str  # formatted with {answer} and {question}: closes the previous answer, opens a turn
    stop: str
    add_bos: bool = True


TEMPLATES: dict[str, Template] = {
    "musilingo": Template(
        before_audio="###Human: <Audio>",
        after_audio="</Audio> {question} ###Assistant: ",
        next_turn="{answer}###Human: {question} ###Assistant: ",
        stop="###",
    ),
    "chatml": Template(
        before_audio="<|im_start|>user\n<Audio>",
        after_audio="</Audio> {question}<|im_end|>\n<|im_start|>assistant\n",
        next_turn="{answer}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
        stop="<|im_end|>",
        add_bos=False,
    ),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown prompt template '{name}'; known: {', '.join(TEMPLATES)}") from None


def text_after_audio(template: Template, question: str, history: list[tuple[str, str]] = (),
                     context: str | None = None) -> str:
    """The text that follows the audio tokens: the first question, then each earlier answer and the next question.

    A `context` (what the analysis heard, model/describe.py) goes before the first question, beside the
    audio, so every turn of a chat is answered from it.
    """
    first = history[0][0] if history else question
    if context:
        first = f"What was heard in this music:\n{context}\n\n{first}"
    if not history:
        return template.after_audio.format(question=first)
    text = template.after_audio.format(question=first)
    questions = [q for q, _ in history[1:]] + [question]
    for (_, answer), nxt in zip(history, questions, strict=True):
        text += template.next_turn.format(answer=answer, question=nxt)
    return text


def cut_at_stop(text: str, stop: str) -> str:
    """Generated text up to the first stop string, as the reference evaluation cuts it."""
    return text.split(stop, 1)[0].strip()


def expand_caption_template(template: str) -> list[str]:
    """Every sentence a caption template allows, e.g. "A {slow|fast} piece." -> ["A slow piece.", "A fast piece."].

    Why: a profile whose LLM cannot be trusted to keep a caption's form (a 135M model writes its own prose
    whatever the audio tokens say) captions by scoring these sentences instead of free generation.
    """
    slots = [m.group(1).split("|") for m in _SLOT.finditer(template)]
    rest = _SLOT.sub("", template)
    if "{" in rest or "}" in rest or any("" in choices for choices in slots):
        raise ValueError(f"caption template {template!r}: slots are {{a|b|c}} with non-empty choices, not nested")
    if math.prod(len(c) for c in slots) > MAX_TEMPLATE_SENTENCES:
        raise ValueError(f"caption template {template!r} allows more than {MAX_TEMPLATE_SENTENCES} sentences")
    pieces = _SLOT.split(template)  # text, slot, text, slot, ..., text
    sentences = []
    for picked in itertools.product(*slots):
        out = pieces[0]
        for choice, text in zip(picked, pieces[2::2], strict=True):
            out += choice + text
        sentences.append(out)
    return sentences
