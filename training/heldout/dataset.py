"""Render a held-out set: OUT/audio/<id>.wav and OUT/labels.jsonl, seeded, resumable, in parallel.

Clip i of seed S depends on (S, i) alone, so a larger --n extends a smaller set. labels.jsonl is written
before rendering starts; on a rerun a wav is kept only if the clip's record (labels, soundfont, length,
rate, composer version) is unchanged, so a set is never half one soundfont and half another.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from training.synth.render import SynthUnavailable, find_fluidsynth, render_midi, write_wav

from .compose import COMPOSER_VERSION, Clip, compose_midi, draw_clip

SOUNDFONT_ENV = "HELDOUT_SOUNDFONT"
# TimGM6mb (Debian `timgm6mb-soundfont`): a General MIDI soundfont made apart from FluidR3_GM, which the
# training corpus uses, so the held-out set also tests timbres the model never heard.
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
DEFAULT_SAMPLE_RATE = 22050


def default_soundfont() -> Path:
    return Path(os.environ.get(SOUNDFONT_ENV) or DEFAULT_SOUNDFONT)


def unavailable_reason(soundfont: str | Path | None = None) -> str | None:
    """None when held-out clips can be rendered here, else why not."""
    try:
        find_fluidsynth()
    except SynthUnavailable as exc:
        return str(exc)
    sf = Path(soundfont) if soundfont else default_soundfont()
    if not sf.is_file():
        return f"no soundfont at {sf}; apt-get install timgm6mb-soundfont or set ${SOUNDFONT_ENV}"
    return None


def clip_record(seed: int, index: int, seconds: float, soundfont: Path, sample_rate: int) -> dict:
    """The labels of clip `index` of set `seed` (every `Clip` field: meter is beats per bar), its file, and
    what made its audio (soundfont, sample rate, composer version)."""
    clip = draw_clip(np.random.default_rng([seed, index]), seconds)
    cid = f"h{seed}-{index:05d}"
    return {"id": cid, "file": f"audio/{cid}.wav", **clip.to_dict(), "soundfont": soundfont.name,
            "sample_rate": sample_rate, "composer": COMPOSER_VERSION}


def generate(out_dir: str | Path, n: int, seed: int = 0, seconds: float = 30.0,
             soundfont: str | Path | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE, workers: int = 2,
             progress: Callable[[str], None] | None = None) -> list[dict]:
    """Render `n` clips into `out_dir` (skipping those already there) and return their records."""
    reason = unavailable_reason(soundfont)
    if reason:
        raise SynthUnavailable(reason)
    sf = Path(soundfont) if soundfont else default_soundfont()
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    records = [clip_record(seed, i, seconds, sf, sample_rate) for i in range(n)]
    old = read_labels(out) if (out / "labels.jsonl").is_file() else []
    old_by_file = {r["file"]: r for r in old}
    for r in records:  # a wav made for another record (soundfont, length, rate, composer) is stale
        if old_by_file.get(r["file"]) != r:
            (out / r["file"]).unlink(missing_ok=True)
    _write_labels(out / "labels.jsonl", records)
    todo = [r for r in records if not (out / r["file"]).is_file()]
    say(f"heldout: {n} clips, {n - len(todo)} already rendered, {len(todo)} to render with {sf.name}")

    def render(record: dict) -> None:
        clip = clip_of(record)
        audio = render_midi(compose_midi(clip), seconds=clip.seconds, sample_rate=sample_rate, soundfont=sf)
        write_wav(out / record["file"], audio, sample_rate)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, _ in enumerate(pool.map(render, todo), start=1):
            if done % 20 == 0 or done == len(todo):
                say(f"heldout: {done}/{len(todo)} rendered")
    return records


def clip_of(record: dict) -> Clip:
    return Clip(**{name: record[name] for name in Clip.__dataclass_fields__})


def read_labels(out_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "labels.jsonl").read_text().splitlines() if line]


def _write_labels(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)
