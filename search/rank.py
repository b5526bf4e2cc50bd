"""Hybrid ranking: semantic and keyword lists fused by reciprocal rank, plus boosts for named fields and
for the tempo, key and vocals a query's words ask for (search/music.py).

A search is two DuckDB statements. The keyword stage (`keyword_sql`: BM25 from the keyword snapshot, or
substring matches, restricted to the filters) needs no query embedding, so the engine runs it in a
worker thread while it embeds the query and asks FAISS; the ranking (`search_sql`: whole-name matches,
both rankings, fusion, the total count and the page) then joins the two. Each is one pass over the
columns involved rather than a round trip per candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import duckdb

from catalog.text import MIN_NAME_CHARS, NAME_COLUMNS, auto_text_sql, name_hash, names_sql, norm_sql
from search.music import BOOST_COLUMNS, MusicIntent
from search.snapshot import CHANGED_IDS, CHANGED_NAMES, CHANGED_SQL, CHANGED_TRACKS, haystack_sql

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
_NAMED = tuple(f for f in NAME_FIELDS if f != "genre")  # the fields whose names make a track a candidate
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


def _changed_sql(copied: bool) -> str:
    """The ids of the tracks whose snapshot entries no longer count: from the reader's copy of the
    changes, or the catalog's tracks indexed after the snapshot (tracks gone from the catalog are left
    out by joining `tracks`)."""
    return f"SELECT id FROM {CHANGED_IDS}" if copied else CHANGED_SQL


def _docs_sql(copied: bool, changed_only: bool) -> str:
    """(id, hay) of the finished tracks to match by substring (`haystack_sql`): the reader's copy of the
    changed ones (lowered when copied) when `copied`, else the catalog's (`changed_only`: those indexed
    after the snapshot, else all)."""
    if copied:
        return f"SELECT id, hay FROM {CHANGED_TRACKS}"
    scope = "t.id IN (SELECT id FROM changed)" if changed_only else ""
    auto = auto_text_sql(scope.replace("t.id", "a.track_id"))
    return f"""SELECT t.id, {haystack_sql("c.text", "a.auto_text")} AS hay FROM tracks t
        LEFT JOIN captions c ON c.track_id = t.id AND c.pipeline_version = t.pipeline_version
        LEFT JOIN ({auto}) a ON a.track_id = t.id
        WHERE t.status = 'done' {"AND " + scope if scope else ""}"""


def _bm25_sql(termids: list[int], changed: bool) -> str:
    """Per-track BM25: the sum of the snapshot's posting weights (term ids are ints: safe to inline)."""
    ids = ", ".join(str(int(t)) for t in termids)
    skip = "AND track_id NOT IN (SELECT id FROM changed)" if changed else ""
    return f"""SELECT track_id, sum(weight)::DOUBLE AS keyword FROM kw.kw_postings
    WHERE termid IN ({ids}) {skip} GROUP BY track_id"""


def _like_sql(n_words: int, docs: str) -> str:
    """Substring matching of `docs` (`_docs_sql`) scored by the number of query words found: for tracks
    the snapshot lacks."""
    count = " + ".join(f"(d.hay LIKE lower($like{i}))::INTEGER" for i in range(n_words))
    return f"""SELECT * FROM (SELECT d.id AS track_id, ({count})::DOUBLE AS keyword FROM ({docs}) d)
        WHERE keyword > 0"""


def _substring_names_sql(copied: bool) -> str:
    """(track_id, field, key): the names of the tracks matched by substring, which the snapshot does not
    hold: the reader's copy's, normalised when it was copied, else the catalog's, normalised now (a Unicode
    regex is compiled anew for each column of each statement)."""
    if copied:
        return f"SELECT * FROM {CHANGED_NAMES} WHERE track_id IN (SELECT track_id FROM {LIKE_TABLE})"
    cols = ", ".join(f"{norm_sql('t.' + c)} AS name_{c}" for c in NAME_COLUMNS)
    source = f"(SELECT t.id, {cols} FROM tracks t WHERE t.id IN (SELECT track_id FROM {LIKE_TABLE}))"
    return names_sql(source, "id", "name_")


