"""The scan on Ray Data: the same decode -> encode -> caption work spread over a cluster, one writer.

Why Ray: one machine's decoder processes and one model copy stop scaling at a few hundred thousand
tracks. Here the driver walks the library and plans exactly as the single-process scan does
(`indexer.discover`), then streams the jobs through Ray Data:

    from_items(jobs) -> decode (CPU tasks, `indexer.decode.DecodePool` / `read_file`)
                     -> analyse + encode (actor pool, one Analyzer and Encoder per actor, GPU share
                        when GPUs exist)
                     -> caption + text vector (actor pool, one MusiLingo per actor)

Results come back to the driver in batches of `commit_every` rows; each is written as a Parquet
shard to `<data_dir>/ray/<scan_id>/` and then committed by the indexer's own `Writer`, the one
writer of the catalog and FAISS indexes. The driver writes the shards, so workers need no shared
filesystem. Everything else is the single-process scan's own steps (`indexer.pipeline.Scan`: one
row in `scans`, the plan, moves, touches, deletions, re-analyses and recaptions applied once, on the
driver), and
the actors compute with its `Indexing`, batch-size back-off on out-of-memory included.

Resume: a committed track is `done` in the catalog, so the next run's plan skips it. A driver that
dies leaves its shard folder behind; the next run commits the rows of those shards that its plan
still wants (same file, same size, mtime and fingerprint, same model versions) without computing
them again, then deletes the folder. A worker or actor that dies is restarted by Ray and its batch
retried (Ray Data's actor pools default to unlimited restarts and task retries, its tasks to
unlimited retries on system failures, which is why decoding runs in a child process: see
`decode_batch`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.decode import DecodePool
from indexer.discover import FileEntry, Job
from indexer.indexing import Indexing, Models, file_failure
from indexer.pipeline import COMMIT_EVERY, Scan, ScanSummary
from indexer.tags import TrackTags
from indexer.writer import Batch, CaptionResult, TrackResult
from model.analysis import TrackAnalysis, analysis_version
from model.batching import MAX_GPU_BATCH
from model.config import Profile, load_profile
from model.settings import Settings

log = logging.getLogger(__name__)
DECODE_BATCH = 8  # files per decode task: amortises spawning the task's decoder process

# One row per file, filled stage by stage; a row with `stage` set failed there and carries `error`.
SHARD_SCHEMA = pa.schema([
    ("path", pa.string()), ("root", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
    ("fingerprint", pa.string()), ("track_id", pa.int64()), ("tags", pa.string()),
    ("stage", pa.string()), ("error", pa.string()), ("retry", pa.bool_()),  # retry: out of memory, not the file
    ("indexed_seconds", pa.float64()), ("encoder_version", pa.string()),
    ("n_tokens", pa.int64()), ("dim", pa.int64()),
    ("tokens", pa.large_binary()),  # fp16 [n_tokens, dim], row-major: what the catalog stores
    ("vector", pa.binary()),  # fp32 unit track vector
    # the analysis, as model.analysis.TrackAnalysis.to_record gives it (and the catalog stores it)
    ("analysis_version", pa.string()), ("taggers", pa.string()), ("patch_seconds", pa.string()),
    ("probabilities", pa.binary()), ("embedding", pa.binary()), ("bpm", pa.float64()), ("tonic", pa.string()),
    ("mode", pa.string()),
    ("caption", pa.string()), ("caption_token_ids", pa.list_(pa.int64())),
    ("caption_vector", pa.binary()), ("pipeline_version", pa.string()),
    ("batch_sizes", pa.string()),  # JSON {stage: {start, final}} of the actors that made the row
])
DECODED_SCHEMA = SHARD_SCHEMA.append(pa.field("wave", pa.large_binary()))  # fp32 mono, dropped after encoding


@dataclass(frozen=True)
class StagePlan:
    """Ray resources per stage; fractional asks let small machines run all three stages at once."""

    decode_cpus: float
    actor_cpus: float
    encode_gpus: float
    caption_gpus: float
    encode_actors: tuple[int, int]  # (min, max) pool size
    caption_actors: tuple[int, int]


def plan_stages(resources: dict[str, float], device: str = "auto") -> StagePlan:
    """Size the stages from the cluster's resources.

    With GPUs, each GPU holds one caption actor (0.8, the LLM is the bottleneck) and one encode
    actor (0.2). Without, each model actor asks for a quarter of the CPUs (one at most) and each
    decoder for half that, so a 2-core laptop still runs every stage instead of waiting on a
    reservation. The decoders' ask always differs from the encoders', which keeps Ray Data from
    fusing decoding into the encode actors, where it would run one file at a time.
    """
    cpus = max(float(resources.get("CPU", 1.0)), 0.5)
    gpus = 0 if device == "cpu" else int(resources.get("GPU", 0))
    if gpus:
        return StagePlan(1.0, 1.0, 0.2, 0.8, (1, gpus), (1, gpus))
    share = min(1.0, cpus / 4)
    return StagePlan(share / 2, share, 0.0, 0.0, (1, max(1, int(cpus // 8))), (1, max(1, int(cpus // 4))))


def _row(job: Job) -> dict:
    e = job.entry
    return {"path": e.path, "root": e.root, "size": e.size, "mtime": e.mtime, "fingerprint": job.fingerprint,
            "track_id": job.track_id, "reason": job.reason}


def _job(row: dict) -> Job:
    entry = FileEntry(row["path"], row["root"], int(row["size"]), float(row["mtime"]))
    return Job(entry, row["fingerprint"], row["track_id"], row["reason"])


def _fail(row: dict, stage: str, reason: str, retry: bool = False) -> dict:
    return {**row, "stage": stage, "error": reason, "retry": retry, "wave": None}


def _note_batch_sizes(rows: list[dict], stage: str, indexing: Indexing) -> None:
    report = indexing.batch_sizes().get(stage)
    if report is None:  # the stage ran no model (captions written from the analysis)
        return
    for row in rows:
        row["batch_sizes"] = json.dumps(json.loads(row.get("batch_sizes") or "{}") | {stage: report})


def decode_batch(batch: pa.Table, sample_rate: int, max_seconds: float) -> pa.Table:
    """Ray task: tags and audio of each job with the single-process reader; a bad file becomes a failed row.

    The reading runs in the single-process scan's DecodePool (one child process), so a file that
    crashes the decoder fails alone: a crash of the task itself would be retried by Ray forever.
    """
    out = []
    with DecodePool(1, sample_rate, max_seconds, ahead=2) as pool:
        for d in pool.run([_job(row) for row in batch.to_pylist()]):
            base = _row(d.job)
            base.pop("reason")
            base["tags"] = json.dumps(asdict(d.tags))
            if d.error is not None:
                out.append(_fail(base, "decode", d.error))
            else:
                out.append({**base, "wave": d.wave.astype(np.float32, copy=False).tobytes()})
    return pa.Table.from_pylist(out, schema=DECODED_SCHEMA)


class EncodeStage:
    """Ray actor: the analyzer and the profile's encoder, loaded once; waves in, the analysis, fp16 tokens and
    the track vector out."""

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.indexing = Indexing(Models(profile, settings), settings)
        self.version = profile.version("encoder")

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = [r for r in rows if r["stage"] is None]
        heard, bad = self.indexing.heard([np.frombuffer(r["wave"], dtype=np.float32) for r in todo])
        for i, stage, f in bad:
            todo[i].update(_fail(todo[i], stage, f.reason, f.out_of_memory))
        for i, analysis, enc in heard:
            todo[i].update(analysis.to_record())
            todo[i].update(wave=None, indexed_seconds=enc.seconds, encoder_version=self.version,
                           n_tokens=int(enc.tokens.shape[0]), dim=int(enc.tokens.shape[1]),
                           tokens=enc.tokens.tobytes(), vector=enc.vector.tobytes())
        _note_batch_sizes(rows, "analysis", self.indexing)
        _note_batch_sizes(rows, "encode", self.indexing)
        return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA).drop_columns(["wave"])


class CaptionStage:
    """Ray actor: MusiLingo and the text embedder, loaded once; stored fp16 tokens in, caption and its vector out."""

    def __init__(self, profile: Profile, settings: Settings, greedy: bool, max_new_tokens: int | None) -> None:
        self.indexing = Indexing(Models(profile, settings), settings, greedy, max_new_tokens)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = [r for r in rows if r["stage"] is None]
        tokens = [np.frombuffer(r["tokens"], dtype=np.float16).reshape(r["n_tokens"], r["dim"]) for r in todo]
        captioned, bad = self.indexing.caption(tokens, [TrackAnalysis.from_record(r) for r in todo])
        for f in bad:
            todo[f.item].update(stage="caption", error=f.reason, retry=f.out_of_memory)
        for i, cap in captioned:
            todo[i].update(caption=cap.text, caption_token_ids=[int(t) for t in cap.token_ids],
                           caption_vector=np.asarray(cap.text_vector, np.float32).tobytes(),
                           pipeline_version=cap.pipeline_version)
        _note_batch_sizes(rows, "caption", self.indexing)
        return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


def shard_batch(table: pa.Table, profile: str) -> Batch:
    """The writer's input for a shard: finished tracks, and failures as rows for the errors table."""
    batch = Batch(files_done=table.num_rows)
    for r in table.to_pylist():
        entry = FileEntry(r["path"], r["root"], r["size"], r["mtime"])
        if r["stage"] is not None:
            batch.failures.append(file_failure(entry, r["track_id"], r["stage"], r["error"], bool(r["retry"])))
            continue
        tokens = np.frombuffer(r["tokens"], dtype=np.float16).reshape(r["n_tokens"], r["dim"])
        caption = CaptionResult(r["caption"], r["caption_token_ids"],
                                np.frombuffer(r["caption_vector"], dtype=np.float32), r["pipeline_version"])
        tags = json.loads(r["tags"])
        batch.tracks.append(TrackResult(
            entry=entry, fingerprint=r["fingerprint"], tags=TrackTags(**tags), indexed_seconds=r["indexed_seconds"],
            profile=profile, encoder_version=r["encoder_version"], tokens=tokens,
            vector=np.frombuffer(r["vector"], dtype=np.float32), caption=caption,
            analysis=TrackAnalysis.from_record(r), track_id=r["track_id"]))
        batch.audio_seconds += r["indexed_seconds"]
    return batch


