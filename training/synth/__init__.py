"""Synthetic labelled music: seeded attribute sampling, MIDI composition, FluidSynth rendering, text.

    spec.py     TrackSpec, attribute vocabularies, seeded sampling, derived style and mood
    compose.py  TrackSpec -> General MIDI bytes that really carry the attributes
    render.py   MIDI bytes -> mono float audio via the FluidSynth CLI and a GM soundfont
    text.py     captions, question/answer pairs and labels from a spec; labels read back from text
    corpus.py   generate_corpus(): parallel, resumable rendering with metadata.jsonl
"""

from .compose import compose_midi
from .corpus import clip_record, generate_corpus
from .render import SynthUnavailable, render_midi, unavailable_reason
from .spec import TrackSpec, clip_rng, labels, sample_spec
from .text import caption, extract_labels, qa_pairs, summary_caption

__all__ = [
    "TrackSpec", "SynthUnavailable", "caption", "clip_record", "clip_rng", "compose_midi", "extract_labels",
    "generate_corpus", "labels", "qa_pairs", "render_midi", "sample_spec", "summary_caption",
    "unavailable_reason",
]
