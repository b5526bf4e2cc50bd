"""More like this, blended: the audio index's nearest tracks (track vectors, search/ann.py) re-ranked by
score = MUSICNN_WEIGHT * cos(musicnn) + (1 - MUSICNN_WEIGHT) * cos(track vectors), where both the query
and the track have a musicnn embedding of the same analysis version (`analyses.embedding`); any other
track keeps its track-vector cosine.
"""

from __future__ import annotations

import duckdb
import numpy as np

# The track vectors (model/encoder.py: the profile's encoder tokens, averaged) follow timbre and texture
# frame by frame; musicnn's penultimate layers (model/analysis.py) summarise what its taggers were trained
# to tell apart: genre, instruments, mood, vocals. Neither has been measured better at "more like this" on
# this project's data, so they count alike until a listening test says otherwise.
MUSICNN_WEIGHT = 0.5
# How many of the audio index's nearest tracks the blend re-ranks: a track musicnn hears as near that the
# track vectors put farther than this is not seen (a FAISS index of the musicnn embeddings would let it
# in; the scan does not build one). 200 blobs of 1.6 KB are read in a few milliseconds.
LIKE_DEPTH = 200


def like_sql(filters_sql: str) -> str:
    """Audio neighbours that pass the filters: same encoder version only, the query track excluded."""
    return f"""WITH sim AS (SELECT unnest($ids::INTEGER[]) AS track_id, unnest($sims::DOUBLE[]) AS audio)
    SELECT t.id, sim.audio FROM sim JOIN tracks t ON t.id = sim.track_id JOIN embeddings e ON e.track_id = t.id
    WHERE t.status = 'done' AND e.encoder_version = $encoder_version AND t.id <> $exclude {filters_sql}
    ORDER BY sim.audio DESC, t.id LIMIT $limit"""


def unit(blob: bytes | np.ndarray | None) -> np.ndarray | None:
    """A stored fp32 embedding as a unit vector; None when there is none or it is all zeros."""
    if blob is None:
        return None
    vec = np.frombuffer(blob, dtype=np.float32) if isinstance(blob, bytes) else np.asarray(blob, np.float32)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 and np.isfinite(norm) else None


def musicnn_vectors(db: duckdb.DuckDBPyConnection, ids: list[int], version: str) -> dict[int, np.ndarray]:
    """The unit musicnn embeddings of the tracks `ids` that were analysed with `version` (ids are ints,
    inlined; one equality probe each, as search/rank.py's `hydrate_sql` reads captions)."""
    if not ids:
        return {}
    probes = " UNION ALL ".join(f"SELECT track_id, embedding FROM analyses WHERE track_id = {int(i)} "
                                "AND analysis_version = $version" for i in ids)
    found = {int(i): unit(blob) for i, blob in db.execute(probes, {"version": version}).fetchall()}
    return {i: v for i, v in found.items() if v is not None}


def blend(rows: list[dict], query: np.ndarray | None, vectors: dict[int, np.ndarray],
          weight: float | None = None) -> list[dict]:
    """`rows` (id, audio) with their `musicnn` cosine (None without one) and blended `score`, best first;
    `weight` is the musicnn cosine's share of the score, MUSICNN_WEIGHT when None (read at each call;
    bench/bench_answers.py compares 0, 0.5 and 1)."""
    weight = MUSICNN_WEIGHT if weight is None else weight
    out = []
    for row in rows:
        vec = vectors.get(row["id"]) if query is not None else None
        sim = None if vec is None or vec.shape != query.shape else float(vec @ query)
        score = row["audio"] if sim is None else weight * sim + (1 - weight) * row["audio"]
        out.append({**row, "musicnn": sim, "score": float(score)})
    return sorted(out, key=lambda r: (-r["score"], r["id"]))


def reason(why: str, row: dict) -> str:
    """"sounds like track 5 (audio similarity 0.83, musicnn similarity 0.91)"."""
    heard = "" if row["musicnn"] is None else f", musicnn similarity {row['musicnn']:.2f}"
    return f"{why} (audio similarity {row['audio']:.2f}{heard})"
