"""Search latency and index choice on synthetic catalogs of 10k, 100k and 1M tracks.

For each size (bench/synthetic_catalog.py makes the data; bench/search_situations.py drives the engine
through the situations below): a real DuckDB catalog of synthetic rows
(captions drawn from a music vocabulary with a Zipf law, so keyword posting lists are as skewed as real
ones; five raw tags per track), the real keyword snapshot (catalog.keywords.refresh_keywords, as the scan
rebuilds it), and 384-d random unit vectors scattered around 2,000 centres that are the real MiniLM embeddings of synthetic captions. Real caption embeddings cluster by topic, and queries
embedded by the same model land among them, so the engine gets its full 500 semantic candidates as in
use (uniform random vectors in 384-d have no neighbours worth finding, so they would measure nothing
about recall). Then, in one process:

- exact (IndexFlatIP) vs HNSW (catalog.vectors.build_index): build time, single-query latency, and
  HNSW recall@10 against the exact answer, on 200 held-out queries from the same distribution;
- brute-force numpy (one matrix-vector product and argpartition) on the same queries;
- the engine end to end (`SearchEngine.search`, query embedding by the real MiniLM included) on the
  index kind `build_index(kind="auto")` picks, with and without filters, p50/p99, answered by the warm
  keyword snapshot, after a first pass over the 16 query texts (reported apart: cold snapshot pages);
  the same with the keyword stage run before the query embedding instead of beside it, and with the
  query embedded on torch's threads instead of one, each alternating per query; where a filtered query's time goes (the filter's id list, the vector search over
  it); then after a scan's last bookkeeping write (the snapshot checked once against the catalog and
  kept warm), and during a scan (search_situations.during_scan: commits of new tracks the snapshot
  lacks, and, as the baseline, every search reading the catalog);
- DuckDB on the catalog itself: opening it, a filter's id list, the tracks-captions-tags join the
  snapshot is built from, `stats()` and `facets()`;
- RSS of the process while serving, and its peak;
- the query embedding and the whole search after the machine sat idle for 0.1, 0.3 and 1 s.

    python bench/bench_search.py --sizes 10000 100000 1000000 [--json]

With `--data-dir DIR` the engine part runs on a data dir kept from an earlier run (`--workdir W --keep`
leaves W/n<size>): its catalog and keyword snapshot are copied (the benchmark writes to the catalog),
the snapshot rebuilt if it is of an older version or out of step, and its text index used as it is
(taken to hold the catalog's tracks); of the vector search comparisons only brute-force numpy runs, over
the vectors the index stores, on the bench's query texts.

    python bench/bench_search.py --data-dir /tmp/bsk/n1000000

Figures: docs/benchmarks.md, "Search latency at catalog size".
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from search_situations import (  # noqa: E402  (bench/, the script's folder)
    BIG_DELTA,
    IDLE_PAUSES_S,
    PAUSE_S,
    SCAN_BATCH,
    after_idle,
    during_scan,
    keyword_stage_inline,
    percentiles,
    query_embedding_threads,
    timed,
)
from sqlalchemy import insert  # noqa: E402
from synthetic_catalog import (  # noqa: E402
    QUERIES,
    caption_centres,
    clustered_vectors,
    make_catalog,
    reuse_data_dir,
)

from catalog.keywords import refresh_after_scan, refresh_keywords  # noqa: E402
from catalog.store import Catalog, generation, scans  # noqa: E402
from catalog.vectors import build_index, choose_kind, save_index  # noqa: E402

K = 10
BUILD_THREADS = 2  # index builds use both cores; every query runs on one (see main)


def brute_force(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    sims = vecs @ q
    top = np.argpartition(-sims, K)[:K]
    return ids[top[np.argsort(-sims[top])]]


def top_ids(index, q: np.ndarray) -> np.ndarray:
    return index.search(q[None], K)[1][0]


def stored_numpy_baseline(data: Path, embedder, n_queries: int) -> dict:
    """Brute-force numpy over the vectors a kept text index stores (flat or HNSW-flat storage hold them
    raw), for the bench's query texts embedded by the real model: the baseline on a reused data dir."""
    import faiss

    index = faiss.read_index(str(data / "faiss" / "text.index"))
    inner = faiss.downcast_index(index.index)
    storage = inner if isinstance(inner, faiss.IndexFlat) else faiss.downcast_index(inner.storage)
    vecs = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)
    ids = faiss.vector_to_array(index.id_map)
    queries = embedder.encode([QUERIES[i % len(QUERIES)] for i in range(n_queries)])
    _, ms = timed(partial(brute_force, vecs, ids), queries)
    return percentiles(ms)


