"""Reading files in worker processes: tags and decoded audio, ahead of the encoder, with a bounded queue.

This module is what a spawned worker imports, so it stays light (no torch); as with any spawned
process, the caller's main module needs the `if __name__ == "__main__":` guard. A decoder that
crashes its process (a segfault in a codec) breaks the pool; the jobs then in flight are retried one
at a time in a fresh pool, so only the file that crashes it again is recorded as failed, unless a
worker cannot even run an empty task, which is a broken setup, not a bad file, and stops the scan.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from indexer.discover import Job
from indexer.tags import TrackTags, read_tags, tags_from_path
from model.audio import AudioDecodeError, read_audio


@dataclass
class Decoded:
    job: Job
    tags: TrackTags  # with the decoder and the duration decoding settled on
    wave: np.ndarray | None  # mono float32 at the encoder's rate, at most max_seconds long
    error: str | None = None  # why no audio came out, fit to show a user
    seconds: float = 0.0  # spent reading it: the decode stage's share of a scan


def read_file(job: Job, sample_rate: int, max_seconds: float) -> Decoded:
    """Tags and the first `max_seconds` of audio; never raises for a bad file."""
    started = time.perf_counter()
    decoded = _read_file(job, sample_rate, max_seconds)
    decoded.seconds = time.perf_counter() - started
    return decoded


def _read_file(job: Job, sample_rate: int, max_seconds: float) -> Decoded:
    path, root = job.entry.path, job.entry.root
    try:
        tags = read_tags(path, root)
    except Exception:  # the tag reader must never cost a file its audio
        tags = tags_from_path(path, root)
    if job.entry.size == 0:
        return Decoded(job, tags, None, "empty file (0 bytes)")
    try:
        wave, tags.decoder = read_audio(path, sample_rate, max_seconds=max_seconds)
    except AudioDecodeError as exc:
        return Decoded(job, tags, None, str(exc))
    except MemoryError:
        return Decoded(job, tags, None, "out of memory while decoding")
    except Exception as exc:
        return Decoded(job, tags, None, f"decoder error: {type(exc).__name__}: {str(exc)[:200]}")
    if wave.size < max_seconds * sample_rate:  # decoded to the end: its length is the file's
        tags.settle_duration(wave.size / sample_rate)
    return Decoded(job, tags, wave)


def _init_worker(parent: int) -> None:
    """Ctrl-C is left to the scan, which shuts the pool down; a scan killed outright leaves no orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class DecodePool:
    """`read_file` over many jobs in `workers` processes (0: in this process), at most `ahead` in flight."""

    def __init__(self, workers: int, sample_rate: int, max_seconds: float, ahead: int) -> None:
        self.workers = workers
        self.args = (sample_rate, max_seconds)
        self.ahead = max(ahead, workers, 1)
        self.pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        # spawn, not fork: the main process has torch threads running, and forking them is unsafe.
        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(os.getpid(),))
        return self.pool

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def run(self, jobs: list[Job]) -> Iterator[Decoded]:
        """Yield each job's result as it completes."""
        if self.workers <= 0:
            for job in jobs:
                yield read_file(job, *self.args)
            return
        pool = self._new_pool()
        todo = list(reversed(jobs))
        running: dict[Future, Job] = {}
        while todo or running:
            while todo and len(running) < self.ahead:
                job = todo.pop()
                running[pool.submit(read_file, job, *self.args)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken: list[Job] = []
            for future in done:
                job = running.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken.append(job)
            if broken:
                broken.extend(running.values())
                running.clear()
                for job in broken:
                    yield self._isolated(job)
                pool = self._new_pool()

    def _isolated(self, job: Job) -> Decoded:
        """Retry one job alone in a fresh process, so a crash is pinned on the file that causes it."""
        pool = self._new_pool()
        try:
            return pool.submit(read_file, job, *self.args).result()
        except BrokenProcessPool:
            pass
        try:
            self._new_pool().submit(int).result()
        except BrokenProcessPool as exc:
            raise RuntimeError("decode worker processes die on start; run the scan from a script whose main "
                               "module has an `if __name__ == '__main__':` guard") from exc
        return Decoded(job, tags_from_path(job.entry.path, job.entry.root), None, "the decoder crashed on this file")
