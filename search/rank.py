"""Hybrid ranking: semantic and keyword lists fused by reciprocal rank, plus boosts for named fields.

Everything after the nearest-neighbour search runs as one DuckDB query per search (filters, BM25 from
the keyword snapshot, whole-name matches, both rankings, fusion, the total count and the page), so a
million-track catalog costs one pass over the columns involved rather than a round trip per candidate.
"""

from __future__ import annotations

from indexer.keywords import MIN_NAME_CHARS, NAME_COLUMNS, names_sql, norm_sql

# Reciprocal rank fusion (Cormack, Clarke and Buettcher 2009): score = sum_i W_i / (RRF_K + rank_i).
# Rank fusion needs no calibration between a cosine similarity and a BM25 score, which live on
# unrelated scales; K = 60 is the paper's value and keeps one list's first place from outweighing
# agreement between the two lists.
RRF_K = 60
# Captions are model-written prose: the semantic list finds paraphrases ("melancholic" for "sad") that
# BM25 misses, while BM25 finds names and rare exact words that a sentence embedding blurs. On the
# demo library's attribute queries neither list wins overall (see tests/test_search_quality.py), so
# the two count equally; named fields get their own boost below.
W_SEMANTIC = 1.0
W_KEYWORD = 1.0
# A query that contains a track's whole title, artist or album ("blue horizon", "calm piano by the
# greys") should put that track first even if its caption never says so. The best fused score from the
# two lists is (W_SEMANTIC + W_KEYWORD) / (RRF_K + 1) = 0.033, so title and artist boosts exceed it;
# each is scaled by the share of the query the name covers, so "blue horizon" ranks the title "Blue
# Horizon" above the title "Horizon". Genre only nudges: a genre word is a description, not a name.
NAME_BOOST = {"title": 0.05, "artist": 0.04, "album": 0.03, "genre": 0.01}
# Nearest neighbours taken from the text index per query. Fixed rather than grown with the offset, so
# the candidate set, and so the total and the order, stay the same from one page to the next.
SEMANTIC_DEPTH = 500
# all-MiniLM-L6-v2 gives unrelated music descriptions a cosine of about 0.1-0.3 with a query; below this
# a caption is not evidence of a match, and leaving it out keeps nonsense queries from listing the
# whole library.
SEMANTIC_MIN_SIMILARITY = 0.3
# A term found in more than half the catalog ("song", "music" in model-written captions) says almost
# nothing (its BM25 weight is near zero) yet costs a posting per track; when a query also has rarer
# terms, only those are scored.
COMMON_TERM_SHARE = 0.5
# BM25 ranks beyond this are not ranked one by one: they all count as rank KEYWORD_DEPTH + 1 (worth
# under 1/1,000 each in the fused score) and keep their BM25 order among themselves. A common word can
# match a tenth of a million-track library; ranking all of them exactly would sort 100,000 rows per
# query for differences in the fourth decimal.
KEYWORD_DEPTH = 1000

NAME_FIELDS = ("title", "artist", "album", "genre")
HIT_COLUMNS = ("path", "title", "artist", "album", "genre", "year", "duration", "format", "root")
FRESH_SQL = """SELECT id FROM tracks WHERE status = 'done'
    AND indexed_at > (SELECT coalesce(max_indexed_at, '-infinity'::TIMESTAMP) FROM kw.kw_meta)"""
FRESH_COUNT_SQL = f"SELECT count(*) FROM ({FRESH_SQL})"  # tracks indexed after the keyword snapshot


def word_runs(phrase: str) -> list[str]:
    """Every run of consecutive words of a normalised query: the names it could contain whole."""
    words = phrase.split()
    runs = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    return sorted(r for r in runs if len(r) >= MIN_NAME_CHARS)


def _literals(values: list[str]) -> str:
    """A SQL list of string literals (inlined so DuckDB can prune the sorted name table by zone maps)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "NULL"


def terms_sql(stems: list[str]) -> str:
    """The snapshot's (termid, term, df) of a query's stems, inlined so zone maps find them in the sorted terms."""
    return f"SELECT termid, term, df FROM kw.kw_terms WHERE term IN ({_literals(stems)})"


def _bm25_sql(termids: list[int], stale: bool) -> str:
    """Per-track BM25: the sum of the snapshot's posting weights (term ids are ints: safe to inline)."""
    ids = ", ".join(str(int(t)) for t in termids)
    skip = "AND track_id NOT IN (SELECT id FROM fresh)" if stale else ""
    return f"""SELECT track_id, sum(weight)::DOUBLE AS keyword FROM kw.kw_postings
    WHERE termid IN ({ids}) {skip} GROUP BY track_id"""


