"""The search snapshot: BM25 postings (built with DuckDB's FTS extension), names and display columns of
every finished track, in a DuckDB file of its own next to the catalog.

Why a separate file: indexing a large library takes seconds to minutes, and doing it inside the catalog
would hold the catalog's write lock, and so lock out every searcher, for that long. `refresh_fts` writes
the snapshot to a temporary file and renames it into place, so a reader always sees a whole one; and
since nobody ever writes the file in place, a searcher may keep it open between queries, so its pages
stay warm in memory (a fresh connection per query re-reads and re-decompresses every block it touches,
which at a million tracks costs more than the query itself).

Why plain postings tables: the extension's `match_bm25` macro only works inside the database that holds
it (it names its tables unqualified), and loading the extension costs about 80 ms per connection. So
`refresh_fts` lets the extension tokenise, stem and count, then copies its postings into a plain table
sorted by term (a term's postings are one contiguous range that DuckDB's zone maps find without a full
scan), each posting carrying its BM25 weight with the extension's parameters (k1 = 1.2, b = 0.75): a
query's keyword score is one filtered sum. `kw_names` holds each track's names normalised and sorted, so
finding the tracks whose whole title, artist, album or genre a query contains is a zone-map lookup of
the query's word runs; `kw_tracks` holds what filters and result lists need.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from indexer.store import Catalog, generation

# Tokens are runs of letters and digits in any script (the extension's default drops digits and
# non-Latin letters, which would make "1999" or a Japanese artist name unsearchable).
TOKEN_IGNORE = r"[^\p{L}\p{N}]+"
STEMMER = "porter"
STOPWORDS = "english"
BM25_K1 = 1.2
BM25_B = 0.75
FIELDS = ("f_caption", "f_title", "f_artist", "f_album", "f_genre", "f_tags")  # what BM25 reads
MAX_TAG_CHARS = 200  # longer tag values are lyrics or notes, not names worth matching
NAME_COLUMNS = ("title", "artist", "album_artist", "album", "genre")
TRACK_COLUMNS = ("path", "root", "title", "artist", "album_artist", "album", "genre", "year", "duration",
                 "format", "track_no")
MIN_NAME_CHARS = 3  # "a" or "x" as a whole title would be named by nearly every query
SNAPSHOT_VERSION = 7
MEMORY_LIMIT = "1GB"  # the warm snapshot's buffer pool; the postings of common terms and the pages shown


def norm_sql(expr: str) -> str:
    """Lower case, accents stripped, every run of non-letters/digits one space: how names are compared."""
    return f"trim(regexp_replace(lower(strip_accents(coalesce({expr}, ''))), '{TOKEN_IGNORE}', ' ', 'g'))"


def names_sql(source: str, id_column: str, prefix: str) -> str:
    """(track_id, field, key) rows: each track's normalised names, album artist counted as artist.

    `source` has `id_column` and normalised name columns called `prefix + column`.
    """
    cols = ", ".join(f"{prefix}{c} AS {c}" for c in NAME_COLUMNS)
    return f"""SELECT track_id, CASE WHEN field = 'album_artist' THEN 'artist' ELSE field END AS field, key
        FROM (UNPIVOT (SELECT {id_column} AS track_id, {cols} FROM {source})
              ON {", ".join(NAME_COLUMNS)} INTO NAME field VALUE key)
        WHERE length(key) >= {MIN_NAME_CHARS}"""


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
    """Where the search snapshot of a catalog lives: next to it, named after it."""
    return catalog.path.with_name(catalog.path.stem + ".keywords.duckdb")


def _stamp(*paths: Path) -> tuple:
    """Identity of files as the OS sees them; any write to them changes it."""
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def catalog_stamp(catalog: Catalog) -> str:
    """The catalog file and its write-ahead log as they stand: every committed write changes one."""
    return json.dumps(_stamp(catalog.path, catalog.path.with_name(catalog.path.name + ".wal")))


_DOCS_SQL = f"""
SELECT t.id AS track_id, t.indexed_at, {", ".join(f"t.{c}" for c in TRACK_COLUMNS)}, c.text AS caption,
       {", ".join(f"{norm_sql('t.' + c)} AS name_{c}" for c in NAME_COLUMNS)},
       coalesce(c.text, '') AS f_caption, coalesce(t.title, '') AS f_title,
       concat_ws(' ', t.artist, nullif(t.album_artist, t.artist)) AS f_artist,
       coalesce(t.album, '') AS f_album, coalesce(t.genre, '') AS f_genre, coalesce(g.tags, '') AS f_tags
