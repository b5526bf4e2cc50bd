"""The scan: walk, plan, then decode (worker processes) -> encode -> caption -> embed -> commit, per batch.

Decoding runs ahead in `settings.decode_workers` processes while the main process encodes and
captions, so the models never wait for the disk. Each file is encoded once; its tokens are stored
(fp16) and captioned from exactly those stored values, so captioning again later from the catalog
(`recaption`, or a new adapter or prompt) gives what a fresh scan would.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import islice
from typing import TypeVar

import numpy as np
from sqlalchemy import insert, select, update

from indexer.decode import Decoded, DecodePool
from indexer.discover import Failure, Job, Known, plan_scan, walk
from indexer.store import Catalog, embeddings, errors, scans, tracks
from indexer.tags import read_tags
from indexer.vectors import IndexSet
from indexer.writer import FP16_MAX, Batch, CaptionResult, ScanLock, TrackResult, Writer
from model.config import Profile, load_profile
from model.settings import Settings

T = TypeVar("T")
COMMIT_EVERY = 8  # tracks per transaction: what a crash can cost, and how often readers see progress


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
    unchanged: int = 0
    skipped_failed: int = 0  # failed in an earlier scan and unchanged since: not retried
    failed: list[dict] = field(default_factory=list)  # {path, stage, reason}
    index_repairs: dict[str, list[str]] = field(default_factory=dict)  # FAISS problems found and rebuilt
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
                         "unchanged": self.unchanged, "failed": len(self.failed),
                         "skipped_failed": self.skipped_failed}
        out["audio_per_wall_second"] = round(self.audio_per_wall_second, 3)
        return out


class Models:
    """The encoder, MusiLingo and text embedder of one profile, loaded on first use (a no-op scan loads none)."""

    def __init__(self, profile: Profile, settings: Settings, encoder=None, musilingo=None, text=None) -> None:
        self.profile, self.settings = profile, settings
        for name, given in (("encoder", encoder), ("musilingo", musilingo), ("text", text)):
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
    def text(self):
        from model.textembed import TextEmbedder

        return TextEmbedder(self.profile.text_embedder, self.settings.resolved_device())


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def _each(fn: Callable[[list[T]], list], items: list[T]) -> tuple[list[tuple[T, object]], list[tuple[T, str]]]:
    """Run `fn` on the batch; if it raises, on each item alone, so one bad input fails alone.

    If no item succeeds on its own the fault is not the input's (a broken model, out of memory):
    the error propagates and the scan stops, rather than marking every file as failed.
    """
    try:
        return list(zip(items, fn(items), strict=True)), []
    except Exception:
        if len(items) == 1:
            raise
    done, bad, last = [], [], None
    for item in items:
        try:
            done.append((item, fn([item])[0]))
        except Exception as exc:
            bad.append((item, f"{type(exc).__name__}: {str(exc)[:200]}"))
            last = exc
    if not done and last is not None:
        raise last
    return done, bad


class _Scan:
    """One scan's state: the models, the writer, the summary and the progress bar."""

    def __init__(self, settings: Settings, profile: Profile, models: Models, writer: Writer,
                 summary: ScanSummary, greedy: bool, max_new_tokens: int | None, commit_every: int, bar) -> None:
        self.settings, self.profile, self.models, self.writer = settings, profile, models, writer
        self.summary, self.greedy, self.max_new_tokens = summary, greedy, max_new_tokens
        self.commit_every, self.bar = commit_every, bar

    def caption(self, tokens: list) -> tuple[list[tuple[int, CaptionResult]], list[tuple[int, str]]]:
        """Captions and text vectors for token tensors, by position; failures give (position, reason)."""
        import torch

        size = max(1, self.settings.caption_batch_size)
        gens, bad = [], []
        for part in _batched(range(len(tokens)), size):
            ok, failed = _each(lambda idx: self.models.musilingo.caption(
                [torch.as_tensor(tokens[i]).float() for i in idx], greedy=self.greedy,
                max_new_tokens=self.max_new_tokens), part)
            gens += ok
            bad += failed
        vecs = self.models.text.encode([g.text for _, g in gens])
        version = self.profile.version()
        return [(i, CaptionResult(g.text, list(g.token_ids), v, version)) for (i, g), v in zip(gens, vecs, strict=True)], bad

    def commit(self, batch: Batch) -> None:
        done = self.writer.commit(batch)
        s = self.summary
        s.indexed += done.track_ids
        s.recaptioned += [tid for tid, _ in batch.recaptions]
        s.removed += done.removed
        s.failed += [{"path": f.path, "stage": f.stage, "reason": f.reason} for f in batch.failures]
        s.audio_seconds += batch.audio_seconds
        self.bar.update(batch.files_done)
        self.bar.set_postfix_str(f"{s.audio_seconds / 3600:.2f} h audio, {len(s.failed)} failed", refresh=False)

    def index_files(self, jobs: list[Job], max_seconds: float) -> None:
        import torch

        from model.encoder import track_vector

        encoder = self.models.encoder
        workers = self.settings.decode_workers
        with DecodePool(workers, encoder.sample_rate, max_seconds, ahead=self.commit_every + 2 * workers) as pool:
            for chunk in _batched(pool.run(jobs), self.commit_every):
                batch = Batch(files_done=len(chunk))
                decoded: list[Decoded] = []
                for d in chunk:
                    if d.error is None:
                        decoded.append(d)
                    else:
                        batch.failures.append(self._failure(d.job, "decode", d.error))
                encoded, bad = _each(lambda ds: encoder.encode([d.wave for d in ds]), decoded)
                batch.failures += [self._failure(d.job, "encode", reason) for d, reason in bad]
                ready: list[tuple[Decoded, torch.Tensor]] = []
                for d, tokens in encoded:
                    if tokens.shape[0] == 0:
                        ms = 1000 * d.wave.size / encoder.sample_rate
                        batch.failures.append(self._failure(d.job, "encode", f"too short to encode ({ms:.0f} ms of audio)"))
                    else:
                        ready.append((d, tokens))
                # Caption from the fp16 values that are stored, as a later recaption will.
                captioned, bad = self.caption([t.clamp(-FP16_MAX, FP16_MAX).half() for _, t in ready])
                batch.failures += [self._failure(ready[i][0].job, "caption", reason) for i, reason in bad]
                for i, cap in captioned:
                    d, tokens = ready[i]
                    seconds = d.wave.size / encoder.sample_rate
                    batch.tracks.append(TrackResult(
                        entry=d.job.entry, fingerprint=d.job.fingerprint, tags=d.tags, indexed_seconds=seconds,
                        profile=self.profile.name, encoder_version=encoder.version(), tokens=tokens.numpy(),
                        vector=track_vector(tokens), caption=cap, track_id=d.job.track_id))
                    batch.audio_seconds += seconds
                self.commit(batch)

    def recaption(self, track_ids: list[int], catalog: Catalog) -> None:
        for ids in _batched(track_ids, self.commit_every):
            with catalog.read() as conn:
                rows = conn.execute(select(
                    embeddings.c.track_id, embeddings.c.n_tokens, embeddings.c.dim, embeddings.c.tokens,
                    tracks.c.path, tracks.c.root).join(tracks, tracks.c.id == embeddings.c.track_id)
                    .where(embeddings.c.track_id.in_(ids))).all()
            stored = [np.frombuffer(r.tokens, dtype=np.float16).reshape(r.n_tokens, r.dim).astype(np.float32)
                      for r in rows]
            captioned, bad = self.caption(stored)
            batch = Batch(files_done=len(ids), recaptions=[(rows[i].track_id, cap) for i, cap in captioned])
            batch.failures += [Failure(rows[i].path, rows[i].root, "caption", reason) for i, reason in bad]
            self.commit(batch)

    @staticmethod
    def _failure(job: Job, stage: str, reason: str) -> Failure:
        e = job.entry
        return Failure(e.path, e.root, stage, reason, e.size, e.mtime, job.track_id)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _catalog_state(catalog: Catalog) -> tuple[list[Known], dict[str, tuple[int | None, float | None]]]:
    with catalog.read() as conn:
        known = [Known(*r) for r in conn.execute(select(
            tracks.c.id, tracks.c.path, tracks.c.size, tracks.c.mtime, tracks.c.fingerprint, tracks.c.status,
            tracks.c.encoder_version, tracks.c.pipeline_version))]
        failed = {r.path: (r.size, r.mtime) for r in conn.execute(select(errors.c.path, errors.c.size, errors.c.mtime))}
    return known, failed


