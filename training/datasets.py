"""Readers for the training and evaluation sets, from local files only.

Every reader returns a `ReadResult`: a list of `Item`s (one per caption or question/answer pair) and
a count of the items whose audio file is absent. Such items are dropped and counted, never replaced by
another clip or by silence; the CLI prints the count and the first few missing paths.

An `Item` is (id, audio_path, question, answer): `question` is None for a caption (stage-1 layout, or the
captioning instruction in stage 2) and the question text for an instruction pair. `audio_key` names the
clip in a feature cache, so all the questions about one clip share one cache entry.

Supported layouts (KIND: what is read; the split rule):
- lp-musiccaps-msd: LP-MusicCaps-MSD rows (`caption_writing`, `path`, `track_id`) in json, jsonl, csv or
  parquet; ROOT is a file or a folder whose file names carry the split (train / valid / test);
  audio at ROOT/audio/PATH, ROOT/PATH or --audio-dir/PATH.
- musiccaps: `musiccaps-public.csv` (ytid, start_s, end_s, caption, is_audioset_eval); test is
  is_audioset_eval true. Clips are audio files named by ytid (any extension) in ROOT/audio or ROOT.
- musicinstruct: MusicInstruct JSON {"QA": [{question, answer, ytid, is_audioset_eval, ...}]}; test is
  is_audioset_eval true; clips named by ytid as for MusicCaps.
- musicqa: FinetuneMusicQA.json (train) / EvalMusicQA.json (test), items {audio_name, conversation:
  [{from: human, value}, {from: gpt, value}, ...]}; audio in ROOT/audios, ROOT/audio or ROOT.
- synth: the synthetic corpus, ROOT/metadata.jsonl with an audio path, `labels`, `caption` and `qa`
  per clip; one folder per split (a held-out set is generated with another seed), so --split is
  ignored unless the rows carry a `split` field.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm")
KINDS = ("lp-musiccaps-msd", "musiccaps", "musicinstruct", "musicqa", "synth")
CAPTION_INSTRUCTION = "Please give a caption to the music."
SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "val", "validation"), "test": ("test", "eval")}


@dataclass
class Item:
    id: str
    audio_path: Path
    question: str | None  # None: a caption (stage-1 layout)
    answer: str
    audio_key: str = ""  # the clip's name in a feature cache; defaults to the audio path
    start_s: float | None = None  # a segment of a longer file (MusicCaps), used only if the file is longer
    end_s: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.audio_key:
            self.audio_key = str(self.audio_path)


@dataclass
class ReadResult:
    items: list[Item]
    missing_audio: int = 0
    missing_examples: list[str] = field(default_factory=list)
    source: str = ""

    def report(self) -> str:
        clips = len({i.audio_key for i in self.items})
        text = f"{self.source}: {len(self.items)} items on {clips} clips; missing audio: {self.missing_audio}"
        if self.missing_examples:
            text += " (e.g. " + ", ".join(self.missing_examples[:3]) + ")"
        return text


class _Collector:
    """Builds a ReadResult, counting the items whose audio is absent instead of keeping them."""

    def __init__(self, source: str) -> None:
        self.result = ReadResult([], source=source)

    def add(self, item_id: str, audio: Path | None, question: str | None, answer: str, hint: str = "",
            **kw) -> None:
        if audio is None or not audio.is_file():
            self.result.missing_audio += 1
            if len(self.result.missing_examples) < 10:
                self.result.missing_examples.append(str(audio) if audio is not None else hint)
            return
        self.result.items.append(Item(item_id, audio, question, answer.strip(), **kw))


class AudioIndex:
    """Find a clip by its stem (e.g. a YouTube id) among the audio files of a few folders."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self.by_stem: dict[str, Path] = {}
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                    self.by_stem.setdefault(path.stem, path)

    def find(self, stem: str) -> Path | None:
        return self.by_stem.get(stem)


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _want(split: str, is_eval: bool) -> bool:
    if split == "all":
        return True
    return is_eval if split == "test" else not is_eval


def _read_table(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):  # {"train": [...]} or {"data": [...]}
            for key in ("data", "rows", "train", "items"):
                if isinstance(data.get(key), list):
                    return data[key]
            raise ValueError(f"{path}: expected a list of rows")
        return data
    if suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported table format (json, jsonl, csv or parquet)")


def _split_of(name: str) -> str | None:
    words = set(re.split(r"[^a-z]+", name.lower()))
    for split, aliases in SPLIT_ALIASES.items():
        if words & set(aliases):
            return split
    return None


def read_lp_musiccaps_msd(root: Path, split: str = "train", audio_dir: Path | None = None) -> ReadResult:
    root = Path(root)
    if root.is_file():
        files = [root]
        base = root.parent
    else:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".json", ".jsonl", ".csv", ".parquet")
                       and (split == "all" or _split_of(p.name) == split))
        base = root
    out = _Collector(f"lp-musiccaps-msd {split}")
    folders = [d for d in (audio_dir, base / "audio", base) if d is not None]
    for path in files:
        for row in _read_table(path):
            if split != "all" and "split" in row and row["split"] not in SPLIT_ALIASES.get(split, (split,)):
                continue
            caption = row.get("caption_writing")
            if not caption:
                continue
            rel = str(row.get("path") or "")
            audio = next((d / rel for d in folders if rel and (d / rel).is_file()), None)
            if audio is None and rel:
                audio = folders[0] / rel
            item_id = str(row.get("track_id") or rel)
            out.add(item_id, audio, None, caption, hint=item_id)
    return out.result


