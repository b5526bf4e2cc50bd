"""What the analysis buys "more like this" and the chat model, on the held-out set.

    python bench/bench_answers.py [--n 100] [--chat-n N] [--chat-skip 30] [--seconds 30] [--out /tmp/bench-analysis] [--json]

The held-out set and its lite catalog are bench/bench_analysis.py's (`training.heldout`: its own composer
and the TimGM6mb soundfont; OUT/heldout, scanned with the lite profile into OUT/data). The catalog is reused
when it holds exactly the first `--n` clips, each scanned with the current encoder, analysis and profile
versions; otherwise the clips are scanned again into a fresh OUT/data. Then:
- more like this: each clip is a seed; of its top 10 (`SearchEngine.like_track`, search/like.py), the share
  that has the seed's instrument family (bench_analysis's families; seeds of a family without a class, the
  set's bass and mallet, are left out), tempo class and mode. Ranked by today's blend (musicnn weight 0.5),
  by the track vectors alone (weight 0: "more like this" before the analysis), by the musicnn embedding
  alone (weight 1; the blend re-ranks the audio index's nearest LIKE_DEPTH = 200 tracks, so on up to 200
  clips it ranks the whole catalog), and at random (the expected share, exact: the seed's value among
  the other clips);
- chat: each clip's stored audio tokens are asked three questions (tempo, mode, lead instrument; the
  instrument only where the family has a class), the answer chosen among the topic's sentences
  (`answer_choices`, model/answers.py), in four ways (ARMS): as `python -m model ask` answers them today
  (the stored analysis, as `ask` hears it in the file, told beside the audio, `ground_chat`, its belief
  weighed into the choice twice, `BELIEF_WEIGHT`, and each sentence's likelihood after the question alone
  taken out), the same with the belief weighed once, with the analysis told but its belief and the
  calibration left out (before), and from the audio tokens alone (what the adapter conveys); beside them,
  the value the analysis believes likeliest, without the model. An answer is right when it names the right value and no other
  (bench_analysis's words and `named`, with two words answers use and captions do not: "medium", which the
  tempo question offers, and "synthesizer"). `--json` keeps every answer with its audio token count and
  token ids.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_analysis import FAMILY_WORDS, TEMPO_WORDS, family, fresh_data_dir, named, render_heldout  # noqa: E402

from catalog.store import Catalog, tracks  # noqa: E402
from indexer.indexing import Models  # noqa: E402
from indexer.pipeline import scan, stored_analyses  # noqa: E402
from model.analysis import analysis_version  # noqa: E402
from model.answers import BELIEF_WEIGHT, topic_of  # noqa: E402
from model.config import Profile, load_profile  # noqa: E402
from model.settings import Settings, load_settings  # noqa: E402
from search import SearchEngine  # noqa: E402

WEIGHTS = {"blend (0.5, today)": 0.5, "track vectors alone (0, before)": 0.0, "musicnn alone (1)": 1.0}
ATTRIBUTES = ("family", "tempo_class", "mode")
QUESTIONS = {  # what is asked -> (the label it is scored against, the words that name each value)
    "tempo": ("Is this piece slow, medium tempo or fast?", "tempo_class", {**TEMPO_WORDS, "medium": "medium"}),
    "mode": ("Is it in a major or a minor key?", "mode", {"major": "major", "minor": "minor"}),
    "instrument": ("Which instrument plays the lead?", "family", {**FAMILY_WORDS, "synthesizer": "synth"}),
}
TOP_K = 10


def value(label: dict, attribute: str) -> str | None:
    return family(label) if attribute == "family" else label[attribute]


def current(settings: Settings, profile: Profile, root: Path, labels: dict[str, dict]) -> bool:
    """Whether the catalog holds exactly the labelled clips, each done with today's versions."""
    if not settings.catalog_path.is_file():
        return False
    with Catalog(settings.catalog_path).read() as conn:
        rows = conn.execute(select(tracks.c.path, tracks.c.status, tracks.c.encoder_version,
                                   tracks.c.pipeline_version, tracks.c.analysis_version)).all()
    want = ("done", profile.version("encoder"), profile.version(), analysis_version())
    found = {str(Path(r[0]).relative_to(root)) if Path(r[0]).is_relative_to(root) else r[0]: tuple(r[1:])
             for r in rows}
    return set(found) == set(labels) and all(v == want for v in found.values())


