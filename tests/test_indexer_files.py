"""Indexer parts that need no model: tags, the walk, fingerprints, the schema migration and FAISS files."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import mutagen
import numpy as np
import pytest
from mutagen import id3
from sqlalchemy import delete, func, select

from catalog.store import SCHEMA_VERSION, Catalog, CatalogError, captions, embeddings, tags, tracks
from catalog.vectors import (
    IndexFileError,
    IndexReader,
    build_index,
    id_checksum,
    index_ids,
    index_kind,
    index_path,
    load_index,
    read_manifest,
    save_index,
)
from indexer.discover import fingerprint, walk
from indexer.tags import clean_text, read_tags

TAGS = {"title": "Blue Hour", "artist": "Ann Arbor", "album": "Dusk", "genre": "Jazz", "date": "1999-04-01",
        "track": "7/12"}


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff", ".wma"])
def test_tags_are_read_from_every_format(audio_library, suffix):
    path = audio_library(f"Folder Artist/Folder Album/01 File Title{suffix}", seconds=1.0, tags=TAGS)
    t = read_tags(str(path), str(audio_library.root))
    assert (t.title, t.artist, t.album, t.genre, t.year, t.track_no) == ("Blue Hour", "Ann Arbor", "Dusk", "Jazz", 1999, 7)
    assert t.duration == pytest.approx(1.0, abs=0.1)
    assert t.raw  # every readable tag is kept for keyword search


def test_untagged_files_take_their_tags_from_the_folders(audio_library):
    root = str(audio_library.root)
    t = read_tags(str(audio_library("Nina Simone/Pastel Blues/CD1/03 - Be_My_Husband.flac", 1.0)), root)
    assert (t.artist, t.album, t.track_no, t.title) == ("Nina Simone", "Pastel Blues", 3, "Be My Husband")
    t = read_tags(str(audio_library("Miles Davis - So What.wav", 1.0)), root)
    assert (t.artist, t.album, t.title) == ("Miles Davis", None, "So What")


def test_garbage_tags_are_cleaned_and_bounded(audio_library):
    path = audio_library("Real Artist/Real Album/02 Fallback.mp3", seconds=1.0)
    f = mutagen.File(path)
    if f.tags is None:
        f.add_tags()
    f.tags.add(id3.TIT2(encoding=3, text=["\x00Bad\x07 Title\n\tpart two\ufeff"]))
    f.tags.add(id3.TPE1(encoding=3, text=["BeyoncÃ©"]))  # UTF-8 that went through Latin-1
    f.tags.add(id3.TALB(encoding=3, text=["x" * 100_000]))
    f.tags.add(id3.TRCK(encoding=3, text=["4294967295"]))
    f.tags.add(id3.TDRC(encoding=3, text=["0000"]))
    f.tags.add(id3.APIC(encoding=3, mime="image/png", type=3, desc="cover", data=b"\x89PNG" + bytes(5000)))
    f.save()
    t = read_tags(str(path), str(audio_library.root))
    assert t.title == "Bad Title part two"
    assert t.artist == "Beyoncé"
    assert t.album == "x" * 300
    assert t.track_no == 2  # the absurd tag is dropped, the file name fills in
    assert t.year is None
    assert not any(k.upper().startswith("APIC") for k in t.raw)
    assert all(len(v) <= 1000 for v in t.raw.values())
    assert clean_text("Caf\udcc3\udca9 ok") == "Café ok"  # undecodable file-name bytes
    assert clean_text(" \x01\x02 ") is None


def test_unparseable_tags_fall_back_to_the_path(audio_library):
    path = audio_library.root / "Band" / "Record" / "04 Broken Header.mp3"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + os.urandom(3000))
    t = read_tags(str(path), str(audio_library.root))
    assert (t.artist, t.album, t.track_no, t.title) == ("Band", "Record", 4, "Broken Header")


def test_walk_follows_links_once_and_skips_what_is_not_audio(tmp_path):
    lib = tmp_path / "lib"
    (lib / "a" / "b").mkdir(parents=True)
    (lib / "a" / "b" / "x.flac").write_bytes(b"1")
    (lib / "a" / "b" / "loop").symlink_to(lib / "a")  # a loop back to a parent
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "y.MP3").write_bytes(b"22")
    (lib / "linked").symlink_to(outside)
    (lib / "again").symlink_to(outside)  # the same folder twice: walked once
    (lib / "alias.flac").symlink_to(lib / "a" / "b" / "x.flac")  # the same file twice: indexed once
    (lib / ".hidden").mkdir()
    (lib / ".hidden" / "z.mp3").write_bytes(b"3")
    (lib / "notes.txt").write_text("not audio")
    (lib / "dangling.ogg").symlink_to(tmp_path / "nowhere.ogg")
    os.mkfifo(lib / "pipe.mp3")
    with open(os.fsencode(lib) + b"/caf\xe9.mp3", "wb") as f:  # a Latin-1 name from an old disk
        f.write(b"4")
    found = walk([str(lib), str(tmp_path / "unmounted")])
    paths = [os.path.relpath(e.path, lib) for e in found.files]
    assert sorted(paths) in (["a/b/x.flac", "again/y.MP3"], ["a/b/x.flac", "linked/y.MP3"],
                             ["again/y.MP3", "alias.flac"], ["alias.flac", "linked/y.MP3"])
    assert found.roots == [str(lib)]
    reasons = {os.path.basename(f.path): f.reason for f in found.failures}
    assert reasons["dangling.ogg"] == "broken symbolic link: No such file or directory"
    assert reasons["unmounted"].startswith("library folder unavailable")
    assert reasons["pipe.mp3"].startswith("not a regular file")
    assert reasons["caf\\xe9.mp3"] == "name is not valid UTF-8: rename it to index it"


def test_fingerprint_is_cheap_and_content_based(tmp_path):
    big = tmp_path / "big.flac"
    with open(big, "wb") as f:  # sparse 2 GB: only three 64 KiB blocks are read
        f.truncate(2 << 30)
    fp = fingerprint(str(big), big.stat().st_size)
    copy = tmp_path / "moved.flac"
    os.link(big, copy)
    assert fingerprint(str(copy), copy.stat().st_size) == fp
    with open(big, "r+b") as f:
        f.seek(1 << 30)
        f.write(b"changed in the middle")
    assert fingerprint(str(big), big.stat().st_size) != fp


def _v1_catalog(path: Path, version: int = 1) -> None:
    """A catalog as schema version 1 wrote it: child tables with FOREIGN KEYs to tracks."""
    con = duckdb.connect(str(path))
    con.execute("""
        CREATE SEQUENCE track_id_seq; CREATE SEQUENCE scan_id_seq;
        CREATE TABLE tracks (id INTEGER PRIMARY KEY DEFAULT nextval('track_id_seq'), path TEXT NOT NULL UNIQUE,
          root TEXT NOT NULL, size BIGINT NOT NULL, mtime DOUBLE NOT NULL, fingerprint VARCHAR(64),
          format VARCHAR(16), duration DOUBLE, indexed_seconds DOUBLE, title TEXT, artist TEXT, album TEXT,
          album_artist TEXT, genre TEXT, year INTEGER, track_no INTEGER, status VARCHAR(16) NOT NULL DEFAULT 'pending',
          encoder_version VARCHAR(32), pipeline_version VARCHAR(32), profile VARCHAR(64), indexed_at TIMESTAMP);
        CREATE TABLE tags (track_id INTEGER REFERENCES tracks(id), key VARCHAR(64), value TEXT,
          PRIMARY KEY (track_id, key));
        CREATE TABLE embeddings (track_id INTEGER PRIMARY KEY REFERENCES tracks(id), encoder_version VARCHAR(32) NOT NULL,
          n_tokens INTEGER NOT NULL, dim INTEGER NOT NULL, tokens BLOB NOT NULL, vector BLOB NOT NULL);
        CREATE TABLE captions (track_id INTEGER REFERENCES tracks(id), pipeline_version VARCHAR(32), text TEXT NOT NULL,
          token_ids TEXT, text_vector BLOB, created_at TIMESTAMP, PRIMARY KEY (track_id, pipeline_version));
        CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT);
        INSERT INTO tracks (path, root, size, mtime, status) VALUES ('/m/a.flac', '/m', 1, 1.0, 'done');
        INSERT INTO tags VALUES (1, 'title', 'A');
        INSERT INTO embeddings VALUES (1, 'e', 1, 2, '\\x00\\x00\\x00\\x00'::BLOB, '\\x00'::BLOB);
        INSERT INTO captions VALUES (1, 'p', 'a caption', '[1]', NULL, NULL);
    """)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(version)])
    con.close()


def test_an_old_catalog_is_migrated_not_silently_used(tmp_path):
    path = tmp_path / "catalog.duckdb"
    _v1_catalog(path)
    catalog = Catalog(path)
    with pytest.raises(CatalogError, match="schema version 1"):
        with catalog.read():
            pass
    catalog.create()
    assert catalog.stored_version() == SCHEMA_VERSION
    with Catalog(path).read() as conn:
        assert conn.execute(select(captions.c.text)).scalar() == "a caption"
        assert conn.execute(select(tags.c.value)).scalar() == "A"
        # version 3's analysis columns: empty, so the next scan analyses the track
        assert conn.execute(select(tracks.c.analysis_version, tracks.c.bpm, tracks.c.tonic)).one() == (None, None, None)
        # version 4's decode columns: FFmpeg decoded every track before there was another decoder
        assert conn.execute(select(tracks.c.decoder, tracks.c.header_duration)).one() == ("ffmpeg", None)
    with catalog.write() as conn:  # what version 1 could not do: drop a track with its child rows
        for table in (tags, embeddings, captions):
            conn.execute(delete(table).where(table.c.track_id == 1))
        conn.execute(delete(tracks).where(tracks.c.id == 1))
    with catalog.read() as conn:
        assert conn.execute(select(func.count()).select_from(tracks)).scalar() == 0


def test_a_newer_or_foreign_file_is_refused(tmp_path):
    _v1_catalog(tmp_path / "new.duckdb", version=SCHEMA_VERSION + 1)
    with pytest.raises(CatalogError, match="newer than this code"):
        Catalog(tmp_path / "new.duckdb").create()
    con = duckdb.connect(str(tmp_path / "other.duckdb"))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(CatalogError, match="not a catalog"):
        Catalog(tmp_path / "other.duckdb").create()


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_build_index_finds_each_vector_by_its_track_id(kind):
    vecs, ids = _unit(300, 32), np.arange(1000, 1300)
    index = build_index(ids, vecs, kind)
    assert index_kind(index) == kind
    _, found = index.search(vecs[:20], 1)
    assert (found[:, 0] == ids[:20]).mean() >= 0.95
    assert index_kind(build_index(ids, vecs, "auto", threshold=300)) == "hnsw"
    assert index_kind(build_index(ids, vecs, "auto", threshold=301)) == "flat"


def test_saved_index_round_trips_and_corruption_is_detected(tmp_path):
    ids, vecs = np.array([5, 3, 9]), _unit(3, 16)
    manifest = save_index(tmp_path, "audio", build_index(ids, vecs), catalog_generation=4, scan_id=2)
    assert (manifest.count, manifest.dim, manifest.kind, manifest.generation) == (3, 16, "flat", 4)
    assert manifest.id_checksum == id_checksum([3, 5, 9])
    index, loaded = load_index(tmp_path, "audio", gpu=False)
    assert loaded == manifest and sorted(index_ids(index)) == [3, 5, 9]
    assert not list((tmp_path / "faiss").glob(".*tmp"))  # no temporary files left behind
    data = bytearray(index_path(tmp_path, "audio").read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_path(tmp_path, "audio").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="does not match its manifest"):
        load_index(tmp_path, "audio")
    with pytest.raises(IndexFileError, match="no text index"):
        load_index(tmp_path, "text")


def test_reader_reloads_when_the_writer_saves(tmp_path):
    save_index(tmp_path, "text", build_index([1], _unit(1, 8)), 1, 1)
    reader = IndexReader(tmp_path, "text", gpu=False)
    first, _ = reader.get()
    assert reader.get()[0] is first  # unchanged: no reload
    save_index(tmp_path, "text", build_index([1, 2], _unit(2, 8)), 2, 1)
    index, manifest = reader.get()
    assert index.ntotal == 2 and manifest.generation == 2 == read_manifest(tmp_path, "text").generation
