"""The search page: one query box, filters in the sidebar, result cards with players, query by a clip, M3U export."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from search.types import Hit, SearchError, SearchResult
from ui.playlist import to_m3u
from ui.render import md_escape
from ui.sound import VOCALS_SHOWN
from ui.views.common import AppContext, keep, remember, result_cards, run_search

UPLOAD_TYPES = ["mp3", "flac", "ogg", "opus", "wav", "m4a", "aac", "aiff", "webm"]


def _range_slider(label: str, key: str, bounds: tuple[float, float] | None, step: float, fmt: str) -> tuple | None:
    """A range slider over the catalog's bounds; None when the catalog has no spread to filter on."""
    if not bounds or bounds[0] >= bounds[1]:
        return None
    lo, hi = bounds
    keep(key, (lo, hi))
    low, high = st.session_state[key]  # clamp a kept value into bounds that a scan may have moved
    st.session_state[key] = (min(max(low, lo), hi), max(min(high, hi), lo))
    value = st.slider(label, min_value=lo, max_value=hi, step=step, format=fmt, key=key,
                      on_change=remember, args=(key,))
    return None if tuple(value) == (lo, hi) else tuple(value)


def _choice(label: str, key: str, options: list[str], shown: Callable[[str], str] = str) -> str | None:
    """A single-value filter ("Any" when empty); a value that vanished from the catalog is dropped."""
    if not options:
        return None
    keep(key, None)
    if st.session_state[key] not in options:
        st.session_state[key] = None
    return st.selectbox(label, options, index=None, placeholder="Any", key=key, on_change=remember, args=(key,),
                        format_func=shown)


def _sound_filters(facets: dict) -> dict[str, Any]:
    """Filters on what the taggers heard: tempo, key, vocals, genre. Their values are those the catalog
    holds (tracks not analysed yet have none, and pass none of these filters)."""
    filters: dict[str, Any] = {}
    bpms = facets.get("bpm_range")
    span = _range_slider("Tempo (BPM)", "f_bpm",
                         (float(math.floor(bpms[0])), float(math.ceil(bpms[1]))) if bpms else None, 1.0, "%d BPM")
    if span:
        filters.update(bpm_min=span[0], bpm_max=span[1])
    counts = facets.get("counts", {})
    tonic_col, mode_col = st.columns(2)
    with tonic_col:
        filters["tonic"] = _choice("Key", "f_tonic", list(counts.get("tonic", {})))
    with mode_col:
        filters["mode"] = _choice("Mode", "f_mode", list(counts.get("mode", {})))
    filters["vocals"] = _choice("Vocals", "f_vocals", list(counts.get("vocals", {})),
                                 lambda v: VOCALS_SHOWN.get(v, v))
    filters["auto_genre"] = _choice("Sounds like", "f_auto_genre", list(counts.get("auto_genre", {})))
    return {name: value for name, value in filters.items() if value is not None}


def sidebar_filters(ctx: AppContext) -> dict[str, Any]:
    """Filters drawn from the catalog's facets; only the ones the user narrowed are sent to the engine."""
    assert ctx.engine is not None
    facets = ctx.engine.facets()
    filters: dict[str, Any] = {}
    with st.sidebar:
        st.subheader("Filters")
        durations = facets.get("duration_range")
        span = _range_slider("Duration (seconds)", "f_duration",
                             (float(int(durations[0])), float(int(durations[1]) + 1)) if durations else None,
                             1.0, "%d s")
        if span:
            filters.update(min_duration=span[0], max_duration=span[1])
        for field, facet, label in (("artist", "artists", "Artist"), ("album", "albums", "Album"),
                                    ("genre", "genres", "Genre")):
            value = _choice(label, f"f_{field}", list(facets.get(facet, [])))
            if value:
                filters[field] = value
        years = facets.get("year_range")
        span = _range_slider("Year", "f_year", tuple(years) if years else None, 1, "%d")
        if span:
            filters.update(year_min=int(span[0]), year_max=int(span[1]))
        roots = list(facets.get("roots", []))
        value = _choice("Library root", "f_root", roots) if len(roots) > 1 else None
        if value:
            filters["root"] = value
        st.caption("What the taggers hear")
        filters.update(_sound_filters(facets))
    return filters


def _tracks(n: int) -> str:
    return f"{n} track" if n == 1 else f"{n} tracks"


