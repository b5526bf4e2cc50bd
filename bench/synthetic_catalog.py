"""Synthetic catalogs for bench/bench_search.py: tracks with Zipf-distributed caption words and five raw
tags each, written straight into a real DuckDB catalog; 384-d text vectors clustered around the real MiniLM
embeddings of synthetic captions; the bench's query texts; and a working copy of a data dir kept from an
earlier run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from catalog.keywords import refresh_keywords
from catalog.store import Catalog, generation
from catalog.vectors import choose_kind

DIM = 384
N_CENTRES = 2000
NOISE = 0.6  # per-coordinate spread around a centre, relative to the centre's; gives cosines of ~0.4-0.8
# A caption vocabulary ranked by frequency: generic caption words first, then music words, then a long
# tail. With 22 draws per caption from a Zipf law over it, "piano" appears in about one caption in ten
# and the generic words in most, as in real model-written captions.
GENERIC_WORDS = ("song music track features sound sounds melody instrumental recording piece style mood "
                 "tempo rhythm played playing upbeat background tone texture").split()
MUSIC_WORDS = (
    "piano strings brass woodwind guitar organ synth violin cello trumpet saxophone flute bass drums "
    "percussion choir vocals slow fast medium calm sad happy energetic tense melancholic joyful "
    "peaceful dark bright warm ambient jazz rock pop electronic latin classical folk blues soul funk "
    "major minor key chord harmony groove beat backbeat waltz dense sparse soft loud "
    "gentle driving dreamy lush minimal acoustic electric distorted reverb echo solo ensemble orchestra "
    "quartet lead line arpeggio riff swing shuffle ballad anthem lullaby march hymn nocturne techno").split()
VOCABULARY = GENERIC_WORDS + MUSIC_WORDS + [f"tail{i}" for i in range(5000)]
QUERIES = ["calm piano", "energetic rock with drums", "sad strings in a minor key", "dreamy ambient synth",
           "fast jazz saxophone solo", "gentle acoustic guitar ballad", "dark electronic groove",
           "happy latin percussion", "lush orchestra with choir", "slow blues guitar", "Artist 42",
           "title 777", "loud distorted riff", "soft lullaby", "warm soul vocals", "minimal techno beat"]
GENRES = ("Rock", "Pop", "Jazz", "Classical", "Electronic", "Ambient", "Latin", "Folk", "Blues", "Soul")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        pick = centres[rng.integers(0, len(centres), m)]
        out[start:start + m] = unit(pick + NOISE * rng.standard_normal((m, DIM)).astype(np.float32) / np.sqrt(DIM))
    return out


def make_catalog(data: Path, n: int, rng: np.random.Generator) -> None:
    """n done tracks with synthetic tags and captions, written straight through DuckDB in bulk."""
    catalog = Catalog(data / "catalog.duckdb")
    catalog.create()
    add_tracks(catalog, 1, n, rng, "2024-01-01")


def add_tracks(catalog: Catalog, first_id: int, n: int, rng: np.random.Generator, indexed_at: str) -> None:
    """n more done tracks, ids from `first_id`, in one transaction (the generation is not bumped)."""
    import pyarrow as pa

    weights = 1.0 / np.arange(1, len(VOCABULARY) + 1)
    words = np.array(VOCABULARY)[rng.choice(len(VOCABULARY), size=(n, 22), p=weights / weights.sum())]
    texts = [" ".join(row) for row in words]
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    docs = pa.table({
        "id": ids, "caption": texts,
        "artist": [f"Artist {i}" for i in rng.integers(0, max(10, n // 50), n)],
        "genre": np.array(GENRES)[rng.integers(0, len(GENRES), n)],
        "year": rng.integers(1960, 2025, n).astype(np.int32),
        "duration": rng.uniform(30, 600, n),
    })
    with catalog.write() as conn:
        db = conn.connection.driver_connection
        db.register("docs", docs)
        db.execute(f"""INSERT INTO tracks (id, path, root, size, mtime, format, duration, title, artist, album,
                          genre, year, track_no, status, encoder_version, pipeline_version, profile, indexed_at)
                      SELECT id, '/bench/' || artist || '/' || id || '.mp3', '/bench', 1000, 0,
                             ['mp3', 'flac', 'ogg', 'm4a', 'opus'][1 + id % 5], duration, 'Title ' || id,
                             artist, artist || ' Album ' || (id % 7), genre, year, 1 + id % 12, 'done', 'e', 'p',
                             'bench', TIMESTAMP '{indexed_at}'
                      FROM docs""")
        db.execute("INSERT INTO captions (track_id, pipeline_version, text) SELECT id, 'p', caption FROM docs")
        db.execute("""INSERT INTO tags (track_id, key, value) SELECT id, k, v FROM (
                          SELECT id, unnest(['title', 'artist', 'genre', 'date', 'comment']) AS k,
                                 unnest(['Title ' || id, artist, genre, year::VARCHAR,
                                         'ripped from ' || ['vinyl', 'cd', 'tape'][1 + id % 3]]) AS v FROM docs)""")
        db.unregister("docs")


def caption_centres(embedder, rng: np.random.Generator) -> np.ndarray:
    """Unit embeddings of N_CENTRES synthetic captions: where the synthetic vectors cluster."""
    picks = np.array(MUSIC_WORDS)[rng.integers(0, len(MUSIC_WORDS), (N_CENTRES, 8))]
    return embedder.encode([" ".join(row) for row in picks])


def reuse_data_dir(source: Path, workdir: Path) -> dict:
    """A working copy of a kept data dir (catalog and keyword snapshot copied, text index linked)."""
    from catalog.keywords import keywords_path, snapshot_matches

    src = Catalog(source / "catalog.duckdb")
    with src.read() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM tracks WHERE status = 'done'")).scalar())
    data = workdir / f"reused-n{n}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    shutil.copy2(src.path, data / "catalog.duckdb")
    if keywords_path(src).is_file():
        shutil.copy2(keywords_path(src), data / keywords_path(src).name)
    catalog = Catalog(data / "catalog.duckdb")
    with catalog.read() as conn:
        gen = generation(conn)
    # The index files linked, their manifests copied with the catalog's generation: an earlier run's own
    # writes (bench_engine) moved the generation on without changing a track.
    (data / "faiss").mkdir()
    for path in (source / "faiss").iterdir():
        if path.suffix == ".json":
            (data / "faiss" / path.name).write_text(json.dumps({**json.loads(path.read_text()), "generation": gen}))
        else:
            (data / "faiss" / path.name).symlink_to(path.resolve())
    res: dict = {"tracks": n, "auto_kind": choose_kind(n), "reused": str(source), "data": data}
    if not snapshot_matches(catalog):  # missing, or of an older version
        t0 = time.perf_counter()
        refresh_keywords(catalog)
        res["keyword_snapshot_s"] = round(time.perf_counter() - t0, 1)
    return res
