"""The keyword snapshot: BM25 postings (built with DuckDB's FTS extension), names and display columns of
every finished track, in a DuckDB file of its own next to the catalog. The scan rebuilds it at its end
(`Writer.close`); search/snapshot.py reads it, as search/ann.py reads the FAISS files catalog/vectors.py writes.

Why a separate file: indexing a large library takes seconds to minutes, and doing it inside the catalog
would hold the catalog's write lock, and so lock out every searcher, for that long. `refresh_keywords`
writes the snapshot to a temporary file and renames it into place, so a reader always sees a whole one;
and since nobody ever writes the file in place, a searcher may keep it open between queries, so its pages
stay warm in memory (a fresh connection per query re-reads and re-decompresses every block it touches,
which at a million tracks costs more than the query itself).

Why plain postings tables: the extension's `match_bm25` macro only works inside the database that holds
it (it names its tables unqualified), and loading the extension costs time on every connection. So
`refresh_keywords` lets the extension tokenise, stem and count, then copies its postings into a plain
table sorted by term (a term's postings are one contiguous range that DuckDB's zone maps find without a
full scan), each posting carrying its BM25 weight with the extension's parameters (k1 = 1.2, b = 0.75):
a query's keyword score is one filtered sum. `kw_names` holds each track's normalised names as hashes
(`name_hash`), sorted, so finding the tracks whose whole title, artist, album or genre a query contains
is a zone-map lookup of the hashes of the query's word runs. (DuckDB keeps only the first 8 bytes of a
string column's minimum and maximum: with the names themselves sorted, "artist 42" read every row group
of names starting "artist 4": docs/benchmarks.md, "Why the search path is built this way".) A genre
shared by many tracks is a bitmap over track ids in `kw_genres` instead of name rows (GENRE_BITMAP_SHARE
says why; `kw_genres` lists every genre). `kw_tracks` holds what filters and result lists need, and a hash
of each track's catalog row (`row_hash_sql`), by which a search finds the tracks changed since.

Auto-tags (`auto_tags` rows: the musicnn taggers' tags and the instrument head's families) are searched by
their words and by the plain words model/describe.py says for them ("hip-hop" for "Hip-Hop", "mellow" for
"chillout"; `tag_text`), each with its probability: they join the postings as weights of their own (AUTO_TAG_WEIGHT), outside the BM25
documents, so a track's many tags do not lengthen its document and weaken its caption's words. The
snapshot keeps the rows (`kw_auto`) to say which tag a hit matched.

Rebuilt whole after every scan that changed the library (BM25 weights depend on the document count and
lengths, so one new track changes every weight; times in docs/benchmarks.md, "Keyword snapshot rebuild").
A failed rebuild is logged and recorded in `<catalog>.keywords.error.json`, and never fails the scan:
searches keep the old snapshot and match newer tracks as plain text.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.engine import Connection

from catalog.store import ANALYSIS_COLUMNS, Catalog, generation
from catalog.text import (
    NAME_COLUMNS,
    STEMMER,
    STOPWORDS,
    TAG_WORDS_SQL,
    TOKEN_IGNORE,
    names_sql,
    norm_sql,
    quote,
)

log = logging.getLogger(__name__)

BM25_K1 = 1.2
BM25_B = 0.75
FIELDS = ("f_caption", "f_title", "f_artist", "f_album", "f_genre", "f_tags")  # what BM25 reads
MAX_TAG_CHARS = 200  # longer tag values are lyrics or notes, not names worth matching
TRACK_COLUMNS = ("path", "root", "title", "artist", "album_artist", "album", "genre", "year", "duration",
                 "format", "track_no", *ANALYSIS_COLUMNS)
# A genre held by at least this share of the id range is stored as a bitmap over track ids (`kw_genres`),
# not as one `kw_names` row per track. A genre is few values over many tracks: "rock" names the genre of
# a tenth of a million-track library, and gathering and joining 100,000 name rows costs a search several
# times what testing one bitmap per candidate does (docs/benchmarks.md, "Why the search path is built this
# way"). Rarer genres stay rows, which cost little, so that a library with thousands of distinct genres
# does not store thousands of bitmaps of max_id / 8 bytes each: from this share up a bitmap takes at most
# 8 bytes per track of its genre, so (one genre per track) all bitmaps together take at most 8 bytes per
# track of the library, and there are at most 64 of them.
GENRE_BITMAP_SHARE = 1 / 64
# A track's posting for a word of its auto-tags weighs AUTO_TAG_WEIGHT * p * idf: p the tag's probability,
# idf BM25's over the expected number of tracks holding the word (those whose text holds it count 1, the
# others the probability their tags say it with). At p = 1 that is the weight of the word once in a text of
# average length (BM25's tf factor is 1 there): a tag heard for certain is as good as the caption saying
# it, and a tag heard faintly on every track weighs little.
AUTO_TAG_WEIGHT = 1.0
SNAPSHOT_VERSION = 11


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


def load_extension(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"LOAD '{quote(str(extension_path()))}'")


def keywords_path(catalog: Catalog) -> Path:
    """Where the keyword snapshot of a catalog lives: next to it, named after it."""
    return catalog.path.with_name(catalog.path.stem + ".keywords.duckdb")


def error_path(catalog: Catalog) -> Path:
    """Why the last rebuild after a scan failed; absent when it succeeded."""
    return catalog.path.with_name(catalog.path.stem + ".keywords.error.json")


def last_error(catalog: Catalog) -> dict | None:
    """The failure recorded by the last rebuild after a scan, if it failed."""
    try:
        return json.loads(error_path(catalog).read_text())
    except (FileNotFoundError, ValueError):
        return None


def row_hash_sql(alias: str = "") -> str:
    """A hash of what the snapshot copies from one `tracks` row (`alias`: the table's, or "").

    `kw_tracks` keeps each track's, so a search can tell the tracks changed since the snapshot from the
    rest (search/snapshot.py); summed, it is the catalog's content digest. Tags, captions and auto-tags change
    only together with their track's row (a caption comes with a new pipeline version or indexed_at,
    auto-tags with the analysis columns, analysis_version among them).
    """
    prefix = f"{alias}." if alias else ""
    return f"hash({', '.join(prefix + c for c in ('id', 'indexed_at', 'pipeline_version', *TRACK_COLUMNS))})"


# Writes that leave the finished tracks' rows and the generation alone (the scan's own bookkeeping rows,
# errors, a checkpoint) leave the snapshot exact.
_CONTENT_SQL = f"""SELECT count(*)::VARCHAR || ':' || coalesce(sum({row_hash_sql()}), 0)::VARCHAR
    FROM tracks WHERE status = 'done'"""


def content_digest(conn: Connection) -> str:
    """A digest of the finished tracks' columns that the snapshot holds."""
    return str(conn.execute(text(_CONTENT_SQL)).scalar())


