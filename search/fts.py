"""Keyword search: a BM25 snapshot of the catalog built with DuckDB's FTS extension, in its own file.

Why a separate file: indexing a large library takes seconds to minutes, and doing it inside the catalog
would hold the catalog's write lock, and so lock out every searcher, for that long. `refresh_fts` writes
the snapshot to a temporary file and renames it into place, so a reader always sees a whole one.

Why plain postings tables: the extension's `match_bm25` macro only works inside the database that holds
it (it names its tables unqualified), and loading the extension costs about 80 ms per connection while
readers open a fresh connection per query. So `refresh_fts` lets the extension tokenise, stem and count,
copies its postings into plain tables sorted by term (a term's postings are then one contiguous range
that DuckDB's zone maps find without a full scan), and queries compute BM25 with the extension's
parameters (k1 = 1.2, b = 0.75) over them in plain SQL. Only the query's words need the stemmer:
`Stemmer` loads the extension once per process into a private in-memory connection. The snapshot also
keeps each track's names normalised (`kw_names`), so matching a query against whole titles and artist
names costs no regular expressions at query time.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from indexer.store import Catalog

# Tokens are runs of letters and digits in any script (the extension's default drops digits and
# non-Latin letters, which would make "1999" or a Japanese artist name unsearchable).
TOKEN_IGNORE = r"[^\p{L}\p{N}]+"
STEMMER = "porter"
STOPWORDS = "english"
BM25_K1 = 1.2
BM25_B = 0.75
FIELDS = ("caption", "title", "artist", "album", "genre", "tags")
MAX_TAG_CHARS = 200  # longer tag values are lyrics or notes, not names worth matching
SNAPSHOT_VERSION = 2


def norm_sql(expr: str) -> str:
    """Lower case, accents stripped, every run of non-letters/digits one space: how names are compared."""
    return f"trim(regexp_replace(lower(strip_accents(coalesce({expr}, ''))), '{TOKEN_IGNORE}', ' ', 'g'))"


NAME_COLUMNS = ("title", "artist", "album_artist", "album", "genre")


def extension_path() -> Path:
    """The FTS extension file shipped by the `duckdb-ext-fts` package for this DuckDB version."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the duckdb-ext-fts package is not installed: pip install duckdb-ext-fts")
    platform = duckdb.connect().execute("PRAGMA platform").fetchone()[0]
    base = Path(list(spec.submodule_search_locations)[0])
    path = base / "extensions" / f"v{duckdb.__version__}" / platform / "fts.duckdb_extension"
    if not path.is_file():
        raise FileNotFoundError(f"no FTS extension for DuckDB {duckdb.__version__} on {platform} at {path}")
    return path


def _load_extension(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"LOAD '{_quote(str(extension_path()))}'")


def _quote(text: str) -> str:
    return text.replace("'", "''")


def fts_path(catalog: Catalog) -> Path:
    """Where the keyword snapshot of a catalog lives: next to it, named after it."""
    return catalog.path.with_name(catalog.path.stem + ".keywords.duckdb")


_DOCS_SQL = f"""
SELECT t.id AS track_id, t.indexed_at, {", ".join(f"{norm_sql('t.' + c)} AS name_{c}" for c in NAME_COLUMNS)},
       coalesce(c.text, '') AS caption, coalesce(t.title, '') AS title,
       concat_ws(' ', t.artist, nullif(t.album_artist, t.artist)) AS artist,
       coalesce(t.album, '') AS album, coalesce(t.genre, '') AS genre, coalesce(g.tags, '') AS tags
FROM tracks t
LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
LEFT JOIN (SELECT track_id, string_agg(value, ' ') AS tags FROM tags
           WHERE length(value) <= {MAX_TAG_CHARS} GROUP BY track_id) g ON g.track_id = t.id
WHERE t.status = 'done'
"""


