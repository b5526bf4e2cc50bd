"""What every page shares: settings and profile, the cached engine and model, result cards and the player.

Settings and profile come from `model.runtime.settings_and_profile()` (MUSILINGO_* variables,
`$MUSILINGO_CONFIG` or `<data_dir>/config.toml`), the path every CLI takes, so the CLI and the UI always
agree on the catalog and the profile. UI-only options live in that TOML's `[ui]` table (chat_greedy,
chat_max_new_tokens, player_max_mb, page_size); an unknown key there is an error, as at the top level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import streamlit as st

from model.config import Profile
from model.runtime import settings_and_profile
from model.settings import Settings, reject_unknown_keys
from search.analysis import AnalysisSummary, analysis_summaries
from search.engine import SearchEngine
from search.types import Filters, Hit, SearchResult
from ui.render import fmt_duration, html_text
from ui.serve import ForbiddenPath, read_audio
from ui.sound import sound_html

if TYPE_CHECKING:
    from model.musilingo import MusiLingo

CSS = """<style>
.ml-card .ml-title {font-size: 1.08rem; font-weight: 650; line-height: 1.3;}
.ml-card .ml-meta {opacity: .75; font-size: .88rem; margin-top: .1rem;}
.ml-card .ml-caption {margin-top: .45rem; font-size: .95rem; line-height: 1.45;}
.ml-card .ml-why {margin-top: .35rem; font-size: .8rem; opacity: .7;}
.ml-card .ml-chip {display: inline-block; padding: 0 .45rem; margin-right: .3rem; border-radius: .6rem;
  background: rgba(255, 75, 75, .16); font-size: .75rem;}
.ml-card .ml-sound {margin-top: .4rem; font-size: .85rem;}
.ml-card .ml-facts {font-weight: 600; margin-right: .5rem;}
.ml-card .ml-tag {background: rgba(28, 131, 225, .16);}
.ml-card mark {background: rgba(255, 196, 0, .35); color: inherit; border-radius: .2rem; padding: 0 .1rem;}
.ml-hero .ml-title {font-size: 1.9rem; font-weight: 700;}
.ml-hero .ml-meta {font-size: 1.02rem; opacity: .8;}
.ml-hero .ml-caption {font-size: 1.02rem; margin-top: .6rem; line-height: 1.5;}
</style>"""


@dataclass(frozen=True)
class UiOptions:
    chat_greedy: bool = False
    chat_max_new_tokens: int | None = None  # None: the profile's max_new_tokens
    player_max_mb: int = 200
    page_size: int = 20


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    profile: Profile
    options: UiOptions
    engine: SearchEngine | None  # None until a catalog exists
    engine_error: str
    roots: tuple[str, ...]  # what the player may serve


def _settings_key(settings: Settings) -> str:
    return repr(settings)


@st.cache_resource(show_spinner="Opening the catalog…", max_entries=4)
def _open_engine(key: str, _settings: Settings) -> SearchEngine:
    """One engine per settings per server process: it holds the text embedder and the vector indexes,
    and copies a running scan's commits for its keyword snapshot between searches."""
    engine = SearchEngine(_settings)
    engine.follow_catalog()
    return engine


@st.cache_resource(show_spinner="Loading the model (once per server)…", max_entries=2)
def _load_chat_model(key: str, _profile: Profile, _settings: Settings) -> MusiLingo:
    """The chat model works from stored audio tokens, so the encoder is never loaded here."""
    from model.cli import quiet_progress_bars
    from model.musilingo import MusiLingo

    quiet_progress_bars()

    return MusiLingo.from_profile(_profile, device=_settings.resolved_device(), cache_dir=_settings.models_dir,
                                  with_encoder=False)


def chat_model(ctx: AppContext) -> MusiLingo:
    """Keyed on the profile's version too, which hashes the adapter file: a retrained adapter is picked up."""
    key = ctx.profile.version() + repr(ctx.profile) + _settings_key(ctx.settings)
    return _load_chat_model(key, ctx.profile, ctx.settings)


