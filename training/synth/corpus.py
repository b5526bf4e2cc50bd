"""Build a labelled corpus: DIR/audio/<id>.wav (24 kHz mono 16-bit) and DIR/metadata.jsonl.

Clip i of seed S is a function of (S, i) alone, so a larger n extends a smaller corpus and an interrupted
run resumes: clips whose wav already exists are not rendered again (wavs are written atomically).
Rendering runs in parallel FluidSynth processes, one per worker thread (composing a clip is cheap; the
FluidSynth process is where the time goes, so threads keep every core busy without pickling).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .compose import compose_midi
from .render import DEFAULT_SAMPLE_RATE, find_fluidsynth, find_soundfont, render_midi, write_wav
from .spec import TrackSpec, clip_rng, labels, sample_spec
from .text import caption, qa_pairs

CAPTION_STREAM, QA_STREAM = 1, 2
N_CAPTIONS = 3


def clip_id(seed: int, index: int) -> str:
    return f"s{seed}-{index:06d}"


def clip_record(seed: int, index: int, seconds: float, sample_rate: int = DEFAULT_SAMPLE_RATE) -> dict:
    """Everything about clip `index` except its audio: spec, labels, captions and QA (deterministic)."""
    spec = sample_spec(clip_rng(seed, index), seconds=seconds)
    cap_rng = clip_rng(seed, index, CAPTION_STREAM)
    captions = [caption(spec, cap_rng) for _ in range(N_CAPTIONS)]
    cid = clip_id(seed, index)
    return {
        "id": cid,
        "file": f"audio/{cid}.wav",
        "sample_rate": sample_rate,
        "seconds": seconds,
        "attributes": spec.to_dict(),
        "labels": labels(spec),
        "caption": captions[0],
        "captions": captions,
        "qa": qa_pairs(spec, clip_rng(seed, index, QA_STREAM)),
    }


def render_clip(record: dict, out_dir: Path) -> bool:
    """Render one record's wav unless it exists; True when it was rendered now."""
    path = out_dir / record["file"]
    if path.is_file():
        return False
    spec = TrackSpec.from_dict(record["attributes"])
    audio = render_midi(compose_midi(spec), seconds=spec.seconds, sample_rate=record["sample_rate"])
    write_wav(path, audio, record["sample_rate"])
    return True


def generate_corpus(out_dir: str | Path, n: int, seed: int = 0, seconds: float = 10.0, workers: int = 2,
                    sample_rate: int = DEFAULT_SAMPLE_RATE,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    """Render `n` clips into `out_dir` and write `metadata.jsonl`; returns the metadata records.

    `progress` receives one-line status messages (default: stderr). Raises `SynthUnavailable` up front
    when FluidSynth or the soundfont is missing.
    """
    find_fluidsynth()
    find_soundfont()
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "audio").glob(".*.tmp"):  # left by an interrupted run
        stale.unlink(missing_ok=True)
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    records = [clip_record(seed, i, seconds, sample_rate) for i in range(n)]
    todo = [r for r in records if not (out_dir / r["file"]).is_file()]
    say(f"synth: {n} clips, {n - len(todo)} already rendered, {len(todo)} to render with {workers} workers")
    start = time.monotonic()
    done = 0
    every = max(1, len(todo) // 20)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(render_clip, r, out_dir) for r in todo]
        for future in as_completed(futures):
            try:
                future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            done += 1
            if done % every == 0 or done == len(todo):
                elapsed = time.monotonic() - start
                rate = done / elapsed if elapsed > 0 else 0.0
                eta = (len(todo) - done) / rate if rate > 0 else 0.0
                say(f"synth: {done}/{len(todo)} rendered, {rate:.2f} clips/s, eta {eta:.0f}s")
    elapsed = time.monotonic() - start
    if todo:
        say(f"synth: rendered {len(todo)} clips in {elapsed:.1f}s = {len(todo) / elapsed:.2f} clips/s "
            f"({len(todo) * seconds / elapsed:.1f}x real time)")
    write_metadata(out_dir / "metadata.jsonl", records)
    return records


def write_metadata(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
