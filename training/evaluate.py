"""Evaluation: greedy generation on a test split, then the captioning and QA metrics (`python -m training eval`,
whose options training/cmd_eval.py defines).

Caption items (question None) are captioned as the profile captions (greedy generation after the
captioning instruction, or the likeliest sentence of its caption template; `--free-captions` generates
even then) and scored with the captioning metrics; question/answer items with the QA metrics (published per-sample forms and standard forms, see
training/metrics.py). On the synthetic corpus the report adds attribute accuracy: instrument family,
tempo class and mode parsed from each generated caption and compared with the clip's labels, and QA
accuracy (the asked attribute parsed from the generated answer). `--baseline` repeats everything with
NO audio (the same prompt with zero audio tokens), so the gain from hearing the audio is visible.
`--shuffled` repeats it with each clip's audio tokens swapped for the next clip's: the trained adapter
still shapes the answer's form (its bias acts as a learned prompt), so only the gap between the true
and the shuffled audio measures what the model hears. `--forced-choice` (synthetic corpus) asks what
the adapter conveys apart from decoding: each clip's summary caption is scored with every value of one
attribute put in (the others at the truth), and the likeliest value counts; unlike a greedy caption it
cannot skip an attribute or lean on the LLM's favourite word.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from model.config import Profile
from model.settings import Settings
from training.datasets import Item, read_dataset
from training.metrics import (
    PARSED_ATTRIBUTES,
    attribute_accuracy,
    caption_metrics,
    majority_accuracy,
    parse_attribute,
    qa_metrics,
)
from training.synth.spec import FAMILIES, MODES, TEMPO_RANGES
from training.synth.text import summary_caption

CAPTION_ATTRIBUTES = ("instrument_family", "tempo_class", "mode")
RUNS = ("audio", "no_audio", "shuffled_audio")  # with the true audio, none, another clip's; reported in this order
ATTRIBUTE_VALUES = {"instrument_family": FAMILIES, "tempo_class": tuple(TEMPO_RANGES), "mode": MODES}


def select_items(items: list[Item], limit_clips: int = 0, qa_per_clip: int = 0,
                 qa_attributes: tuple[str, ...] = ()) -> list[Item]:
    """The first `limit_clips` clips (in reading order), at most `qa_per_clip` QA items per clip, and only
    QA items about `qa_attributes` when given (synthetic corpus)."""
    clips: list[str] = []
    seen: set[str] = set()
    for it in items:
        if it.audio_key not in seen:
            seen.add(it.audio_key)
            clips.append(it.audio_key)
    keep = set(clips[:limit_clips] if limit_clips else clips)
    out, per_clip = [], {}
    for it in items:
        if it.audio_key not in keep:
            continue
        if it.question is not None and qa_attributes and it.meta.get("attribute") not in qa_attributes:
            continue
        if it.question is not None and qa_per_clip:
            per_clip[it.audio_key] = per_clip.get(it.audio_key, 0) + 1
            if per_clip[it.audio_key] > qa_per_clip:
                continue
        out.append(it)
    return out


def generate_all(model, items: list[Item], tokens: dict[str, torch.Tensor], no_audio: bool, batch: int,
                 caption_tokens: int, qa_tokens: int, log=None, zero_audio: bool = False) -> list[str]:
    """Greedy answers for every item, batched by task (similar prompt lengths batch together); captions
    come from `model.caption`, so a profile's caption template applies.

    Without audio every item with the same question has the same prompt, so greedy decoding gives the
    same text: each distinct question is generated once and the answer reused.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if no_audio:
        distinct: dict[str, int] = {}
        for i, it in enumerate(items):
            distinct.setdefault(it.question or "", i)
        firsts = list(distinct.values())
        sub = generate_all(model, [items[i] for i in firsts], tokens, False, batch, caption_tokens, qa_tokens,
                           log, zero_audio=True)
        by_q = {items[i].question or "": t for i, t in zip(firsts, sub, strict=True)}
        return [by_q[it.question or ""] for it in items]
    texts: list[str | None] = [None] * len(items)
    for is_caption in (True, False):
        idx = [i for i, it in enumerate(items) if (it.question is None) == is_caption]
        for s in range(0, len(idx), batch):
            part = idx[s: s + batch]
            audio = []
            for i in part:
                a = tokens[items[i].audio_key]
                audio.append(a[:0] if zero_audio else a)
            if is_caption:
                gens = model.caption(audio, greedy=True, max_new_tokens=caption_tokens)
            else:
                gens = model.generate(audio, [items[i].question for i in part], greedy=True, max_new_tokens=qa_tokens)
            for i, g in zip(part, gens, strict=True):
                texts[i] = g.text
            say(f"eval{' (no audio)' if zero_audio else ''}: {'captions' if is_caption else 'qa'} "
                f"{min(s + batch, len(idx))}/{len(idx)}")
    return [t or "" for t in texts]