def scan(roots: list[str], settings: Settings, profile: Profile | None = None, *, models: Models | None = None,
         recaption: bool = False, greedy: bool = False, max_new_tokens: int | None = None,
         limit_seconds: float | None = None, commit_every: int = COMMIT_EVERY, progress: bool = False) -> ScanSummary:
    """Bring the catalog and FAISS indexes of `settings.data_dir` in line with the files under `roots`.

    Only new, changed or stale files are decoded; moved files keep their data; `recaption` captions
    every track under the roots again from its stored tokens. Raises ScanBusyError if another scan
    holds the data dir. A KeyboardInterrupt (Ctrl-C, or SIGTERM mapped to it) ends the scan with
    every committed batch kept, and returns the summary with state "interrupted".
    """
    from tqdm import tqdm

    if not roots:
        raise ValueError("no library folders given: pass PATH... or set roots in the settings")
    profile = profile or load_profile(settings.profile, settings.data_dir)
    models = models or Models(profile, settings)
    if models.profile.version() != profile.version():
        raise ValueError(f"models were built for profile {models.profile.name}, not {profile.name}")
    catalog = Catalog(settings.catalog_path)
    started = time.monotonic()
    with ScanLock(settings.data_dir):
        catalog.create()
        with catalog.write() as conn:  # we hold the lock: any scan still "running" died
            conn.execute(update(scans).where(scans.c.state == "running").values(state="interrupted"))
            scan_id = conn.execute(insert(scans).values(
                started_at=_now(), heartbeat=_now(), roots=json.dumps([str(r) for r in roots]), profile=profile.name,
                state="running", files_total=0, files_done=0, audio_seconds=0.0).returning(scans.c.id)).scalar_one()
        summary = ScanSummary(scan_id, [str(r) for r in roots], profile.name, profile.version("encoder"),
                              profile.version())
        indexes = IndexSet(catalog, settings.data_dir)
        writer: Writer | None = None
        bar = tqdm(total=0, unit="file", desc="scan", disable=not progress, dynamic_ncols=True)
        try:
            summary.index_repairs = {k: v for k, v in indexes.open(scan_id).items() if v}
            writer = Writer(catalog, indexes, scan_id)
            found = walk(roots)
            known, failed = _catalog_state(catalog)
            plan = plan_scan(found, known, failed, summary.encoder_version, summary.pipeline_version, recaption)
            summary.files_total = len(found.files)
            summary.unchanged = plan.unchanged
            summary.skipped_failed = len(plan.skipped_failed)
            summary.moved = [tid for tid, _ in plan.moves]
            with catalog.write() as conn:
                conn.execute(update(scans).where(scans.c.id == scan_id).values(files_total=summary.files_total))
            bar.reset(total=summary.files_total)
            run = _Scan(settings, profile, models, writer, summary, greedy, max_new_tokens, commit_every, bar)
            run.commit(Batch(
                moves=[(tid, e, read_tags(e.path, e.root)) for tid, e in plan.moves], touches=plan.touches,
                removed=plan.removed, failures=plan.failures, clear_errors=plan.stale_errors,
                files_done=summary.files_total - len(plan.index) - len(plan.recaption)))
            if plan.index:
                run.index_files(plan.index, limit_seconds or settings.max_track_seconds)
            if plan.recaption:
                run.recaption(plan.recaption, catalog)
            summary.state = "finished"
        except KeyboardInterrupt:
            summary.state = "interrupted"
        except BaseException as exc:
            summary.state = "interrupted"
            summary.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            bar.close()
            _finish(catalog, writer, scan_id, summary, started, failing=summary.error is not None)
    return summary


def _finish(catalog: Catalog, writer: Writer | None, scan_id: int, summary: ScanSummary, started: float,
            failing: bool) -> None:
    """Save the indexes and close the scan's row. After a failure (a full disk, say) this may fail too;
    then the first error is the one to report, and the next scan repairs what this one could not."""
    try:
        if writer is not None:
            writer.close()
        summary.wall_seconds = time.monotonic() - started
        with catalog.write() as conn:
            conn.execute(update(scans).where(scans.c.id == scan_id).values(
                state=summary.state, finished_at=_now(), heartbeat=_now(),
                summary=json.dumps(summary.to_dict()["counts"] | {"error": summary.error})))
    except Exception:
        if not failing:
            raise
