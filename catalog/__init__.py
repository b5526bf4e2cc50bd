"""The catalog contract: what `indexer/` writes and `search/` reads, and the only code both import.

- `catalog/store.py`: the DuckDB schema (SQLAlchemy), its migrations, `Catalog` (how processes share the
  file) and the generation counter that marks a change of the catalog's vectors.
- `catalog/text.py`: how text is cut into words, alike in the snapshot's SQL and a query's Python.
- `catalog/keywords.py`: the keyword snapshot (BM25 postings, names, display columns) and its rebuild.
- `catalog/vectors.py`: the FAISS indexes, their manifests, and how to check and read them.
"""