@torch.no_grad()
def forced_choice(model, items: list[Item], tokens: dict[str, torch.Tensor], instruction: str) -> dict:
    """Per attribute, the share of clips whose summary caption is likeliest with the true value put in."""
    clips = {it.audio_key: it.meta.get("labels", {}) for it in items}
    right = dict.fromkeys(CAPTION_ATTRIBUTES, 0)
    for key, labels in clips.items():
        for attr, values in ATTRIBUTE_VALUES.items():
            targets = [summary_caption({**labels, attr: v}) for v in values]
            scores = model.score([tokens[key]] * len(values), targets, [instruction] * len(values))
            right[attr] += values[int(scores.argmax())] == labels[attr]
    return {attr: {"accuracy": n / max(1, len(clips)), "n": len(clips)} for attr, n in right.items()}


def shuffled_tokens(items: list[Item], tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each clip's audio tokens replaced by those of the next clip in reading order (a derangement)."""
    clips = list(dict.fromkeys(it.audio_key for it in items))
    if len(clips) < 2:
        raise ValueError("eval --shuffled needs at least two clips")
    return {key: tokens[clips[(i + 1) % len(clips)]] for i, key in enumerate(clips)}


def score(items: list[Item], texts: list[str], synth: bool, with_bertscore: bool = True) -> dict:
    caps = [(it, t) for it, t in zip(items, texts, strict=True) if it.question is None]
    qas = [(it, t) for it, t in zip(items, texts, strict=True) if it.question is not None]
    report: dict = {}
    if caps:
        report["captioning"] = caption_metrics([it.answer for it, _ in caps], [t for _, t in caps], with_bertscore)
    if qas:
        report["qa"] = qa_metrics([it.answer for it, _ in qas], [t for _, t in qas], with_bertscore)
    if synth:
        if caps:
            report["caption_attribute_accuracy"] = attribute_accuracy(
                [t for _, t in caps], [it.meta.get("labels", {}) for it, _ in caps], CAPTION_ATTRIBUTES)
        per_attr: dict[str, list[float]] = {}
        for it, t in qas:
            attr = it.meta.get("attribute")
            label = it.meta.get("labels", {}).get(attr)
            if attr in PARSED_ATTRIBUTES and label:
                per_attr.setdefault(attr, []).append(float(parse_attribute(t, attr) == label))
        if per_attr:
            flat = [x for xs in per_attr.values() for x in xs]
            report["qa_accuracy"] = {"overall": sum(flat) / len(flat), "n": len(flat),
                                     "per_attribute": {a: {"accuracy": sum(x) / len(x), "n": len(x)}
                                                       for a, x in sorted(per_attr.items())}}
    return report


def summary_lines(name: str, rep: dict) -> list[str]:
    """One run's report (audio, no_audio, shuffled_audio) as text lines."""
    lines = [f"== {name}"]
    if "caption_attribute_accuracy" in rep:
        acc = rep["caption_attribute_accuracy"]
        lines.append("caption attribute accuracy: " + ", ".join(f"{a} {v['accuracy']:.3f} (n={v['n']})" for a, v in acc.items()))
    if "caption_forced_choice" in rep:
        acc = rep["caption_forced_choice"]
        lines.append("caption forced choice: " + ", ".join(f"{a} {v['accuracy']:.3f} (n={v['n']})" for a, v in acc.items()))
    if "qa_accuracy" in rep:
        q = rep["qa_accuracy"]
        lines.append(f"QA accuracy: {q['overall']:.3f} (n={q['n']}); " + ", ".join(
            f"{a} {v['accuracy']:.2f}" for a, v in q["per_attribute"].items()))
    if "captioning" in rep:
        s = rep["captioning"]["standard"]
        lines.append("captioning (standard): " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                           for k, v in s.items()))
    if "qa" in rep:
        for form in ("published", "standard"):
            s = rep["qa"][form]
            lines.append(f"QA ({form}): " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in s.items()))
        lines.append(f"METEOR matching: {rep['qa']['meteor_matching']}")
    return lines