def bench_size(n: int, n_queries: int, workdir: Path, embedder, centres: np.ndarray, seed: int = 0,
               source: Path | None = None) -> dict:
    from model.settings import load_settings
    from search import SearchEngine

    if source is not None:
        res = reuse_data_dir(source, workdir)
        data = res.pop("data")
        res["numpy"] = stored_numpy_baseline(data, embedder, n_queries)
        engine = SearchEngine(load_settings(data_dir=data), text_embedder=embedder)
        res.update(bench_engine(engine, Catalog(data / "catalog.duckdb"), n_queries))
        return res
    res, data = build_size(n, n_queries, workdir, embedder, centres, seed)
    engine = SearchEngine(load_settings(data_dir=data), text_embedder=embedder)
    res.update(bench_engine(engine, Catalog(data / "catalog.duckdb"), n_queries))
    res["disk_mb"] = round(sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / 2**20)
    return res


def build_size(n: int, n_queries: int, workdir: Path, embedder, centres: np.ndarray, seed: int) -> tuple[dict, Path]:
    """A synthetic catalog of n tracks with its snapshot and text index, and the vector search comparisons."""
    import faiss

    rng = np.random.default_rng(seed)
    data = workdir / f"n{n}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    res: dict = {"tracks": n, "auto_kind": choose_kind(n)}
    t0 = time.perf_counter()
    make_catalog(data, n, rng)
    res["catalog_s"] = round(time.perf_counter() - t0, 1)
    catalog = Catalog(data / "catalog.duckdb")
    t0 = time.perf_counter()
    refresh_keywords(catalog)
    res["keyword_snapshot_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    assert "skipped" in refresh_after_scan(catalog, changed=False)
    res["keyword_check_s"] = round(time.perf_counter() - t0, 2)  # a scan that changed nothing: no rebuild

    vecs = clustered_vectors(n, rng, centres)
    queries = clustered_vectors(n_queries, rng, centres)
    ids = np.arange(1, n + 1, dtype=np.int64)

    faiss.omp_set_num_threads(BUILD_THREADS)
    t0 = time.perf_counter()
    flat = build_index(ids, vecs, "flat")
    res["flat_build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    hnsw = build_index(ids, vecs, "hnsw")
    res["hnsw_build_s"] = round(time.perf_counter() - t0, 1)
    faiss.omp_set_num_threads(1)

    exact, ms = timed(partial(top_ids, flat), queries)
    res["flat"] = percentiles(ms)
    approx, ms = timed(partial(top_ids, hnsw), queries)
    res["hnsw"] = percentiles(ms)
    res["hnsw"]["recall_at_10"] = round(float(np.mean([len(set(a) & set(e)) / K for a, e in
                                                       zip(approx, exact, strict=True)])), 4)

    numpy_top, ms = timed(partial(brute_force, vecs, ids), queries)
    res["numpy"] = percentiles(ms)
    res["numpy"]["agrees_with_flat"] = round(float(np.mean([len(set(a) & set(e)) / K for a, e in
                                                            zip(numpy_top, exact, strict=True)])), 4)

    # The engine on the index the scan would build for this size, loaded from disk as in production.
    chosen = hnsw if choose_kind(n) == "hnsw" else flat
    with Catalog(data / "catalog.duckdb").read() as conn:
        gen = generation(conn)
    save_index(data, "text", chosen, gen, None)
    del flat, hnsw, chosen, vecs
    return res, data


def bench_engine(engine, catalog: Catalog, n_queries: int) -> dict:
    """The engine end to end on a data dir, then the catalog side; see the module's docstring."""
    import psutil

    from search import Filters
    from search.snapshot import QUERY_THREADS

    embedder = engine.embedder()
    res: dict = {}
    texts = [QUERIES[i % len(QUERIES)] for i in range(n_queries)]
    engine.search(texts[0])  # load the index and the stemmer
    _, ms = timed(lambda t: embedder.encode_query(t), texts)
    res["embed"] = percentiles(ms)
    # Each distinct text once, first: its postings and pages are read from the snapshot file for the
    # first time, so this pass is reported apart; the figures after it are of a process that has served
    # these queries before, as a long-running one has served the common terms.
    _, ms = timed(lambda t: engine.search(t, top_k=20), QUERIES[1:])
    res["engine_first_pass"] = percentiles(ms)
    results, ms = timed(lambda t: engine.search(t, top_k=20), texts)
    res["engine"] = percentiles(ms)
    res["engine"]["mean_total"] = round(statistics.fmean(r.total for r in results), 1)
    reader = engine.reader()  # the same with two DuckDB threads on the warm snapshot (search.snapshot.QUERY_THREADS)
    reader.con.execute("SET threads = 2")
    _, ms = timed(lambda t: engine.search(t, top_k=20), texts)
    res["engine_2_threads"] = percentiles(ms)
    reader.con.execute(f"SET threads = {QUERY_THREADS}")
    res["keyword_stage_inline"] = keyword_stage_inline(engine, texts)
    res["query_embedding_threads"] = query_embedding_threads(engine, texts)
    filters = Filters(genre="Jazz", year_min=1990, year_max=2010, min_duration=120)
    results, ms = timed(lambda t: engine.search(t, filters=filters, top_k=20), texts)
    res["engine_filtered"] = percentiles(ms)
    res["engine_filtered"]["allowed"] = len(allowed_ids(engine, filters))
    res["filtered_parts"] = filtered_parts(engine, filters, texts)
    res["after_idle"] = after_idle(engine, texts)
    _, ms = timed(lambda t: engine.search("", filters=Filters(genre="Rock", year_min=2000), top_k=20,
                                          offset=100), texts[: max(10, n_queries // 4)])
    res["browse_filtered"] = percentiles(ms)
    res["duckdb"] = duckdb_timings(engine, filters)
    # The scan's last write (its own row) changes the catalog file but no track: the first query checks
    # the snapshot against the catalog once, the rest are answered warm again.
    with catalog.write() as conn:
        conn.execute(insert(scans).values(state="finished"))
    t0 = time.perf_counter()
    engine.search(texts[0], top_k=20)
    res["first_after_scan_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    _, ms = timed(lambda t: engine.search(t, top_k=20), texts)
    res["engine_after_scan"] = percentiles(ms)
    res.update(during_scan(engine, catalog, texts))
    res["serving_rss_mb"] = round(psutil.Process().memory_info().rss / 2**20)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def allowed_ids(engine, filters) -> np.ndarray:
    """The ids passing `filters`, as the engine's filtered search computes them from the warm snapshot."""
    from search import engine as engine_module

    filter_sql, params = filters.sql()
    reader = engine.reader()
    with reader.lock:
        assert reader.current() is not None, "the keyword snapshot should be current"
        return engine_module.allowed_ids(reader.con, "kw.kw_tracks", filters, filter_sql, params)


def filtered_parts(engine, filters, texts: list[str]) -> dict:
    """Where a filtered query's time goes: the filter's id list (DuckDB), then the vector search over
    it, by a filtered HNSW walk and by scoring the allowed vectors exactly."""
    from search import rank

    out = {}
    _, out["allowed_ids"] = timed(lambda _: allowed_ids(engine, filters), texts)
    allowed = allowed_ids(engine, filters)
    vecs = engine.embedder().encode(texts)
    index = engine.text_index
    default = index.exact_max
    for name, exact_max in (("hnsw_walk", 0), ("exact_subset", 10**9)):
        index.exact_max = exact_max
        _, out[name] = timed(lambda v: index.search(v, rank.SEMANTIC_DEPTH, allowed), list(vecs))
    index.exact_max = default
    return {k: percentiles(v) for k, v in out.items()}


def duckdb_timings(engine, filters, reps: int = 20) -> dict:
    """DuckDB on the catalog file itself, each on a fresh read-only connection as the engine opens it."""
    from search.engine import _duck

    filter_sql, params = filters.sql()
    catalog = engine.catalog

    def on_catalog(sql: str, bound: dict | None = None):
        with catalog.read() as conn:
            return _duck(conn).execute(sql, bound or {}).fetchall()

    bound = {k: v for k, v in params.items() if k.startswith("f_")}
    queries = {
        "open": ("SELECT 1", None),
        "filter_ids": (f"SELECT t.id FROM tracks t WHERE t.status = 'done' {filter_sql}", bound),
        "join_captions_tags": (f"""SELECT count(*), sum(length(c.text)), sum(g.n) FROM tracks t
            JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
            JOIN (SELECT track_id, count(*) AS n FROM tags GROUP BY track_id) g ON g.track_id = t.id
            WHERE t.status = 'done' {filter_sql}""", bound),
    }
    out = {}
    for name, (sql, b) in queries.items():
        _, ms = timed(lambda _, sql=sql, b=b: on_catalog(sql, b), range(reps))
        out[name] = percentiles(ms)
    for name, fn in (("stats", engine.stats), ("facets", engine._read_facets)):  # facets() caches the read
        _, ms = timed(lambda _, fn=fn: fn(), range(max(3, reps // 4)))
        out[name] = percentiles(ms)
    return out


def markdown(rows: list[dict]) -> str:
    """Four tables: vector search alone, the engine end to end, DuckDB on the catalog and memory, and
    latency after idle pauses."""
    def table(head: list[str], cells) -> list[str]:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
        return out + [""]

    def pp(r: dict, *keys: str) -> str:
        d = r
        for k in keys:
            if k not in d:  # not measured on a reused data dir
                return "-"
            d = d[k]
        return f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}"

    def get(r: dict, *keys: str, fmt: str = "{}") -> str:
        d = r
        for k in keys:
            if k not in d:
                return "-"
            d = d[k]
        return fmt.format(d)

    def ratio(r: dict) -> str:
        return f"{r['engine']['p99_ms'] / r['numpy']['p99_ms']:.2f}" if "numpy" in r else "-"

    lines = table(
        ["tracks", "numpy p50/p99 ms", "exact (flat) p50/p99 ms", "HNSW p50/p99 ms", "HNSW recall@10",
         "HNSW build s", "index (auto)"],
        lambda r: [f"{r['tracks']:,}", pp(r, "numpy"), pp(r, "flat"), pp(r, "hnsw"),
                   get(r, "hnsw", "recall_at_10", fmt="{:.3f}"), get(r, "hnsw_build_s"), r["auto_kind"]])
    lines += table(
        ["tracks", "embed p50/p99 ms", "engine p50/p99 ms", "engine p99 / numpy p99",
         "engine, 2 DuckDB threads", "keyword stage inline p50/p99 ms (mean engine / inline)",
         "query embedded on torch's threads p50/p99 ms (mean engine / that)", "first pass p50/max ms",
         "+filters p50/p99 ms",
         "(allowed tracks)", "browse+filters p50/p99 ms", "first query after a scan ms",
         "engine after a scan p50/p99 ms", f"during a scan: first after a commit of {SCAN_BATCH} p50/max ms",
         "during a scan: between commits p50/p99 ms",
         f"first after a commit and {PAUSE_S} s p50/max ms: alone / following", f"{BIG_DELTA:,} new: first ms, then p50/p99 ms",
         "every search on the catalog p50/p99 ms"],
        lambda r: [f"{r['tracks']:,}", pp(r, "embed"), pp(r, "engine"),
                   ratio(r), pp(r, "engine_2_threads"),
                   f"{pp(r, 'keyword_stage_inline', 'inline')} ({get(r, 'keyword_stage_inline', 'mean_ratio')})",
                   f"{pp(r, 'query_embedding_threads', 'torch_threads')} "
                   f"({get(r, 'query_embedding_threads', 'mean_ratio')})",
                   get(r, "engine_first_pass", fmt="{0[p50_ms]:.1f} / {0[max_ms]:.1f}"),
                   pp(r, "engine_filtered"),
                   f"{r['engine_filtered']['allowed']:,}", pp(r, "browse_filtered"), r["first_after_scan_ms"],
                   pp(r, "engine_after_scan"),
                   get(r, "scan_first_after_commit", fmt="{0[p50_ms]:.1f} / {0[max_ms]:.1f}"),
                   pp(r, "scan_between_commits"),
                   get(r, "first_after_pause", fmt="{0[p50_ms]:.1f} / {0[max_ms]:.1f}") + " / "
                   + get(r, "first_after_pause_following", fmt="{0[p50_ms]:.1f} / {0[max_ms]:.1f}"),
                   f"{r['big_delta_first_ms']}, {pp(r, 'big_delta')}",
                   pp(r, "engine_catalog")])
    lines += table(
        ["tracks", "filter ids (snapshot) ms", "filtered HNSW walk ms", "exact over allowed ms",
         "catalog open ms", "filter ids (catalog) ms", "tracks-captions-tags join ms", "stats() ms",
         "facets() ms", "keyword snapshot build s", "snapshot check s", "serving RSS MB", "peak RSS MB",
         "disk MB"],
        lambda r: [f"{r['tracks']:,}", pp(r, "filtered_parts", "allowed_ids"), pp(r, "filtered_parts", "hnsw_walk"),
                   pp(r, "filtered_parts", "exact_subset"), pp(r, "duckdb", "open"), pp(r, "duckdb", "filter_ids"),
                   pp(r, "duckdb", "join_captions_tags"), pp(r, "duckdb", "stats"), pp(r, "duckdb", "facets"),
                   get(r, "keyword_snapshot_s"), get(r, "keyword_check_s"), f"{r['serving_rss_mb']:,}",
                   f"{r['peak_rss_mb']:,}", get(r, "disk_mb", fmt="{:,}")])
    pauses = [f"{p}s" for p in IDLE_PAUSES_S]
    lines += table(
        ["tracks", *(f"embed after {p} idle p50 ms" for p in pauses), *(f"engine after {p} idle p50 ms" for p in pauses)],
        lambda r: [f"{r['tracks']:,}", *(get(r, "after_idle", p, "embed", "p50_ms", fmt="{:.1f}") for p in pauses),
                   *(get(r, "after_idle", p, "engine", "p50_ms", fmt="{:.1f}") for p in pauses)])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=200, help="queries per measurement (default 200)")
    p.add_argument("--workdir", help="where the synthetic data dirs go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic data dirs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--data-dir", type=Path, help="run the engine part on this kept data dir instead of --sizes "
                                                  "(copied first; only numpy of the vector search comparisons)")
    args = p.parse_args(argv)

    import faiss

    from model.textembed import TextEmbedder

    # Torch keeps its default threads, as in the UI's process and a Python caller's: the engine embeds
    # each query on one thread itself (TextEmbedder.encode_query). FAISS answers one query at a time.
    faiss.omp_set_num_threads(1)
    embedder = TextEmbedder()
    centres = caption_centres(embedder, np.random.default_rng(1))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-search-"))
    rows = []
    try:
        if args.data_dir:
            rows.append(bench_size(0, args.queries, workdir, embedder, centres, source=args.data_dir))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        for n in [] if args.data_dir else args.sizes:
            rows.append(bench_size(n, args.queries, workdir, embedder, centres))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"results": rows}) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
