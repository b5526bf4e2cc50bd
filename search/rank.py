"""Hybrid ranking: semantic and keyword lists fused by reciprocal rank, plus boosts for named fields and
for the tempo, key and vocals a query's words ask for (search/music.py).

A search is two DuckDB statements. The keyword stage (`keyword_sql`: BM25 from the keyword snapshot, or
substring matches, restricted to the filters) needs no query embedding, so the engine runs it in a
worker thread while it embeds the query and asks FAISS; the ranking (`search_sql`: whole-name matches,
both rankings, fusion, the total count and the page) then joins the two. Each is one pass over the
columns involved rather than a round trip per candidate.
"""

from __future__ import annotations

from catalog.text import MIN_NAME_CHARS, NAME_COLUMNS, auto_text_sql, name_hash, names_sql, norm_sql
from search.music import BOOST_COLUMNS, MusicIntent

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
# Word runs of a query looked up one by one in the snapshot's names; more are looked up in one scan
# (see _snapshot_names_sql). 105 is every run of a 14-word query; at a million tracks both ways cost
# about the same at 130 runs, and one by one was about three times cheaper at 26.
SCAN_NAME_RUNS = 105

NAME_FIELDS = ("title", "artist", "album", "genre")
HIT_COLUMNS = ("path", "title", "artist", "album", "genre", "year", "duration", "format", "root", "bpm", "tonic",
               "mode", "vocals", "auto_genre")
FRESH_SQL = """SELECT id FROM tracks WHERE status = 'done'
    AND indexed_at > (SELECT coalesce(max_indexed_at, '-infinity'::TIMESTAMP) FROM kw.kw_meta)"""
FRESH_COUNT_SQL = f"SELECT count(*) FROM ({FRESH_SQL})"  # tracks indexed after the keyword snapshot
# A search on the warm snapshot after the catalog moved on, as during a scan (search/snapshot.py copies these
# once per catalog change): the rows of the tracks new or changed since the snapshot, laid out as
# kw.kw_tracks; the ids whose snapshot entries no longer count (those, and the tracks gone); and a view
# of the catalog's finished tracks as they are now, the snapshot's with the changes applied.
DELTA_TRACKS = "search_delta"
DELTA_NAMES = "search_delta_names"  # and their names, normalised as the snapshot's (`delta_names_sql`)
DELTA_STALE = "search_stale"
DELTA_AUTO = "search_delta_auto"  # their auto-tags, laid out as kw.kw_auto
LIVE_TRACKS = "search_live"
LIVE_AUTO = "search_live_auto"  # the auto-tags of LIVE_TRACKS
# Where the auto-tags of each table of tracks a search reads are (`page_tags_sql`).
AUTO_TABLES = {"tracks": "auto_tags", "kw.kw_tracks": "kw.kw_auto", LIVE_TRACKS: LIVE_AUTO}
# Temporary tables of one search, on its connection: its keyword matches with their scores, filtered,
# and of those the tracks matched by substring (their names are read live).
KEYWORD_TABLE = "search_keywords"
LIKE_TABLE = "search_like"


def word_runs(phrase: str) -> list[str]:
    """Every run of consecutive words of a normalised query: the names it could contain whole."""
    words = phrase.split()
    runs = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    return sorted(r for r in runs if len(r) >= MIN_NAME_CHARS)


