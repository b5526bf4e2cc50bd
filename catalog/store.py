"""The catalog schema, defined once with SQLAlchemy over a DuckDB file, and how processes share it.

DuckDB lets one process write a file at a time, and a writing process locks readers out. So nobody
holds the file: the scan opens it for one short write transaction per batch, readers open it
read-only per query, and both retry on a lock conflict with backoff (`busy_timeout`), so a user
searching during a scan waits some milliseconds and never sees a lock error.

Schema history (each step has a migration, run by `Catalog.create()` in one transaction):
  1 -> 2  tags/embeddings/captions lose their FOREIGN KEYs: DuckDB refuses to delete a track or change
          its path while child rows reference it, even inside the transaction that deletes them.
  2 -> 3  what the musicnn taggers, tempo and key estimators hear (model/analysis.py): numbers and
          summary words as track columns (empty until the next scan analyses the track), the tags
          as `auto_tags` rows, the tags over time and the embedding in `analyses`.
  3 -> 4  which library decoded each track (`decoder`: every older track was FFmpeg's, the only one then),
          and `header_duration`, the length a file's header claims where decoding found another one.

`meta.generation` counts writes that changed a vector; a FAISS manifest that names another
generation is stale (see catalog/vectors.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    create_engine,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

SCHEMA_VERSION = 4

metadata = MetaData()

track_id_seq = Sequence("track_id_seq", metadata=metadata)
scan_id_seq = Sequence("scan_id_seq", metadata=metadata)

# What the analysis adds to a track row (model/analysis.py, model/describe.py); NULL until analysed, and
# where the analysis is not confident (vocals, auto_genre).
ANALYSIS_COLUMNS = {
    "bpm": Double(),
    "tonic": String(2),  # C C# D ... B
    "mode": String(8),  # major | minor
    "vocals": String(16),  # vocal | instrumental
    "auto_genre": String(64),  # the likeliest genre when it is heard with confidence
    "analysis_version": String(32),  # model.analysis.analysis_version() of all the above
}
# What decoding found out about a track (model/audio.py, indexer/decode.py).
DECODE_COLUMNS = {
    "decoder": String(16),  # ffmpeg | libsndfile: the library that read the audio
    "header_duration": Double(),  # seconds the header claims, where decoding read the whole file and found
                                  # another length (then stored as `duration`); NULL when they agree
}

tracks = Table(
    "tracks", metadata,
    Column("id", Integer, track_id_seq, primary_key=True, server_default=track_id_seq.next_value()),
    Column("path", Text, nullable=False, unique=True),  # absolute, as found under a root
    Column("root", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime", Double, nullable=False),
    Column("fingerprint", String(64)),  # content hash: finds moved files, confirms changed ones
    Column("format", String(16)),
    Column("duration", Double),  # seconds of the whole file (decoded, where the header says otherwise)
    Column("indexed_seconds", Double),  # seconds actually encoded (bounded window for very long files)
    Column("title", Text), Column("artist", Text), Column("album", Text), Column("album_artist", Text),
    Column("genre", Text), Column("year", Integer), Column("track_no", Integer),
    Column("status", String(16), nullable=False, server_default="pending"),  # pending | done
    Column("encoder_version", String(32)),  # profile.version("encoder") of the stored embedding
    Column("pipeline_version", String(32)),  # profile.version() of the stored caption
    Column("profile", String(64)),
    Column("indexed_at", DateTime),
    *(Column(name, kind) for name, kind in ANALYSIS_COLUMNS.items()),
    *(Column(name, kind) for name, kind in DECODE_COLUMNS.items()),  # last, where migrating adds them
)

tags = Table(  # every raw tag as read, for display and keyword search
    "tags", metadata,
    Column("track_id", Integer, primary_key=True, autoincrement=False),
    Column("key", String(64), primary_key=True),
    Column("value", Text),
)

embeddings = Table(  # compressed encoder tokens [n_tokens, dim] as fp16 bytes, plus the track vector
    "embeddings", metadata,
    Column("track_id", Integer, primary_key=True, autoincrement=False),
    Column("encoder_version", String(32), nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("tokens", LargeBinary, nullable=False),  # fp16, row-major
    Column("vector", LargeBinary, nullable=False),  # fp32 unit vector (model.encoder.track_vector)
)

captions = Table(
    "captions", metadata,
    Column("track_id", Integer, primary_key=True, autoincrement=False),
    Column("pipeline_version", String(32), primary_key=True),
    Column("text", Text, nullable=False),
    Column("token_ids", Text),  # JSON list of generated ids
    Column("text_vector", LargeBinary),  # fp32 unit vector from the text embedder
    Column("created_at", DateTime),
)

auto_tags = Table(  # the tags the taggers hear with some confidence: one row each, for search and display
    "auto_tags", metadata,
    Column("track_id", Integer, primary_key=True, autoincrement=False),
    Column("tagger", String(32), primary_key=True),  # MTT_musicnn | MSD_musicnn | instrument_head (families)
    Column("tag", String(64), primary_key=True),  # spelled as the tagger does
    Column("probability", Double, nullable=False),  # the mean over the track's patches (the head: of the mean embedding)
)

analyses = Table(  # the rest of a track's analysis: the tags over time and the embedding
    "analyses", metadata,
    Column("track_id", Integer, primary_key=True, autoincrement=False),
    Column("analysis_version", String(32), nullable=False),
    Column("taggers", Text, nullable=False),  # JSON list: the blocks of `probabilities`, in order
    Column("patch_seconds", Text, nullable=False),  # JSON list: where each patch starts
    Column("probabilities", LargeBinary, nullable=False),  # fp16 [patches, all taggers' labels], row-major
    Column("embedding", LargeBinary, nullable=False),  # fp32, the taggers' penultimate layers (model/analysis.py)
)

scans = Table(
    "scans", metadata,
    Column("id", Integer, scan_id_seq, primary_key=True, server_default=scan_id_seq.next_value()),
    Column("started_at", DateTime), Column("finished_at", DateTime),
    Column("roots", Text),  # JSON list
    Column("profile", String(64)),
    Column("state", String(16)),  # running | finished | interrupted
    Column("files_total", Integer), Column("files_done", Integer),
    Column("audio_seconds", Double),
    Column("summary", Text),  # JSON counts
    Column("heartbeat", DateTime),
)

errors = Table(  # one row per file that failed, with a reason fit to show a user
    "errors", metadata,
    Column("path", Text, primary_key=True),
    Column("root", Text),
    Column("stage", String(16)),  # discover | tags | decode | encode | caption
    Column("reason", Text, nullable=False),
    Column("size", BigInteger), Column("mtime", Double),
    Column("scan_id", Integer),
    Column("failed_at", DateTime),
)

meta = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text))

_LOCK_WORDS = ("lock", "Conflicting", "being used", "Could not set lock",
               "with a different configuration")  # another connection of this process holds it otherwise


def _is_lock_error(exc: BaseException) -> bool:
    return any(w in str(exc) for w in _LOCK_WORDS)


def file_stamp(*paths: Path) -> tuple:
    """Identity of files as the OS sees them; any write to them changes it."""
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


class Catalog:
    """Short-lived connections to the catalog file; `write()` and `read()` retry while another process holds it."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._checked = False

    def stamp(self) -> str:
        """The catalog's change marker: the file and its write-ahead log as the OS sees them. Every
        committed write changes it, and reading it costs two stat calls, so a reader checks it before
        each use of anything it derived from the catalog (the keyword snapshot's copy of the changes,
        cached facets, the UI's cached searches)."""
        return json.dumps(file_stamp(self.path, self.path.with_name(self.path.name + ".wal")))

    def _engine(self, read_only: bool) -> Engine:
        return create_engine(f"duckdb:///{self.path}", poolclass=NullPool,
                             connect_args={"read_only": read_only})

    @contextlib.contextmanager
    def _connect(self, read_only: bool) -> Iterator[Connection]:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.01
        while True:
            engine = self._engine(read_only)
            try:
                conn = engine.connect()
            except Exception as exc:
                engine.dispose()
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            try:
                yield conn
            finally:
                conn.close()
                engine.dispose()
            return

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction: everything inside commits together or not at all."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect(read_only=False) as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection; the first one per Catalog checks the schema version."""
        if not self.path.exists():
            raise FileNotFoundError(f"no catalog at {self.path}: run `python -m indexer scan PATH` first")
        with self._connect(read_only=True) as conn:
            if not self._checked:
                found = self._version(conn)
                if found != SCHEMA_VERSION:
                    raise CatalogError(f"catalog {self.path} has schema version {found}, this code reads "
                                       f"{SCHEMA_VERSION}: run `python -m indexer verify --repair` to migrate it")
                self._checked = True
            yield conn

    def _version(self, conn: Connection) -> int | None:
        """The schema version; None for an empty file; CatalogError for a DuckDB file that is no catalog."""
        tables = set(conn.execute(text("SELECT table_name FROM information_schema.tables")).scalars())
        found = schema_version(conn) if "meta" in tables else None
        if tables and found is None:
            raise CatalogError(f"{self.path} is a DuckDB file but not a catalog (no schema_version); "
                               "point --data-dir at another folder")
        return found

    def _refuse_newer(self, found: int | None) -> int | None:
        if found is not None and found > SCHEMA_VERSION:
            raise CatalogError(f"catalog {self.path} has schema version {found}, newer than this code "
                               f"({SCHEMA_VERSION}); upgrade musilingo-search")
        return found

    def stored_version(self) -> int | None:
        """The file's schema version, read without the check `read()` makes (for verify and migrations)."""
        with self._connect(read_only=True) as conn:
            return self._version(conn)

    def create(self) -> None:
        """Create the tables, or migrate an older schema in one transaction; refuse unknown or newer files.

        The version is read over a read-only connection first, so a refused file is never opened for writing.
        """
        found = self._refuse_newer(self.stored_version() if self.path.exists() else None)
        if found != SCHEMA_VERSION:
            with self.write() as conn:
                found = self._refuse_newer(self._version(conn))  # again, now that we hold the file
                if found is None:
                    metadata.create_all(conn)
                    conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                else:
                    for version in range(found, SCHEMA_VERSION):
                        MIGRATIONS[version](conn)
                    metadata.create_all(conn)
                    conn.execute(meta.update().where(meta.c.key == "schema_version")
                                 .values(value=str(SCHEMA_VERSION)))
        self._checked = True