FROM tracks t
LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
LEFT JOIN (SELECT track_id, string_agg(value, ' ') AS tags FROM tags
           WHERE length(value) <= {MAX_TAG_CHARS} GROUP BY track_id) g ON g.track_id = t.id
WHERE t.status = 'done'
"""


def refresh_fts(catalog: Catalog) -> dict:
    """Rebuild the search snapshot from the catalog's finished tracks; returns its summary.

    The scan calls this after it finishes; it is safe to call at any time and from several processes
    (the last rename wins), and searches keep working on the old snapshot while it runs.
    """
    stamp = catalog_stamp(catalog)  # before reading: a write during the read makes the snapshot stale
    with catalog.read() as conn:
        db = conn.connection.driver_connection
        db.execute("SET enable_progress_bar = false")
        docs = db.execute(_DOCS_SQL).fetch_arrow_table()
        catalog_generation = generation(conn)  # read in the same snapshot as the documents
    target = fts_path(catalog)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute("SET enable_progress_bar = false")
            _load_extension(con)
            con.register("catalog_docs", docs)
            con.execute("CREATE TABLE docs AS SELECT * FROM catalog_docs")
            con.unregister("catalog_docs")
            fields = ", ".join(f"'{f}'" for f in FIELDS)
            con.execute(f"PRAGMA create_fts_index('docs', 'track_id', {fields}, stemmer='{STEMMER}', "
                        f"stopwords='{STOPWORDS}', ignore='{TOKEN_IGNORE}', strip_accents=1, lower=1, "
                        "overwrite=1)")
            con.execute("CREATE TABLE kw_terms AS SELECT termid, term, df FROM fts_main_docs.dict")
            con.execute(f"CREATE TABLE kw_names AS {names_sql('docs', 'track_id', 'name_')} ORDER BY key, track_id")
            # Keyed, so a page of results is fetched through the index rather than by scanning.
            con.execute("""CREATE TABLE kw_tracks (id INTEGER PRIMARY KEY, status VARCHAR, path VARCHAR,
                root VARCHAR, title VARCHAR, artist VARCHAR, album_artist VARCHAR, album VARCHAR, genre VARCHAR,
                year INTEGER, duration DOUBLE, format VARCHAR, track_no INTEGER, caption VARCHAR)""")
            con.execute(f"""INSERT INTO kw_tracks SELECT track_id, 'done', {", ".join(TRACK_COLUMNS)}, caption
                FROM docs ORDER BY track_id""")
            # One row per (term, track) holding its BM25 weight, so a query only sums weights.
            con.execute(f"""CREATE TABLE kw_postings AS
                SELECT t.termid, d.name AS track_id,
                       (ln((s.num_docs::DOUBLE - w.df + 0.5) / (w.df + 0.5) + 1) * t.tf * {BM25_K1 + 1}
                        / (t.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * d.len / s.avgdl)))::FLOAT AS weight
                FROM (SELECT termid, docid, count(*)::DOUBLE AS tf FROM fts_main_docs.terms GROUP BY ALL) t
                JOIN fts_main_docs.docs d USING (docid) JOIN fts_main_docs.dict w USING (termid)
                CROSS JOIN fts_main_docs.stats s
                ORDER BY t.termid, d.name""")
            con.execute("""CREATE TABLE kw_meta AS
                SELECT ?::INTEGER AS version, s.num_docs, ?::TIMESTAMP AS built_at,
                       (SELECT max(indexed_at) FROM docs) AS max_indexed_at, ?::BIGINT AS generation,
                       ?::VARCHAR AS catalog_stamp
                FROM fts_main_docs.stats s""",
                        [SNAPSHOT_VERSION, datetime.now(UTC).replace(tzinfo=None), catalog_generation, stamp])
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
    names = ("version", "num_docs", "built_at", "max_indexed_at", "generation", "catalog_stamp")
    row = con.execute(f"SELECT {', '.join(names)} FROM {prefix}kw_meta").fetchone()
    return dict(zip(names, row, strict=True))


def attach_snapshot(db: duckdb.DuckDBPyConnection, catalog: Catalog, alias: str = "kw") -> dict | None:
    """Attach the snapshot read-only to a catalog connection; its summary, or None if unusable.

    `stale` in the summary: the catalog has changed since (its generation counts every write that
    adds, removes or recaptions tracks), so tracks indexed since need matching another way.
    """
    path = fts_path(catalog)
    if not path.is_file():
        return None
    try:
        db.execute(f"ATTACH '{_quote(str(path))}' AS {alias} (READ_ONLY)")
        meta = _meta(db, alias)
    except duckdb.Error:
        return None
    if meta["version"] != SNAPSHOT_VERSION:
        return None
    found = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    current = int(found[0]) if found else 0
    return {**meta, "stale": current != meta["generation"], "catalog_generation": current}


class SnapshotReader:
    """One process's private in-memory DuckDB: the FTS extension loaded once (for stemming queries the
    way the snapshot was built) and the snapshot attached read-only, re-attached when it is replaced.

    Without the extension (``ok`` false, ``error`` says why) queries are still normalised, and the
    engine matches keywords by substring in the catalog. Calls are serialised by one lock.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.lock = threading.Lock()
        self.con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": MEMORY_LIMIT})
        self.error = ""
        try:
            _load_extension(self.con)
        except (duckdb.Error, FileNotFoundError) as exc:
            self.error = f"keyword stemmer unavailable ({exc}); using plain substring matching"
        self._stamp: tuple | None = None
        self._meta: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    def current(self) -> dict | None:
        """The attached snapshot's summary if it reflects the catalog exactly as it stands, else None.

        Call with `lock` held; while it returns a summary, `kw.*` tables answer a search alone.
        """
        path = fts_path(self.catalog)
        stamp = _stamp(path)
        if stamp != self._stamp:
            if self._meta is not None:
                self.con.execute("DETACH kw")
            self._stamp, self._meta = stamp, None
            if self.ok and stamp[0] is not None:
                try:
                    self.con.execute(f"ATTACH '{_quote(str(path))}' AS kw (READ_ONLY)")
                except duckdb.Error:  # replaced again while attaching: the next call retries
                    self._stamp = None
                    return None
                meta = _meta(self.con, "kw")
                if meta["version"] == SNAPSHOT_VERSION:
                    self._meta = meta
                else:
                    self.con.execute("DETACH kw")
        if self._meta is None or self._meta["catalog_stamp"] != catalog_stamp(self.catalog):
            return None
        return self._meta

    def analyze(self, text: str, words: list[str] | tuple[str, ...]) -> tuple[str, list[str]]:
        """The query as names are compared (`norm_sql`) and the index terms of its words, in one call.

        Without the extension there are no terms; a word the tokenizer splits further gives each part.
        """
        stems = f"""(SELECT list(DISTINCT stem(tok, '{STEMMER}')) FROM (
                       SELECT unnest(string_split_regex(trim(regexp_replace(lower(strip_accents(w)),
                                     '{TOKEN_IGNORE}', ' ', 'g')), '\\s+')) AS tok
                       FROM unnest($w::VARCHAR[]) u(w)) WHERE tok <> '')""" if self.ok else "[]"
        params = {"t": text, "w": list(words)} if self.ok else {"t": text}
        with self.lock:
            phrase, terms = self.con.execute(f"SELECT {norm_sql('$t::VARCHAR')}, {stems}", params).fetchone()
        return phrase, list(terms or [])

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
        with self.lock:
            rows = self.con.execute(sql, {"texts": list(texts), "stems": list(stems)}).fetchall()
        found = dict(rows)
        return [found.get(i, []) for i in range(len(texts))]
