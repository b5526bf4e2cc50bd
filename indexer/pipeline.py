"""The scan: walk, plan, then decode (worker processes) -> encode -> caption -> embed -> commit, per batch.

Decoding runs ahead in `settings.decode_workers` processes while the main process encodes and
captions, so the models never wait for the disk. Each file is encoded once; its tokens are stored
(fp16) and captioned from exactly those stored values, so captioning again later from the catalog
(`recaption`, or a new adapter or prompt) gives what a fresh scan would.

`Scan` (the lock, the scan's row, plan, commit, recaption) and `Indexing` (the models: encode,
caption) are the public steps both engines run, this process's and `indexer.ray_engine`'s.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import islice
from typing import TypeVar

import numpy as np
import soxr
from sqlalchemy import insert, select, update

from indexer.decode import Decoded, DecodePool
from indexer.discover import Failure, FileEntry, Job, Known, Plan, plan_scan, walk
from indexer.store import Catalog, analyses, captions, embeddings, errors, scans, tracks
from indexer.tags import read_tags
from indexer.vectors import IndexSet
from indexer.writer import FP16_MAX, Batch, CaptionResult, ScanLock, TrackResult, Writer
from model.analysis import TrackAnalysis, analysis_version
from model.batching import (
    AdaptiveBatch,
    Failed,
    caption_item_bytes,
    encode_item_bytes,
    initial_batch_size,
)
from model.config import Profile, load_profile
from model.settings import Settings

T = TypeVar("T")
COMMIT_EVERY = 8  # tracks per transaction: what a crash can cost, and how often readers see progress
FRAMES_PER_SECOND = 75  # encoder frames per second of audio, both encoders: sizes a caption row's audio tokens


@dataclass
class ScanSummary:
    scan_id: int | None
    roots: list[str]
    profile: str
    encoder_version: str
    pipeline_version: str
    state: str = "running"  # running | finished | interrupted
    files_total: int = 0
    indexed: list[int] = field(default_factory=list)  # track ids encoded and captioned
    moved: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    recaptioned: list[int] = field(default_factory=list)
    reanalysed: list[int] = field(default_factory=list)  # analysed again, not encoded again
    unchanged: int = 0
    skipped_failed: int = 0  # failed in an earlier scan and unchanged since: not retried
    failed: list[dict] = field(default_factory=list)  # {path, stage, reason}
    index_repairs: dict[str, list[str]] = field(default_factory=dict)  # FAISS problems found and rebuilt
    batch_sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # {stage: {start, final}}, see Indexing
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None

    @property
    def audio_per_wall_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["counts"] = {"files": self.files_total, "indexed": len(self.indexed), "moved": len(self.moved),
                         "removed": len(self.removed), "recaptioned": len(self.recaptioned),
                         "reanalysed": len(self.reanalysed),
                         "unchanged": self.unchanged, "failed": len(self.failed),
                         "skipped_failed": self.skipped_failed}
        out["audio_per_wall_second"] = round(self.audio_per_wall_second, 3)
        return out


class Models:
    """The encoder, MusiLingo, text embedder and analyzer (musicnn, tempo, key) of one profile, loaded on first
    use (a no-op scan loads none)."""

    def __init__(self, profile: Profile, settings: Settings, encoder=None, musilingo=None, text=None,
                 analyzer=None) -> None:
        self.profile, self.settings = profile, settings
        for name, given in (("encoder", encoder), ("musilingo", musilingo), ("text", text), ("analyzer", analyzer)):
            if given is not None:
                self.__dict__[name] = given  # cached_property reads the instance dict first
        if encoder is not None and encoder.version() != profile.version("encoder"):
            raise ValueError(f"encoder {encoder.version()} does not match profile {profile.name} "
                             f"({profile.version('encoder')}): stored versions would lie")
        if musilingo is not None and musilingo.profile.version() != profile.version():
            raise ValueError(f"MusiLingo was built for pipeline {musilingo.profile.version()}, the profile "
                             f"{profile.name} is {profile.version()}: stored versions would lie")

    @cached_property
    def encoder(self):
        from model.encoder import Encoder

        return Encoder.from_profile(self.profile, self.settings.resolved_device(), self.settings.encode_batch_size)

    @cached_property
    def musilingo(self):
        from model.musilingo import MusiLingo

        return MusiLingo.from_profile(self.profile, self.settings.resolved_device(),
                                      cache_dir=self.settings.models_dir, with_encoder=False)

    @cached_property
    def analyzer(self):
        from model.analysis import Analyzer

        return Analyzer(self.settings.models_dir, self.settings.resolved_device())

    @cached_property
    def text(self):
        from model.textembed import TextEmbedder

        return TextEmbedder(self.profile.text_embedder, self.settings.resolved_device())


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def file_failure(entry: FileEntry, track_id: int | None, stage: str, reason: str, retry: bool = False) -> Failure:
    """A file's row for the errors table.

    A `retry` failure (out of memory: the machine's fault, not the file's) is stored without size and
    mtime, so the next scan's plan does not recognise it as "failed before, unchanged" and tries the
    file again, and it keeps the file's earlier track, if any, meanwhile.
    """
    if retry:
        return Failure(entry.path, entry.root, stage, reason)
    return Failure(entry.path, entry.root, stage, reason, entry.size, entry.mtime, track_id)


@dataclass
class StoredCaption:
    """A track's caption as the catalog holds it: kept when only its analysis is redone."""

    text: str
    token_ids: list[int]
    pipeline_version: str


