"""A held-out labelled set for tempo, key and instrument estimation, independent of `training/synth`.

    compose.py  its own composer: styles, functional harmony, melody, bass, accompaniment, drums -> MIDI
    dataset.py  seeded, resumable rendering with another General MIDI soundfont (TimGM6mb), labels.jsonl

`python -m training.heldout OUT_DIR --n 100 --seed 0` writes the set.
"""

from .compose import Clip, compose_midi, compose_notes, draw_clip, tempo_class
from .dataset import clip_of, clip_record, generate, read_labels, unavailable_reason

__all__ = ["Clip", "clip_of", "clip_record", "compose_midi", "compose_notes", "draw_clip", "generate",
           "read_labels", "tempo_class", "unavailable_reason"]
