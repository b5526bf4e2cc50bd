"""FAISS indexes over the catalog's vectors: `audio` (track vectors) and `text` (caption text vectors).

Layout in `<data_dir>/faiss/`: `{audio,text}.index` (faiss.serialize_index of an IndexIDMap2 whose
ids are track ids, inner product on unit vectors) and `{audio,text}.json`, the manifest: count, dim,
kind, a checksum of the sorted ids, the blake2b of the index file, and the catalog generation and
scan it reflects. Both are written to a temporary file, fsynced and renamed, index first, so a reader
sees an old or a new pair, and a pair torn by a crash fails its digest check and is rebuilt.

DuckDB is the truth; an index is a cache of it. The scan keeps the indexes in memory, applies each
committed batch and saves them from time to time; one that disagrees with the catalog (a crash
between commit and save, a corrupt file) is rebuilt from DuckDB when the next scan opens it or by
`verify --repair`. Exact search (IndexFlatIP) serves up to HNSW_THRESHOLD vectors, HNSW beyond.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import text

from catalog.store import Catalog, generation

NAMES = ("audio", "text")
HNSW_THRESHOLD = 50_000  # vectors; exact search below, HNSW from here on
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
MANIFEST_FORMAT = 1

# Per index: which catalog vectors it holds. Only done tracks, and only vectors of the newest
# dimension, so that switching to an encoder of another width never mixes widths in one index.
_QUERIES = {
    "audio": """
        SELECT e.track_id, {vector} FROM embeddings e JOIN tracks t ON t.id = e.track_id
        WHERE t.status = 'done' AND octet_length(e.vector) = (
            SELECT octet_length(e2.vector) FROM embeddings e2 JOIN tracks t2 ON t2.id = e2.track_id
            WHERE t2.status = 'done' ORDER BY t2.indexed_at DESC NULLS LAST, t2.id DESC LIMIT 1)
        ORDER BY e.track_id""",
    "text": """
        SELECT c.track_id, {vector} FROM captions c
        JOIN tracks t ON t.id = c.track_id AND c.pipeline_version = t.pipeline_version
        WHERE t.status = 'done' AND c.text_vector IS NOT NULL AND octet_length(c.text_vector) = (
            SELECT octet_length(c2.text_vector) FROM captions c2
            JOIN tracks t2 ON t2.id = c2.track_id AND c2.pipeline_version = t2.pipeline_version
            WHERE t2.status = 'done' AND c2.text_vector IS NOT NULL
            ORDER BY c2.created_at DESC NULLS LAST, c2.track_id DESC LIMIT 1)
        ORDER BY c.track_id""",
}
_VECTOR_COLUMN = {"audio": "e.vector", "text": "c.text_vector"}


class IndexFileError(RuntimeError):
    """An index file is missing, unreadable or does not match its manifest."""


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str  # flat | hnsw
    count: int
    dim: int
    id_checksum: str
    generation: int  # store.generation() of the catalog the index reflects
    scan_id: int | None
    file_digest: str
    file_size: int
    saved_at: float
    format: int = MANIFEST_FORMAT


def faiss_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "faiss"


def index_path(data_dir: str | Path, name: str) -> Path:
    return faiss_dir(data_dir) / f"{name}.index"


def manifest_path(data_dir: str | Path, name: str) -> Path:
    return faiss_dir(data_dir) / f"{name}.json"


def id_checksum(ids: np.ndarray | list[int]) -> str:
    """Order-free checksum of a set of ids, comparable between FAISS and DuckDB."""
    arr = np.sort(np.asarray(ids, dtype=np.int64))
    return hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()


def choose_kind(count: int, threshold: int = HNSW_THRESHOLD) -> str:
    return "hnsw" if count >= threshold else "flat"


def build_index(ids: np.ndarray | list[int], vecs: np.ndarray, kind: str = "auto",
                threshold: int = HNSW_THRESHOLD) -> faiss.Index:
    """An IndexIDMap2 over unit vectors `vecs` [N, D] with track ids; kind flat, hnsw or auto (by N)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vecs.ndim != 2 or vecs.shape[0] != ids.shape[0]:
        raise ValueError(f"need vectors [N, D] and N ids, got {vecs.shape} and {ids.shape}")
    kind = choose_kind(len(ids), threshold) if kind == "auto" else kind
    dim = vecs.shape[1]
    if kind == "flat":
        inner = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"unknown index kind '{kind}' (expected flat, hnsw or auto)")
    index = faiss.IndexIDMap2(inner)
    if len(ids):
        index.add_with_ids(vecs, ids)
    return index


def index_kind(index: faiss.Index) -> str:
    return "hnsw" if isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW) else "flat"