def read_meta(con: duckdb.DuckDBPyConnection, schema: str) -> dict:
    """The snapshot's summary row (`schema`: the alias it is attached as, or "" inside it)."""
    prefix = f"{schema}." if schema else ""
    names = ("version", "num_docs", "built_at", "max_indexed_at", "generation", "catalog_stamp", "content")
    row = con.execute(f"SELECT {', '.join(names)} FROM {prefix}kw_meta").fetchone()
    return dict(zip(names, row, strict=True))


_DOCS_SQL = f"""
SELECT t.id AS track_id, t.indexed_at, {", ".join(f"t.{c}" for c in TRACK_COLUMNS)}, c.text AS caption,
       {row_hash_sql("t")} AS row_hash,
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
_AUTO_SQL = """SELECT track_id, tagger, tag, probability FROM auto_tags
WHERE track_id IN (SELECT id FROM tracks WHERE status = 'done')"""


def _write_names(con: duckdb.DuckDBPyConnection) -> None:
    """`kw_names` (name rows sorted by `name_hash`) and `kw_genres` (every genre; a bitmap for the big ones).

    Bit i of a genre's bitmap is set when track id i has that genre (ids are positive: the catalog's
    sequence); every bitmap spans ids 0 to the largest id in the snapshot. A genre without a bitmap has
    its tracks as `kw_names` rows, as titles, artists and albums have.
    """
    con.execute(f"CREATE TEMP TABLE names AS {names_sql('docs', 'track_id', 'name_')}")
    max_id = con.execute("SELECT coalesce(max(track_id), 0) FROM docs").fetchone()[0]
    min_tracks = max(1, math.ceil(GENRE_BITMAP_SHARE * (int(max_id) + 1)))
    # bitstring_agg wants its range as constants: ints, safe to inline
    con.execute(f"""CREATE TABLE kw_genres AS
        WITH counts AS (SELECT key, count(*)::INTEGER AS tracks FROM names WHERE field = 'genre' GROUP BY key),
             maps AS (SELECT key, bitstring_agg(track_id, 0, {int(max_id)}) AS bits FROM names
                      WHERE field = 'genre' AND key IN (SELECT key FROM counts WHERE tracks >= {min_tracks})
                      GROUP BY key)
        SELECT c.key, c.tracks, m.bits FROM counts c LEFT JOIN maps m USING (key) ORDER BY c.key""")
    # Hash, id, field and length only: a lookup reads ints, never the names themselves (see `name_hash`).
    con.execute("""CREATE TABLE kw_names AS
        SELECT md5_number_upper(key) AS key_hash, track_id, field, length(key)::INTEGER AS chars FROM names
        WHERE NOT (field = 'genre' AND key IN (SELECT key FROM kw_genres WHERE bits IS NOT NULL))
        ORDER BY key_hash, track_id""")
    con.execute("DROP TABLE names")


def _remove_orphans(target: Path) -> None:
    """Temporary files of rebuilds whose process died (SIGKILL, power loss) before cleaning up."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp*"):
        pid = tmp.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:  # alive, another user's
                pass


