"""The search engine in the situations it meets in use, for bench/bench_search.py: two set-ups alternated
per query in one process (the keyword stage beside or before the query embedding, the embedding on one
thread or torch's), a scan committing batches of new tracks, and pauses before a query.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import Future

import numpy as np
from sqlalchemy import text
from synthetic_catalog import add_tracks

from catalog.store import Catalog, bump_generation


def percentiles(ms: list[float]) -> dict:
    q = np.percentile(ms, [50, 99])
    return {"p50_ms": round(float(q[0]), 2), "p99_ms": round(float(q[1]), 2), "mean_ms": round(statistics.fmean(ms), 2),
            "max_ms": round(max(ms), 2)}


def timed(fn, queries) -> tuple[list, list[float]]:
    out, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        out.append(fn(q))
        ms.append(1000 * (time.perf_counter() - t0))
    return out, ms


SCAN_COMMITS = 10  # batches of new tracks a simulated scan commits
SCAN_BATCH = 100  # tracks per batch
BIG_DELTA = 20_000  # then this many more new tracks at once
PAUSED_COMMITS = 6  # commits each followed by a pause, then one search: without, then with following
PAUSE_S = 1.5  # as between a person's searches
FOLLOW_INTERVAL_S = 0.5


def during_scan(engine, catalog: Catalog, texts: list[str]) -> dict:
    """Searches while a scan commits batches of new tracks the keyword snapshot lacks: the first after
    each commit (it copies the changes: search/snapshot.py) and the others; the first after a commit and a
    pause, without and then with the engine following the catalog (`SearchEngine.follow_catalog`: the
    copy made in the background meanwhile); then with BIG_DELTA more new tracks; then with the copy
    refused (MAX_CHANGED 0), when every search reads the catalog, as every search during a scan did
    before the copy."""
    from search import snapshot as snapshot_module

    rng = np.random.default_rng(7)
    with catalog.read() as conn:
        next_id = int(conn.execute(text("SELECT max(id) FROM tracks")).scalar()) + 1

    def commit(n: int) -> None:
        nonlocal next_id
        add_tracks(catalog, next_id, n, rng, "2025-01-01")
        with catalog.write() as conn:
            bump_generation(conn)
        next_id += n

    def search_ms(queries: list[str]) -> list[float]:
        return timed(lambda t: engine.search(t, top_k=20), queries)[1]

    first, rest = [], []
    per = max(2, len(texts) // SCAN_COMMITS)
    for i in range(SCAN_COMMITS):
        commit(SCAN_BATCH)
        first += search_ms(texts[i * per: i * per + 1])
        rest += search_ms(texts[i * per + 1: (i + 1) * per])
    out = {"scan_first_after_commit": percentiles(first), "scan_between_commits": percentiles(rest)}

    def first_after_pause() -> dict:
        ms = []
        for i in range(PAUSED_COMMITS):
            commit(SCAN_BATCH)
            time.sleep(PAUSE_S)
            ms += search_ms(texts[i: i + 1])
        return percentiles(ms)

    out["first_after_pause"] = first_after_pause()
    engine.follow_catalog(interval=FOLLOW_INTERVAL_S)
    out["first_after_pause_following"] = first_after_pause()
    commit(BIG_DELTA)
    out["big_delta_first_ms"] = round(search_ms(texts[:1])[0], 1)
    out["big_delta"] = percentiles(search_ms(texts))
    limit = snapshot_module.MAX_CHANGED
    snapshot_module.MAX_CHANGED = 0
    try:
        with catalog.write() as conn:  # a new catalog stamp, for the engine to look again
            bump_generation(conn)
        out["engine_catalog"] = percentiles(search_ms(texts))
    finally:
        snapshot_module.MAX_CHANGED = limit
    return out


class _Inline:
    """An executor that runs what it is given at once, in the calling thread."""

    def submit(self, fn, *args):
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def alternated(engine, texts: list[str], use_a, use_b) -> dict:
    """The engine's searches in two set-ups, alternating per query (which goes first alternates too), so
    both see the same machine: percentiles of each and the ratio of their means (a over b). `use_a` and
    `use_b` put a set-up in place."""
    a_ms, b_ms = [], []
    for i, t in enumerate(texts):
        for use, out in ((use_a, a_ms), (use_b, b_ms))[:: 1 if i % 2 else -1]:
            use()
            out.extend(timed(lambda q: engine.search(q, top_k=20), [t])[1])
    return {"a": percentiles(a_ms), "b": percentiles(b_ms), "mean_ratio": round(statistics.fmean(a_ms) / statistics.fmean(b_ms), 3)}


def keyword_stage_inline(engine, texts: list[str]) -> dict:
    """The engine as it is (keyword stage in a worker while the query is embedded) against the same engine
    with the keyword stage run first in the calling thread."""
    import search.engine as engine_module

    workers = engine_module._KEYWORD_STAGES
    try:
        res = alternated(engine, texts, lambda: setattr(engine_module, "_KEYWORD_STAGES", workers),
                         lambda: setattr(engine_module, "_KEYWORD_STAGES", _Inline()))
    finally:
        engine_module._KEYWORD_STAGES = workers
    return {"overlapped": res["a"], "inline": res["b"], "mean_ratio": res["mean_ratio"]}


def query_embedding_threads(engine, texts: list[str]) -> dict:
    """The engine as it is (each query embedded on one thread: TextEmbedder.encode_query) against the
    same engine embedding on torch's threads (two here), while the keyword stage runs beside it."""
    embedder = engine.embedder()
    try:
        res = alternated(engine, texts, lambda: embedder.__dict__.pop("encode_query", None),
                         lambda: setattr(embedder, "encode_query", lambda t: embedder.encode([t])[0]))
    finally:
        embedder.__dict__.pop("encode_query", None)
    return {"one_thread": res["a"], "torch_threads": res["b"], "mean_ratio": res["mean_ratio"]}


# Pauses before a query, as between a person's searches. Everything else here runs queries back to
# back; on this VM the CPUs are slow to come back from idle (docs/benchmarks.md, "Search latency at
# catalog size").
IDLE_PAUSES_S = (0.0, 0.1, 0.3, 1.0)


def after_idle(engine, texts: list[str], per_pause: int = 12) -> dict:
    """Query embedding and the whole search, each after the machine sat idle for a pause."""
    embedder = engine.embedder()
    out: dict = {}
    for pause in IDLE_PAUSES_S:
        embed_ms, search_ms = [], []
        for i in range(per_pause):
            time.sleep(pause)
            _, ms = timed(lambda t: embedder.encode_query(t), [texts[i % len(texts)]])
            embed_ms += ms
            time.sleep(pause)
            _, ms = timed(lambda t: engine.search(t, top_k=20), [texts[i % len(texts)]])
            search_ms += ms
        out[f"{pause}s"] = {"embed": percentiles(embed_ms), "engine": percentiles(search_ms)}
    return out