def _literals(values: list[str]) -> str:
    """A SQL list of string literals (inlined so DuckDB can prune the sorted name table by zone maps)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "NULL"


def genres_sql(runs: list[str]) -> str:
    """The snapshot's genres that a query's word runs name: (key, whether it has a bitmap; else its tracks
    are name rows; catalog/keywords.py). One genre per distinct value: a scan of a small table, cheaper
    than the join DuckDB makes of an IN list."""
    return f"SELECT key, bits IS NOT NULL FROM kw.kw_genres WHERE list_contains([{_literals(runs)}], key) ORDER BY key"


def terms_sql(stems: list[str]) -> str:
    """The snapshot's (termid, term, df) of a query's stems, inlined so zone maps find them in the sorted terms."""
    return f"SELECT termid, term, df FROM kw.kw_terms WHERE term IN ({_literals(stems)})"


def _fresh_sql(delta: bool) -> str:
    """The ids of the tracks whose snapshot entries no longer count: from the delta, or the catalog's
    tracks indexed after the snapshot (tracks gone from the catalog are left out by joining `tracks`)."""
    return f"SELECT id FROM {DELTA_STALE}" if delta else FRESH_SQL


def haystack_sql(caption: str, auto_text: str, t: str = "t") -> str:
    """A track's text matched by substring: its caption (`caption`), names (of table alias `t`) and auto-tags
    (`auto_text`, from `auto_text_sql`), lower case, so that `LIKE lower(pattern)` is ILIKE, four times
    faster on text lowered once."""
    return (f"lower(concat_ws(' ', {caption}, {t}.title, {t}.artist, {t}.album_artist, {t}.album, {t}.genre, "
            f"{auto_text}))")


def _docs_sql(delta: bool, fresh_only: bool) -> str:
    """(id, hay) of the finished tracks to match by substring (`haystack_sql`): the delta's (lowered when
    copied), else the catalog's (`fresh_only`: those indexed after the snapshot, else all)."""
    if delta:
        return f"SELECT id, hay FROM {DELTA_TRACKS}"
    scope = "t.id IN (SELECT id FROM fresh)" if fresh_only else ""
    auto = auto_text_sql(scope.replace("t.id", "a.track_id"))
    return f"""SELECT t.id, {haystack_sql("c.text", "a.auto_text")} AS hay FROM tracks t
        LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
        LEFT JOIN ({auto}) a ON a.track_id = t.id
        WHERE t.status = 'done' {"AND " + scope if scope else ""}"""


def _bm25_sql(termids: list[int], stale: bool) -> str:
    """Per-track BM25: the sum of the snapshot's posting weights (term ids are ints: safe to inline)."""
    ids = ", ".join(str(int(t)) for t in termids)
    skip = "AND track_id NOT IN (SELECT id FROM fresh)" if stale else ""
    return f"""SELECT track_id, sum(weight)::DOUBLE AS keyword FROM kw.kw_postings
    WHERE termid IN ({ids}) {skip} GROUP BY track_id"""


def _like_sql(n_words: int, docs: str) -> str:
    """Substring matching of `docs` (`_docs_sql`) scored by the number of query words found: for tracks
    the snapshot lacks."""
    count = " + ".join(f"(d.hay LIKE lower($like{i}))::INTEGER" for i in range(n_words))
    return f"""SELECT * FROM (SELECT d.id AS track_id, ({count})::DOUBLE AS keyword FROM ({docs}) d)
        WHERE keyword > 0"""


def _live_names_sql(delta: bool) -> str:
    """(track_id, field, key): the names of the tracks matched by substring, which the snapshot does not
    hold: the delta's, normalised when it was copied, else the catalog's, normalised now (a Unicode
    regex is compiled anew for each column of each statement)."""
    if delta:
        return f"SELECT * FROM {DELTA_NAMES} WHERE track_id IN (SELECT track_id FROM {LIKE_TABLE})"
    cols = ", ".join(f"{norm_sql('t.' + c)} AS name_{c}" for c in NAME_COLUMNS)
    source = f"(SELECT t.id, {cols} FROM tracks t WHERE t.id IN (SELECT track_id FROM {LIKE_TABLE}))"
    return names_sql(source, "id", "name_")


def delta_names_sql() -> str:
    """The rows of DELTA_NAMES: the names of the delta's tracks, as `_live_names_sql` gives the catalog's."""
    cols = ", ".join(f"{norm_sql(c)} AS name_{c}" for c in NAME_COLUMNS)
    return names_sql(f"(SELECT id, {cols} FROM {DELTA_TRACKS})", "id", "name_")


def _snapshot_names_sql(runs: list[str], stale: bool) -> str:
    """(track_id, field, chars) of the snapshot's names that are word runs of the query, by their hashes.

    One equality lookup per run: DuckDB applies an equality to the sorted hash column as it scans, reading
    only the stretch of rows that holds the value, while an IN list only skips row groups its values miss
    and then joins every row of the rest; as the hashes of a query's runs land in different row groups,
    that reads nearly the whole table once a query has a dozen runs. Past SCAN_NAME_RUNS runs (queries of
    15 words and more), that one scan is cheaper.
    """
    pick = "SELECT track_id, field, chars FROM kw.kw_names WHERE key_hash {}"
    hashes = sorted({name_hash(r) for r in runs})
    if not hashes:
        found = pick.format("IS NULL AND false")
    elif len(hashes) > SCAN_NAME_RUNS:
        found = pick.format(f"IN ({', '.join(map(str, hashes))})")
    else:
        found = " UNION ALL ".join(pick.format(f"= {h}") for h in hashes)
    # tracks changed since: their names come from `_live_names_sql` (one test of the lot, not one a run)
    return f"SELECT * FROM ({found}) WHERE track_id NOT IN (SELECT id FROM fresh)" if stale else found