def refresh_fts(catalog: Catalog) -> dict:
    """Rebuild the keyword snapshot from the catalog's finished tracks; returns its summary.

    The scan calls this after it finishes; it is safe to call at any time and from several processes
    (the last rename wins), and searches keep working on the old snapshot while it runs.
    """
    with catalog.read() as conn:
        docs = conn.connection.driver_connection.execute(_DOCS_SQL).fetch_arrow_table()
    target = fts_path(catalog)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            _load_extension(con)
            con.register("catalog_docs", docs)
            con.execute("CREATE TABLE docs AS SELECT * FROM catalog_docs")
            con.unregister("catalog_docs")
            fields = ", ".join(f"'{f}'" for f in FIELDS)
            con.execute(f"PRAGMA create_fts_index('docs', 'track_id', {fields}, stemmer='{STEMMER}', "
                        f"stopwords='{STOPWORDS}', ignore='{TOKEN_IGNORE}', strip_accents=1, lower=1, "
                        "overwrite=1)")
            con.execute("CREATE TABLE kw_terms AS SELECT termid, term, df FROM fts_main_docs.dict")
            names = ", ".join(f"name_{c} AS {c}" for c in NAME_COLUMNS)
            con.execute(f"CREATE TABLE kw_names AS SELECT track_id, {names} FROM docs ORDER BY track_id")
            con.execute("""CREATE TABLE kw_postings AS
                SELECT t.termid, d.name AS track_id, f.field, count(*)::INTEGER AS tf, d.len AS doclen
                FROM fts_main_docs.terms t JOIN fts_main_docs.docs d USING (docid)
                JOIN fts_main_docs.fields f USING (fieldid)
                GROUP BY ALL ORDER BY t.termid, d.name""")
            con.execute("""CREATE TABLE kw_meta AS
                SELECT ?::INTEGER AS version, s.num_docs, coalesce(s.avgdl, 0) AS avgdl, ?::TIMESTAMP AS built_at,
                       (SELECT max(indexed_at) FROM docs) AS max_indexed_at
                FROM fts_main_docs.stats s""", [SNAPSHOT_VERSION, datetime.now(UTC).replace(tzinfo=None)])
            con.execute("DROP SCHEMA fts_main_docs CASCADE")
            con.execute("DROP TABLE docs")
            con.execute("CHECKPOINT")
            summary = _meta(con, "")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {**summary, "path": str(target)}


def _meta(con: duckdb.DuckDBPyConnection, schema: str) -> dict:
    prefix = f"{schema}." if schema else ""
    row = con.execute(f"SELECT version, num_docs, avgdl, built_at, max_indexed_at FROM {prefix}kw_meta").fetchone()
    names = ("version", "num_docs", "avgdl", "built_at", "max_indexed_at")
    return dict(zip(names, row, strict=True))


class Stemmer:
    """Tokenises and stems text exactly as the snapshot was built, in a private in-memory connection.

    Unavailable (``ok`` false, ``error`` says why) when the extension cannot be loaded; the engine
    then matches keywords with ILIKE instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error = ""
        try:
            self._con = duckdb.connect(":memory:")
            _load_extension(self._con)
        except (duckdb.Error, FileNotFoundError) as exc:
            self.error = f"keyword stemmer unavailable ({exc}); using plain substring matching"
            self._con = None

    @property
    def ok(self) -> bool:
        return self._con is not None

    def stems(self, words: list[str] | tuple[str, ...]) -> list[str]:
        """The index terms of the query words (a word the tokenizer splits further gives each part)."""
        if not words:
            return []
        sql = f"""SELECT DISTINCT stem(tok, '{STEMMER}') FROM (
                    SELECT w, unnest(string_split_regex(trim(regexp_replace(lower(strip_accents(w)),
                                     '{TOKEN_IGNORE}', ' ', 'g')), '\\s+')) AS tok
                    FROM unnest(?::VARCHAR[]) u(w)) WHERE tok <> ''"""
        with self._lock:
            rows = self._con.execute(sql, [list(words)]).fetchall()
        return [stem for (stem,) in rows]

    def surface_matches(self, texts: list[str], stems: list[str]) -> list[list[str]]:
        """For each text, the distinct words in it (lower case, as written) whose stem is in `stems`."""
        if not texts or not stems:
            return [[] for _ in texts]
        sql = f"""SELECT i, list(DISTINCT tok ORDER BY tok) FROM (
                    SELECT i, unnest(string_split_regex(regexp_replace(lower(t), '{TOKEN_IGNORE}', ' ', 'g'),
                                     '\\s+')) AS tok
                    FROM (SELECT unnest(range(len($texts))) AS i, unnest($texts) AS t))
                  WHERE tok <> '' AND stem(strip_accents(tok), '{STEMMER}') IN (SELECT unnest($stems))
                  GROUP BY i"""
        with self._lock:
            rows = self._con.execute(sql, {"texts": list(texts), "stems": list(stems)}).fetchall()
        found = dict(rows)
        return [found.get(i, []) for i in range(len(texts))]


def attach_snapshot(db: duckdb.DuckDBPyConnection, catalog: Catalog, alias: str = "kw") -> dict | None:
    """Attach the keyword snapshot read-only to a catalog connection; its summary, or None if unusable."""
    path = fts_path(catalog)
    if not path.is_file():
        return None
    try:
        db.execute(f"ATTACH '{_quote(str(path))}' AS {alias} (READ_ONLY)")
        meta = _meta(db, alias)
    except duckdb.Error:
        return None
    return meta if meta["version"] == SNAPSHOT_VERSION else None