@dataclass
class Encoded:
    tokens: np.ndarray  # fp16 [T', D], exactly as stored: captions are made from these values
    vector: np.ndarray  # fp32 unit track vector, from the fp32 tokens
    seconds: float  # audio encoded


class Indexing:
    """The models' side of a scan, shared by both engines: decoded audio in, tokens, captions and failures out.

    The engines differ only in where this runs (here, or in Ray actors) and who commits the results.
    Batch sizes are chosen on first use (`model.batching`) and halved on out-of-memory for the rest of
    the run; `batch_sizes` reports them.
    """

    def __init__(self, models: Models, settings: Settings, greedy: bool = False,
                 max_new_tokens: int | None = None) -> None:
        self.models, self.settings, self.profile = models, settings, models.profile
        self.greedy, self.max_new_tokens = greedy, max_new_tokens

    @cached_property
    def encode_batch(self) -> AdaptiveBatch:
        """Encoder chunks per forward pass, and tracks per `Encoder.encode` call."""
        encoder = self.models.encoder
        chunk = encoder.chunk_samples + 2 * encoder.context_samples
        return AdaptiveBatch(initial_batch_size(self.settings.encode_batch_size, encoder.device,
                                                lambda: encode_item_bytes(chunk)))

    @cached_property
    def caption_batch(self) -> AdaptiveBatch:
        """Rows per `MusiLingo.caption` call; a row's memory is sized for the longest track a scan keeps."""
        model, profile = self.models.musilingo, self.profile
        audio_tokens = math.ceil(self.settings.max_track_seconds * FRAMES_PER_SECOND / profile.pool_window)
        new_tokens = self.max_new_tokens or profile.max_new_tokens
        return AdaptiveBatch(initial_batch_size(
            self.settings.caption_batch_size, str(model.device),
            lambda: caption_item_bytes(model.llm.config, model.llm.dtype, audio_tokens, new_tokens)))

    @cached_property
    def analysis_batch(self) -> AdaptiveBatch:
        """Tracks per `Analyzer.analyze` call (each takes at most `model.analysis.MAX_PATCHES` patches)."""
        return AdaptiveBatch(max(1, self.settings.encode_batch_size))

    def batch_sizes(self) -> dict[str, dict[str, int]]:
        """{"analysis"|"encode"|"caption": {"start", "final"}} for the models this run used."""
        return {name: self.__dict__[f"{name}_batch"].report() for name in ("analysis", "encode", "caption")
                if f"{name}_batch" in self.__dict__}

    def encode(self, waves: list[np.ndarray]) -> tuple[list[tuple[int, Encoded]], list[Failed[int]]]:
        """Tokens of each wave, by position; too short a wave, or one that fails, gives a `Failed` instead."""
        from model.encoder import track_vector

        encoder = self.models.encoder

        def run(idx: list[int]) -> list:
            encoder.batch_size = self.encode_batch.size  # chunks per forward pass: halved with the batch
            return encoder.encode([waves[i] for i in idx])

        done, failed = self.encode_batch.run(run, list(range(len(waves))))
        out = []
        for i, tokens in done:
            seconds = waves[i].size / encoder.sample_rate
            if tokens.shape[0] == 0:
                failed.append(Failed(i, f"too short to encode ({1000 * seconds:.0f} ms of audio)"))
            else:
                half = tokens.clamp(-FP16_MAX, FP16_MAX).half().numpy()
                out.append((i, Encoded(half, track_vector(tokens), seconds)))
        return out, failed

    def analyze(self, waves: list[np.ndarray]) -> tuple[list[tuple[int, TrackAnalysis]], list[Failed[int]]]:
        """What the taggers, tempo and key estimators hear in each wave (at the encoder's rate), by position."""
        analyzer, rate = self.models.analyzer, self.models.encoder.sample_rate

        def run(idx: list[int]) -> list[TrackAnalysis]:
            return analyzer.analyze([waves[i] if rate == analyzer.sample_rate else
                                     soxr.resample(waves[i], rate, analyzer.sample_rate) for i in idx])

        return self.analysis_batch.run(run, list(range(len(waves))))

    def caption(self, tokens: list[np.ndarray] | None, analyses: list[TrackAnalysis | None]) -> tuple[
            list[tuple[int, CaptionResult]], list[Failed[int]]]:
        """Captions and text vectors for stored (fp16) token arrays and their analyses, by position.

        The `analysis` caption source writes the caption from the analysis (no LLM, `tokens` unused); the
        `model` source generates it from the tokens, and the text a track is found by adds what the
        analysis heard.
        """
        import torch

        if self.profile.caption_source == "analysis":
            made = [(i, a.describe().caption(), []) for i, a in enumerate(analyses) if a is not None]
            failed = [Failed(i, "no analysis to write a caption from") for i, a in enumerate(analyses) if a is None]
            texts = [text for _, text, _ in made]
        else:
            gens, failed = self.caption_batch.run(lambda idx: self.models.musilingo.caption(
                [torch.from_numpy(tokens[i].astype(np.float32)) for i in idx], greedy=self.greedy,
                max_new_tokens=self.max_new_tokens), list(range(len(tokens))))
            made = [(i, g.text, list(g.token_ids)) for i, g in gens]
            texts = [text if analyses[i] is None else f"{text} {analyses[i].describe().caption()}"
                     for i, text, _ in made]
        vecs = self.models.text.encode(texts)
        version = self.profile.version()
        return [(i, CaptionResult(text, ids, v, version)) for (i, text, ids), v in zip(made, vecs, strict=True)], failed

    def results(self, decoded: list[Decoded]) -> Batch:
        """The writer's batch for decoded files: analysed, encoded and captioned tracks, and a failure for each
        other file."""
        batch = Batch(files_done=len(decoded))
        audio, heard = self._analysed(decoded, batch)
        encoded, bad = self.encode([d.wave for d in audio])
        batch.failures += [self._failure(audio[f.item].job, "encode", f) for f in bad]
        captioned, bad = self.caption([e.tokens for _, e in encoded], [heard[k] for k, _ in encoded])
        batch.failures += [self._failure(audio[encoded[f.item][0]].job, "caption", f) for f in bad]
        version = self.profile.version("encoder")
        for i, cap in captioned:
            k, enc = encoded[i]
            job = audio[k].job
            batch.tracks.append(TrackResult(
                entry=job.entry, fingerprint=job.fingerprint, tags=audio[k].tags, indexed_seconds=enc.seconds,
                profile=self.profile.name, encoder_version=version, tokens=enc.tokens, vector=enc.vector,
                caption=cap, analysis=heard[k], track_id=job.track_id))
            batch.audio_seconds += enc.seconds
        return batch

    def reanalysed(self, decoded: list[Decoded], stored: dict[int, StoredCaption]) -> Batch:
        """The writer's batch for tracks analysed again (a new tagger or estimator): their analysis, and the
        caption (written anew from the analysis, or the stored one) with the text vector it is found by."""
        batch = Batch(files_done=len(decoded))
        audio, heard = self._analysed(decoded, batch)
        ids = [d.job.track_id for d in audio]
        if self.profile.caption_source == "analysis":
            captioned, bad = self.caption(None, heard)
            batch.failures += [self._failure(audio[f.item].job, "caption", f) for f in bad]
        else:
            texts = [f"{stored[t].text} {a.describe().caption()}" for t, a in zip(ids, heard, strict=True)]
            captioned = [(i, CaptionResult(stored[t].text, stored[t].token_ids, v, stored[t].pipeline_version))
                         for i, (t, v) in enumerate(zip(ids, self.models.text.encode(texts), strict=True))]
        batch.reanalyses += [(ids[i], heard[i]) for i, _ in captioned]
        batch.recaptions += [(ids[i], cap) for i, cap in captioned]
        return batch

    def _analysed(self, decoded: list[Decoded], batch: Batch) -> tuple[list[Decoded], list[TrackAnalysis]]:
        """The decoded files that analysed, with their analyses; a failure in `batch` for each other file."""
        batch.failures += [file_failure(d.job.entry, d.job.track_id, "decode", d.error)
                           for d in decoded if d.error is not None]
        audio = [d for d in decoded if d.error is None]
        analysed, bad = self.analyze([d.wave for d in audio])
        batch.failures += [self._failure(audio[f.item].job, "analysis", f) for f in bad]
        return [audio[k] for k, _ in analysed], [a for _, a in analysed]

    @staticmethod
    def _failure(job: Job, stage: str, failed: Failed) -> Failure:
        return file_failure(job.entry, job.track_id, stage, failed.reason, failed.out_of_memory)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def stored_analyses(conn, track_ids: list[int]) -> dict[int, TrackAnalysis]:
    """The catalog's analyses of these tracks (those that have one), as the analyzer made them."""
    rows = conn.execute(select(analyses, tracks.c.bpm, tracks.c.tonic, tracks.c.mode)
                        .join(tracks, tracks.c.id == analyses.c.track_id)
                        .where(analyses.c.track_id.in_(track_ids))).mappings()
    return {r["track_id"]: TrackAnalysis.from_record(dict(r)) for r in rows}


