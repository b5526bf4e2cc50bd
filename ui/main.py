"""Entry point: `streamlit run ui/main.py`. Routes to the track page (?track=ID), the search or the library page."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run ui/main.py` puts ui/ on sys.path, not the project root that holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402

from ui.render import md_escape  # noqa: E402
from ui.views import library_page, search_page, track_page  # noqa: E402
from ui.views.common import CSS, keep, load_context, remember  # noqa: E402

PAGES = {"Search": search_page.render, "Library": library_page.render}


def main() -> None:
    st.set_page_config(page_title="MusiLingo Search", page_icon=":material/headphones:", layout="wide")
    st.html(CSS)
    try:
        ctx = load_context()
    except (KeyError, ValueError, OSError) as exc:  # an unknown profile or an unreadable config file
        st.error(f"Cannot start: {md_escape(str(exc))}")
        return
    st.sidebar.title(":material/headphones: MusiLingo")
    st.sidebar.caption(f"Profile **{md_escape(ctx.profile.name)}** · {ctx.settings.resolved_device()}")
    track = st.query_params.get("track", "")
    if track:
        if not track.isdigit():
            st.error("That track link is not valid.")
            st.query_params.pop("track", None)
            return
        track_page.render(ctx, int(track))
        return
    keep("nav", "Search")
    page = st.sidebar.radio("Go to", list(PAGES), key="nav", on_change=remember, args=("nav",))
    PAGES[page](ctx)


main()
