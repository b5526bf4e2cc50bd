"""The keyword snapshot as searches see it (catalog/keywords.py builds it after every scan): attached
read-only to a catalog connection for one query, or kept attached in a private in-memory DuckDB whose
pages stay warm between queries. Once the catalog moves on (a scan commits a batch), that reader copies
the changes, the rows of the tracks new or changed since the snapshot and the ids gone, once per catalog
write, and goes on answering from the snapshot plus those; only when more than MAX_CHANGED tracks changed
does every search read the catalog itself.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from catalog.keywords import (
    SNAPSHOT_VERSION,
    TRACK_COLUMNS,
    content_digest,
    keywords_path,
    load_extension,
    read_meta,
    row_hash_sql,
)
from catalog.store import Catalog, CatalogError, file_stamp, generation
from catalog.text import (
    NAME_COLUMNS,
    STEMMER,
    TOKEN_IGNORE,
    auto_text_sql,
    names_sql,
    norm_sql,
    quote,
    split_words,
    strip_accents,
)

log = logging.getLogger(__name__)

# DuckDB threads per search query, on the warm snapshot and on a fresh catalog connection. On the 2-core
# reference machine a second thread made the broadest 1M-track query's SQL faster only when the machine
# was idle, the engine slower whenever another process used a core, and small catalogs slower always
# (parallel start-up on short queries; docs/benchmarks.md, "Why the search path is built this way").
QUERY_THREADS = 1
MEMORY_LIMIT = "1GB"  # the warm snapshot's buffer pool; the postings of common terms and the pages shown
STEM_CACHE_SIZE = 100_000  # words whose stem a reader keeps (a few MB); emptied when full
# Tracks changed since the snapshot (new, rewritten, moved or recaptioned) that a reader copies to answer
# from the snapshot plus them. A scan commits a batch at a time and rebuilds the snapshot at its end, so
# during a scan this is the tracks it has indexed so far. Up to this many copied, a search at a million
# tracks stays several times faster than reading the catalog, and the copy is made once per commit
# (docs/benchmarks.md, "Why the search path is built this way"); past it, substring matching and the
# copy grow on, while reading the catalog costs the same.
MAX_CHANGED = 50_000
# kw_tracks' columns, in its order: the changed tracks' rows are laid out the same, for CURRENT_TRACKS.
KW_TRACK_COLUMNS = ("id", "status", *TRACK_COLUMNS, "caption", "row_hash")
CHANGED_SQL = """SELECT id FROM tracks WHERE status = 'done'
    AND indexed_at > (SELECT coalesce(max_indexed_at, '-infinity'::TIMESTAMP) FROM kw.kw_meta)"""
CHANGED_COUNT_SQL = f"SELECT count(*) FROM ({CHANGED_SQL})"  # tracks indexed after the keyword snapshot
# A search on the reader's snapshot after the catalog moved on, as during a scan (`SnapshotReader` copies
# these once per catalog change): the rows of the tracks new or changed since the snapshot, laid out as
# kw.kw_tracks; the ids whose snapshot entries no longer count (those, and the tracks gone); and a view
# of the catalog's finished tracks as they are now, the snapshot's with the changes applied.
CHANGED_TRACKS = "search_changed"
CHANGED_NAMES = "search_changed_names"  # and their names, normalised as the snapshot's (`changed_names_sql`)
CHANGED_IDS = "search_changed_ids"
CHANGED_AUTO = "search_changed_auto"  # their auto-tags, laid out as kw.kw_auto
CURRENT_TRACKS = "search_current"
CURRENT_AUTO = "search_current_auto"  # the auto-tags of CURRENT_TRACKS
# `SnapshotReader.follow`'s threads, and what stops them when the interpreter exits (`_stop_following`).
_FOLLOWERS: list[threading.Thread] = []
_STOP_FOLLOWING = threading.Event()


@dataclass(frozen=True)
class SnapshotView:
    """How one search reads the keyword snapshot.

    `changed`: the catalog holds tracks changed since the snapshot (new, rewritten, moved, recaptioned,
    analysed or gone), which a search matches by substring instead of by their snapshot entries;
    `private`: the reader's own connection answers (`SnapshotReader.current`), from the snapshot plus its
    copy of the changes, else a catalog connection with the snapshot attached (`attach_snapshot`);
    `tracks`: the table the search reads its tracks from.
    """

    num_docs: int
    changed: bool
    private: bool
    tracks: str

    @property
    def copied(self) -> bool:
        """Whether the changed tracks come from the reader's copy (CHANGED_TRACKS), not the catalog."""
        return self.private and self.changed