def load_context() -> AppContext:
    """Read settings on every run (cheap) so a changed environment or config file takes effect at once."""
    settings, profile = settings_and_profile()
    reject_unknown_keys(settings.ui, list(UiOptions.__dataclass_fields__), "settings, [ui] table")
    options = UiOptions(**settings.ui)
    engine, error = None, ""
    if settings.catalog_path.exists():
        try:
            engine = _open_engine(_settings_key(settings), settings)
        except Exception as exc:  # shown on the page; the library page can still start a scan
            error = f"{type(exc).__name__}: {exc}"
    else:
        error = f"No catalog yet at {settings.catalog_path}. Start a scan from the Library page."
    roots = settings.roots
    if not roots and engine is not None:
        roots = tuple(engine.facets().get("roots", ()))  # the roots the user scanned with the CLI
    return AppContext(settings, profile, options, engine, error, roots)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_search(key: str, stamp: str, query: str, filters: tuple, top_k: int, offset: int,
                   _engine: SearchEngine) -> SearchResult:
    return _engine.search(query, filters=Filters(**dict(filters)), top_k=top_k, offset=offset)


def run_search(ctx: AppContext, query: str, filters: dict[str, Any], top_k: int, offset: int = 0) -> SearchResult:
    """Search through st.cache_data keyed on query, filters, page and what a search reads (`engine.stamp`)."""
    assert ctx.engine is not None
    frozen = tuple(sorted(filters.items()))
    return _cached_search(_settings_key(ctx.settings), ctx.engine.stamp(), query, frozen, top_k, offset, ctx.engine)


def open_track(track_id: int) -> None:
    """Button callback: the track page is addressed by ?track=ID so it can be bookmarked."""
    st.query_params["track"] = str(track_id)


def close_track() -> None:
    st.query_params.pop("track", None)


def keep(key: str, default: Any) -> None:
    """Streamlit forgets a widget's value on runs where it is not drawn; restore it from a shadow copy."""
    shadow = "_keep_" + key
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(shadow, default)
    st.session_state[shadow] = st.session_state[key]


def remember(key: str) -> None:
    """Callback for kept widgets: copy the new value into the shadow as soon as it changes."""
    st.session_state["_keep_" + key] = st.session_state[key]


def player(ctx: AppContext, path: str) -> None:
    """An st.audio player whose bytes were read through ui.serve, which refuses paths outside the roots."""
    try:
        data, mime = read_audio(path, ctx.roots, ctx.options.player_max_mb * 2**20)
    except ForbiddenPath as exc:
        st.caption(f"Player unavailable: {exc}")
        return
    st.audio(data, format=mime)


def meta_line(item: Hit | dict) -> str:
    """Artist · album · year · genre · duration · format, escaped, matched words marked, unknowns skipped."""
    get = item.get if isinstance(item, dict) else lambda k: getattr(item, k, None)
    words = get("matched_fields") or {}
    parts = [(get(name), words.get(name, ())) for name in ("artist", "album", "year", "genre")]
    parts += [(fmt_duration(get("duration")), ()), ((get("format") or "").upper() or None, ())]
    return " · ".join(html_text(str(value), terms) for value, terms in parts if value not in (None, "", "—"))


def why_line(hit: Hit) -> str:
    """Why the hit matched: the engine's reasons, then the score per signal as chips."""
    chips = [f'<span class="ml-chip">{name} {value:.2f}</span>'
             for name, value in (("words", hit.keyword), ("meaning", hit.semantic), ("sound", hit.audio))
             if value]
    reasons = html_text("; ".join(hit.reasons)) if hit.reasons else ""
    return "".join(chips) + reasons


def card_html(hit: Hit, sound: AnalysisSummary | None = None) -> str:
    """A result card; every piece of catalog text is escaped by html_text before it is placed in markup,
    and each field highlights the words the engine found in that field. `sound` adds what the taggers
    heard (tempo, key, tag chips) for an analysed track."""
    words = hit.matched_fields
    title = html_text(hit.title or os.path.basename(hit.path), words.get("title", ()))
    return (f'<div class="ml-card"><div class="ml-title">{title}</div>'
            f'<div class="ml-meta">{meta_line(hit)}</div>'
            f'<div class="ml-caption">{html_text(hit.caption, words.get("caption", ()))}</div>'
            f'{sound_html(sound)}<div class="ml-why">{why_line(hit)}</div></div>')


def result_cards(ctx: AppContext, hits: list[Hit], prefix: str) -> None:
    """Each hit as a bordered card with its player and a button that opens the track page."""
    assert ctx.engine is not None
    sounds = analysis_summaries(ctx.engine.catalog, [h.track_id for h in hits])  # one read for the page
    for hit in hits:
        with st.container(border=True):
            st.html(card_html(hit, sounds.get(hit.track_id)))
            left, right = st.columns([5, 1], vertical_alignment="center")
            with left:
                player(ctx, hit.path)
            with right:
                st.button("Open ›", key=f"{prefix}-open-{hit.track_id}", on_click=open_track,
                          args=(hit.track_id,), width="stretch")
