"""What the analysis buys, on a held-out set: caption accuracy, attribute-query search, and its scan cost.

    python bench/bench_analysis.py [--n 120] [--seconds 30] [--out /tmp/bench-analysis] [--json]

The held-out set (`training.heldout`: its own composer, the TimGM6mb soundfont; neither the training
corpus nor the demo library uses them) is scanned with the lite profile into a fresh data dir, timing
each model stage (the scan's own busy seconds). Then, in the same run:
- captions, strict per attribute (a caption counts only when it names the right value and no wrong one):
  today's lite captions (written from the analysis) beside the lite adapter's own template captions
  (the captions lite wrote before, scored on the same stored tokens);
- attribute queries (instrument family, tempo class, mode, drums, alone and combined): P@10 of the
  search engine on this catalog, on a copy of it as lite indexed before (template captions, no analysis),
  and of a random ranking;
- the scan's busy seconds per stage (stages overlap; what the analysis costs a whole scan is
  bench/bench_scan.py's).
Families without a class in the captions' vocabulary (the set's bass and mallet) are left out of the
family scores; reed and pipe count as woodwind. Not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog.keywords import refresh_keywords  # noqa: E402
from catalog.store import Catalog, generation  # noqa: E402
from catalog.vectors import build_index, save_index  # noqa: E402
from indexer.indexing import Models  # noqa: E402
from indexer.pipeline import scan  # noqa: E402
from model.config import load_profile  # noqa: E402
from model.settings import Settings, load_settings  # noqa: E402
from search import SearchEngine  # noqa: E402
from training.heldout import generate  # noqa: E402

FAMILY_WORDS = {  # caption word -> instrument family (both the analysis's words and the template's)
    "piano": "piano", "harpsichord": "piano", "guitar": "guitar", "sitar": "guitar", "strings": "strings",
    "violin": "strings", "cello": "strings", "harp": "strings", "flute": "woodwind", "woodwind": "woodwind",
    "brass": "brass", "organ": "organ", "synth": "synth",
}
HELDOUT_FAMILY = {"reed": "woodwind", "pipe": "woodwind", "bass": None, "mallet": None}
TEMPO_WORDS = {"slow": "slow", "mid-tempo": "medium", "medium-tempo": "medium", "fast": "fast"}
QUERIES = {  # query -> what a relevant clip's labels must hold
    "piano": {"family": "piano"}, "guitar": {"family": "guitar"}, "strings": {"family": "strings"},
    "brass": {"family": "brass"}, "organ": {"family": "organ"}, "synth": {"family": "synth"},
    "woodwind": {"family": "woodwind"}, "fast": {"tempo_class": "fast"}, "slow": {"tempo_class": "slow"},
    "minor key": {"mode": "minor"}, "major key": {"mode": "major"}, "drums": {"drums": True},
    "fast with drums": {"tempo_class": "fast", "drums": True}, "slow in a minor key": {"tempo_class": "slow", "mode": "minor"},
    "fast major key": {"tempo_class": "fast", "mode": "major"}, "slow strings": {"tempo_class": "slow", "family": "strings"},
    "brass with drums": {"family": "brass", "drums": True}, "minor key synth": {"mode": "minor", "family": "synth"},
}


def family(label: dict) -> str | None:
    return HELDOUT_FAMILY.get(label["family"], label["family"])


def named(caption: str, words: dict[str, str]) -> set[str]:
    low = caption.lower().replace(",", " ").replace(".", " ")
    tokens = low.split()
    return {value for word, value in words.items() if (word in tokens if " " not in word else word in low)}


def caption_scores(captions: dict[str, str], labels: dict[str, dict]) -> dict[str, float]:
    """Strict accuracy per attribute: the caption names the right value and no other."""
    hits = {"tempo_class": [], "mode": [], "family": []}
    for file, caption in captions.items():
        label = labels[file]
        hits["tempo_class"].append(named(caption, TEMPO_WORDS) == {label["tempo_class"]})
        hits["mode"].append(named(caption, {"major": "major", "minor": "minor"}) == {label["mode"]})
        if family(label) is not None:
            hits["family"].append(named(caption, FAMILY_WORDS) == {family(label)})
    return {k: round(float(np.mean(v)), 3) for k, v in hits.items()}


def relevant(label: dict, want: dict) -> bool:
    return all((family(label) if k == "family" else label[k]) == v for k, v in want.items())


def precision_at_10(ranked: dict[str, list[str]], labels: dict[str, dict]) -> dict[str, float]:
    return {q: sum(relevant(labels[f], QUERIES[q]) for f in files[:10]) / 10 for q, files in ranked.items()}


def search_all(data: Path, labels: dict[str, dict], root: Path) -> dict[str, list[str]]:
    engine = SearchEngine(load_settings(data_dir=data))
    out = {}
    for query in QUERIES:
        hits = engine.search(query, top_k=10).hits
        out[query] = [str(Path(h.path).relative_to(root)) for h in hits]
    return out


def before_copy(data: Path, template: dict[int, str], models: Models) -> Path:
    """The catalog as lite indexed it before the analysis: template captions, no auto-tags or numbers."""
    old = data.with_name("data-before")
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(data, old, symlinks=True)
    catalog = Catalog(old / "catalog.duckdb")
    ids = sorted(template)
    vectors = models.text.encode([template[i] for i in ids])
    with catalog.write() as conn:
        for tid, vec in zip(ids, vectors, strict=True):
            conn.execute(text("UPDATE captions SET text = :t, text_vector = :v WHERE track_id = :i"),
                         {"t": template[tid], "v": vec.astype(np.float32).tobytes(), "i": tid})
        conn.execute(text("DELETE FROM auto_tags"))
        conn.execute(text("DELETE FROM analyses"))
        conn.execute(text("UPDATE tracks SET bpm = NULL, tonic = NULL, mode = NULL, vocals = NULL, "
                          "auto_genre = NULL, analysis_version = NULL"))
    with catalog.read() as conn:
        gen = generation(conn)
    save_index(old, "text", build_index(np.array(ids), np.stack(vectors), "flat"), gen, None)
    refresh_keywords(catalog)
    return old


def render_heldout(out: Path, n: int, seconds: float) -> tuple[dict[str, dict], Path]:
    """The first `n` held-out clips under OUT/heldout (rendered once, kept for later runs), their labels by file."""
    root = out / "heldout"
    return {r["file"]: r for r in generate(root, n, seed=0, seconds=seconds)}, root


def fresh_data_dir(out: Path) -> Settings:
    """An empty data dir OUT/data for the held-out catalog (models come from the settings' cache); its settings."""
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    return load_settings(data_dir=data, device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", default="/tmp/bench-analysis")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one OpenMP thread: on 2 shared cores two spinning threads are slower

    out = Path(args.out)
    labels, root = render_heldout(out, args.n, args.seconds)
    data = out / "data"
    settings = fresh_data_dir(out)
    profile = load_profile("lite")
    models = Models(profile, settings)
    models.encoder, models.text, models.analyzer  # load before timing  # noqa: B018
    t0 = time.perf_counter()
    summary = scan([str(root / "audio")], settings, profile, models=models, greedy=True)
    wall = time.perf_counter() - t0
    with Catalog(settings.catalog_path).read() as conn:
        rows = conn.execute(text("SELECT t.id, t.path, c.text FROM tracks t JOIN captions c ON c.track_id = t.id")).all()
        tokens = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(text("SELECT track_id, n_tokens, dim, tokens FROM embeddings"))}
    by_id = {tid: str(Path(path).relative_to(root)) for tid, path, _ in rows}
    now = {by_id[tid]: caption for tid, _, caption in rows}

    musilingo = models.musilingo  # the lite adapter's own template captions, from the same stored tokens
    t1 = time.perf_counter()
    template = {}
    for tid, (n, d, blob) in tokens.items():
        audio = torch.from_numpy(np.frombuffer(blob, dtype=np.float16).reshape(n, d).astype(np.float32))
        template[tid] = musilingo.caption([audio], greedy=True)[0].text
    template_seconds = (time.perf_counter() - t1) / max(1, len(template))

    ranked_now = search_all(data, labels, root)
    ranked_before = search_all(before_copy(data, template, models), labels, root)
    rng = random.Random(0)
    files = list(labels)
    ranked_random = {q: rng.sample(files, 10) for q in QUERIES}
    p_now, p_before, p_random = (precision_at_10(r, labels) for r in (ranked_now, ranked_before, ranked_random))
    result = {
        "date": str(date.today()), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "clips": args.n, "seconds_each": args.seconds, "scan": {
            "wall_seconds": round(wall, 1), "x_realtime": round(summary.audio_seconds / wall, 1),
            "stage_seconds": summary.stage_seconds,  # busy seconds, stages overlapping
            "template_caption_seconds_per_track": round(template_seconds, 2)},
        "captions_strict": {"lite_now": caption_scores(now, labels),
                            "lite_template_before": caption_scores({by_id[t]: c for t, c in template.items()}, labels)},
        "p_at_10": {"queries": {q: {"now": p_now[q], "before": p_before[q], "random": p_random[q],
                                    "relevant": sum(relevant(lab, QUERIES[q]) for lab in labels.values())}
                                for q in QUERIES},
                    "mean": {"now": round(float(np.mean(list(p_now.values()))), 3),
                             "before": round(float(np.mean(list(p_before.values()))), 3),
                             "random": round(float(np.mean(list(p_random.values()))), 3)}},
        "examples": [now[f] for f in sorted(now)[:5]],
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    s = result["scan"]
    print(f"{args.n} held-out clips of {args.seconds:g} s, {result['machine']}, {result['date']}\n")
    print(f"scan: {s['wall_seconds']} s wall, {s['x_realtime']}x realtime; busy seconds per stage (overlapping) "
          f"{s['stage_seconds']}; template captions took {s['template_caption_seconds_per_track']} s a track\n")
    print("| captions (strict) | tempo class | mode | instrument family |\n|---|---:|---:|---:|")
    for name, sc in result["captions_strict"].items():
        print(f"| {name} | {sc['tempo_class']} | {sc['mode']} | {sc['family']} |")
    print("\n| query | relevant | P@10 now | before | random |\n|---|---:|---:|---:|---:|")
    for q, v in result["p_at_10"]["queries"].items():
        print(f"| {q} | {v['relevant']} | {v['now']} | {v['before']} | {v['random']} |")
    m = result["p_at_10"]["mean"]
    print(f"| **mean** | | **{m['now']}** | {m['before']} | {m['random']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