def _like_sql(n_words: int, fresh_only: bool) -> str:
    """Substring matching scored by the number of query words found: for tracks the snapshot lacks."""
    hay = "concat_ws(' ', c.text, t.title, t.artist, t.album_artist, t.album, t.genre)"
    count = " + ".join(f"({hay} ILIKE $like{i})::INTEGER" for i in range(n_words))
    scope = "AND t.id IN (SELECT id FROM fresh)" if fresh_only else ""
    return f"""SELECT * FROM (
        SELECT t.id AS track_id, ({count})::DOUBLE AS keyword FROM tracks t
        LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
        WHERE t.status = 'done' {scope}) WHERE keyword > 0"""


def _live_names_sql() -> str:
    """Names of the tracks matched by substring, normalised now (the snapshot does not hold them)."""
    cols = ", ".join(f"{norm_sql('t.' + c)} AS name_{c}" for c in NAME_COLUMNS)
    source = f"(SELECT t.id, {cols} FROM tracks t WHERE t.id IN (SELECT track_id FROM kw_like))"
    return names_sql(source, "id", "name_")


def search_sql(termids: list[int] | None, n_like: int, runs: list[str], filters_sql: str,
               check_tracks: bool, tracks: str) -> str:
    """The ranked page of one search: ids, scores, ranks, name boosts and the total.

    `termids`: the query's terms in the keyword snapshot (None: no snapshot; [] none matched);
    `n_like`: query words matched by substring (all tracks without a snapshot, else tracks indexed
    after it); `runs`: the query's word runs, for whole-name matches; `check_tracks`: join `tracks`
    (the catalog's table, or the snapshot's copy when it is current) for the filters and the track
    status, unneeded, and a scan of every track saved, when there are no filters and the snapshot and
    the text index are current. Parameters: $sem_ids, $sem_sims, $phrase_len, $limit, $offset,
    $like0.. and the filters'.
    """
    snapshot = termids is not None
    stale = snapshot and n_like > 0
    ctes = ["sem AS (SELECT unnest($sem_ids::INTEGER[]) AS track_id, unnest($sem_sims::DOUBLE[]) AS semantic)"]
    keyword_parts, name_parts = [], []
    if stale:
        ctes.append(f"fresh AS ({FRESH_SQL})")
    if snapshot:
        skip = "AND track_id NOT IN (SELECT id FROM fresh)" if stale else ""
        name_parts.append(f"SELECT track_id, field, key FROM kw.kw_names WHERE key IN ({_literals(runs)}) {skip}")
    if termids:
        keyword_parts.append(_bm25_sql(termids, stale))
    if n_like:
        ctes.append(f"kw_like AS ({_like_sql(n_like, fresh_only=snapshot)})")
        keyword_parts.append("SELECT track_id, keyword FROM kw_like")
        name_parts.append(f"SELECT track_id, field, key FROM ({_live_names_sql()}) WHERE key IN ({_literals(runs)})")
    empty = "SELECT NULL::INTEGER AS track_id, {} WHERE false"
    ctes.append("kw AS (" + (" UNION ALL ".join(keyword_parts) or empty.format("NULL::DOUBLE AS keyword")) + ")")
    per_field = ", ".join(f"max(CASE WHEN field = '{f}' THEN length(key) END) AS n_{f}" for f in NAME_FIELDS)
    named = " UNION ALL ".join(name_parts) or empty.format("NULL::VARCHAR AS field, NULL::VARCHAR AS key")
    ctes.append(f"named AS (SELECT track_id, {per_field} FROM ({named}) GROUP BY track_id)")
    # Each track is in each list at most once, so outer joins (against the small semantic and name lists)
    # line the lists up without aggregating the long keyword list again.
    lists = f"""SELECT coalesce(k.track_id, s.track_id, n.track_id) AS id, s.semantic, k.keyword,
               {", ".join(f"n.n_{f}" for f in NAME_FIELDS)}
        FROM kw k FULL JOIN sem s ON s.track_id = k.track_id
        FULL JOIN named n ON n.track_id = coalesce(k.track_id, s.track_id)"""
    if check_tracks:
        lists = f"""SELECT m.* FROM ({lists}) m JOIN {tracks} t ON t.id = m.id
        WHERE t.status = 'done' {filters_sql}"""
    ctes.append(f"cand AS ({lists})")
    ctes.append(f"""kw_top AS (SELECT id, rank() OVER (ORDER BY keyword DESC) AS krank FROM (
        SELECT id, keyword FROM cand WHERE keyword IS NOT NULL ORDER BY keyword DESC, id LIMIT {KEYWORD_DEPTH}))""")
    ctes.append("sem_top AS (SELECT id, rank() OVER (ORDER BY semantic DESC) AS srank FROM cand "
                "WHERE semantic IS NOT NULL)")
    boosts = ", ".join(f"coalesce({NAME_BOOST[f]} * n_{f} / $phrase_len, 0) AS b_{f}" for f in NAME_FIELDS)
    ctes.append(f"""scored AS (
        SELECT cand.id, semantic, keyword, srank,
               CASE WHEN keyword IS NOT NULL THEN coalesce(krank, {KEYWORD_DEPTH + 1}) END AS krank, {boosts}
        FROM cand LEFT JOIN kw_top USING (id) LEFT JOIN sem_top USING (id))""")
    boost_sum = " + ".join(f"b_{f}" for f in NAME_FIELDS)
    ctes.append(f"""page AS (
        SELECT *, coalesce({W_SEMANTIC} / ({RRF_K} + srank), 0) + coalesce({W_KEYWORD} / ({RRF_K} + krank), 0)
                  + {boost_sum} AS score
        FROM scored ORDER BY score DESC, keyword DESC NULLS LAST, id LIMIT $limit OFFSET $offset)""")
    return f"""WITH {", ".join(ctes)}
    SELECT page.*, (SELECT count(*) FROM cand) AS total FROM page
    ORDER BY page.score DESC, page.keyword DESC NULLS LAST, page.id"""


