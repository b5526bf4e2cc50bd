"""The scan: walk, plan, then decode (worker processes) -> analyse and encode -> caption -> embed -> commit.

Decoding runs ahead in `settings.decode_workers` processes while this process analyses, encodes and
captions each file as it arrives and commits every `commit_every` files, so the models never wait for the
disk. Each file is encoded once; its tokens are stored
(fp16) and captioned from exactly those stored values, so captioning again later from the catalog
(`recaption`, or a new adapter or prompt) gives what a fresh scan would.

`Scan` (the lock, the scan's row, plan, commit, re-analyse, recaption) and `indexer.indexing.Indexing`
(the models: analyse, encode, caption) are the public steps both engines run, this process's and
`indexer.ray_engine`'s.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import TypeVar

import numpy as np
from sqlalchemy import insert, select, update

from catalog.store import Catalog, analyses, captions, embeddings, errors, scans, tracks
from catalog.vectors import IndexSet
from indexer.decode import DecodePool
from indexer.discover import Failure, Job, Known, Plan, plan_scan, walk
from indexer.indexing import Indexing, Models, StoredCaption
from indexer.progress import Pace
from indexer.tags import read_tags
from indexer.writer import Batch, ScanLock, Writer
from model.analysis import TrackAnalysis, analysis_version
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
    reanalysed: list[int] = field(default_factory=list)  # analysed again, not encoded again
    unchanged: int = 0
    skipped_failed: int = 0  # failed in an earlier scan and unchanged since: not retried
    failed: list[dict] = field(default_factory=list)  # {path, stage, reason}
    decoders: dict[str, int] = field(default_factory=dict)  # indexed tracks per decoder (model.audio): {name: n}
    warnings: list[dict] = field(default_factory=list)  # {path, reason}: indexed, with something a user should know
    index_repairs: dict[str, list[str]] = field(default_factory=dict)  # FAISS problems found and rebuilt
    batch_sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # {stage: {start, final}}, see Indexing
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy seconds per stage, see Indexing.busy
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: str | None = None

    @property
    def audio_per_wall_second(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def note(self, batch: Batch) -> None:
        """Count the decoder of each track a batch commits, and warn of each header that misstated its length."""
        for r in batch.tracks:
            if r.tags.decoder is not None:
                self.decoders[r.tags.decoder] = self.decoders.get(r.tags.decoder, 0) + 1
            if r.tags.header_duration is not None:
                self.warnings.append({"path": r.entry.path, "reason": (
                    f"the header claims {r.tags.header_duration:.1f} s of audio, decoding found "
                    f"{r.tags.duration:.1f} s: the decoded duration is stored")})

    def to_dict(self) -> dict:
        out = asdict(self)
        out["counts"] = {"files": self.files_total, "indexed": len(self.indexed), "moved": len(self.moved),
                         "removed": len(self.removed), "recaptioned": len(self.recaptioned),
                         "reanalysed": len(self.reanalysed),
                         "unchanged": self.unchanged, "failed": len(self.failed),
                         "skipped_failed": self.skipped_failed, "warnings": len(self.warnings)}
        out["audio_per_wall_second"] = round(self.audio_per_wall_second, 3)
        return out


def _batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


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
        self._write_seconds = 0.0

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
        # tqdm's own time left weighs every file alike: the bar shows the pace's instead (indexer/progress.py)
        self.bar = tqdm(total=0, unit="file", desc="scan", disable=not self._progress, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} files [{elapsed}{postfix}]")
        self.pace: Pace | None = None  # set by `plan`, once the work is known
        self._unread: dict[str, int] = {}  # bytes of each file the plan will read, by path
        self._paths: dict[int, str] = {}  # the path of each track to analyse again
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
        s.stage_seconds = {k: round(v, 2) for k, v in (self.indexing.busy | {"write": self._write_seconds}).items()}
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
        to_read = plan.index + plan.reanalyse
        self._unread = {j.entry.path: j.entry.size for j in to_read}
        self._paths = {j.track_id: j.entry.path for j in plan.reanalyse if j.track_id is not None}
        self.pace = Pace(len(to_read) + len(plan.recaption), sum(self._unread.values()))
        return plan

    def commit(self, batch: Batch) -> None:
        """Write one batch (one transaction, then FAISS) and count it in the summary."""
        assert self.writer is not None, "commit outside the scan's with block"
        started = time.perf_counter()
        done = self.writer.commit(batch)
        self._write_seconds += time.perf_counter() - started
        s = self.summary
        s.indexed += done.track_ids
        s.recaptioned += [tid for tid, _ in batch.recaptions]
        s.reanalysed += [tid for tid, _ in batch.reanalyses]
        s.removed += done.removed
        s.failed += [{"path": f.path, "stage": f.stage, "reason": f.reason} for f in batch.failures]
        s.audio_seconds += batch.audio_seconds
        s.note(batch)
        if self.pace is not None:  # the plan's own commit is no work of the pace's
            # the bytes read, found by path whichever engine read the files
            paths = [r.entry.path for r in batch.tracks] + [f.path for f in batch.failures] \
                + [self._paths.get(tid, "") for tid, _ in batch.reanalyses]
            self.pace.advance(batch.files_done, sum(self._unread.pop(p, 0) for p in paths), batch.audio_seconds)
        pace = f"{self.pace.figures().text()}, " if self.pace else ""
        self.bar.set_postfix_str(f"{pace}{len(s.failed)} failed", refresh=False)
        self.bar.update(batch.files_done)

    def index(self, jobs: list[Job], max_seconds: float) -> None:
        """The local engine: decode in `settings.decode_workers` processes, encode and caption here."""
        if not jobs:
            return
        rate, workers = self.indexing.models.encoder.sample_rate, self.settings.decode_workers
        with ThreadPoolExecutor(1, thread_name_prefix="load") as loader, \
                DecodePool(workers, rate, max_seconds, ahead=self.commit_every + 2 * workers) as pool:
            loading = loader.submit(self.indexing.load)  # while the first files decode
            for batch in self.indexing.stream(pool.run(jobs), self.commit_every):
                self.commit(batch)
            loading.result()  # a model that failed to load and no stage asked for again still says why

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
