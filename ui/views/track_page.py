"""The track page: tags, caption, waveform, what the taggers hear, "more like this", and a chat about the track.

The chat never touches the audio file: it answers from the compressed audio tokens the indexer stored,
so a question costs one LLM generation whatever the track's length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import streamlit as st

from model.answers import Heard
from model.audio import AudioDecodeError, decode_audio
from model.config import ModelNotFoundError
from search.analysis import TrackAnalysisView, track_analysis
from search.types import SearchError
from ui.render import html_text, md_escape, tag_rows, waveform_image
from ui.serve import ForbiddenPath, resolve_in_roots
from ui.sound import heatmap_chart, heatmap_frame, sound_html, top_tags_chart, top_tags_frame
from ui.views.common import AppContext, chat_model, close_track, meta_line, player, result_cards

WAVE_RATE = 4000  # Hz: plenty for an envelope picture, and decoding at it is cheap


@st.cache_data(show_spinner=False, max_entries=128)
def _waveform(path: str, mtime_ns: int, max_seconds: float) -> np.ndarray:
    """Keyed on the file's mtime, so a re-tagged or replaced file gets a new picture."""
    return waveform_image(decode_audio(path, WAVE_RATE, max_seconds=max_seconds))


def _waveform_section(ctx: AppContext, path: str) -> None:
    try:
        real = resolve_in_roots(path, ctx.roots)
        st.image(_waveform(str(real), real.stat().st_mtime_ns, ctx.settings.max_track_seconds),
                 width="stretch")
    except (ForbiddenPath, AudioDecodeError) as exc:
        st.caption(f"No waveform: {md_escape(str(exc))}")


def _analysis_section(analysis: TrackAnalysisView | None) -> None:
    """The taggers' top tags over the whole track, and how the most heard ones change patch by patch."""
    st.subheader("What the taggers hear")
    if analysis is None:
        st.caption("Not analysed yet: the next scan tags this track and estimates its tempo and key.")
        return
    genre = f"Sounds like **{md_escape(analysis.auto_genre)}**. " if analysis.auto_genre else ""
    st.caption(genre + "Probabilities from the musicnn taggers trained on MagnaTagATune (MTT) and the Million "
               "Song Dataset (MSD).")
    bars, heat = st.columns([2, 3], gap="large")
    with bars:
        st.markdown("**Top tags**")
        top = top_tags_frame(analysis)
        if top.empty:
            st.caption("No tag was heard with a probability of 0.05 or more.")
        else:
            st.altair_chart(top_tags_chart(top), width="stretch")
    with heat:
        st.markdown("**Tags over time**")
        if analysis.probabilities.size:
            st.altair_chart(heatmap_chart(heatmap_frame(analysis)), width="stretch")
        else:
            st.caption("No patch-by-patch probabilities stored for this track.")


def _history(track_id: int) -> list[tuple[str, str]]:
    chats = st.session_state.setdefault("chats", {})
    return chats.setdefault(track_id, [])


def _clear_history(track_id: int) -> None:
    st.session_state.setdefault("chats", {})[track_id] = []


def _escaped(pieces: Iterator[str], sink: list[str]) -> Iterator[str]:
    """Stream the model's text as literal markdown while keeping the raw text for the history."""
    for piece in pieces:
        sink.append(piece)
        yield md_escape(piece)


def _chat_context(ctx: AppContext, analysis: TrackAnalysisView | None) -> Heard | None:
    """What the analysis heard, given to the chat model beside the audio tokens when the profile grounds chat."""
    if not ctx.profile.ground_chat or analysis is None:
        return None
    return Heard(analysis.tags, analysis.bpm, analysis.tonic, analysis.mode)


def _chat(ctx: AppContext, track_id: int, analysis: TrackAnalysisView | None) -> None:
    st.subheader("Ask about this track")
    if ctx.profile.name == "lite" or ctx.profile.encoder == "lite":
        st.info("The **lite** profile is active: a small CPU model answers, so replies are short and rough. "
                "Use the `musilingo` profile on a GPU for the published model.", icon=":material/info:")
    history = _history(track_id)
    for question, answer in history:
        st.chat_message("user").markdown(md_escape(question))
        st.chat_message("assistant").markdown(md_escape(answer))
    question = st.chat_input("Ask about the mood, instruments, tempo…", key=f"chat-{track_id}")
    if history:
        st.button("Clear conversation", on_click=_clear_history, args=(track_id,), icon=":material/delete:")
    if not question:
        return
    st.chat_message("user").markdown(md_escape(question))
    with st.chat_message("assistant"):
        try:
            model = chat_model(ctx)
        except ModelNotFoundError as exc:
            st.error(f"The model for profile '{md_escape(ctx.profile.name)}' is not available: {md_escape(str(exc))}")
            return
        try:
            tokens = ctx.engine.track_tokens(track_id)
        except SearchError as exc:
            st.error(md_escape(str(exc)))
            return
        raw: list[str] = []
        st.write_stream(_escaped(model.stream(tokens, question, list(history), greedy=ctx.options.chat_greedy,
                                              max_new_tokens=ctx.options.chat_max_new_tokens,
                                              context=_chat_context(ctx, analysis)), raw))
    history.append((question, "".join(raw).strip() or "(The model gave no answer; try rephrasing.)"))
    st.rerun()


def render(ctx: AppContext, track_id: int) -> None:
    st.button("← Back to search", on_click=close_track)
    if ctx.engine is None:
        st.info(md_escape(ctx.engine_error))
        return
    try:
        track = ctx.engine.track(track_id)
    except SearchError:
        st.error(f"No track with id {track_id} in the catalog.")
        return
    analysis = track_analysis(ctx.engine.catalog, track_id)
    title = html_text(track.get("title") or track["path"].rsplit("/", 1)[-1])
    st.html(f'<div class="ml-card ml-hero"><div class="ml-title">{title}</div>'
            f'<div class="ml-meta">{meta_line(track)}</div>'
            f'<div class="ml-caption">{html_text(track.get("caption") or "No caption yet.")}</div>'
            f'{sound_html(analysis)}</div>')
    player(ctx, track["path"])
    _waveform_section(ctx, track["path"])
    _analysis_section(analysis)
    about, chat = st.columns([1, 1], gap="large")
    with about:
        st.subheader("Details")
        version = track.get("pipeline_version")
        current = ctx.profile.version()
        st.caption(f"Caption from pipeline {version or 'none'}"
                   + ("" if version in (None, current) else f" (current profile: {current})"))
        rows = tag_rows(track.get("tags") or {})
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch")
        st.text(f"File: {track['path']}")
    with chat:
        _chat(ctx, track_id, analysis)
    st.subheader("More like this")
    try:
        result_cards(ctx, ctx.engine.like_track(track_id, top_k=6), "like")
    except SearchError as exc:
        st.caption(md_escape(str(exc)))
