"""The library page: what the catalog holds, what failed and why, and a scan started in the background.

The scan runs as `python -m indexer scan` in its own process, so the page stays responsive; progress is
read back from the catalog's scans table by a fragment that refreshes itself while a scan runs.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import streamlit as st

from ui.render import fmt_duration, md_escape
from ui.views.common import AppContext

REFRESH_SECONDS = 2.0


@st.cache_resource
def _scan_processes() -> dict[str, subprocess.Popen]:
    """Scans this server started, by data dir: one at a time per catalog, and reaped when they end."""
    return {}


def _our_scan_running(ctx: AppContext) -> bool:
    proc = _scan_processes().get(str(ctx.settings.data_dir))
    return proc is not None and proc.poll() is None


def start_scan(ctx: AppContext) -> None:
    """Launch the indexer on the configured roots; its output goes to a log next to the catalog."""
    data_dir = Path(ctx.settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "ui-scan.log", "ab") as log:
        _scan_processes()[str(data_dir)] = subprocess.Popen(
            [sys.executable, "-m", "indexer", "scan", *ctx.settings.roots, "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _scan_controls(ctx: AppContext, running: bool) -> None:
    if not ctx.settings.roots:
        st.caption("Set MUSILINGO_ROOTS (or `roots` in the config file) to scan from here; "
                   "or run `python -m indexer scan PATH`.")
        return
    st.caption("Library roots: " + md_escape(", ".join(ctx.settings.roots)))
    busy = running or _our_scan_running(ctx)
    st.button("Scan library now", on_click=start_scan, args=(ctx,), disabled=busy, type="primary",
              icon=":material/sync:", help="A scan is already running" if busy else "Index new and changed files")


class ScanPace(NamedTuple):
    audio_hours: float
    realtime: float | None  # audio seconds indexed per wall second since the scan started
    eta_seconds: float | None  # as of the scan's last commit


def pace(scan: dict, since: tuple[dt.datetime, int] | None) -> ScanPace:
    """A running scan's figures from its `scans` row; files per second between `since` (the heartbeat and
    files done of an earlier row of the same scan) and this row.

    The terminal's bar (indexer/progress.py) times the bytes it reads over a recent window; this page has
    only the row, which the writer updates once per batch, and `ui/` does not import `indexer/`, so the
    figures are computed here. A rescan counts its unchanged files done at once, so the files per second
    are measured between two rows seen, not from the scan's start.
    """
    audio, done = scan.get("audio_seconds") or 0.0, scan.get("files_done") or 0
    started, beat = scan.get("started_at"), scan.get("heartbeat")
    elapsed = (beat - started).total_seconds() if started and beat else 0.0
    eta = None
    if since is not None and beat:
        span, files = (beat - since[0]).total_seconds(), done - since[1]
        if span > 0 and files > 0:
            eta = max((scan.get("files_total") or 0) - done, 0) * span / files
    return ScanPace(audio / 3600, audio / elapsed if elapsed > 0 else None, eta)


def _progress(scan: dict | None) -> bool:
    """Draw the latest scan's state; True while it is running."""
    if not scan:
        st.caption("No scan has run yet.")
        return False
    total, done = scan.get("files_total") or 0, scan.get("files_done") or 0
    if scan.get("state") == "running":
        seen = f"scan-{scan.get('id')}-first-seen"
        if done and scan.get("heartbeat") and seen not in st.session_state:  # what the plan counted done is in it
            st.session_state[seen] = (scan["heartbeat"], done)
        figures = pace(scan, st.session_state.get(seen))
        speed = "--" if figures.realtime is None else f"{figures.realtime:.1f}"
        left = "after the next batch" if figures.eta_seconds is None else fmt_duration(figures.eta_seconds)
        st.progress(min(done / total, 1.0) if total else 0.0,
                    text=f"Scanning: {done} of {total or '?'} files · {figures.audio_hours:.2f} h audio · "
                         f"{speed}x realtime · ETA {left}")
        st.caption("x realtime: audio seconds indexed per second since the scan started. ETA: the files left "
                   "at the pace this page has seen, as of the scan's last commit.")
        return True
    started = scan.get("started_at")
    st.caption(f"Last scan {scan.get('state')}: {done} of {total} files"
               + (f", started {started:%Y-%m-%d %H:%M}" if started else ""))
    return False


def render(ctx: AppContext) -> None:
    st.title("Library")
    if ctx.engine is None:
        st.info(md_escape(ctx.engine_error))
        _scan_controls(ctx, False)
        return
    latest = ctx.engine.stats().get("latest_scan") or {}
    running = latest.get("state") == "running" or _our_scan_running(ctx)
    _scan_controls(ctx, running)  # outside the fragment: starting a scan reruns the page, which starts polling

    @st.fragment(run_every=REFRESH_SECONDS if running else None)
    def live() -> None:
        stats = ctx.engine.stats()
        failures = stats["failures"]
        cols = st.columns(4)
        for col, label, value in zip(cols, ("Tracks", "Indexed", "Captioned", "Failed"),
                                     (stats["tracks"], stats["by_status"].get("done", 0), stats["captions"],
                                      failures["count"]), strict=True):
            col.metric(label, value)
        now_running = _progress(stats.get("latest_scan"))
        if running and not now_running and not _our_scan_running(ctx):
            st.rerun()  # the scan ended: redraw the whole page (button enabled again, no more polling)
        st.subheader("Pipeline versions")
        st.caption(f"The active profile '{md_escape(ctx.profile.name)}' writes encoder {ctx.profile.version('encoder')} "
                   f"and pipeline {ctx.profile.version()}.")
        if stats["versions"]:
            st.dataframe(stats["versions"], hide_index=True, width="stretch")
        st.subheader(f"Failed files ({failures['count']})")
        if failures["recent"]:
            st.dataframe(failures["recent"], hide_index=True, width="stretch")
        else:
            st.caption("Every file was read.")

    live()