def snapshot_summary(db: duckdb.DuckDBPyConnection, catalog: Catalog, alias: str = "kw") -> dict | None:
    """Attach the snapshot read-only to a catalog connection; its summary (`read_meta`, plus `changed`:
    whether the catalog's generation moved on since, and `catalog_generation`), or None if unusable."""
    path = keywords_path(catalog)
    if not path.is_file():
        return None
    try:
        try:
            db.execute(f"ATTACH '{quote(str(path))}' AS {alias} (READ_ONLY)")
        except duckdb.Error:
            # Connections to one catalog file in one process share a DuckDB instance, and with it what is
            # attached: a search in another thread may have attached the snapshot already.
            found = db.execute("SELECT path FROM duckdb_databases() WHERE database_name = $a", {"a": alias}).fetchone()
            if found is None or Path(found[0]).resolve() != path.resolve():
                raise
        meta = read_meta(db, alias)
    except duckdb.Error:  # unreadable, or an older layout
        return None
    if meta["version"] != SNAPSHOT_VERSION:
        return None
    found = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    current = int(found[0]) if found else 0
    return {**meta, "changed": current != meta["generation"], "catalog_generation": current}


def attach_snapshot(db: duckdb.DuckDBPyConnection, catalog: Catalog) -> SnapshotView | None:
    """The snapshot attached to a catalog connection as a search reads it, or None if unusable. The
    catalog's generation counts every write that adds, removes or recaptions tracks: when it moved on,
    the tracks indexed since are matched another way."""
    meta = snapshot_summary(db, catalog)
    if meta is None:
        return None
    return SnapshotView(num_docs=meta["num_docs"], changed=meta["changed"], private=False, tracks="tracks")