def _catalog_state(catalog: Catalog) -> tuple[list[Known], dict[str, tuple[int | None, float | None]]]:
    with catalog.read() as conn:
        known = [Known(*r) for r in conn.execute(select(
            tracks.c.id, tracks.c.path, tracks.c.size, tracks.c.mtime, tracks.c.fingerprint, tracks.c.status,
            tracks.c.encoder_version, tracks.c.pipeline_version, tracks.c.analysis_version))]
        failed = {r.path: (r.size, r.mtime) for r in conn.execute(select(errors.c.path, errors.c.size, errors.c.mtime))}
    return known, failed


class Scan:
    """One scan of a data dir, whichever engine computes it: the lock, the scan's row, the writer, the summary.

    Both engines run the same steps, so a scan leaves one row in `scans` and applies moves and deletions
    once:

        with Scan(roots, settings, indexing, engine=...) as run:
            plan = run.plan(recaption)          # walk, plan, commit what needs no model
            ... run.commit(batch) for the work of plan.index (here: run.index(plan.index, max_seconds))
            run.recaption(plan.recaption)

    Leaving the block saves the indexes and closes the row: "finished", or "interrupted" after an error
    (re-raised) or a KeyboardInterrupt (Ctrl-C, or SIGTERM mapped to it; swallowed, every committed
    batch is kept). Entering raises ScanBusyError if another scan holds the data dir.
    """

    def __init__(self, roots: list[str], settings: Settings, indexing: Indexing, *, commit_every: int = COMMIT_EVERY,
                 progress: bool = False, engine: str = "local") -> None:
        if not roots:
            raise ValueError("no library folders given: pass PATH... or set roots in the settings")
        profile = indexing.profile
        self.settings, self.indexing, self.commit_every, self.engine = settings, indexing, commit_every, engine
        self.catalog = Catalog(settings.catalog_path)
        self.summary = ScanSummary(None, [str(r) for r in roots], profile.name, profile.version("encoder"),
                                   profile.version())
        self.writer: Writer | None = None
        self._lock = ScanLock(settings.data_dir)
        self._progress = progress

    def __enter__(self) -> Scan:
        from tqdm import tqdm

        self._started = time.monotonic()
        self._lock.__enter__()
        try:
            self.catalog.create()
            with self.catalog.write() as conn:  # we hold the lock: any scan still "running" died
                conn.execute(update(scans).where(scans.c.state == "running").values(state="interrupted"))
                self.summary.scan_id = conn.execute(insert(scans).values(
                    started_at=_now(), heartbeat=_now(), roots=json.dumps(self.summary.roots),
                    profile=self.summary.profile, state="running", files_total=0, files_done=0,
                    audio_seconds=0.0).returning(scans.c.id)).scalar_one()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.bar = tqdm(total=0, unit="file", desc="scan", disable=not self._progress, dynamic_ncols=True)
        try:
            indexes = IndexSet(self.catalog, self.settings.data_dir)
            self.summary.index_repairs = {k: v for k, v in indexes.open(self.summary.scan_id).items() if v}
            self.writer = Writer(self.catalog, indexes, self.summary.scan_id)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        s = self.summary
        s.state = "finished" if exc is None else "interrupted"
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            s.error = f"{type(exc).__name__}: {exc}"
        s.batch_sizes = self.indexing.batch_sizes() | s.batch_sizes  # an engine's own figures win
        try:
            self.bar.close()
            self._finish(failing=s.error is not None)
        finally:
            self._lock.__exit__(None, None, None)
        return isinstance(exc, KeyboardInterrupt)

    def plan(self, recaption: bool = False) -> Plan:
        """Walk the roots and plan against the catalog; commit at once what needs no model (moves, touches,
        deletions, discovery failures). The engine then does `plan.index`; `plan.recaption` is `recaption`'s."""
        s = self.summary
        found = walk(s.roots)
        known, failed = _catalog_state(self.catalog)
        plan = plan_scan(found, known, failed, s.encoder_version, s.pipeline_version, recaption, analysis_version())
        s.files_total = len(found.files)
        s.unchanged = plan.unchanged
        s.skipped_failed = len(plan.skipped_failed)
        s.moved = [tid for tid, _ in plan.moves]
        with self.catalog.write() as conn:
            conn.execute(update(scans).where(scans.c.id == s.scan_id).values(files_total=s.files_total))
        self.bar.reset(total=s.files_total)
        self.commit(Batch(
            moves=[(tid, e, read_tags(e.path, e.root)) for tid, e in plan.moves], touches=plan.touches,
            removed=plan.removed, failures=plan.failures, clear_errors=plan.stale_errors,
            files_done=s.files_total - len(plan.index) - len(plan.recaption)))
        return plan

    def commit(self, batch: Batch) -> None:
        """Write one batch (one transaction, then FAISS) and count it in the summary."""
        assert self.writer is not None, "commit outside the scan's with block"
        done = self.writer.commit(batch)
        s = self.summary
        s.indexed += done.track_ids
        s.recaptioned += [tid for tid, _ in batch.recaptions]
        s.reanalysed += [tid for tid, _ in batch.reanalyses]
        s.removed += done.removed
        s.failed += [{"path": f.path, "stage": f.stage, "reason": f.reason} for f in batch.failures]
        s.audio_seconds += batch.audio_seconds
        self.bar.update(batch.files_done)
        self.bar.set_postfix_str(f"{s.audio_seconds / 3600:.2f} h audio, {len(s.failed)} failed", refresh=False)

    def index(self, jobs: list[Job], max_seconds: float) -> None:
        """The local engine: decode in `settings.decode_workers` processes, encode and caption here."""
        if not jobs:
            return
        rate, workers = self.indexing.models.encoder.sample_rate, self.settings.decode_workers
        with DecodePool(workers, rate, max_seconds, ahead=self.commit_every + 2 * workers) as pool:
            for chunk in _batched(pool.run(jobs), self.commit_every):
                self.commit(self.indexing.results(chunk))

    def reanalyse(self, jobs: list[Job], max_seconds: float) -> None:
        """Decode and analyse tracks again (a new tagger or estimator, or a catalog from before the analysis),
        here, without encoding them again; captions written from the analysis are redone with it."""
        if not jobs:
            return
        rate, workers = self.indexing.models.encoder.sample_rate, self.settings.decode_workers
        with DecodePool(workers, rate, max_seconds, ahead=self.commit_every + 2 * workers) as pool:
            for chunk in _batched(pool.run(jobs), self.commit_every):
                ids = [d.job.track_id for d in chunk]
                with self.catalog.read() as conn:
                    stored = {r.track_id: StoredCaption(r.text, json.loads(r.token_ids or "[]"), r.pipeline_version)
                              for r in conn.execute(select(captions).where(captions.c.track_id.in_(ids)))}
                self.commit(self.indexing.reanalysed(chunk, stored))

    def recaption(self, track_ids: list[int]) -> None:
        """Caption tracks again from their stored tokens and analyses, here (no audio is read)."""
        for ids in _batched(track_ids, self.commit_every):
            with self.catalog.read() as conn:
                rows = conn.execute(select(
                    embeddings.c.track_id, embeddings.c.n_tokens, embeddings.c.dim, embeddings.c.tokens,
                    tracks.c.path, tracks.c.root).join(tracks, tracks.c.id == embeddings.c.track_id)
                    .where(embeddings.c.track_id.in_(ids))).all()
                heard = stored_analyses(conn, ids)
            stored = [np.frombuffer(r.tokens, dtype=np.float16).reshape(r.n_tokens, r.dim) for r in rows]
            captioned, bad = self.indexing.caption(stored, [heard.get(r.track_id) for r in rows])
            batch = Batch(files_done=len(ids), recaptions=[(rows[i].track_id, cap) for i, cap in captioned])
            batch.failures += [Failure(rows[f.item].path, rows[f.item].root, "caption", f.reason) for f in bad]
            self.commit(batch)

    def _finish(self, failing: bool) -> None:
        """Save the indexes and close the scan's row. After a failure (a full disk, say) this may fail too;
        then the first error is the one to report, and the next scan repairs what this one could not."""
        s = self.summary
        try:
            if self.writer is not None:
                self.writer.close()
            s.wall_seconds = time.monotonic() - self._started
            with self.catalog.write() as conn:
                conn.execute(update(scans).where(scans.c.id == s.scan_id).values(
                    state=s.state, finished_at=_now(), heartbeat=_now(), files_total=s.files_total,
                    summary=json.dumps(s.to_dict()["counts"] | {"engine": self.engine, "error": s.error,
                                                                "batch_sizes": s.batch_sizes})))
        except Exception:
            if not failing:
                raise


