"""The search tests' library: N_TRACKS done tracks written row by row with the synthetic corpus's
attribute captions embedded by the real text model, what the analysis heard in each (tempo, key, vocals,
genre, auto-tags and musicnn embedding, made up from the track's index: `analysis_of`; every eighth track
is not analysed), the real FAISS index and keyword snapshot the scan writes (catalog.vectors,
catalog.keywords), and fixtures over it (`library`, `engine`, `scratch`), which tests/conftest.py
registers for every test module; a module-scoped fixture is built once per module."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, insert, update

from catalog.keywords import refresh_keywords
from catalog.store import Catalog, analyses, auto_tags, bump_generation, captions, generation, tags, tracks
from catalog.vectors import build_index, save_index
from model.analysis import TAGGERS
from model.settings import load_settings
from model.tempo_key import PITCH_CLASSES
from search import Filters, SearchEngine
from search.types import tonic_name
from training.synth import clip_record

ARTISTS = ("Aurora Fields", "The Quiet Machines", "Nadia Okonkwo", "Beyoncé Tribute Band")
TITLE_WORDS = ("Velvet", "Harbor", "Lantern", "Copper", "Meadow", "Signal", "Ember", "Orchid", "Tundra",
               "Marble", "Falcon", "Prism")
FORMATS = ("mp3", "flac", "ogg")
N_TRACKS = 48
PIPELINE = "p-test"
ANALYSIS = "a-test"
EMBEDDING_DIM = 400  # both taggers' penultimate layers (model/analysis.py)
# The tag that says each auto_genre (model/describe.py's GENRES), and the vocal and instrumental tags.
GENRE_TAGS = {"electronic": ("MTT_musicnn", "electronic"), "jazz": ("MSD_musicnn", "jazz"),
              "rock": ("MSD_musicnn", "rock"), "ambient": ("MTT_musicnn", "ambient")}
VOCALS_TAGS = {"vocal": ("MSD_musicnn", "female vocalists"), "instrumental": ("MTT_musicnn", "no vocals")}


def track_row(i: int) -> dict:
    artist = ARTISTS[i % len(ARTISTS)]
    album_no = (i // len(ARTISTS)) % 3
    root = "/music/main" if i % 3 else "/music/extra"
    title = f"{TITLE_WORDS[i % 12]} {TITLE_WORDS[(i * 5 + 1) % 12]} {i}"
    return dict(path=f"{root}/{artist}/Album {album_no}/{i:02d} {title}.{FORMATS[i % 3]}", root=root,
                size=1000 + i, mtime=1.0, format=FORMATS[i % 3], duration=60.0 + 5 * i, title=title,
                artist=artist, album=f"{artist.split()[0]} Album {album_no}", genre=("Jazz", "Rock", "Ambient")[i % 3],
                year=2000 + i % 20, track_no=i % 4 + 1, status="done", encoder_version="e-test",
                pipeline_version=PIPELINE, profile="lite", indexed_at=dt.datetime(2024, 1, 1) + dt.timedelta(minutes=i))


def analysis_of(i: int) -> tuple[dict, list[tuple[str, str, float]]] | None:
    """What the analysis heard in track i, as track columns and (tagger, tag, probability) auto-tags; None
    for every eighth track, not analysed. Tempo runs over 60-180 BPM, "techno" is heard with a probability
    from 0.05 to 0.86, "Hip-Hop" on every eleventh track, a faint "piano" on every fourth."""
    if i % 8 == 7:
        return None
    genre = ("electronic", "jazz", "rock", "ambient", None)[i % 5]
    vocals = ("vocal", "instrumental", None)[(i // 3) % 3]
    columns = dict(bpm=60.0 + (i * 37) % 121, tonic=PITCH_CLASSES[(i * 7) % 12], mode=("major", "minor")[(i // 2) % 2],
                   vocals=vocals, auto_genre=genre, analysis_version=ANALYSIS)
    heard = [("MTT_musicnn", "techno", round(0.05 + (i % 10) * 0.09, 2))]
    heard += [(*GENRE_TAGS[genre], 0.6 + (i % 4) * 0.1)] if genre else []
    heard += [(*VOCALS_TAGS[vocals], 0.7)] if vocals else []
    heard += [("MSD_musicnn", "Hip-Hop", 0.55)] if i % 11 == 0 else []
    heard += [("MTT_musicnn", "piano", 0.06)] if i % 4 == 0 else []
    return columns, heard


def musicnn_embedding(i: int) -> np.ndarray:
    """Track i's musicnn embedding: non-negative, as the taggers' ReLU layers are."""
    return np.abs(np.random.default_rng(1000 + i).standard_normal(EMBEDDING_DIM)).astype(np.float32)


def write_analysis(conn, track_id: int, columns: dict, heard: list[tuple[str, str, float]],
                   embedding: np.ndarray) -> None:
    """A track's analysis as the scan's writer stores one: the track's columns, its auto-tags, its row of
    `analyses` (the tags over time left empty: search reads none)."""
    conn.execute(update(tracks).where(tracks.c.id == track_id).values(**columns))
    for table in (auto_tags, analyses):
        conn.execute(delete(table).where(table.c.track_id == track_id))
    for tagger, tag, p in heard:
        conn.execute(insert(auto_tags).values(track_id=track_id, tagger=tagger, tag=tag, probability=p))
    conn.execute(insert(analyses).values(track_id=track_id, analysis_version=columns["analysis_version"],
                                         taggers=json.dumps(TAGGERS), patch_seconds="[]", probabilities=b"",
                                         embedding=embedding.astype(np.float32).tobytes()))


def write_tracks(catalog: Catalog, rows: list[dict], texts: list[str], vecs: np.ndarray) -> list[int]:
    ids = []
    with catalog.write() as conn:
        for row, text, vec in zip(rows, texts, vecs, strict=True):
            tid = conn.execute(insert(tracks).values(**row).returning(tracks.c.id)).scalar_one()
            conn.execute(insert(captions).values(track_id=tid, pipeline_version=PIPELINE, text=text,
                                                 text_vector=vec.astype(np.float32).tobytes()))
            ids.append(tid)
        bump_generation(conn)  # as the scan's writer does with every batch that changes tracks
    return ids


def save_text_index(catalog: Catalog, data_dir: Path, ids: list[int], vecs: np.ndarray, kind: str) -> None:
    with catalog.read() as conn:
        gen = generation(conn)
    save_index(data_dir, "text", build_index(np.array(ids), vecs, kind), gen, None)


@pytest.fixture(scope="module")
def library(tmp_path_factory, text_embedder):
    """A data dir with N_TRACKS done tracks, a flat text index and a fresh keyword snapshot."""
    data = tmp_path_factory.mktemp("search-engine") / "data"
    catalog = Catalog(data / "catalog.duckdb")
    catalog.create()
    rows = [track_row(i) for i in range(N_TRACKS)]
    records = [clip_record(seed=11, index=i, seconds=10.0) for i in range(N_TRACKS)]
    texts = [r["caption"] for r in records]
    vecs = text_embedder.encode(texts)
    ids = write_tracks(catalog, rows, texts, vecs)
    heard = [analysis_of(i) for i in range(N_TRACKS)]
    with catalog.write() as conn:
        conn.execute(insert(tags).values(track_id=ids[7], key="composer", value="Zbigniew Quartzfield"))
        for i, (tid, found) in enumerate(zip(ids, heard, strict=True)):
            if found:
                write_analysis(conn, tid, *found, musicnn_embedding(i))
    save_text_index(catalog, data, ids, vecs, "flat")
    refresh_keywords(catalog)
    unheard = (dict.fromkeys(("bpm", "tonic", "mode", "vocals", "auto_genre")), [])
    rows = [{**r, "id": tid, "caption": t, "labels": rec["labels"], **(found or unheard)[0],
             "auto_tags": (found or unheard)[1]}
            for r, tid, t, rec, found in zip(rows, ids, texts, records, heard, strict=True)]
    return data, rows, vecs


def make_engine(data: Path, text_embedder) -> SearchEngine:
    return SearchEngine(load_settings(data_dir=data), text_embedder=text_embedder)


@pytest.fixture(scope="module")
def engine(library, text_embedder) -> SearchEngine:
    return make_engine(library[0], text_embedder)


@pytest.fixture
def scratch(library, tmp_path) -> Path:
    """A private copy of the library's data dir, for tests that change it."""
    shutil.copytree(library[0], tmp_path / "data")
    return tmp_path / "data"


