"""The FAISS indexes as the engine sees them: loaded lazily, reloaded when the scan rewrites them.

Filtered searches need care with an approximate (HNSW) index: asking it for the nearest tracks among
a small allowed set finds few or none, because the graph walk stops long before reaching them. So when
the allowed set is small and the index keeps its raw vectors (flat or HNSW-flat storage), the subset
is scored exactly with one matrix product; otherwise the index is asked for proportionally more
neighbours and the filter is applied afterwards.
"""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np

from indexer.vectors import IndexFileError, index_kind, load_index, manifest_path, read_manifest

# Up to this many allowed tracks are scored exactly: 20,000 x 384 floats is a 30 MB gather and a
# matrix-vector product of a few milliseconds, cheaper than an over-sampled graph search.
EXACT_SUBSET_MAX = 20_000
# Never ask an index for more neighbours than this (HNSW cost grows with efSearch).
MAX_NEIGHBOURS = 10_000


def _stamp(path: Path) -> tuple | None:
    """The manifest's identity: the writer replaces it (new inode) after every index save."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class VectorIndex:
    """One FAISS index file (IDs = track ids, inner product on unit vectors), reloaded on change."""

    def __init__(self, data_dir: Path, name: str) -> None:
        self.data_dir = Path(data_dir)
        self.name = name
        self.manifest = manifest_path(data_dir, name)
        self.error = ""  # why the index could not be loaded, if it exists but is unusable
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._index: faiss.Index | None = None
        self._hnsw = False
        self._digest = ""  # file digest of the loaded index, from its manifest
        self._ids: np.ndarray | None = None  # sorted track ids
        self._rows: np.ndarray | None = None  # row in the raw vector matrix of each sorted id
        self._matrix: np.ndarray | None = None  # zero-copy view of the stored vectors

    def _state(self) -> tuple:
        """The loaded index and its lookup arrays, reloading first if the files changed."""
        stamp = _stamp(self.manifest)
        with self._lock:
            if stamp != self._stamp:
                self._load(stamp)
            return self._index, self._hnsw, self._ids, self._rows, self._matrix

    def _load(self, stamp: tuple | None) -> None:
        if stamp is not None and self._index is not None:
            try:  # a save that only moved the generation forward leaves the same index file
                if read_manifest(self.data_dir, self.name).file_digest == self._digest:
                    self._stamp = stamp
                    return
            except (IndexFileError, AttributeError):
                pass
        self._stamp, self._index, self._matrix, self._ids, self._rows = stamp, None, None, None, None
        self.error, self._digest = "", ""
        if stamp is None:
            return
        try:
            index, manifest = load_index(self.data_dir, self.name, gpu=False)
        except IndexFileError as exc:  # retried when the manifest changes (the next save)
            self.error = str(exc)
            return
        self._index, self._digest = index, manifest.file_digest
        self._hnsw = index_kind(index) == "hnsw"
        inner = faiss.downcast_index(index.index)
        storage = faiss.downcast_index(inner.storage) if self._hnsw else inner
        if isinstance(storage, faiss.IndexFlat) and storage.ntotal:
            ids = faiss.vector_to_array(index.id_map)
            order = np.argsort(ids, kind="stable")
            self._ids, self._rows = ids[order], order
            self._matrix = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(
                storage.ntotal, storage.d)

    def info(self) -> dict | None:
        index, hnsw, *_ = self._state()
        if index is None:
            return {"error": self.error} if self.error else None
        return {"vectors": int(index.ntotal), "dim": int(index.d), "kind": "hnsw" if hnsw else "flat"}

    @property
    def available(self) -> bool:
        index = self._state()[0]
        return index is not None and index.ntotal > 0

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None,
               allowed_total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest track ids and similarities, best first.

        `allowed` (track ids) restricts exactly; `allowed_total` alone says how many tracks pass a
        filter that was too broad to list, so more neighbours are fetched for the caller to filter.
        """
        index, hnsw, ids, rows, matrix = self._state()
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if index is None or index.ntotal == 0 or k <= 0:
            return empty
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if allowed is not None and matrix is not None:
            wanted = np.unique(np.asarray(allowed, dtype=np.int64))
            pos = np.minimum(np.searchsorted(ids, wanted), ids.size - 1)
            keep = pos[ids[pos] == wanted]
            if keep.size == 0:
                return empty
            sims = matrix[rows[keep]] @ q[0]
            top = np.argsort(-sims, kind="stable")[:k]
            return ids[keep][top].astype(np.int64), sims[top].astype(np.float32)
        n = int(index.ntotal)
        if allowed is not None:
            allowed_total = allowed.size
        if allowed_total is not None:
            k = k * max(1, -(-n // max(1, allowed_total)))
        k = min(k, n, MAX_NEIGHBOURS)
        params = faiss.SearchParametersHNSW(efSearch=max(64, k)) if hnsw else None
        sims, found = index.search(q, k, params=params)
        mask = found[0] >= 0
        return found[0][mask].astype(np.int64), sims[0][mask].astype(np.float32)