def evaluate(args: argparse.Namespace, settings: Settings, profile: Profile) -> dict:
    """The report for the options of `python -m training eval`; writes every generation to --samples and the
    report to --out when given. The model runs on the settings' device, from their models cache."""
    from model.musilingo import MusiLingo
    from training.features import FeatureCache

    if args.threads:
        torch.set_num_threads(args.threads)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result = read_dataset(args.dataset, args.root, args.split, args.audio_dir)
    say(result.report())
    attrs = tuple(a for a in (args.qa_attributes or "").split(",") if a)
    items = select_items(result.items, args.limit, args.qa_per_clip, attrs)
    need_encoder = not args.cache
    model = MusiLingo.from_profile(profile, settings.resolved_device(), cache_dir=settings.models_dir,
                                   with_encoder=need_encoder)
    tokens: dict[str, torch.Tensor] = {}
    if args.cache:
        cache = FeatureCache.open(args.cache, profile)
        missing = [it for it in items if it.audio_key not in cache]
        if missing:
            say(f"eval: {len(missing)} items have no cached features and are skipped")
        items = [it for it in items if it.audio_key in cache]
        tokens = {it.audio_key: cache.get(it.audio_key) for it in items}
    else:
        for it in items:
            if it.audio_key not in tokens:
                tokens[it.audio_key] = model.encoder.encode_file(it.audio_path)
    synth = args.dataset == "synth"
    report: dict = {"dataset": args.dataset, "root": str(args.root), "split": args.split,
                    "items": len(items), "clips": len({it.audio_key for it in items}),
                    "missing_audio": result.missing_audio, "adapter": profile.adapter,
                    "profile": profile.name,
                    "decoding": {"captions": "template" if profile.caption_template else "greedy", "answers": "greedy"}}
    if synth:
        clip_labels = {it.audio_key: it.meta.get("labels", {}) for it in items}
        report["majority_class_accuracy"] = majority_accuracy(list(clip_labels.values()), CAPTION_ATTRIBUTES)
    runs = [("no_audio", True)] if args.no_audio else [("audio", False)] + ([("no_audio", True)] if args.baseline else [])
    if args.shuffled:
        runs.append(("shuffled_audio", False))
    samples = []
    for name, no_audio in runs:
        start = time.monotonic()
        run_tokens = shuffled_tokens(items, tokens) if name == "shuffled_audio" else tokens
        texts = generate_all(model, items, run_tokens, no_audio, args.batch, args.max_new_tokens,
                             min(args.max_new_tokens, args.qa_max_new_tokens), say)
        report[name] = score(items, texts, synth)
        if synth and args.forced_choice and name != "no_audio":  # without audio every clip scores alike
            report[name]["caption_forced_choice"] = forced_choice(model, items, run_tokens, profile.caption_instruction)
        report[name]["generation_seconds"] = round(time.monotonic() - start, 1)
        for it, t in zip(items, texts, strict=True):
            samples.append({"run": name, "id": it.id, "question": it.question, "reference": it.answer, "generated": t})
    if args.samples:
        Path(args.samples).parent.mkdir(parents=True, exist_ok=True)
        with open(args.samples, "w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report