class CatalogError(RuntimeError):
    """The catalog file cannot be used as it is; the message says what to do."""


def schema_version(conn: Connection) -> int | None:
    found = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    return None if found is None else int(found)


def _drop_foreign_keys(conn: Connection) -> None:
    """1 -> 2: recreate the child tables without FOREIGN KEYs, keeping every row (DuckDB cannot drop a constraint)."""
    for table in (tags, embeddings, captions):
        conn.execute(text(f"CREATE TABLE {table.name}__v1 AS SELECT * FROM {table.name}"))
        conn.execute(text(f"DROP TABLE {table.name}"))
        table.create(conn)
        names = ", ".join(c.name for c in table.columns)
        conn.execute(text(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {table.name}__v1"))
        conn.execute(text(f"DROP TABLE {table.name}__v1"))


def _add_columns(conn: Connection, columns: dict) -> None:
    for name, kind in columns.items():
        conn.execute(text(f"ALTER TABLE tracks ADD COLUMN {name} {kind.compile(dialect=conn.dialect)}"))


def _add_analysis_columns(conn: Connection) -> None:
    """2 -> 3: the analysis columns on tracks (the new tables come from create_all)."""
    _add_columns(conn, ANALYSIS_COLUMNS)


def _add_decode_columns(conn: Connection) -> None:
    """3 -> 4: the decode columns on tracks; before version 4 FFmpeg decoded every track."""
    _add_columns(conn, DECODE_COLUMNS)
    conn.execute(text("UPDATE tracks SET decoder = 'ffmpeg'"))


# from version -> the step to the next one
MIGRATIONS = {1: _drop_foreign_keys, 2: _add_analysis_columns, 3: _add_decode_columns}


def generation(conn: Connection) -> int:
    """How many vector-changing writes the catalog has seen (0 for a new one)."""
    found = conn.execute(text("SELECT value FROM meta WHERE key = 'generation'")).scalar()
    return int(found or 0)


def bump_generation(conn: Connection) -> int:
    """Count one more vector-changing write; call inside the write transaction that makes it."""
    value = generation(conn) + 1
    conn.execute(meta.delete().where(meta.c.key == "generation"))
    conn.execute(meta.insert().values(key="generation", value=str(value)))
    return value