def result_header(result: SearchResult, query: str) -> str:
    """How many tracks match, said only as far as it is known.

    Without a query the total is the filtered library. With one it counts every track either ranking
    found, and the meaning ranking takes every caption within a cosine threshold (on a library of similar
    captions, all of them): so the header counts the tracks that match the words, when the whole list is
    on the page, and otherwise says what the total is.
    """
    shown = len(result.hits)
    if not query:
        return f"**{_tracks(result.total)}** match the filters · showing {shown}"
    if shown < result.total:
        return f"The best {shown} of {_tracks(result.total)} found by words or meaning"
    words = sum(1 for hit in result.hits if hit.keyword)
    if not words:
        return f"No track matches your words · **{_tracks(shown)}** close in meaning"
    head = f"**{_tracks(words)}** match{'es' if words == 1 else ''} your words"
    return head + (f" · {shown - words} more close in meaning" if shown > words else "")


def _export(hits: list[Hit], name: str, key: str) -> None:
    if hits:
        st.download_button("Export as M3U playlist", to_m3u(hits), file_name=name, mime="audio/x-mpegurl",
                           key=key, icon=":material/playlist_play:")


def _query_by_clip(ctx: AppContext) -> None:
    """Upload a clip, find tracks that sound like it; the clip lives in a temp file only while it is encoded."""
    assert ctx.engine is not None
    limit_mb = ctx.settings.max_upload_mb
    with st.expander("Find tracks that sound like a clip", icon=":material/graphic_eq:"):
        clip = st.file_uploader(f"Audio clip (up to {limit_mb} MB)", type=UPLOAD_TYPES, key="clip")
        if clip is None:
            st.session_state.pop("clip_hits", None)
            return
        if clip.size > limit_mb * 2**20:
            st.error(f"That clip is {clip.size / 2**20:.1f} MB; the limit is {limit_mb} MB.")
            return
        cached = st.session_state.get("clip_hits")
        if cached is None or cached[0] != clip.file_id:
            suffix = Path(clip.name).suffix.lower()
            fd, tmp = tempfile.mkstemp(prefix="musilingo-clip-", suffix=suffix if suffix[1:] in UPLOAD_TYPES else "")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(clip.getbuffer())
                with st.spinner("Listening to the clip…"):
                    hits = ctx.engine.like_audio(tmp, top_k=ctx.options.page_size)
            except SearchError as exc:  # a clip that will not decode is the user's input, not a crash
                st.error(f"Could not use that clip: {md_escape(str(exc))}")
                return
            finally:
                os.unlink(tmp)
            cached = (clip.file_id, hits)
            st.session_state["clip_hits"] = cached
        hits = cached[1]
        st.caption(f"{len(hits)} tracks sound like “{md_escape(clip.name)}”")
        _export(hits, "sounds-like.m3u", "export-clip")
        result_cards(ctx, hits, "clip")


def render(ctx: AppContext) -> None:
    st.title("Search your music")
    if ctx.engine is None:
        st.info(md_escape(ctx.engine_error))
        return
    filters = sidebar_filters(ctx)
    keep("query", "")
    query = st.text_input("Describe what you want to hear", key="query", on_change=remember, args=("query",),
                          placeholder="e.g. calm piano in a minor key, upbeat drums, Miles Davis…")
    _query_by_clip(ctx)
    if not query.strip() and not filters:
        st.caption("Type a description, an artist or a title, or narrow the library with the filters.")
        return
    page_size = ctx.options.page_size
    if st.session_state.get("_last_search") != (query, filters):  # a new search starts at one page
        st.session_state["shown"] = page_size
        st.session_state["_last_search"] = (query, filters)
    result = run_search(ctx, query.strip(), filters, top_k=st.session_state["shown"])
    if result.message:
        st.info(md_escape(result.message))
    if not result.hits:
        st.warning("No tracks match. Try other words or wider filters.")
        return
    head, export = st.columns([3, 1], vertical_alignment="center")
    head.markdown(result_header(result, query.strip()))
    with export:
        _export(result.hits, "search.m3u", "export-search")
    result_cards(ctx, result.hits, "hit")
    if len(result.hits) < result.total:
        st.button("Show more", on_click=_show_more, args=(page_size,))


def _show_more(step: int) -> None:
    st.session_state["shown"] += step