def _genre_sql(bitmaps: list[str], rows: bool, stale: bool) -> tuple[str, str]:
    """Joins and the expression for candidate `l`'s genre boost: from its genre's name rows (`rows`:
    there may be some; `l.n_genre`), else from the bitmaps of the named genres `bitmaps` (kw.kw_genres).

    A track has one genre, so at most one bitmap holds it and the sum is that genre's boost (computed
    once per genre, as `_boost` computes it per track) or 0. Ids past the bitmaps' end (tracks newer
    than the snapshot) are in none, and a track indexed after the snapshot (`fresh`) may have another
    genre by now: its live name rows say which.
    """
    if not bitmaps:
        return "", _boost("genre", "l.n_genre") if rows else "0::DOUBLE"
    joins = " ".join(f"""CROSS JOIN (SELECT bits, bit_length(bits) AS span, {_boost("genre", "length(key)")} AS b
        FROM kw.kw_genres WHERE key = {_literals([g])}) g{i}""" for i, g in enumerate(bitmaps))
    found = " + ".join(f"get_bit(g{i}.bits, l.id) * g{i}.b" for i in range(len(bitmaps)))
    guard = "l.id < g0.span" + (" AND l.id NOT IN (SELECT id FROM fresh)" if stale else "")
    in_bitmaps = f"CASE WHEN {guard} THEN {found} END"
    return joins, f"coalesce({_share('genre', 'l.n_genre')}, {in_bitmaps}, 0)" if rows else f"coalesce({in_bitmaps}, 0)"


def _share(field: str, chars: str) -> str:
    """A named field's boost: its weight times its share of the query (`chars` of $phrase_len)."""
    return f"{NAME_BOOST[field]} * {chars} / $phrase_len"


def _boost(field: str, chars: str) -> str:
    """A field's boost, 0 if it is not named (`chars` NULL)."""
    return f"coalesce({_share(field, chars)}, 0)"


def _krank(keyword: str, krank: str) -> str:
    """The keyword rank: kw_top's, or KEYWORD_DEPTH + 1 for any other keyword match; NULL for none."""
    return f"CASE WHEN {keyword} IS NOT NULL THEN coalesce({krank}, {KEYWORD_DEPTH + 1}) END"


def _score(srank: str, krank: str, boosts: list[str]) -> str:
    """The fused score. Spelled once, so that the head and the tail of the ranking compute it alike, to
    the last bit (equal scores fall back to the keyword score and the id, so the order depends on it)."""
    return (f"coalesce({W_SEMANTIC} / ({RRF_K} + {srank}), 0) + coalesce({W_KEYWORD} / ({RRF_K} + {krank}), 0) + "
            + " + ".join(boosts))


def _restricted(rows: str, id_column: str, filters_sql: str, check_tracks: bool, tracks: str,
                allowed: str | None) -> str:
    """`rows` kept to the tracks that are done and pass the filters: by the registered `allowed` ids, or
    by joining `tracks` when `check_tracks`, else as they are (see `search_sql`)."""
    if allowed is not None:
        return f"SELECT m.* FROM ({rows}) m SEMI JOIN {allowed} a ON a.id = m.{id_column}"
    if check_tracks:
        return f"""SELECT m.* FROM ({rows}) m JOIN {tracks} t ON t.id = m.{id_column}
        WHERE t.status = 'done' {filters_sql}"""
    return rows


def keyword_sql(termids: list[int] | None, n_like: int, filters_sql: str, check_tracks: bool, tracks: str,
                allowed: str | None = None, delta: bool = False) -> list[str]:
    """The keyword stage of a search: statements that fill KEYWORD_TABLE (track_id, keyword) with every
    keyword match that passes the filters, and LIKE_TABLE with those matched by substring.

    `termids`: the query's terms in the keyword snapshot (None: no snapshot; [] none matched); `n_like`:
    query words matched by substring (all tracks without a snapshot, else the tracks indexed after it);
    `check_tracks`, `tracks`, `allowed`, `delta` as for `search_sql`. Parameters: $like0.. and the
    filters' (unless `allowed`).
    """
    snapshot = termids is not None
    fresh = f"WITH fresh AS ({_fresh_sql(delta)}) " if snapshot and n_like else ""
    statements, parts = [], []
    if termids:
        parts.append(_bm25_sql(termids, stale=bool(fresh)))
    if n_like:
        like = _like_sql(n_like, _docs_sql(delta, fresh_only=snapshot))
        statements.append(f"CREATE OR REPLACE TEMP TABLE {LIKE_TABLE} AS {fresh}{like}")
        parts.append(f"SELECT track_id, keyword FROM {LIKE_TABLE}")
    kw = " UNION ALL ".join(parts) or "SELECT NULL::INTEGER AS track_id, NULL::DOUBLE AS keyword WHERE false"
    kw = _restricted(kw, "track_id", filters_sql, check_tracks, tracks, allowed)
    statements.append(f"CREATE OR REPLACE TEMP TABLE {KEYWORD_TABLE} AS {fresh}{kw}")
    return statements