def shard_dir(data_dir: str | Path, scan_id: int) -> Path:
    return Path(data_dir) / "ray" / str(scan_id)


def _write_shard(folder: Path, number: int, table: pa.Table) -> None:
    """Atomically: a shard is complete or absent, so a leftover one is safe to commit."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"shard-{number:06d}.parquet"
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _leftover_rows(data_dir: Path, jobs: list[Job], encoder_version: str, pipeline_version: str,
                   current: int) -> tuple[pa.Table | None, list[Path]]:
    """Rows of earlier runs' shards that this plan still wants, and those runs' folders (to delete)."""
    folders = [p for p in (data_dir / "ray").glob("*") if p.is_dir() and p.name != str(current)]
    wanted = {(j.entry.path, j.entry.size, j.entry.mtime, j.fingerprint): j for j in jobs}
    keep: dict[str, dict] = {}
    for folder in folders:
        for shard in sorted(folder.glob("shard-*.parquet")):
            for r in pq.read_table(shard, schema=SHARD_SCHEMA).to_pylist():
                job = wanted.get((r["path"], r["size"], r["mtime"], r["fingerprint"]))
                fresh = r["stage"] is not None or (r["encoder_version"], r["pipeline_version"],
                                                   r["analysis_version"]) == (encoder_version, pipeline_version,
                                                                              analysis_version())
                if job is not None and fresh:
                    keep[r["path"]] = {**r, "track_id": job.track_id}  # the plan knows the current row id
    table = pa.Table.from_pylist(list(keep.values()), schema=SHARD_SCHEMA) if keep else None
    return table, folders


def compute_shards(jobs: list[Job], settings: Settings, profile: Profile, folder: Path, *, greedy: bool = False,
                   max_new_tokens: int | None = None, max_seconds: float | None = None,
                   commit_every: int = COMMIT_EVERY, progress: bool = False) -> Iterator[pa.Table]:
    """Run `jobs` through Ray Data and yield each batch of finished rows once its shard is on disk in `folder`.

    Needs a connected Ray cluster. Writes nothing else: the caller commits each batch, so the shards
    of a driver that dies between the two are what the next run recovers.
    """
    import ray
    import ray.data

    def pool(sizes: tuple[int, int]) -> ray.data.ActorPoolStrategy:
        return ray.data.ActorPoolStrategy(min_size=sizes[0], max_size=sizes[1])

    ray.data.DataContext.get_current().enable_progress_bars = progress
    stages = plan_stages(ray.cluster_resources(), settings.device)
    decode_args = {"sample_rate": _encoder_sample_rate(profile),
                   "max_seconds": max_seconds or settings.max_track_seconds}
    blocks = max(1, math.ceil(len(jobs) / DECODE_BATCH))
    ds = ray.data.from_items([_row(j) for j in jobs], override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, batch_size=DECODE_BATCH, batch_format="pyarrow",
                        num_cpus=stages.decode_cpus, fn_kwargs=decode_args)
    ds = ds.map_batches(EncodeStage, batch_size=commit_every, batch_format="pyarrow",
                        fn_constructor_args=(profile, settings), compute=pool(stages.encode_actors),
                        num_cpus=stages.actor_cpus, num_gpus=stages.encode_gpus)
    # On GPUs the actors size their own batches from free memory: hand them enough rows to fill one.
    caption_rows = MAX_GPU_BATCH if stages.caption_gpus else max(1, settings.caption_batch_size)
    ds = ds.map_batches(CaptionStage, batch_size=caption_rows, batch_format="pyarrow",
                        fn_constructor_args=(profile, settings, greedy, max_new_tokens),
                        compute=pool(stages.caption_actors), num_cpus=stages.actor_cpus,
                        num_gpus=stages.caption_gpus)
    for number, table in enumerate(ds.iter_batches(batch_size=commit_every, batch_format="pyarrow")):
        _write_shard(folder, number, table)
        yield table


def _encoder_sample_rate(profile: Profile) -> int:
    """The rate the decoders resample to, read without loading encoder weights on the driver."""
    if profile.encoder == "lite":
        from model.frontend import LiteFrontend

        return LiteFrontend.sample_rate
    from model.config import resolve_path

    config = json.loads((resolve_path(profile.encoder_path) / "preprocessor_config.json").read_text())
    return int(config["sampling_rate"])


def _index_with_ray(run: Scan, jobs: list[Job], settings: Settings, profile: Profile, greedy: bool,
                    max_new_tokens: int | None, max_seconds: float, commit_every: int, progress: bool) -> None:
    """Inside the scan: commit what earlier runs' shards hold for `jobs`, then run the rest on Ray and commit it."""
    summary = run.summary
    leftover, old = _leftover_rows(Path(settings.data_dir), jobs, summary.encoder_version, summary.pipeline_version,
                                   summary.scan_id)
    if leftover is not None:
        run.commit(shard_batch(leftover, profile.name))
        recovered = set(leftover.column("path").to_pylist())
        jobs = [j for j in jobs if j.entry.path not in recovered]
        log.info("committed %d tracks from the shards of an earlier run", len(recovered))
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    if not jobs:
        return
    folder = shard_dir(settings.data_dir, summary.scan_id)
    for table in compute_shards(jobs, settings, profile, folder, greedy=greedy, max_new_tokens=max_new_tokens,
                                max_seconds=max_seconds, commit_every=commit_every, progress=progress):
        run.commit(shard_batch(table, profile.name))
        _merge_batch_sizes(summary, table)
    shutil.rmtree(folder, ignore_errors=True)


