"""Scan a music library into the catalog (DuckDB through SQLAlchemy) and the FAISS indexes."""