def _write_tracks(con: duckdb.DuckDBPyConnection) -> None:
    """`kw_tracks`, keyed, so a page of results is fetched through the index rather than by scanning."""
    con.execute("""CREATE TABLE kw_tracks (id INTEGER PRIMARY KEY, status VARCHAR, path VARCHAR,
        root VARCHAR, title VARCHAR, artist VARCHAR, album_artist VARCHAR, album VARCHAR, genre VARCHAR,
        year INTEGER, duration DOUBLE, format VARCHAR, track_no INTEGER, bpm DOUBLE, tonic VARCHAR,
        mode VARCHAR, vocals VARCHAR, auto_genre VARCHAR, analysis_version VARCHAR, caption VARCHAR,
        row_hash UBIGINT)""")
    con.execute(f"""INSERT INTO kw_tracks SELECT track_id, 'done', {", ".join(TRACK_COLUMNS)}, caption,
        row_hash FROM docs ORDER BY track_id""")


def _write_postings(con: duckdb.DuckDBPyConnection) -> None:
    """`kw_terms` and `kw_postings` (one row per term and track holding its weight, so a query only sums
    weights): BM25 of the FTS index's terms, plus the words of the tracks' auto-tags (`kw_auto`) weighted
    by probability (AUTO_TAG_WEIGHT says how). Tag words are tokenised, rid of stopwords and stemmed as
    the FTS index treats text; those no text holds get term ids after the index's."""
    con.execute(f"""CREATE TEMP TABLE text_postings AS
        SELECT t.termid, d.name AS track_id,
               ln((s.num_docs::DOUBLE - w.df + 0.5) / (w.df + 0.5) + 1) * t.tf * {BM25_K1 + 1}
               / (t.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * d.len / s.avgdl)) AS weight
        FROM (SELECT termid, docid, count(*)::DOUBLE AS tf FROM fts_main_docs.terms GROUP BY ALL) t
        JOIN fts_main_docs.docs d USING (docid) JOIN fts_main_docs.dict w USING (termid)
        CROSS JOIN fts_main_docs.stats s""")
    con.execute(f"""CREATE TEMP TABLE tag_terms AS SELECT DISTINCT tagger, tag, stem(tok, '{STEMMER}') AS term
        FROM (SELECT tagger, tag, unnest(string_split({norm_sql("words")}, ' ')) AS tok FROM (
              SELECT DISTINCT a.tagger, a.tag, coalesce(w.words, a.tag) AS words
              FROM kw_auto a LEFT JOIN {TAG_WORDS_SQL} w ON w.tagger = a.tagger AND w.tag = a.tag))
        WHERE tok <> '' AND tok NOT IN (SELECT sw FROM fts_main_docs.stopwords)""")
    con.execute("""CREATE TEMP TABLE terms AS SELECT termid, term FROM fts_main_docs.dict
        UNION ALL SELECT (SELECT coalesce(max(termid), -1) FROM fts_main_docs.dict)
                         + row_number() OVER (ORDER BY term), term
        FROM (SELECT DISTINCT term FROM tag_terms WHERE term NOT IN (SELECT term FROM fts_main_docs.dict))""")
    con.execute("""CREATE TEMP TABLE merged AS
        WITH auto AS (SELECT w.termid, a.track_id, max(a.probability) AS p FROM kw_auto a
                      JOIN tag_terms x USING (tagger, tag) JOIN terms w USING (term) GROUP BY ALL)
        SELECT coalesce(t.termid, a.termid) AS termid, coalesce(t.track_id, a.track_id) AS track_id,
               t.weight, a.p
        FROM text_postings t FULL JOIN auto a ON a.termid = t.termid AND a.track_id = t.track_id""")
    con.execute("""CREATE TEMP TABLE seen AS
        SELECT termid, sum(CASE WHEN weight IS NULL THEN p ELSE 1 END) AS sdf FROM merged GROUP BY termid""")
    # df: the expected number of tracks holding the term, at least 1 (the engine's COMMON_TERM_SHARE)
    con.execute("""CREATE TABLE kw_terms AS SELECT termid, term, ceil(s.sdf)::BIGINT AS df
        FROM terms JOIN seen s USING (termid) ORDER BY term""")
    # Sorted by term: a query's few terms are found by zone maps, not a scan of every distinct word.
    con.execute(f"""CREATE TABLE kw_postings AS
        SELECT m.termid, m.track_id, (coalesce(m.weight, 0) + coalesce({AUTO_TAG_WEIGHT} * m.p
               * ln((st.num_docs - s.sdf + 0.5) / (s.sdf + 0.5) + 1), 0))::FLOAT AS weight
        FROM merged m JOIN seen s USING (termid) CROSS JOIN fts_main_docs.stats st
        ORDER BY m.termid, m.track_id""")
    for table in ("text_postings", "tag_terms", "terms", "merged", "seen"):
        con.execute(f"DROP TABLE {table}")