def _merge_batch_sizes(summary: ScanSummary, table: pa.Table) -> None:
    """Over all actors: the largest starting size and the smallest size reached, per stage."""
    for raw in set(table.column("batch_sizes").to_pylist()) - {None}:
        for stage, size in json.loads(raw).items():
            have = summary.batch_sizes.setdefault(stage, size)
            have.update(start=max(have["start"], size["start"]), final=min(have["final"], size["final"]))


def run_ray_scan(roots: list[str], settings: Settings, profile: Profile | None = None, address: str | None = None,
                 *, recaption: bool = False, greedy: bool = False, max_new_tokens: int | None = None,
                 limit_seconds: float | None = None, commit_every: int = COMMIT_EVERY,
                 progress: bool = False) -> ScanSummary:
    """`indexer.pipeline.scan` with the decode/encode/caption work on a Ray cluster.

    `address`: a running cluster ("auto", "ray://head:10001", "10.0.0.1:6379"), or None for a local
    one started here. A process already connected to Ray keeps its cluster and `address` is unused.
    Same arguments and summary as `scan`, and the same one row in `scans`. Recaptions run on the
    driver, from stored tokens, and so do re-analyses (tracks whose analysis is older than the analyzer:
    decoded and analysed again, not encoded). Raises ScanBusyError if another scan holds the data dir.
    """
    import ray

    profile = profile or load_profile(settings.profile, settings.data_dir)
    run = Scan(roots, settings, Indexing(Models(profile, settings), settings, greedy, max_new_tokens),
               commit_every=commit_every, progress=progress, engine="ray")
    ours = not ray.is_initialized()
    if ours:
        ray.init(address=address, include_dashboard=False, log_to_driver=progress)
    try:
        with run:
            plan = run.plan(recaption)
            _index_with_ray(run, plan.index, settings, profile, greedy, max_new_tokens,
                            limit_seconds or settings.max_track_seconds, commit_every, progress)
            run.reanalyse(plan.reanalyse, limit_seconds or settings.max_track_seconds)
            run.recaption(plan.recaption)
    finally:
        if ours:
            ray.shutdown()
    return run.summary