def search_sql(termids: list[int] | None, n_like: int, runs: list[str], genres: list[tuple[str, bool]],
               filters_sql: str, check_tracks: bool, tracks: str, allowed: str | None = None,
               delta: bool = False, head_only: bool = False, music: MusicIntent | None = None) -> str:
    """The ranked page of one search: ids, scores, ranks, name boosts, the total and the tail's size.

    Reads KEYWORD_TABLE and LIKE_TABLE, which `keyword_sql` with the same arguments filled.
    `termids`, `n_like` as for `keyword_sql`; `runs`: the query's word runs, for whole-name matches;
    `genres`: those of the runs that are genres in the snapshot, each with whether it has a bitmap
    (`genres_sql`); `check_tracks`: join `tracks` (the catalog's table, or the snapshot's copy when it is
    current) for the filters and the track status, unneeded, and a scan of every track saved, when there
    are no filters and the snapshot and the text index are current; `allowed`: instead, a table
    (registered on the connection) of the ids of the tracks that are done and pass the filters, computed
    once for the vector search too, so the filters are not evaluated again here; `delta`: the tracks the
    snapshot lacks come from the delta tables (DELTA_TRACKS), not the catalog's; `music`: what the query
    asks of tempo, key and vocals, boosts read from `tracks` (search/music.py). Parameters: $sem_ids,
    $sem_sims, $phrase_len, $limit, $offset and the filters' (unless `allowed`).

    `head_only`: rank only the head (the KEYWORD_DEPTH best keyword matches, the semantic list and the
    tracks named by title, artist or album) and count the rest, the tail: keyword matches that score
    at most `max_tail_score`. At a million tracks a broad query matches a quarter of the library by
    keyword, and carrying all of those through the joins and the sort cost more than summing their BM25
    weights (docs/benchmarks.md, "Why the search path is built this way"); the page is the same whenever
    `head_page_is_exact` says so. The column `tail` counts the tail's tracks (0 when not `head_only`: the
    page ranks everything).
    """
    snapshot = termids is not None
    stale = snapshot and n_like > 0
    bitmaps = [g for g, bitmap in genres if bitmap] if snapshot else []
    # name rows of genres: of the snapshot's rarer genres, and of tracks matched by substring
    genre_rows = n_like > 0 or (snapshot and not all(bitmap for _, bitmap in genres))
    ctes = ["sem AS (SELECT unnest($sem_ids::INTEGER[]) AS track_id, unnest($sem_sims::DOUBLE[]) AS semantic)"]
    name_parts = []
    if stale:
        ctes.append(f"fresh AS ({_fresh_sql(delta)})")
    if snapshot:
        name_parts.append(_snapshot_names_sql(runs, stale))
    if n_like:
        name_parts.append(f"""SELECT track_id, field, length(key) AS chars FROM ({_live_names_sql(delta)})
            WHERE key IN ({_literals(runs)})""")
    empty = "SELECT NULL::INTEGER AS track_id, {} WHERE false"
    per_field = ", ".join(f"max(CASE WHEN field = '{f}' THEN chars END) AS n_{f}" for f in NAME_FIELDS)
    named = " UNION ALL ".join(name_parts) or empty.format("NULL::VARCHAR AS field, NULL::INTEGER AS chars")
    ctes.append(f"named AS (SELECT track_id, {per_field} FROM ({named}) GROUP BY track_id)")
    named_fields = [f for f in NAME_FIELDS if f != "genre"]
    others = " OR ".join(f"n.n_{f} IS NOT NULL" for f in named_fields)
    keyword_list = KEYWORD_TABLE
    if head_only:  # the head's keyword scores
        ctes.append(f"""kw_head AS (SELECT track_id FROM (
                SELECT track_id FROM {KEYWORD_TABLE} ORDER BY keyword DESC, track_id LIMIT {KEYWORD_DEPTH})
            UNION SELECT track_id FROM sem UNION SELECT track_id FROM named n WHERE {others})""")
        ctes.append(f"kw_part AS (SELECT k.* FROM {KEYWORD_TABLE} k SEMI JOIN kw_head h ON h.track_id = k.track_id)")
        keyword_list = "kw_part"
    # Each track is in each list at most once, so outer joins (against the small semantic and name lists)
    # line the lists up without aggregating the long keyword list again.
    # A genre only adds to the score of a track found otherwise (by its caption's meaning, its keywords or
    # another name), never makes it a candidate: it is a description shared by thousands of tracks, not a
    # name, and BM25 indexes the genre field, so a genre word finds those tracks as keywords anyway unless
    # the word is in over half the catalog and the query has rarer ones (COMMON_TERM_SHARE), when listing
    # them all is what that rule avoids. So genre name rows go through the full join but leave no row of
    # their own, and the genres of many tracks are tested per candidate in their bitmaps.
    lists = f"""SELECT coalesce(k.track_id, s.track_id, n.track_id) AS id, s.semantic, k.keyword,
               {", ".join(f"n.n_{f}" for f in NAME_FIELDS)}
        FROM {keyword_list} k FULL JOIN sem s ON s.track_id = k.track_id
        FULL JOIN named n ON n.track_id = coalesce(k.track_id, s.track_id)
        {f"WHERE k.track_id IS NOT NULL OR s.track_id IS NOT NULL OR {others}" if genre_rows else ""}"""
    joins, genre = _genre_sql(bitmaps, genre_rows, stale)
    music = music or MusicIntent()
    if music.active:
        joins += f" LEFT JOIN {tracks} m ON m.id = l.id"
    heard = ", ".join(f"{expr} AS {name}" for name, expr in music.columns("m").items())
    lists = f"""SELECT l.id, l.semantic, l.keyword, {", ".join(f"l.n_{f}" for f in named_fields)},
               {genre} AS b_genre, {heard} FROM ({lists}) l {joins}"""
    ctes.append(f"cand AS ({_restricted(lists, 'id', filters_sql, check_tracks, tracks, allowed)})")
    ctes.append(f"""kw_top AS (SELECT id, rank() OVER (ORDER BY keyword DESC) AS krank FROM (
        SELECT id, keyword FROM cand WHERE keyword IS NOT NULL ORDER BY keyword DESC, id LIMIT {KEYWORD_DEPTH}))""")
    ctes.append("sem_top AS (SELECT id, rank() OVER (ORDER BY semantic DESC) AS srank FROM cand "
                "WHERE semantic IS NOT NULL)")
    # Most candidates are keyword matches past KEYWORD_DEPTH with no other list and no name: all of them
    # score the keyword rank KEYWORD_DEPTH + 1 plus their genre's boost, one addition each. Only the head
    # (the tracks of either ranked list or named, a few thousand at most) needs the full sum; computed for
    # every candidate it took longer than the BM25 sum (docs/benchmarks.md, "Why the search path is built
    # this way").
    tail_of = " AND ".join(["k.id IS NULL", "s.id IS NULL", *(f"c.n_{f} IS NULL" for f in named_fields)])
    shared = ["c.b_genre", *(f"c.{b}" for b in BOOST_COLUMNS)]  # what a tail track may have too
    head = _score("s.srank", _krank("c.keyword", "k.krank"),
                  [_boost(f, f"c.n_{f}") for f in named_fields] + shared)
    tail = _score("NULL::BIGINT", f"{KEYWORD_DEPTH + 1}::BIGINT", ["0::DOUBLE"] * len(named_fields) + shared)
    ctes.append(f"""page AS (
        SELECT c.*, s.srank, k.krank, CASE WHEN {tail_of} THEN {tail} ELSE {head} END AS score
        FROM cand c LEFT JOIN kw_top k ON k.id = c.id LEFT JOIN sem_top s ON s.id = c.id
        ORDER BY score DESC, c.keyword DESC NULLS LAST, c.id LIMIT $limit OFFSET $offset)""")
    boosts = ", ".join(f"{_boost(f, f'n_{f}')} AS b_{f}" for f in named_fields)
    if head_only:  # every keyword match, and the head's tracks found otherwise
        counts = f"""(SELECT count(*) FROM {KEYWORD_TABLE}) + (SELECT count(*) FROM cand WHERE keyword IS NULL) AS total,
           (SELECT count(*) FROM {KEYWORD_TABLE}) - (SELECT count(*) FROM kw_part) AS tail"""
    else:
        counts = "(SELECT count(*) FROM cand) AS total, 0 AS tail"
    return f"""WITH {", ".join(ctes)}
    SELECT id, semantic, keyword, srank, {_krank("keyword", "krank")} AS krank, {boosts}, b_genre,
           {", ".join(BOOST_COLUMNS)}, score, {counts}
    FROM page ORDER BY score DESC, keyword DESC NULLS LAST, id"""


