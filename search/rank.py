"""Hybrid ranking: semantic and keyword lists fused by reciprocal rank, plus boosts for named fields.

Everything after the nearest-neighbour search runs as one DuckDB query per search (filters, BM25 from
the keyword snapshot, both rankings, fusion, the total count and the page), so a million-track catalog
costs one scan of the columns involved rather than a round trip per candidate.
"""

from __future__ import annotations

from search.fts import BM25_B, BM25_K1, NAME_COLUMNS, norm_sql

# Reciprocal rank fusion (Cormack, Clarke and Buettcher 2009): score = sum_i W_i / (RRF_K + rank_i).
# Rank fusion needs no calibration between a cosine similarity and a BM25 score, which live on
# unrelated scales; K = 60 is the paper's value and keeps one list's first place from outweighing
# agreement between the two lists.
RRF_K = 60
# Captions are model-written prose: the semantic list finds paraphrases ("melancholic" for "sad") that
# BM25 misses, while BM25 finds names and rare exact words that a sentence embedding blurs. Neither
# dominates on descriptive queries, so the two count equally; named fields get their own boost below.
W_SEMANTIC = 1.0
W_KEYWORD = 1.0
# A query that contains a track's whole title, artist or album ("blue horizon", "calm piano by the
# greys") should put that track first even if its caption never says so. The best fused score from the
# two lists is (W_SEMANTIC + W_KEYWORD) / (RRF_K + 1) = 0.033, so title and artist boosts exceed it;
# each is scaled by the share of the query the name covers, so "blue horizon" ranks the title "Blue
# Horizon" above the title "Horizon". Genre only nudges: a genre word is a description, not a name.
NAME_BOOST = {"title": 0.05, "artist": 0.04, "album": 0.03, "genre": 0.01}
MIN_NAME_CHARS = 3  # "a" or "x" as a whole title would be named by nearly every query
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

NAME_FIELDS = ("title", "artist", "album", "genre")


def _share(field_norm: str) -> str:
    """Fraction of the query phrase made up by a field value that occurs in it as whole words."""
    return (f"CASE WHEN length({field_norm}) >= {MIN_NAME_CHARS} AND contains(' ' || q.phrase || ' ', "
            f"' ' || {field_norm} || ' ') THEN length({field_norm}) / length(q.phrase) ELSE 0 END")


def _name(column: str, snapshot: bool) -> str:
    """A track's normalised name: from the snapshot when it holds the track, else computed now."""
    if not snapshot:
        return norm_sql(f"t.{column}")
    return f"CASE WHEN n.track_id IS NOT NULL THEN n.{column} ELSE {norm_sql(f't.{column}')} END"


CAPTION_JOIN = "LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version"
HIT_COLUMNS = ("t.path, t.title, t.artist, t.album, t.genre, t.year, t.duration, t.format, t.root, "
               "c.text AS caption")


def _bm25_sql(termids: list[int]) -> str:
    """Per-track BM25 over the snapshot's postings for the given term ids (ints only: safe to inline)."""
    ids = ", ".join(str(int(t)) for t in termids)
    fields = ", ".join(f"'{f}'" for f in NAME_FIELDS)
    return f"""SELECT p.track_id,
           sum(ln((m.num_docs - d.df + 0.5) / (d.df + 0.5) + 1) * p.tf * {BM25_K1 + 1}
               / (p.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * p.doclen / m.avgdl))) AS keyword,
           bool_or(p.name_hit) AS name_hit
    FROM (SELECT termid, track_id, sum(tf) AS tf, any_value(doclen) AS doclen,
                 bool_or(field IN ({fields})) AS name_hit
          FROM kw.kw_postings WHERE termid IN ({ids}) GROUP BY termid, track_id) p
    JOIN kw.kw_terms d USING (termid) CROSS JOIN kw.kw_meta m
    GROUP BY p.track_id"""


def _like_sql(n_words: int, fresh_only: bool) -> str:
    """Substring matching, scored by the number of query words found: the fallback without a snapshot."""
    hay = "concat_ws(' ', c.text, t.title, t.artist, t.album_artist, t.album, t.genre)"
    count = " + ".join(f"({hay} ILIKE $like{i})::INTEGER" for i in range(n_words))
    scope = "AND t.id IN (SELECT id FROM fresh)" if fresh_only else ""
    return f"""SELECT track_id, keyword, TRUE AS name_hit FROM (
        SELECT t.id AS track_id, ({count})::DOUBLE AS keyword FROM tracks t {CAPTION_JOIN}
        WHERE t.status = 'done' {scope}) WHERE keyword > 0"""


def keyword_sql(termids: list[int] | None, n_like_words: int) -> str | None:
    """The `kw` CTE body: snapshot BM25 (`termids` not None) for tracks unchanged since the snapshot,
    plus substring matching for the rest (all tracks when there is no snapshot). None: no keyword list."""
    parts = []
    if termids:
        parts.append(f"SELECT * FROM ({_bm25_sql(termids)}) WHERE track_id NOT IN (SELECT id FROM fresh)")
    if n_like_words:
        parts.append(_like_sql(n_like_words, fresh_only=termids is not None))
    return " UNION ALL ".join(parts) or None


FRESH_SQL = """SELECT id FROM tracks WHERE status = 'done'
    AND indexed_at > (SELECT coalesce(max_indexed_at, '-infinity'::TIMESTAMP) FROM kw.kw_meta)"""
