"""The models' side of a scan, shared by both engines: decoded audio in; analyses, tokens, captions and
failures out.

`Models` loads a profile's encoder, MusiLingo, text embedder and analyzer once, on first use; `Indexing`
runs them on decoded files (`stream`: each file's analysis and encoding begin as it is decoded, both models
at once), with batch sizes that back off on out-of-memory (`model.batching`).
The engines differ only in where this runs (`indexer.pipeline`'s process, or Ray actors in
`indexer.ray_engine`) and who commits the results.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import numpy as np
import soxr
from threadpoolctl import ThreadpoolController

from indexer.decode import Decoded
from indexer.discover import Failure, FileEntry, Job
from indexer.writer import FP16_MAX, Batch, CaptionResult, TrackResult
from model.analysis import TrackAnalysis
from model.batching import (
    AdaptiveBatch,
    Failed,
    caption_item_bytes,
    encode_item_bytes,
    initial_batch_size,
)
from model.config import Profile
from model.runtime import keep_freed_memory
from model.settings import Settings

FRAMES_PER_SECOND = 75  # encoder frames per second of audio, both encoders: sizes a caption row's audio tokens


class Models:
    """The encoder, MusiLingo, text embedder and analyzer (musicnn, tempo, key) of one profile, loaded on first
    use (a no-op scan loads none), and once: a scan loads them in a thread while its first files decode, and a
    stage that asks meanwhile waits for that load instead of starting its own."""

    NAMES = ("encoder", "musilingo", "analyzer", "text")

    def __init__(self, profile: Profile, settings: Settings, encoder=None, musilingo=None, text=None,
                 analyzer=None) -> None:
        self.profile, self.settings = profile, settings
        given = {"encoder": encoder, "musilingo": musilingo, "analyzer": analyzer, "text": text}
        self._loaded = {name: model for name, model in given.items() if model is not None}
        self._locks = {name: threading.Lock() for name in self.NAMES}
        if encoder is not None and encoder.version() != profile.version("encoder"):
            raise ValueError(f"encoder {encoder.version()} does not match profile {profile.name} "
                             f"({profile.version('encoder')}): stored versions would lie")
        if musilingo is not None and musilingo.profile.version() != profile.version():
            raise ValueError(f"MusiLingo was built for pipeline {musilingo.profile.version()}, the profile "
                             f"{profile.name} is {profile.version()}: stored versions would lie")

    def _once(self, name: str, load: Callable[[], Any]) -> Any:
        with self._locks[name]:
            if name not in self._loaded:
                self._loaded[name] = load()
            return self._loaded[name]

    @property
    def encoder(self):
        from model.encoder import Encoder

        return self._once("encoder", lambda: Encoder.from_profile(
            self.profile, self.settings.resolved_device(), self.settings.encode_batch_size))

    @property
    def musilingo(self):
        from model.musilingo import MusiLingo

        return self._once("musilingo", lambda: MusiLingo.from_profile(
            self.profile, self.settings.resolved_device(), cache_dir=self.settings.models_dir, with_encoder=False))

    @property
    def analyzer(self):
        from model.analysis import Analyzer

        return self._once("analyzer", lambda: Analyzer(self.settings.models_dir, self.settings.resolved_device()))

    @property
    def text(self):
        from model.textembed import TextEmbedder

        return self._once("text", lambda: TextEmbedder(self.profile.text_embedder, self.settings.resolved_device()))


def file_failure(entry: FileEntry, track_id: int | None, stage: str, reason: str, retry: bool = False) -> Failure:
    """A file's row for the errors table.

    A `retry` failure (out of memory: the machine's fault, not the file's) is stored without size and
    mtime, so the next scan's plan does not recognise it as "failed before, unchanged" and tries the
    file again, and it keeps the file's earlier track, if any, meanwhile.
    """
    if retry:
        return Failure(entry.path, entry.root, stage, reason)
    return Failure(entry.path, entry.root, stage, reason, entry.size, entry.mtime, track_id)



def _settle(analysing: Future, encoding: Future, n: int) -> list[
        tuple[TrackAnalysis | None, Encoded | None, tuple[str, Failed[int]] | None]]:
    """(analysis, tokens, None) for each of `n` waves, or (.., .., (stage, `Failed`)) for one that failed,
    the analysis's failure first."""
    analysed, bad_analysis = analysing.result()
    encoded, bad_tokens = encoding.result()
    heard, tokens = dict(analysed), dict(encoded)
    failed = {f.item: ("encode", f) for f in bad_tokens} | {f.item: ("analysis", f) for f in bad_analysis}
    return [(heard.get(i), tokens.get(i), failed.get(i)) for i in range(n)]


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
        keep_freed_memory()  # track after track allocates the same large tensors
        # seconds each stage ran (stages overlap; decoding's in the decoders' processes): where a scan's time went
        self.busy: dict[str, float] = {}
        self._busy_lock = threading.Lock()

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Count the block's wall time as `stage`'s in `busy` (from any thread)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._busy_lock:
                self.busy[stage] = self.busy.get(stage, 0.0) + time.perf_counter() - start

    def load(self) -> None:
        """Load every model a scan with this profile runs, in the order the stages want them: a scan calls this
        in a thread while its first files decode (a stage wanting a model meanwhile waits for it)."""
        for name in ("analyzer", "encoder", "text") + (() if self.profile.caption_source == "analysis"
                                                       else ("musilingo",)):
            getattr(self.models, name)

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

        with self.timed("encode"):
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

        with self.timed("analysis"):
            return self.analysis_batch.run(run, list(range(len(waves))))

    def caption(self, tokens: list[np.ndarray] | None, analyses: list[TrackAnalysis | None]) -> tuple[
            list[tuple[int, CaptionResult]], list[Failed[int]]]:
        """Captions and text vectors for stored (fp16) token arrays and their analyses, by position.

        The `analysis` caption source writes the caption from the analysis (no LLM, `tokens` unused); the
        `model` source generates it from the tokens, and the text a track is found by adds what the
        analysis heard.
        """
        import torch

        from_analysis = self.profile.caption_source == "analysis"
        with self.timed("load"):  # apart from the stage's own time
            self.models.text  # noqa: B018
            if not from_analysis:
                self.models.musilingo  # noqa: B018
        with self.timed("caption"):
            if from_analysis:
                made = [(i, a.describe().caption(), []) for i, a in enumerate(analyses) if a is not None]
                failed = [Failed(i, "no analysis to write a caption from")
                          for i, a in enumerate(analyses) if a is None]
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

    def heard(self, waves: list[np.ndarray]) -> tuple[list[tuple[int, TrackAnalysis, Encoded]],
                                                      list[tuple[int, str, Failed[int]]]]:
        """Each wave's analysis and tokens, by position; a wave that fails gives (position, stage, `Failed`),
        the analysis's failure first. Both models run at once, as `stream` runs them."""
        threads, one_thread, per_track = self._model_threads()
        parts = [[i] for i in range(len(waves))] if per_track else [list(range(len(waves)))]
        with ThreadPoolExecutor(threads, thread_name_prefix="models") as pool:
            hearing = [(part, self._submit(pool, [waves[i] for i in part], one_thread)) for part in parts]
            heard = [(part[k], *out) for part, futures in hearing for k, out in enumerate(_settle(*futures, len(part)))]
        return ([(i, analysis, enc) for i, analysis, enc, failure in heard if failure is None],
                [(i, *failure) for i, _, _, failure in heard if failure is not None])

    def stream(self, decoded: Iterable[Decoded], every: int) -> Iterator[Batch]:
        """The writer's batches for files as they decode: `every` files each, in the order they came.

        Each file's analysis and encoding start as soon as it is decoded (on a GPU: every `every` files at
        once, for the batching), so the models neither wait for a whole batch to decode nor idle at a
        batch's end while its last track finishes. On a CPU each task runs on one OpenMP thread, on as
        many threads as the decoders leave cores (two at least): neither model keeps a core busy with more
        (docs/benchmarks.md, "Scan throughput").
        """
        threads, one_thread, per_track = self._model_threads()
        hearing: deque[tuple[list[Decoded], tuple[Future, Future]]] = deque()
        heard: list[tuple[Decoded, TrackAnalysis | None, Encoded | None, tuple[str, Failed] | None]] = []
        group: list[Decoded] = []

        def settle_first() -> None:
            files, futures = hearing.popleft()
            audio = [d for d in files if d.error is None]
            outcome = iter(_settle(*futures, len(audio)))
            heard.extend((d, None, None, None) if d.error is not None else (d, *next(outcome)) for d in files)

        def ready() -> Iterator[Batch]:
            while len(heard) >= every:
                yield self._batch(heard[:every])
                del heard[:every]

        def begin(files: list[Decoded]) -> None:
            hearing.append((files, self._submit(pool, [f.wave for f in files if f.error is None], one_thread)))

        most = 2 * every if per_track else 2  # groups begun and not settled: a bound on the waves held
        pool = ThreadPoolExecutor(threads, thread_name_prefix="models")
        try:
            for d in decoded:
                group.append(d)
                if per_track or len(group) == every:
                    begin(group)
                    group = []
                while hearing and (all(f.done() for f in hearing[0][1]) or len(hearing) > most):
                    settle_first()
                    yield from ready()
            if group:
                begin(group)
            while hearing:
                settle_first()
                yield from ready()
        finally:  # on Ctrl-C or an error, the tracks not begun are not begun
            pool.shutdown(wait=True, cancel_futures=True)
        if heard:
            yield self._batch(heard)

    def _model_threads(self) -> tuple[int, Callable[[], AbstractContextManager], bool]:
        """(threads, the context each model task runs in, one task per track?) for this device."""
        with self.timed("load"):  # apart from the stages' own time
            self.models.analyzer, self.models.encoder  # noqa: B018
        if self.models.encoder.device != "cpu":
            return 2, nullcontext, False
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        limit = ThreadpoolController().limit
        return max(2, cores - self.settings.decode_workers), partial(limit, limits=1, user_api="openmp"), True

    def _submit(self, pool: ThreadPoolExecutor, waves: list[np.ndarray],
                context: Callable[[], AbstractContextManager]) -> tuple[Future, Future]:
        """The analysis and the encoding of `waves`, as two tasks."""
        def run(stage: Callable) -> tuple[list, list[Failed[int]]]:
            with context():
                return stage(waves)

        return pool.submit(run, self.analyze), pool.submit(run, self.encode)

    def _batch(self, heard: list[tuple[Decoded, TrackAnalysis | None, Encoded | None, tuple[str, Failed] | None]]
               ) -> Batch:
        """The writer's batch for decoded files and what the models made of them: captioned tracks, and a
        failure for each other file."""
        batch = Batch(files_done=len(heard))
        self._audio([d for d, *_ in heard], batch)
        batch.failures += [self._failure(d.job, *failure) for d, _, _, failure in heard if failure is not None]
        good = [(d, analysis, enc) for d, analysis, enc, failure in heard
                if d.error is None and failure is None]
        captioned, bad = self.caption([enc.tokens for _, _, enc in good], [a for _, a, _ in good])
        batch.failures += [self._failure(good[f.item][0].job, "caption", f) for f in bad]
        version = self.profile.version("encoder")
        for i, cap in captioned:
            d, analysis, enc = good[i]
            batch.tracks.append(TrackResult(
                entry=d.job.entry, fingerprint=d.job.fingerprint, tags=d.tags, indexed_seconds=enc.seconds,
                profile=self.profile.name, encoder_version=version, tokens=enc.tokens, vector=enc.vector,
                caption=cap, analysis=analysis, track_id=d.job.track_id))
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

    def _audio(self, decoded: list[Decoded], batch: Batch) -> list[Decoded]:
        """The files that decoded; a failure in `batch` for each other file."""
        with self._busy_lock:
            self.busy["decode"] = self.busy.get("decode", 0.0) + sum(d.seconds for d in decoded)
        batch.failures += [file_failure(d.job.entry, d.job.track_id, "decode", d.error)
                           for d in decoded if d.error is not None]
        return [d for d in decoded if d.error is None]

    def _analysed(self, decoded: list[Decoded], batch: Batch) -> tuple[list[Decoded], list[TrackAnalysis]]:
        """The decoded files that analysed, with their analyses; a failure in `batch` for each other file."""
        audio = self._audio(decoded, batch)
        analysed, bad = self.analyze([d.wave for d in audio])
        batch.failures += [self._failure(audio[f.item].job, "analysis", f) for f in bad]
        return [audio[k] for k, _ in analysed], [a for _, a in analysed]

    @staticmethod
    def _failure(job: Job, stage: str, failed: Failed) -> Failure:
        return file_failure(job.entry, job.track_id, stage, failed.reason, failed.out_of_memory)