def read_musiccaps(root: Path, split: str = "test", audio_dir: Path | None = None) -> ReadResult:
    root = Path(root)
    table = root if root.is_file() else root / "musiccaps-public.csv"
    base = table.parent
    index = AudioIndex([d for d in (audio_dir, base / "audio", base / "wav", base) if d is not None])
    out = _Collector(f"musiccaps {split}")
    for row in _read_table(table):
        if not _want(split, _truthy(row.get("is_audioset_eval", False))):
            continue
        ytid = row["ytid"]
        start = float(row["start_s"]) if row.get("start_s") not in (None, "") else None
        end = float(row["end_s"]) if row.get("end_s") not in (None, "") else None
        out.add(ytid, index.find(ytid), None, row["caption"], hint=ytid, start_s=start, end_s=end,
                meta={"aspect_list": row.get("aspect_list", "")})
    return out.result


def read_musicinstruct(root: Path, split: str = "test", audio_dir: Path | None = None) -> ReadResult:
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.glob("*.json"))
    base = root.parent if root.is_file() else root
    index = AudioIndex([d for d in (audio_dir, base / "audio", base / "wav", base) if d is not None])
    out = _Collector(f"musicinstruct {split}")
    for path in files:
        data = json.loads(path.read_text())
        rows = data.get("QA", []) if isinstance(data, dict) else data
        for n, row in enumerate(rows):
            if not _want(split, _truthy(row.get("is_audioset_eval", False))):
                continue
            ytid = row["ytid"]
            out.add(f"{ytid}#{n}", index.find(ytid), row["question"], row["answer"], hint=ytid,
                    audio_key="", meta={"source": path.name})
    return out.result


def read_musicqa(root: Path, split: str = "test", audio_dir: Path | None = None) -> ReadResult:
    root = Path(root)
    names = {"test": ["EvalMusicQA.json"], "all": ["FinetuneMusicQA.json", "EvalMusicQA.json"]}.get(
        split, ["FinetuneMusicQA.json"])
    tables = [root] if root.is_file() else [root / n for n in names if (root / n).is_file() or split != "all"]
    base = tables[0].parent
    folders = [d for d in (audio_dir, base / "audios", base / "audio", base) if d is not None]
    out = _Collector(f"musicqa {split}")
    rows = [row for table in tables for row in json.loads(table.read_text())]
    for n, row in enumerate(rows):
        audio_name = row["audio_name"]
        audio = next((d / audio_name for d in folders if (d / audio_name).is_file()), folders[0] / audio_name)
        turns = row.get("conversation", [])
        for k in range(len(turns) - 1):
            if turns[k].get("from") == "human" and turns[k + 1].get("from") == "gpt":
                question = turns[k]["value"].replace("<audio>", "").replace("<Audio>", "").strip()
                out.add(f"{Path(audio_name).stem}#{n}.{k}", audio, question, turns[k + 1]["value"],
                        hint=audio_name)
    return out.result


def read_synth(root: Path, split: str = "all", audio_dir: Path | None = None) -> ReadResult:
    """The synthetic corpus: one caption item and one item per question/answer pair for each clip."""
    root = Path(root)
    table = root if root.is_file() else root / "metadata.jsonl"
    base = table.parent
    out = _Collector(f"synth {base.name}")
    for row in _read_table(table):
        if split not in ("all", "") and row.get("split") not in (None, split):
            continue
        rel = row.get("audio") or row.get("audio_path") or row.get("path") or row.get("file")
        clip_id = str(row.get("id") or Path(str(rel)).stem)
        audio = None
        if rel:
            candidates = [Path(rel)] if Path(rel).is_absolute() else [base / rel]
            if audio_dir is not None:
                candidates.insert(0, Path(audio_dir) / Path(rel).name)
            audio = next((c for c in candidates if c.is_file()), candidates[-1])
        labels = dict(row.get("labels") or {})
        if row.get("caption"):
            out.add(f"{clip_id}#caption", audio, None, row["caption"], hint=clip_id,
                    meta={"labels": labels, "clip": clip_id, "task": "caption"})
        for k, pair in enumerate(row.get("qa") or []):
            meta = {"labels": labels, "clip": clip_id, "task": "qa"}
            meta.update({key: value for key, value in pair.items() if key not in ("question", "answer")})
            out.add(f"{clip_id}#qa{k}", audio, pair["question"], pair["answer"], hint=clip_id, meta=meta)
    return out.result


READERS = {
    "lp-musiccaps-msd": read_lp_musiccaps_msd,
    "musiccaps": read_musiccaps,
    "musicinstruct": read_musicinstruct,
    "musicqa": read_musicqa,
    "synth": read_synth,
}


def read_dataset(kind: str, root: str | Path, split: str = "train", audio_dir: str | Path | None = None) -> ReadResult:
    try:
        reader = READERS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind '{kind}'; known: {', '.join(KINDS)}") from None
    return reader(Path(root), split, Path(audio_dir) if audio_dir else None)


def as_instruction(items: list[Item], instruction: str = CAPTION_INSTRUCTION) -> list[Item]:
    """Stage-2 view: a caption item becomes the captioning instruction with the caption as answer."""
    out = []
    for item in items:
        if item.question is None:
            item = Item(item.id, item.audio_path, instruction, item.answer, item.audio_key, item.start_s,
                        item.end_s, dict(item.meta, task=item.meta.get("task", "caption")))
        out.append(item)
    return out