class SnapshotReader:
    """One process's private in-memory DuckDB: the FTS extension loaded once (for stemming queries the
    way the snapshot was built) and the snapshot attached read-only, re-attached when it is replaced.

    Without the extension (``ok`` false, ``error`` says why) queries are still normalised, and the
    engine matches keywords by substring in the catalog. Calls are serialised by one lock.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.lock = threading.Lock()
        self.con = duckdb.connect(":memory:", config={"threads": QUERY_THREADS, "memory_limit": MEMORY_LIMIT})
        self.error = ""
        try:
            load_extension(self.con)
        except (duckdb.Error, FileNotFoundError) as exc:
            self.error = f"keyword stemmer unavailable ({exc}); using plain substring matching"
        self._stamp: tuple | None = None
        self._meta: dict | None = None
        self._checked = ""  # the last catalog stamp compared with the snapshot's contents
        self._unchanged = ""  # that stamp, if the snapshot held the catalog's tracks exactly then
        self._copied = False  # whether the changes since the snapshot, as of `_checked`, are copied
        self._ids: np.ndarray | None = None  # the snapshot's track ids, sorted (read when first needed)
        self._current_ids = np.zeros(0, dtype=np.int64)  # with the changes copied applied
        self._following = False
        self._stem_cache: dict[str, str] = {}

    @property
    def ok(self) -> bool:
        return not self.error

    def current(self) -> SnapshotView | None:
        """How a search reads the attached snapshot, or None when the search must read the catalog.

        Call with `lock` held; while it returns a view, this reader's connection answers a search alone,
        reading its tracks from the view's `tracks`: the snapshot's own table when it holds the catalog's
        tracks exactly (`changed` false), else CURRENT_TRACKS, with the tracks changed since
        (CHANGED_TRACKS) to match by substring and the ids whose snapshot entries no longer count
        (CHANGED_IDS). The catalog changes (its files' stamps) after every write, including the scan's
        final bookkeeping after it rebuilt the snapshot; so a new stamp is checked once against the
        snapshot's generation and content digest, and a write that left the tracks alone keeps the
        snapshot exact; after any other write the changes are copied, once per write.
        """
        path = keywords_path(self.catalog)
        stamp = file_stamp(path)
        if stamp != self._stamp:
            if self._meta is not None:
                self._drop_changes()
                self.con.execute("DETACH kw")
            self._stamp, self._meta, self._checked, self._unchanged, self._copied = stamp, None, "", "", False
            self._ids = None
            if self.ok and stamp[0] is not None:
                try:
                    self.con.execute(f"ATTACH '{quote(str(path))}' AS kw (READ_ONLY)")
                except duckdb.Error:  # replaced again while attaching: the next call retries
                    self._stamp = None
                    return None
                try:
                    meta = read_meta(self.con, "kw")
                except duckdb.Error:  # an older layout
                    meta = None
                if meta is not None and meta["version"] == SNAPSHOT_VERSION:
                    self._meta = meta
                else:
                    self.con.execute("DETACH kw")
        if self._meta is None:
            return None
        now = self.catalog.stamp()  # before reading: a later write gives a new stamp to check
        if now != self._checked and now not in (self._meta["catalog_stamp"], self._unchanged):
            self._checked, self._copied = now, False
            try:
                with self.catalog.read() as conn:
                    if (generation(conn) == self._meta["generation"]
                            and content_digest(conn) == self._meta["content"]):
                        self._unchanged = now
                    else:
                        self._copied = self._copy_changes(conn.connection.driver_connection)
            except (FileNotFoundError, CatalogError, duckdb.Error):
                return None  # the caller's own catalog query reports it
        if now in (self._meta["catalog_stamp"], self._unchanged):
            return SnapshotView(self._meta["num_docs"], changed=False, private=True, tracks="kw.kw_tracks")
        if self._copied:
            return SnapshotView(self._meta["num_docs"], changed=True, private=True, tracks=CURRENT_TRACKS)
        return None

    def follow(self, interval: float) -> None:
        """Call `current` every `interval` seconds in a thread of its own, as a search would first, so a
        scan's commits are copied between searches. The thread holds the reader weakly and ends with it."""
        with self.lock:
            if self._following:
                return
            self._following = True
        thread = threading.Thread(target=_follow, args=(weakref.ref(self), interval), name="search-follow",
                                  daemon=True)
        _FOLLOWERS[:] = [t for t in _FOLLOWERS if t.is_alive()] + [thread]
        thread.start()

    def _copy_changes(self, catalog: duckdb.DuckDBPyConnection) -> bool:
        """Copy from a catalog connection what changed since the snapshot (see `current`); False, and
        nothing copied, when more than MAX_CHANGED tracks did (or the snapshot file was replaced meanwhile).

        Tracks are told apart by the hash of their catalog row that the snapshot keeps (`row_hash_sql`):
        a track is new, rewritten, moved, recaptioned or analysed where the hashes differ, gone where the
        catalog has no finished row for it; its auto-tags are copied with it. The comparison runs in the
        catalog connection, with the snapshot attached there too: about half the time that copying the
        hashes over to compare them here took.
        """
        there = snapshot_summary(catalog, self.catalog)
        if there is None or any(there[k] != self._meta[k] for k in ("built_at", "generation", "content")):
            return False
        diff = catalog.execute(f"""SELECT coalesce(c.id, k.id) AS id, c.id IS NOT NULL AS present
            FROM (SELECT id, {row_hash_sql()} AS row_hash FROM tracks WHERE status = 'done') c
            FULL JOIN kw.kw_tracks k ON k.id = c.id WHERE c.row_hash IS DISTINCT FROM k.row_hash""").fetchnumpy()
        changed = diff["id"][diff["present"]]
        if len(changed) > MAX_CHANGED:
            return False
        catalog.register("changed_ids", {"id": changed})
        try:
            rows = catalog.execute(f"""SELECT t.id, 'done' AS status, {", ".join(f"t.{c}" for c in TRACK_COLUMNS)},
                    c.text AS caption, {row_hash_sql("t")} AS row_hash, a.auto_text
                FROM tracks t SEMI JOIN changed_ids d ON d.id = t.id
                LEFT JOIN (SELECT * FROM captions SEMI JOIN changed_ids d ON d.id = captions.track_id) c
                    ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
                LEFT JOIN ({auto_text_sql("a.track_id IN (SELECT id FROM changed_ids)")}) a ON a.track_id = t.id
                """).fetch_arrow_table()
            tags = catalog.execute("""SELECT track_id, tagger, tag, probability FROM auto_tags
                SEMI JOIN changed_ids d ON d.id = auto_tags.track_id""").fetch_arrow_table()
        finally:
            catalog.unregister("changed_ids")
        kept = self._snapshot_ids()
        kept = kept[~np.isin(kept, diff["id"], kind="table")] if len(diff["id"]) else kept
        added = np.sort(changed.astype(np.int64))  # none of them is in `kept`: `diff` holds every changed track
        self._current_ids = np.insert(kept, np.searchsorted(kept, added), added)
        self._store_changes(rows, tags, diff["id"])
        return True

    def _store_changes(self, rows: pa.Table, tags: pa.Table, ids: np.ndarray) -> None:
        """The copy `_copy_changes` read, as this reader's tables and views of the changes (CHANGED_TRACKS...)."""
        cols = ", ".join(KW_TRACK_COLUMNS)
        self.con.register("changed_rows", rows)
        self.con.register("changed_tags", tags)
        self.con.register("changed_ids", {"id": ids})
        try:
            self.con.execute(f"""CREATE OR REPLACE TEMP TABLE {CHANGED_TRACKS} AS
                SELECT {cols}, {haystack_sql("t.caption", "t.auto_text")} AS hay FROM changed_rows t""")
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {CHANGED_NAMES} AS {changed_names_sql()}")
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {CHANGED_IDS} AS SELECT id::INTEGER AS id FROM changed_ids")
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {CHANGED_AUTO} AS SELECT * FROM changed_tags")
        finally:
            for name in ("changed_rows", "changed_tags", "changed_ids"):
                self.con.unregister(name)
        self.con.execute(f"""CREATE OR REPLACE TEMP VIEW {CURRENT_TRACKS} AS
            SELECT {cols} FROM kw.kw_tracks WHERE id NOT IN (SELECT id FROM {CHANGED_IDS})
            UNION ALL SELECT {cols} FROM {CHANGED_TRACKS}""")
        self.con.execute(f"""CREATE OR REPLACE TEMP VIEW {CURRENT_AUTO} AS
            SELECT * FROM kw.kw_auto WHERE track_id NOT IN (SELECT id FROM {CHANGED_IDS})
            UNION ALL SELECT * FROM {CHANGED_AUTO}""")

    def held(self, ids: list[int], changed: bool) -> list[bool]:
        """Whether each track is one a search here sees (the snapshot's, or with the changes copied when
        `changed`). Call with `lock` held, after `current`. The text index is saved on its own schedule,
        so it may hold tracks the snapshot lacks or no longer has."""
        held = self._current_ids if changed else self._snapshot_ids()
        pos = np.minimum(np.searchsorted(held, ids), max(0, held.size - 1))
        return (held[pos] == np.asarray(ids, dtype=np.int64)).tolist() if held.size else [False] * len(ids)

    def _snapshot_ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = self.con.execute("SELECT id FROM kw.kw_tracks ORDER BY id").fetchnumpy()["id"].astype(np.int64)
        return self._ids

    def _drop_changes(self) -> None:
        for view in (CURRENT_TRACKS, CURRENT_AUTO):
            self.con.execute(f"DROP VIEW IF EXISTS {view}")
        for table in (CHANGED_TRACKS, CHANGED_NAMES, CHANGED_IDS, CHANGED_AUTO):
            self.con.execute(f"DROP TABLE IF EXISTS {table}")

    def analyze(self, text: str, words: list[str] | tuple[str, ...]) -> tuple[str, list[str]]:
        """The query as names are compared (`norm_sql`) and the index terms of its words.

        Tokenised in Python as DuckDB's FTS tokenises (`split_words`); only stems new to this reader
        take a DuckDB call. Without the extension there are no terms; a word the tokenizer splits
        further gives each part.
        """
        parts = split_words(text)
        tokens = [split_words(w) for w in words] if self.ok else []
        if parts is None or any(t is None for t in tokens):  # a code point newer than Python's Unicode
            return self.analyze_sql(text, words)
        with self.lock:
            stems = self._stems([tok for toks in tokens for tok in toks or ()])
        return " ".join(parts), list(dict.fromkeys(stems.values()))

    def surface_matches(self, texts: list[str], stems: list[str]) -> list[list[str]]:
        """For each text, the distinct words in it (lower case, as written) whose stem is in `stems`."""
        if not texts or not stems:
            return [[] for _ in texts]
        words = [split_words(t, keep_accents=True) for t in texts]
        plain = {w: strip_accents(w) for ws in words for w in ws or ()}
        with self.lock:
            stem_of = self._stems(list(plain.values()))
        wanted = set(stems)
        found: list[list[str] | None] = [None if ws is None else sorted({w for w in ws if stem_of[plain[w]] in wanted})
                                         for ws in words]
        odd = [i for i, ws in enumerate(found) if ws is None]  # a code point newer than Python's Unicode
        for i, ws in zip(odd, self.surface_sql([texts[i] for i in odd], stems) if odd else [], strict=True):
            found[i] = ws
        return [ws or [] for ws in found]

    def _stems(self, tokens: list[str]) -> dict[str, str]:
        """Each token's stem (as the snapshot's terms were made), from a cache. Call with `lock` held."""
        missing = list(dict.fromkeys(t for t in tokens if t not in self._stem_cache))
        if missing:
            if len(self._stem_cache) + len(missing) > STEM_CACHE_SIZE:
                self._stem_cache.clear()
            self._stem_cache.update(self.con.execute(
                f"SELECT t, stem(t, '{STEMMER}') FROM unnest($t::VARCHAR[]) u(t)", {"t": missing}).fetchall())
        return {t: self._stem_cache[t] for t in tokens}

    def analyze_sql(self, text: str, words: list[str] | tuple[str, ...]) -> tuple[str, list[str]]:
        """`analyze` by DuckDB itself: the reference `split_words` follows, and the way for text that
        holds a code point unassigned in Python's Unicode database."""
        stems = f"""(SELECT list(DISTINCT stem(tok, '{STEMMER}')) FROM (
                       SELECT unnest(string_split_regex(trim(regexp_replace(lower(strip_accents(w)),
                                     '{TOKEN_IGNORE}', ' ', 'g')), '\\s+')) AS tok
                       FROM unnest($w::VARCHAR[]) u(w)) WHERE tok <> '')""" if self.ok else "[]"
        params = {"t": text, "w": list(words)} if self.ok else {"t": text}
        with self.lock:
            phrase, terms = self.con.execute(f"SELECT {norm_sql('$t::VARCHAR')}, {stems}", params).fetchone()
        return phrase, list(terms or [])

    def surface_sql(self, texts: list[str], stems: list[str]) -> list[list[str]]:
        """`surface_matches` by DuckDB itself (see `analyze_sql`)."""
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


def haystack_sql(caption: str, auto_text: str, t: str = "t") -> str:
    """A track's text matched by substring: its caption (`caption`), names (of table alias `t`) and auto-tags
    (`auto_text`, from `auto_text_sql`), lower case, so that `LIKE lower(pattern)` is ILIKE, four times
    faster on text lowered once."""
    return (f"lower(concat_ws(' ', {caption}, {t}.title, {t}.artist, {t}.album_artist, {t}.album, {t}.genre, "
            f"{auto_text}))")


def changed_names_sql() -> str:
    """The rows of CHANGED_NAMES: the names of the changed tracks copied, as `_substring_names_sql` (search/rank.py) gives the catalog's."""
    cols = ", ".join(f"{norm_sql(c)} AS name_{c}" for c in NAME_COLUMNS)
    return names_sql(f"(SELECT id, {cols} FROM {CHANGED_TRACKS})", "id", "name_")


def _follow(reader_ref: weakref.ref, interval: float) -> None:
    """`SnapshotReader.follow`'s thread."""
    while not _STOP_FOLLOWING.wait(interval):
        reader = reader_ref()
        if reader is None:
            return
        with reader.lock:
            try:
                reader.current()  # a stat of two files when nothing changed
            except Exception:  # the next search meets it too, and says so
                log.exception("following the catalog")
        del reader


@atexit.register
def _stop_following() -> None:
    """Stop the followers before the interpreter finalises: a daemon thread caught inside DuckDB then
    (a connection closing needs the GIL back) aborts the whole process."""
    _STOP_FOLLOWING.set()
    for thread in _FOLLOWERS:
        thread.join(timeout=10)