def index_ids(index: faiss.Index) -> np.ndarray:
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def _write_atomic(path: Path, data: bytes | np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_index(data_dir: str | Path, name: str, index: faiss.Index, catalog_generation: int,
               scan_id: int | None) -> Manifest:
    """Write the index, then its manifest, each atomically."""
    folder = faiss_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = faiss.serialize_index(index)
    manifest = Manifest(name=name, kind=index_kind(index), count=int(index.ntotal), dim=int(index.d),
                        id_checksum=id_checksum(index_ids(index)), generation=catalog_generation,
                        scan_id=scan_id, file_digest=hashlib.blake2b(data, digest_size=16).hexdigest(),
                        file_size=int(data.size), saved_at=time.time())
    _write_atomic(index_path(data_dir, name), data)
    write_manifest(data_dir, manifest)
    return manifest


def write_manifest(data_dir: str | Path, manifest: Manifest) -> None:
    _write_atomic(manifest_path(data_dir, manifest.name), json.dumps(asdict(manifest), indent=1).encode())
    _fsync_dir(faiss_dir(data_dir))


def remove_index(data_dir: str | Path, name: str) -> None:
    """No vectors of this kind: no files (manifest first, so no manifest ever names a missing index)."""
    for path in (manifest_path(data_dir, name), index_path(data_dir, name)):
        path.unlink(missing_ok=True)


def read_manifest(data_dir: str | Path, name: str) -> Manifest | None:
    path = manifest_path(data_dir, name)
    try:
        raw = json.loads(path.read_text())
        return Manifest(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise IndexFileError(f"{path}: unreadable manifest ({exc})") from exc


def load_index(data_dir: str | Path, name: str, gpu: bool | None = None) -> tuple[faiss.Index, Manifest]:
    """The saved index and its manifest, checked against each other; on GPU when asked (None: when one exists).

    Raises IndexFileError if it is missing or corrupt. A save racing this read is retried.
    """
    if name not in NAMES:
        raise ValueError(f"unknown index '{name}'; known: {', '.join(NAMES)}")
    for attempt in range(5):
        manifest = read_manifest(data_dir, name)
        if manifest is None:
            raise IndexFileError(f"no {name} index in {faiss_dir(data_dir)}: run `python -m indexer scan` first")
        try:
            data = index_path(data_dir, name).read_bytes()
        except OSError as exc:
            raise IndexFileError(f"{index_path(data_dir, name)}: {exc.strerror or exc}") from exc
        if hashlib.blake2b(data, digest_size=16).hexdigest() == manifest.file_digest:
            break
        if read_manifest(data_dir, name) == manifest:
            raise IndexFileError(f"{index_path(data_dir, name)} does not match its manifest (corrupt or torn write)")
        time.sleep(0.05 * (attempt + 1))  # the writer replaced the pair while we read it
    else:
        raise IndexFileError(f"{index_path(data_dir, name)} kept changing while being read")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexFileError(f"{index_path(data_dir, name)}: FAISS cannot read it ({str(exc).splitlines()[0]})") from exc
    if gpu is None:
        gpu = faiss.get_num_gpus() > 0
    if gpu and manifest.kind == "flat":
        index = faiss.index_cpu_to_all_gpus(index)  # exact search is what GPUs do best; HNSW stays on CPU
    return index, manifest


class IndexReader:
    """For searchers in other processes: `get()` returns the current index, reloading after each save."""

    def __init__(self, data_dir: str | Path, name: str, gpu: bool | None = None) -> None:
        self.data_dir, self.name, self.gpu = Path(data_dir), name, gpu
        self._stamp: tuple | None = None
        self._loaded: tuple[faiss.Index, Manifest] | None = None

    def get(self) -> tuple[faiss.Index, Manifest]:
        try:
            st = os.stat(manifest_path(self.data_dir, self.name))
            stamp: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._loaded is None or stamp != self._stamp:
            self._loaded = load_index(self.data_dir, self.name, self.gpu)
            self._stamp = stamp
        return self._loaded


def catalog_vectors(catalog: Catalog, name: str, with_vectors: bool = True) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(ids, vectors [N, D] or None, catalog generation) of what the `name` index must hold."""
    vector = _VECTOR_COLUMN[name] if with_vectors else "NULL"
    with catalog.read() as conn:
        rows = conn.execute(text(_QUERIES[name].format(vector=vector))).all()
        gen = generation(conn)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    if not with_vectors:
        return ids, None, gen
    blob = b"".join(r[1] for r in rows)
    dim = len(rows[0][1]) // 4 if rows else 0
    return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim), gen


def check_index(catalog: Catalog, data_dir: str | Path, name: str) -> tuple[faiss.Index | None, list[str]]:
    """The saved index (None if absent or unreadable) and how it disagrees with the catalog."""
    ids, _, gen = catalog_vectors(catalog, name, with_vectors=False)
    if read_manifest(data_dir, name) is None and not index_path(data_dir, name).exists() and not len(ids):
        return None, []
    try:
        index, manifest = load_index(data_dir, name, gpu=False)
    except IndexFileError as exc:
        return None, [str(exc)]
    problems = []
    if manifest.generation != gen:
        problems.append(f"{name} index reflects catalog generation {manifest.generation}, the catalog is at {gen}")
    if id_checksum(index_ids(index)) != id_checksum(ids):
        problems.append(f"{name} index holds {index.ntotal} vectors, the catalog has {len(ids)}")
    return index, problems


class IndexSet:
    """The writer's side: both indexes in memory, updated per committed batch, saved when due."""

    def __init__(self, catalog: Catalog, data_dir: str | Path, threshold: int = HNSW_THRESHOLD,
                 min_save_interval: float = 5.0) -> None:
        self.catalog, self.data_dir, self.threshold = catalog, Path(data_dir), threshold
        self.min_save_interval = min_save_interval
        self.indexes: dict[str, faiss.Index | None] = {}
        self.ids: dict[str, set[int]] = {}
        self.dirty: set[str] = set()
        self.stale: set[str] = set()  # must be rebuilt from the catalog before saving (HNSW cannot delete)
        self.saved_at = 0.0
        self.save_cost = 0.0

    def open(self, scan_id: int | None = None, repair: bool = True) -> dict[str, list[str]]:
        """Load both indexes; with `repair`, rebuild and save each one that disagrees with the catalog."""
        for tmp in faiss_dir(self.data_dir).glob(".*.tmp"):  # left by a writer killed mid-save
            tmp.unlink(missing_ok=True)
        report = {}
        for name in NAMES:
            index, problems = check_index(self.catalog, self.data_dir, name)
            report[name] = problems
            if problems and repair:
                index = self.rebuild(name, scan_id)
            self._hold(name, index)
        return report

    def _hold(self, name: str, index: faiss.Index | None) -> None:
        self.indexes[name] = index
        self.ids[name] = set() if index is None else set(index_ids(index).tolist())

    def rebuild(self, name: str, scan_id: int | None) -> faiss.Index | None:
        """Build `name` from the catalog and save it (or remove its files when it holds nothing)."""
        ids, vecs, gen = catalog_vectors(self.catalog, name)
        if not len(ids):
            remove_index(self.data_dir, name)
            index = None
        else:
            index = build_index(ids, vecs, "auto", self.threshold)
            save_index(self.data_dir, name, index, gen, scan_id)
        self._hold(name, index)
        self.dirty.discard(name)
        self.stale.discard(name)
        return index

    def apply(self, name: str, remove: list[int], ids: list[int], vecs: np.ndarray | None) -> None:
        """Remove `remove` (and any of `ids` already present), then add `vecs` under `ids`."""
        index = self.indexes.get(name)
        gone = [i for i in {*remove, *ids} if i in self.ids[name]]
        if gone and index is not None:
            if index_kind(index) == "hnsw":
                self.stale.add(name)
            else:
                index.remove_ids(faiss.IDSelectorBatch(np.array(gone, dtype=np.int64)))
            self.ids[name].difference_update(gone)
        if ids:
            vecs = np.ascontiguousarray(vecs, dtype=np.float32)
            if index is None or index.d != vecs.shape[1]:  # first vectors, or a new encoder width
                index = build_index(np.zeros(0, np.int64), np.zeros((0, vecs.shape[1]), np.float32),
                                    choose_kind(len(ids), self.threshold))
                self._hold(name, index)
            index.add_with_ids(vecs, np.array(ids, dtype=np.int64))
            self.ids[name].update(ids)
        if gone or ids:
            self.dirty.add(name)

    def save(self, catalog_generation: int, scan_id: int | None, force: bool = False) -> bool:
        """Save changed indexes (and every manifest, to name the new generation) if due or forced."""
        now = time.monotonic()
        if not force and now - self.saved_at < max(self.min_save_interval, 10 * self.save_cost):
            return False
        for name in NAMES:
            index = self.indexes.get(name)
            wrong_kind = index is not None and index_kind(index) != choose_kind(index.ntotal, self.threshold)
            if name in self.stale or wrong_kind:
                self.rebuild(name, scan_id)
            elif name in self.dirty:
                if index is None or index.ntotal == 0 and not self.ids[name]:
                    remove_index(self.data_dir, name)
                else:
                    save_index(self.data_dir, name, index, catalog_generation, scan_id)
            elif index is not None:
                manifest = read_manifest(self.data_dir, name)
                if manifest is not None and manifest.generation != catalog_generation:
                    write_manifest(self.data_dir, replace(manifest, generation=catalog_generation, scan_id=scan_id))
        self.dirty.clear()
        self.saved_at = time.monotonic()
        self.save_cost = self.saved_at - now
        return True