def _snapshot_names_sql(runs: list[str], changed: bool) -> str:
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
    # tracks changed since: their names come from `_substring_names_sql` (one test of the lot, not one a run)
    return f"SELECT * FROM ({found}) WHERE track_id NOT IN (SELECT id FROM changed)" if changed else found


def _genre_sql(bitmaps: list[str], rows: bool, changed: bool) -> tuple[str, str]:
    """Joins and the expression for candidate `l`'s genre boost: from its genre's name rows (`rows`:
    there may be some; `l.n_genre`), else from the bitmaps of the named genres `bitmaps` (kw.kw_genres).

    A track has one genre, so at most one bitmap holds it and the sum is that genre's boost (computed
    once per genre, as `_boost` computes it per track) or 0. Ids past the bitmaps' end (tracks newer
    than the snapshot) are in none, and a track changed since the snapshot (`changed`) may have another
    genre by now: its live name rows say which.
    """
    if not bitmaps:
        return "", _boost("genre", "l.n_genre") if rows else "0::DOUBLE"
    joins = " ".join(f"""CROSS JOIN (SELECT bits, bit_length(bits) AS span, {_boost("genre", "length(key)")} AS b
        FROM kw.kw_genres WHERE key = {_literals([g])}) g{i}""" for i, g in enumerate(bitmaps))
    found = " + ".join(f"get_bit(g{i}.bits, l.id) * g{i}.b" for i in range(len(bitmaps)))
    guard = "l.id < g0.span" + (" AND l.id NOT IN (SELECT id FROM changed)" if changed else "")
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