def catalog(out: Path, n: int, seconds: float) -> tuple[dict[str, dict], Path, Settings, Models, bool]:
    """The held-out labels, root, the catalog's settings, the lite models, and whether the catalog was reused."""
    labels, root = render_heldout(out, n, seconds)
    profile = load_profile("lite")
    settings = load_settings(data_dir=out / "data", device="cpu")
    reused = current(settings, profile, root, labels)
    if not reused:  # the labelled clips only: OUT/heldout/audio may hold more from a larger --n
        settings = fresh_data_dir(out)
        models = Models(profile, settings)
        scan([str(root / f) for f in sorted(labels)], settings, profile, models=models, greedy=True)
    else:
        models = Models(profile, settings)
    return labels, root, settings, models, reused


def more_like_this(engine: SearchEngine, by_id: dict[int, str], labels: dict[str, dict]) -> dict:
    """Per weight, the mean share of each seed's top 10 that shares its value of each attribute; random's exactly."""
    results = {name: {} for name in WEIGHTS}
    for name, weight in WEIGHTS.items():
        for tid, file in sorted(by_id.items()):
            hits = engine.like_track(tid, top_k=TOP_K, musicnn_weight=weight)
            results[name][file] = [by_id[h.track_id] for h in hits]
    shares: dict[str, dict[str, float]] = {}
    seeds: dict[str, int] = {}
    files = sorted(by_id.values())
    for attribute in ATTRIBUTES:
        wanted = [f for f in files if value(labels[f], attribute) is not None]
        seeds[attribute] = len(wanted)
        for name in WEIGHTS:
            per_seed = [np.mean([value(labels[h], attribute) == value(labels[f], attribute) for h in results[name][f]])
                        for f in wanted if results[name][f]]
            shares.setdefault(name, {})[attribute] = round(float(np.mean(per_seed)), 3)
        expected = [(sum(value(labels[g], attribute) == value(labels[f], attribute) for g in files) - 1) / (len(files) - 1)
                    for f in wanted]
        shares.setdefault("random (expected)", {})[attribute] = round(float(np.mean(expected)), 3)
    return {"seeds": seeds, "share_of_top_10": shares, "top_10": results}


ARMS = {  # how each answer is chosen among the topic's sentences: (the analysis told, the weight of its belief,
    # the LLM's leaning after the question alone taken out): `MusiLingo.choose`'s `belief_weight`, `calibrated`
    "told, belief x2, calibrated (today)": (True, BELIEF_WEIGHT, True),
    "told, belief x1, calibrated": (True, 1.0, True),
    "told only (before)": (True, 0.0, False),
    "audio tokens alone": (False, 0.0, False),
}
ANALYSIS = "the analysis alone (its likeliest value, no model)"


