"""The FAISS indexes as the engine sees them: loaded lazily, reloaded when the scan rewrites them.

Filtered searches need care with an approximate (HNSW) index: asking it for the nearest tracks among
a small allowed set finds few or none, because the graph walk stops long before reaching them. So when
the allowed set is small and the index keeps its raw vectors (flat or HNSW-flat storage), the subset
is scored exactly with one matrix product; a larger one is searched with a FAISS id selector.
"""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np

from catalog.vectors import IndexFileError, index_kind, load_index, manifest_path, read_manifest

# Up to this many allowed tracks are scored exactly: 20,000 x 384 floats is a 30 MB gather and a
# matrix-vector product. Beyond it (2% of a million tracks) HNSW walks the graph skipping tracks outside
# the filter, much faster than scoring the allowed vectors and nearly as exact on clustered vectors (times
# and recall: docs/benchmarks.md, "Why the search path is built this way").
EXACT_SUBSET_MAX = 20_000
# efSearch per neighbour asked for: a beam twice the result list keeps deep lists (500) accurate.
HNSW_EF_FACTOR = 2


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
        self.exact_max = EXACT_SUBSET_MAX
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._index: faiss.Index | None = None
        self._hnsw = False
        self._digest = ""  # file digest of the loaded index, from its manifest
        self._generation = -1  # catalog generation the loaded index reflects
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
                manifest = read_manifest(self.data_dir, self.name)
            except IndexFileError:
                manifest = None
            if manifest is not None and manifest.file_digest == self._digest:
                self._stamp, self._generation = stamp, manifest.generation
                return
        self._stamp, self._index, self._matrix, self._ids, self._rows = stamp, None, None, None, None
        self.error, self._digest = "", ""
        if stamp is None:
            return
        try:
            index, manifest = load_index(self.data_dir, self.name, gpu=False)
        except IndexFileError as exc:  # retried when the manifest changes (the next save)
            self.error = str(exc)
            return
        self._index, self._digest, self._generation = index, manifest.file_digest, manifest.generation
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

    def generation(self) -> int:
        """The catalog generation the current index reflects (-1 when there is none)."""
        index = self._state()[0]
        return self._generation if index is not None else -1

    @property
    def available(self) -> bool:
        index = self._state()[0]
        return index is not None and index.ntotal > 0

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest track ids and similarities, best first; `allowed` (track ids) restricts the search."""
        index, hnsw, ids, rows, matrix = self._state()
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if index is None or index.ntotal == 0 or k <= 0 or (allowed is not None and not len(allowed)):
            return empty
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if allowed is not None and matrix is not None and len(allowed) <= self.exact_max:
            wanted = np.unique(np.asarray(allowed, dtype=np.int64))
            pos = np.minimum(np.searchsorted(ids, wanted), ids.size - 1)
            keep = pos[ids[pos] == wanted]
            if keep.size == 0:
                return empty
            sims = matrix[rows[keep]] @ q[0]
            top = np.argsort(-sims, kind="stable")[:k]
            return ids[keep][top].astype(np.int64), sims[top].astype(np.float32)
        k = min(k, int(index.ntotal))
        sel = None
        if allowed is not None:  # a broad filter: the graph walk skips tracks outside it
            bits = np.zeros(int(np.max(allowed)) + 1, dtype=bool)
            bits[allowed] = True
            bitmap = np.packbits(bits, bitorder="little")  # stays referenced while the selector reads it
            sel = faiss.IDSelectorBitmap(bits.size, faiss.swig_ptr(bitmap))
        if hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_FACTOR * k, 64), sel=sel)
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        sims, found = index.search(q, k, params=params)
        mask = found[0] >= 0
        return found[0][mask].astype(np.int64), sims[0][mask].astype(np.float32)