def _load(con: duckdb.DuckDBPyConnection, docs: pa.Table, auto: pa.Table) -> None:
    """The catalog's documents (`_DOCS_SQL`) and auto-tags (`_AUTO_SQL`, kept as `kw_auto`) into `con`."""
    con.execute("SET enable_progress_bar = false")
    load_extension(con)
    con.register("catalog_docs", docs)
    con.execute("CREATE TABLE docs AS SELECT * FROM catalog_docs")
    con.unregister("catalog_docs")
    con.register("catalog_auto", auto)
    con.execute("""CREATE TABLE kw_auto AS SELECT track_id, tagger, tag, probability FROM catalog_auto
        ORDER BY track_id, probability DESC, tagger, tag""")
    con.unregister("catalog_auto")


def _build(con: duckdb.DuckDBPyConnection, meta: list) -> dict:
    """The snapshot's tables, from the documents `_load` put in `con`; its summary. `meta`: the catalog's
    generation, stamp and content digest as read with the documents."""
    fields = ", ".join(f"'{f}'" for f in FIELDS)
    con.execute(f"PRAGMA create_fts_index('docs', 'track_id', {fields}, stemmer='{STEMMER}', "
                f"stopwords='{STOPWORDS}', ignore='{TOKEN_IGNORE}', strip_accents=1, lower=1, "
                "overwrite=1)")
    _write_postings(con)
    _write_names(con)
    _write_tracks(con)
    con.execute("""CREATE TABLE kw_meta AS
        SELECT ?::INTEGER AS version, s.num_docs, ?::TIMESTAMP AS built_at,
               (SELECT max(indexed_at) FROM docs) AS max_indexed_at, ?::BIGINT AS generation,
               ?::VARCHAR AS catalog_stamp, ?::VARCHAR AS content
        FROM fts_main_docs.stats s""", [SNAPSHOT_VERSION, datetime.now(UTC).replace(tzinfo=None), *meta])
    con.execute("DROP SCHEMA fts_main_docs CASCADE")
    con.execute("DROP TABLE docs")
    con.execute("CHECKPOINT")
    return read_meta(con, "")