def passes(row: dict, f: Filters) -> bool:
    return ((f.artist is None or row["artist"].lower() == f.artist.lower())
            and (f.album is None or row["album"].lower() == f.album.lower())
            and (f.genre is None or row["genre"].lower() == f.genre.lower())
            and (f.year_min is None or row["year"] >= f.year_min)
            and (f.year_max is None or row["year"] <= f.year_max)
            and (f.min_duration is None or row["duration"] >= f.min_duration)
            and (f.max_duration is None or row["duration"] <= f.max_duration)
            and (f.format is None or row["format"] == f.format.lower().lstrip("."))
            and (f.root is None or row["root"] == f.root or row["path"].startswith(f.root.rstrip("/") + "/"))
            and (f.bpm_min is None or (row["bpm"] is not None and row["bpm"] >= f.bpm_min))
            and (f.bpm_max is None or (row["bpm"] is not None and row["bpm"] <= f.bpm_max))
            and (f.tonic is None or row["tonic"] == tonic_name(f.tonic))
            and all(getattr(f, c) is None or (row[c] or "").lower() == getattr(f, c).strip().lower()
                    for c in ("mode", "vocals", "auto_genre")))


FILTER_CASES = [
    Filters(artist="aurora fields"),
    Filters(genre="ROCK", year_min=2005, year_max=2012),
    Filters(min_duration=100, max_duration=200, format=".FLAC"),
    Filters(root="/music/extra"),
    Filters(root="/music/main/Nadia Okonkwo"),
    Filters(album="Aurora Album 1", artist="Aurora Fields"),
    Filters(year_min=2030),
]
# Filters on what the analysis heard, each passed by some tracks and not others.
ANALYSIS_FILTER_CASES = [
    Filters(bpm_min=100, bpm_max=140),
    Filters(tonic="a", mode="minor"),
    Filters(tonic="Bb"),
    Filters(vocals="instrumental", genre="Jazz"),
    Filters(auto_genre="JAZZ", bpm_max=150),
    Filters(mode="major", vocals="vocal", root="/music/main"),
]