def max_tail_score(genre_chars: int, phrase_len: int, music_best: float = 0.0) -> float:
    """The best score a tail track (a keyword match ranked past KEYWORD_DEPTH, in no other list and not
    named) can have: the last keyword rank's share plus the longest genre the query may name
    (`genre_chars`: the characters of the longest such genre, 0 if none) and the boosts of tempo, key and
    vocals it may have (`music_best`: `MusicIntent.best_boost`)."""
    return (W_KEYWORD / (RRF_K + KEYWORD_DEPTH + 1) + NAME_BOOST["genre"] * genre_chars / max(1, phrase_len)
            + music_best)


def head_page_is_exact(rows: list[dict], limit: int, tail_best: float) -> bool:
    """Whether a `head_only` page is the full ranking's page: no tail, or a full page whose last score
    beats any tail track's (`tail_best`, from `max_tail_score`; the margin absorbs rounding). An empty
    page says nothing of the tail (its count comes with the rows), so it is not taken as exact."""
    if not rows:
        return False
    return not rows[0]["tail"] or (len(rows) == limit and rows[-1]["score"] > tail_best + 1e-9)


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


def hydrate_sql(ids: list[int], tracks: str) -> str:
    """Display columns and current caption of a page of tracks, from `tracks`: the catalog's, or the
    snapshot's copy (or LIVE_TRACKS), which holds each track's caption.

    Ids are ints (safe to inline); tracks are found through their primary key. Captions take one
    equality probe per track: an IN list over a million captions reads every caption text in the ids'
    range (tens of milliseconds), while equality is answered from the zone maps of the few row groups
    that hold the ids.
    """
    cols = ", ".join(f"t.{c}" for c in HIT_COLUMNS)
    id_list = ", ".join(str(int(i)) for i in ids)
    if tracks != "tracks":  # the snapshot's copy is keyed by id and holds the caption
        return f"SELECT t.id, {cols}, t.caption FROM {tracks} t WHERE t.id IN ({id_list})"
    probes = " UNION ALL ".join(f"SELECT track_id, pipeline_version, text FROM captions WHERE track_id = {int(i)}"
                                for i in ids)
    return f"""SELECT t.id, {cols}, c.text AS caption
    FROM tracks t LEFT JOIN ({probes}) c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
    WHERE t.id IN ({id_list})"""