@dataclass(frozen=True)
class Ranking:
    """The shape of one search's two statements (`keyword_sql`, then `search_sql`), prepared by the engine
    (`SearchEngine.plan`) from the query and the store that answers it.

    `termids`: the query's terms in the keyword snapshot (None: no snapshot; []: none matched); `n_like`:
    query words matched by substring ($like0..), in every track without a snapshot, else in the tracks
    changed since it; `runs`: the query's word runs, for whole-name matches; `genres`: those of the runs
    that are genres in the snapshot, each with whether it has a bitmap (`genres_sql`); `tracks`: the
    table the tracks are read from (the catalog's `tracks`, the snapshot's `kw.kw_tracks`, or
    CURRENT_TRACKS); `check_tracks`: join `tracks` for the filters and the track status, unneeded, and a
    scan of every track saved, when the snapshot's own table answers without filters; `allowed`:
    instead, a table (registered on the connection) of the ids of the tracks that are done and pass the
    filters, computed once for the vector search too, so the filters are not evaluated again here;
    `copied`: the tracks changed since the snapshot come from the reader's copy (CHANGED_TRACKS), not
    from the catalog; `music`: what the query asks of tempo, key and vocals, boosts read from `tracks`
    (search/music.py).
    """

    termids: list[int] | None
    n_like: int
    runs: list[str]
    genres: list[tuple[str, bool]]
    filters_sql: str
    tracks: str
    check_tracks: bool
    allowed: str | None = None
    copied: bool = False
    music: MusicIntent = field(default_factory=MusicIntent)

    @property
    def changed(self) -> bool:
        """Whether the snapshot's entries of the tracks changed since it must be set aside."""
        return self.termids is not None and self.n_like > 0

    def keyword_sql(self) -> list[str]:
        """The keyword stage: statements that fill KEYWORD_TABLE (track_id, keyword) with every keyword
        match that passes the filters, and LIKE_TABLE with those matched by substring. Parameters: $like0..
        and the filters' (unless `allowed`)."""
        with_changed = f"WITH changed AS ({_changed_sql(self.copied)}) " if self.changed else ""
        statements, parts = [], []
        if self.termids:
            parts.append(_bm25_sql(self.termids, self.changed))
        if self.n_like:
            like = _like_sql(self.n_like, _docs_sql(self.copied, changed_only=self.termids is not None))
            statements.append(f"CREATE OR REPLACE TEMP TABLE {LIKE_TABLE} AS {with_changed}{like}")
            parts.append(f"SELECT track_id, keyword FROM {LIKE_TABLE}")
        kw = " UNION ALL ".join(parts) or "SELECT NULL::INTEGER AS track_id, NULL::DOUBLE AS keyword WHERE false"
        statements.append(f"CREATE OR REPLACE TEMP TABLE {KEYWORD_TABLE} AS {with_changed}{self._restricted(kw, 'track_id')}")
        return statements

    def search_sql(self, head_only: bool = False) -> str:
        """The ranked page: ids, scores, ranks, name boosts, the total and the tail's size. Reads the tables
        `keyword_sql` filled. Parameters: $sem_ids, $sem_sims, $phrase_len, $limit, $offset and the
        filters' (unless `allowed`).

        `head_only`: rank only the head (the KEYWORD_DEPTH best keyword matches, the semantic list and the
        tracks named by title, artist or album) and count the rest, the tail: keyword matches that score
        at most `max_tail_score`. At a million tracks a broad query matches a quarter of the library by
        keyword, and carrying all of those through the joins and the sort cost more than summing their
        BM25 weights (docs/benchmarks.md, "Why the search path is built this way"); the page is the same
        whenever `head_page_is_exact` says so. The column `tail` counts the tail's tracks (0 when not
        `head_only`: the page ranks everything).
        """
        ctes = self._candidate_ctes(head_only) + _page_ctes()
        boosts = ", ".join(f"{_boost(f, f'n_{f}')} AS b_{f}" for f in _NAMED)
        return f"""WITH {", ".join(ctes)}
    SELECT id, semantic, keyword, srank, {_krank("keyword", "krank")} AS krank, {boosts}, b_genre,
           {", ".join(BOOST_COLUMNS)}, score, {_counts_sql(head_only)}
    FROM page ORDER BY score DESC, keyword DESC NULLS LAST, id"""

    def _candidate_ctes(self, head_only: bool) -> list[str]:
        """`sem` (the semantic list), `changed`, `named` (whole-name matches per field), the head's keyword
        list when `head_only`, and `cand`: every candidate with its lists, boosts and genre, filtered."""
        snapshot = self.termids is not None
        ctes = ["sem AS (SELECT unnest($sem_ids::INTEGER[]) AS track_id, unnest($sem_sims::DOUBLE[]) AS semantic)"]
        if self.changed:
            ctes.append(f"changed AS ({_changed_sql(self.copied)})")
        ctes.append(f"named AS ({self._named_sql()})")
        others = " OR ".join(f"n.n_{f} IS NOT NULL" for f in _NAMED)
        keyword_list = KEYWORD_TABLE
        if head_only:  # the head's keyword scores
            ctes.append(f"""kw_head AS (SELECT track_id FROM (
                SELECT track_id FROM {KEYWORD_TABLE} ORDER BY keyword DESC, track_id LIMIT {KEYWORD_DEPTH})
            UNION SELECT track_id FROM sem UNION SELECT track_id FROM named n WHERE {others})""")
            ctes.append(f"kw_part AS (SELECT k.* FROM {KEYWORD_TABLE} k SEMI JOIN kw_head h ON h.track_id = k.track_id)")
            keyword_list = "kw_part"
        # name rows of genres: of the snapshot's rarer genres, and of tracks matched by substring
        genre_rows = self.n_like > 0 or (snapshot and not all(bitmap for _, bitmap in self.genres))
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
        bitmaps = [g for g, bitmap in self.genres if bitmap] if snapshot else []
        joins, genre = _genre_sql(bitmaps, genre_rows, self.changed)
        if self.music.active:
            joins += f" LEFT JOIN {self.tracks} m ON m.id = l.id"
        heard = ", ".join(f"{expr} AS {name}" for name, expr in self.music.columns("m").items())
        lists = f"""SELECT l.id, l.semantic, l.keyword, {", ".join(f"l.n_{f}" for f in _NAMED)},
               {genre} AS b_genre, {heard} FROM ({lists}) l {joins}"""
        ctes.append(f"cand AS ({self._restricted(lists, 'id')})")
        return ctes

    def _named_sql(self) -> str:
        """(track_id, n_title, n_artist, n_album, n_genre): the characters of each field the query names
        whole, from the snapshot's names and those of the tracks matched by substring."""
        parts = []
        if self.termids is not None:
            parts.append(_snapshot_names_sql(self.runs, self.changed))
        if self.n_like:
            parts.append(f"""SELECT track_id, field, length(key) AS chars FROM ({_substring_names_sql(self.copied)})
            WHERE key IN ({_literals(self.runs)})""")
        per_field = ", ".join(f"max(CASE WHEN field = '{f}' THEN chars END) AS n_{f}" for f in NAME_FIELDS)
        named = " UNION ALL ".join(parts) or \
            "SELECT NULL::INTEGER AS track_id, NULL::VARCHAR AS field, NULL::INTEGER AS chars WHERE false"
        return f"SELECT track_id, {per_field} FROM ({named}) GROUP BY track_id"

    def _restricted(self, rows: str, id_column: str) -> str:
        """`rows` kept to the tracks that are done and pass the filters: by the registered `allowed` ids, or
        by joining `tracks` when `check_tracks`, else as they are."""
        if self.allowed is not None:
            return f"SELECT m.* FROM ({rows}) m SEMI JOIN {self.allowed} a ON a.id = m.{id_column}"
        if self.check_tracks:
            return f"""SELECT m.* FROM ({rows}) m JOIN {self.tracks} t ON t.id = m.{id_column}
        WHERE t.status = 'done' {self.filters_sql}"""
        return rows