def browse_sql(filters_sql: str, tracks: str) -> str:
    """Empty query: a page of the filtered library in artist, album, track order, and the total."""
    return f"""SELECT t.id, count(*) OVER () AS total FROM {tracks} t WHERE t.status = 'done' {filters_sql}
    ORDER BY lower(t.artist) NULLS LAST, lower(t.album) NULLS LAST, t.track_no NULLS LAST, lower(t.title), t.id
    LIMIT $limit OFFSET $offset"""


def like_sql(filters_sql: str) -> str:
    """Audio neighbours that pass the filters: same encoder version only, the query track excluded."""
    return f"""WITH sim AS (SELECT unnest($ids::INTEGER[]) AS track_id, unnest($sims::DOUBLE[]) AS audio)
    SELECT t.id, sim.audio FROM sim JOIN tracks t ON t.id = sim.track_id JOIN embeddings e ON e.track_id = t.id
    WHERE t.status = 'done' AND e.encoder_version = $encoder_version AND t.id <> $exclude {filters_sql}
    ORDER BY sim.audio DESC, t.id LIMIT $limit"""


def hydrate_sql(ids: list[int], snapshot: bool) -> str:
    """Display columns and current caption of a page of tracks, from the snapshot or the catalog.

    Ids are ints (safe to inline); tracks are found through their primary key. Captions take one
    equality probe per track: an IN list over a million captions reads every caption text in the ids'
    range (tens of milliseconds), while equality is answered from the zone maps of the few row groups
    that hold the ids.
    """
    cols = ", ".join(f"t.{c}" for c in HIT_COLUMNS)
    id_list = ", ".join(str(int(i)) for i in ids)
    if snapshot:  # the snapshot's copy is keyed by id and holds the caption
        return f"SELECT t.id, {cols}, t.caption FROM kw.kw_tracks t WHERE t.id IN ({id_list})"
    probes = " UNION ALL ".join(f"SELECT track_id, pipeline_version, text FROM captions WHERE track_id = {int(i)}"
                                for i in ids)
    return f"""SELECT t.id, {cols}, c.text AS caption
    FROM tracks t LEFT JOIN ({probes}) c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
    WHERE t.id IN ({id_list})"""


def reasons(row: dict, fields_matched: dict[str, list[str]]) -> list[str]:
    """Why a hit matched, in words the UI can show as they are."""
    out = [f"the query names its {f} ({row.get(f) or ''})" for f in NAME_FIELDS if row.get(f"b_{f}")]
    out += [f"{f} contains {', '.join(words)}" for f, words in fields_matched.items()]
    if row.get("semantic") is not None:
        out.append(f"caption meaning similarity {row['semantic']:.2f} (rank {int(row['srank'])})")
    if row.get("keyword") is not None:
        rank = int(row["krank"])
        out.append(f"keyword score {row['keyword']:.2f} (rank {rank if rank <= KEYWORD_DEPTH else f'>{KEYWORD_DEPTH}'})")
    out.append(f"fused score {row['score']:.4f}")
    return out