def chat(engine: SearchEngine, models: Models, settings: Settings, by_id: dict[int, str],
         labels: dict[str, dict]) -> dict:
    """Every clip asked the three questions in each of the ARMS; rates and answers."""
    musilingo = models.musilingo
    with Catalog(settings.catalog_path).read() as conn:
        stored = stored_analyses(conn, list(by_id))
    answers, right = [], {q: {arm: [] for arm in (*ARMS, ANALYSIS)} for q in QUESTIONS}
    t0, asked = time.perf_counter(), 0
    for tid, file in sorted(by_id.items(), key=lambda kv: kv[1]):
        audio = engine.track_tokens(tid)
        heard = stored[tid].heard() if tid in stored else None
        clip = {"file": file, "labels": {a: value(labels[file], a) for a in ATTRIBUTES},
                "context": heard.text() if heard else None, "answers": {}}
        for key, (question, attribute, words) in QUESTIONS.items():
            truth = value(labels[file], attribute)
            if truth is None:
                continue
            clip["answers"][key] = {}
            topic = topic_of(question)
            for arm, (told, weight, calibrated) in ARMS.items():
                gen = musilingo.choose(audio, question, topic, context=heard if told else None,
                                       calibrated=calibrated, belief_weight=weight)
                asked += 1
                said = named(gen.text, words)
                ok = said == {truth}
                right[key][arm].append(ok)
                clip["answers"][key][arm] = {"answer": gen.text, "named": sorted(said), "right": ok,
                                             "audio_tokens": gen.n_audio_tokens, "token_ids": gen.token_ids,
                                             **gen.extra}
            belief = heard.belief(topic) if heard else None
            right[key][ANALYSIS].append(belief is not None and
                                        named(topic.answers[int(np.argmax(belief))], words) == {truth})
        answers.append(clip)
    seconds = time.perf_counter() - t0
    rates = {q: {arm: round(float(np.mean(v)), 3) if v else None for arm, v in arms.items()}
             | {"clips": len(next(iter(arms.values())))}
             for q, arms in right.items()}
    return {"questions": {k: q for k, (q, _, _) in QUESTIONS.items()}, "right": rates,
            "seconds_per_answer": round(seconds / max(1, asked), 2), "answers": answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", default="/tmp/bench-analysis")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--chat-n", type=int, help="ask about N clips only (chat takes seconds an answer)")
    parser.add_argument("--chat-skip", type=int, default=0,
                        help="skip the first N clips in chat (those the answer sentences were chosen on)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as bench_analysis: one OpenMP thread on 2 shared cores

    t0 = time.perf_counter()
    labels, root, settings, models, reused = catalog(Path(args.out), args.n, args.seconds)
    scan_seconds = time.perf_counter() - t0
    engine = SearchEngine(settings)
    with Catalog(settings.catalog_path).read() as conn:
        by_id = {tid: str(Path(path).relative_to(root)) for tid, path in conn.execute(select(tracks.c.id, tracks.c.path))}
    t1 = time.perf_counter()
    like = more_like_this(engine, by_id, labels)
    like_seconds = time.perf_counter() - t1
    first = sorted(by_id.items())[args.chat_skip:]
    asked = dict(first[:args.chat_n] if args.chat_n else first)
    answered = chat(engine, models, settings, asked, labels)
    result = {
        "date": str(date.today()), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "clips": len(by_id), "seconds_each": args.seconds, "profile": models.profile.name,
        "ground_chat": models.profile.ground_chat,
        "catalog": {"data_dir": str(settings.data_dir), "reused": reused,
                    "seconds": round(scan_seconds, 1)},
        "more_like_this": {**like, "seconds": round(like_seconds, 1)},
        "chat": answered,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['clips']} held-out clips of {args.seconds:g} s, {result['machine']}, {result['date']}; catalog "
          f"{'reused' if reused else 'scanned'} in {result['catalog']['seconds']} s; more like this took "
          f"{result['more_like_this']['seconds']} s; chat {answered['seconds_per_answer']} s an answer\n")
    seeds = like["seeds"]
    print(f"| more like this: share of the top {TOP_K} with the seed's | instrument family ({seeds['family']} seeds) "
          f"| tempo class ({seeds['tempo_class']}) | mode ({seeds['mode']}) |\n|---|---:|---:|---:|")
    for name, share in like["share_of_top_10"].items():
        print(f"| {name} | {share['family']} | {share['tempo_class']} | {share['mode']} |")
    arms = (*ARMS, ANALYSIS)
    print("\n| chat question (strict: right when it names the right value and no other) | clips | "
          + " | ".join(arms) + " |\n|---|---:|" + "---:|" * len(arms))
    for key, rate in answered["right"].items():
        print(f"| {answered['questions'][key]} | {rate['clips']} | " + " | ".join(str(rate[a]) for a in arms) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