def page_tags_sql(ids: list[int], tracks: str) -> str:
    """The auto-tags of a page of tracks, likeliest first, from where the tracks were read (`AUTO_TABLES`):
    one equality probe per track, as `hydrate_sql` reads captions. Ids are ints (safe to inline)."""
    probes = " UNION ALL ".join(f"SELECT track_id, tagger, tag, probability FROM {AUTO_TABLES[tracks]} "
                                f"WHERE track_id = {int(i)}" for i in ids)
    return f"SELECT * FROM ({probes}) ORDER BY track_id, probability DESC, tagger, tag"


def reasons(row: dict, fields_matched: dict[str, list[str]], heard: list[str]) -> list[str]:
    """Why a hit matched, in words the UI can show as they are; `heard`: what the analysis heard that the
    query asked for (search/music.py)."""
    out = [f"the query names its {f} ({row.get(f) or ''})" for f in NAME_FIELDS if row.get(f"b_{f}")]
    out += [f"{f} contains {', '.join(words)}" for f, words in fields_matched.items()]
    out += heard
    if row.get("semantic") is not None:
        out.append(f"caption meaning similarity {row['semantic']:.2f} (rank {int(row['srank'])})")
    if row.get("keyword") is not None:
        rank = int(row["krank"])
        out.append(f"keyword score {row['keyword']:.2f} (rank {rank if rank <= KEYWORD_DEPTH else f'>{KEYWORD_DEPTH}'})")
    out.append(f"fused score {row['score']:.4f}")
    return out