def refresh_keywords(catalog: Catalog) -> dict:
    """Rebuild the keyword snapshot from the catalog's finished tracks; returns its summary.

    Safe to call at any time and from several processes (the last rename wins); searches keep working
    on the old snapshot while it runs, and an interrupted rebuild leaves the old one in place.
    """
    stamp = catalog.stamp()  # before reading: a write during the read makes the snapshot stale
    with catalog.read() as conn:
        db = conn.connection.driver_connection
        db.execute("SET enable_progress_bar = false")
        docs = db.execute(_DOCS_SQL).fetch_arrow_table()
        auto = db.execute(_AUTO_SQL).fetch_arrow_table()
        catalog_generation = generation(conn)  # read in the same snapshot as the documents
        content = content_digest(conn)
    target = keywords_path(catalog)
    _remove_orphans(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    wal = tmp.with_name(tmp.name + ".wal")
    tmp.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            _load(con, docs, auto)
            del docs, auto
            summary = _build(con, [catalog_generation, stamp, content])
        finally:
            con.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data on disk before the name: a crash leaves the old snapshot or the new one
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        wal.unlink(missing_ok=True)
    return {**summary, "path": str(target)}


def snapshot_matches(catalog: Catalog) -> bool:
    """Whether the snapshot file exists, is of this version and holds the catalog's current tracks."""
    try:
        con = duckdb.connect(str(keywords_path(catalog)), read_only=True)
    except duckdb.Error:  # missing or unreadable
        return False
    try:
        meta = read_meta(con, "")
    except duckdb.Error:  # an older layout
        return False
    finally:
        con.close()
    with catalog.read() as conn:
        return (meta["version"] == SNAPSHOT_VERSION and meta["generation"] == generation(conn)
                and meta["content"] == content_digest(conn))


def refresh_after_scan(catalog: Catalog, changed: bool) -> dict:
    """The scan's last step: rebuild the snapshot if the library changed or the snapshot does not match it.

    Never raises an Exception: the catalog is already committed, and a failure here is recorded in
    `error_path` (and returned as {"error": ...}) for the next scan to retry, while searches fall back to
    plain-text matching for the tracks the old snapshot lacks.
    """
    err = error_path(catalog)
    try:
        if not changed and not err.exists() and snapshot_matches(catalog):
            return {"skipped": "the snapshot already matches the catalog"}
        summary = refresh_keywords(catalog)
    except Exception as exc:  # any failure must leave the finished scan standing
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("keyword snapshot not rebuilt (%s); searches match new tracks as plain text", reason)
        with contextlib.suppress(OSError):
            err.write_text(json.dumps({"error": reason, "failed_at": datetime.now(UTC).isoformat()}))
        return {"error": reason}
    err.unlink(missing_ok=True)
    return summary