FRESH_COUNT_SQL = f"SELECT count(*) FROM ({FRESH_SQL})"  # tracks indexed after the keyword snapshot


def search_sql(kw_body: str | None, filters_sql: str, snapshot: bool) -> str:
    """The whole ranked query. Parameters: $text, $sem_ids, $sem_sims, $limit, $offset, filters, likes."""
    ctes = [f"q AS (SELECT {norm_sql('$text::VARCHAR')} AS phrase)",
            "sem AS (SELECT unnest($sem_ids::BIGINT[]) AS track_id, unnest($sem_sims::DOUBLE[]) AS semantic)"]
    if snapshot:
        ctes.append(f"fresh AS ({FRESH_SQL})")
    if kw_body:
        ctes.append(f"kw AS ({kw_body})")
        ctes.append("ids AS (SELECT track_id FROM sem UNION SELECT track_id FROM kw)")
    else:
        ctes.append("kw AS (SELECT NULL::BIGINT AS track_id, NULL::DOUBLE AS keyword, NULL::BOOLEAN AS name_hit "
                    "WHERE false)")
        ctes.append("ids AS (SELECT track_id FROM sem)")
    names = ", ".join(f"CASE WHEN coalesce(k.name_hit, false) THEN {_name(c, snapshot)} END AS n_{c}"
                      for c in NAME_COLUMNS)
    names_join = "LEFT JOIN kw.kw_names n ON n.track_id = t.id" if snapshot else ""
    ctes.append(f"""cand AS (
        SELECT t.id, s.semantic, k.keyword, {names}
        FROM ids JOIN tracks t ON t.id = ids.track_id
        LEFT JOIN sem s ON s.track_id = t.id LEFT JOIN kw k ON k.track_id = t.id {names_join}
        WHERE t.status = 'done' {filters_sql})""")
    shares = {"title": _share("n_title"), "artist": f"greatest({_share('n_artist')}, {_share('n_album_artist')})",
              "album": _share("n_album"), "genre": _share("n_genre")}
    boosts = ",\n".join(f"{NAME_BOOST[f]} * ({shares[f]}) AS b_{f}" for f in NAME_FIELDS)
    ctes.append(f"""scored AS (
        SELECT id, semantic, keyword,
               CASE WHEN semantic IS NOT NULL THEN rank() OVER (ORDER BY semantic DESC NULLS LAST) END AS srank,
               CASE WHEN keyword IS NOT NULL THEN rank() OVER (ORDER BY keyword DESC NULLS LAST) END AS krank,
               {boosts}
        FROM cand CROSS JOIN q)""")
    boost_sum = " + ".join(f"b_{f}" for f in NAME_FIELDS)
    ctes.append(f"""page AS (
        SELECT *, coalesce({W_SEMANTIC} / ({RRF_K} + srank), 0) + coalesce({W_KEYWORD} / ({RRF_K} + krank), 0)
                  + {boost_sum} AS score,
               count(*) OVER () AS total
        FROM scored ORDER BY score DESC, id LIMIT $limit OFFSET $offset)""")
    return f"""WITH {", ".join(ctes)}
    SELECT page.*, {HIT_COLUMNS}
    FROM page JOIN tracks t ON t.id = page.id {CAPTION_JOIN}
    ORDER BY page.score DESC, page.id"""


def browse_sql(filters_sql: str) -> str:
    """Empty query: the filtered library in artist, album, track order."""
    return f"""SELECT t.id, count(*) OVER () AS total, {HIT_COLUMNS}
    FROM tracks t {CAPTION_JOIN}
    WHERE t.status = 'done' {filters_sql}
    ORDER BY lower(t.artist) NULLS LAST, lower(t.album) NULLS LAST, t.track_no NULLS LAST, lower(t.title), t.id
    LIMIT $limit OFFSET $offset"""


def like_sql(filters_sql: str) -> str:
    """Audio neighbours joined to the catalog: same encoder version only, the query track excluded."""
    return f"""WITH sim AS (SELECT unnest($ids::BIGINT[]) AS track_id, unnest($sims::DOUBLE[]) AS audio)
    SELECT t.id, sim.audio, {HIT_COLUMNS}
    FROM sim JOIN tracks t ON t.id = sim.track_id JOIN embeddings e ON e.track_id = t.id {CAPTION_JOIN}
    WHERE t.status = 'done' AND e.encoder_version = $encoder_version AND t.id <> $exclude {filters_sql}
    ORDER BY sim.audio DESC, t.id LIMIT $limit"""


def reasons(row: dict, fields_matched: dict[str, list[str]]) -> list[str]:
    """Why a hit matched, in words the UI can show as they are."""
    out = []
    for f in NAME_FIELDS:
        if row.get(f"b_{f}"):
            out.append(f"the query names its {f} ({row.get(f) or ''})")
    for f, words in fields_matched.items():
        out.append(f"{f} contains {', '.join(words)}")
    if row.get("semantic") is not None:
        out.append(f"caption meaning similarity {row['semantic']:.2f} (rank {int(row['srank'])})")
    if row.get("keyword") is not None:
        out.append(f"keyword score {row['keyword']:.2f} (rank {int(row['krank'])})")
    out.append(f"fused score {row['score']:.4f}")
    return out
