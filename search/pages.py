"""A page of results as the UI and the CLI show it: the tracks listed without a query, and the display
columns, caption and auto-tags of the tracks of a page, read from wherever the search read its tracks
(the catalog's `tracks`, the keyword snapshot's copy, or the reader's current view: search/snapshot.py).
"""

from __future__ import annotations

from search.snapshot import CURRENT_AUTO, CURRENT_TRACKS

HIT_COLUMNS = ("path", "title", "artist", "album", "genre", "year", "duration", "format", "root", "bpm", "tonic",
               "mode", "vocals", "auto_genre")
# Where the auto-tags of each table of tracks a search reads are (`page_tags_sql`).
AUTO_TABLES = {"tracks": "auto_tags", "kw.kw_tracks": "kw.kw_auto", CURRENT_TRACKS: CURRENT_AUTO}


def browse_sql(filters_sql: str, tracks: str) -> str:
    """Empty query: a page of the filtered library in artist, album, track order, and the total."""
    return f"""SELECT t.id, count(*) OVER () AS total FROM {tracks} t WHERE t.status = 'done' {filters_sql}
    ORDER BY lower(t.artist) NULLS LAST, lower(t.album) NULLS LAST, t.track_no NULLS LAST, lower(t.title), t.id
    LIMIT $limit OFFSET $offset"""


def hydrate_sql(ids: list[int], tracks: str) -> str:
    """Display columns and current caption of a page of tracks, from `tracks`: the catalog's, or the
    snapshot's copy (or CURRENT_TRACKS), which holds each track's caption.

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