def scan(roots: list[str], settings: Settings, profile: Profile | None = None, *, models: Models | None = None,
         recaption: bool = False, greedy: bool = False, max_new_tokens: int | None = None,
         limit_seconds: float | None = None, commit_every: int = COMMIT_EVERY, progress: bool = False) -> ScanSummary:
    """Bring the catalog and FAISS indexes of `settings.data_dir` in line with the files under `roots`.

    Only new, changed or stale files are decoded; moved files keep their data; `recaption` captions
    every track under the roots again from its stored tokens. Raises ScanBusyError if another scan
    holds the data dir. A KeyboardInterrupt (Ctrl-C, or SIGTERM mapped to it) ends the scan with
    every committed batch kept, and returns the summary with state "interrupted".
    """
    profile = profile or load_profile(settings.profile, settings.data_dir)
    models = models or Models(profile, settings)
    if models.profile.version() != profile.version():
        raise ValueError(f"models were built for profile {models.profile.name}, not {profile.name}")
    run = Scan(roots, settings, Indexing(models, settings, greedy, max_new_tokens), commit_every=commit_every,
               progress=progress)
    with run:
        plan = run.plan(recaption)
        run.index(plan.index, limit_seconds or settings.max_track_seconds)
        run.reanalyse(plan.reanalyse, limit_seconds or settings.max_track_seconds)
        run.recaption(plan.recaption)
    return run.summary