def _page_ctes() -> list[str]:
    """`kw_top` and `sem_top` (each list's ranks among the candidates) and `page`: the candidates scored,
    sorted, cut to $limit from $offset."""
    # Most candidates are keyword matches past KEYWORD_DEPTH with no other list and no name: all of them
    # score the keyword rank KEYWORD_DEPTH + 1 plus their genre's boost, one addition each. Only the head
    # (the tracks of either ranked list or named, a few thousand at most) needs the full sum; computed for
    # every candidate it took longer than the BM25 sum (docs/benchmarks.md, "Why the search path is built
    # this way").
    tail_of = " AND ".join(["k.id IS NULL", "s.id IS NULL", *(f"c.n_{f} IS NULL" for f in _NAMED)])
    shared = ["c.b_genre", *(f"c.{b}" for b in BOOST_COLUMNS)]  # what a tail track may have too
    head = _score("s.srank", _krank("c.keyword", "k.krank"), [_boost(f, f"c.n_{f}") for f in _NAMED] + shared)
    tail = _score("NULL::BIGINT", f"{KEYWORD_DEPTH + 1}::BIGINT", ["0::DOUBLE"] * len(_NAMED) + shared)
    return [f"""kw_top AS (SELECT id, rank() OVER (ORDER BY keyword DESC) AS krank FROM (
        SELECT id, keyword FROM cand WHERE keyword IS NOT NULL ORDER BY keyword DESC, id LIMIT {KEYWORD_DEPTH}))""",
            "sem_top AS (SELECT id, rank() OVER (ORDER BY semantic DESC) AS srank FROM cand "
            "WHERE semantic IS NOT NULL)",
            f"""page AS (
        SELECT c.*, s.srank, k.krank, CASE WHEN {tail_of} THEN {tail} ELSE {head} END AS score
        FROM cand c LEFT JOIN kw_top k ON k.id = c.id LEFT JOIN sem_top s ON s.id = c.id
        ORDER BY score DESC, c.keyword DESC NULLS LAST, c.id LIMIT $limit OFFSET $offset)"""]


def _counts_sql(head_only: bool) -> str:
    """The total (every keyword match, and the head's tracks found otherwise) and the tail's size."""
    if head_only:
        return f"""(SELECT count(*) FROM {KEYWORD_TABLE}) + (SELECT count(*) FROM cand WHERE keyword IS NULL) AS total,
           (SELECT count(*) FROM {KEYWORD_TABLE}) - (SELECT count(*) FROM kw_part) AS tail"""
    return "(SELECT count(*) FROM cand) AS total, 0 AS tail"


def bind(sql: str, params: dict) -> dict:
    """The parameters a statement names (DuckDB refuses any others)."""
    names = set(re.findall(r"\$(\w+)", sql))
    return {k: v for k, v in params.items() if k in names}


def run_statements(db: duckdb.DuckDBPyConnection, statements: list[str], params: dict) -> None:
    """Execute `statements` in order, each with the parameters it names."""
    for sql in statements:
        db.execute(sql, bind(sql, params))


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
