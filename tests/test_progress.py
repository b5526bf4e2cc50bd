"""A long scan's progress: audio hours, x realtime and time left, on the terminal bar and on the library page.

The figures are checked on known counts and times (`indexer.progress.Pace`, `ui.views.library_page.pace`),
then where they are shown: the bar of a real scan written to a readable stream, the `--json` output of a
real `python -m indexer scan` (no progress in it), and the library page (AppTest) on a real catalog with a
running scan's row.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess

import pytest
from sqlalchemy import insert, update
from streamlit.testing.v1 import AppTest

from catalog.store import Catalog, scans
from indexer.pipeline import scan
from indexer.progress import Pace
from tests.harness import lite_variant
from tests.hostile import REPO, cli_env, make_data_dir, scan_cmd
from ui.views.library_page import pace

APP = str(REPO / "ui" / "main.py")
FIGURES = re.compile(r"(\d+\.\d\d) h audio, (--|\d+\.\d)x realtime, ETA (--:--|[\d:]+)")


def test_time_left_follows_the_bytes_left_not_the_files_left() -> None:
    """Three short songs done in 30 s, one mix of 30 times their size left: about 300 s more, not 10."""
    progress = Pace(files=4, size=3 * 1_000_000 + 30_000_000, now=0.0)
    assert progress.figures().text() == "0.00 h audio, --x realtime, ETA --:--"
    for t in (10.0, 20.0, 30.0):
        progress.advance(1, 1_000_000, 120.0, now=t)
    figures = progress.figures()
    assert figures.audio_hours == pytest.approx(0.1)
    assert figures.realtime == pytest.approx(12.0)
    assert figures.eta_seconds == pytest.approx(300.0)
    assert figures.text() == "0.10 h audio, 12.0x realtime, ETA 05:00"


def test_speed_is_measured_over_the_recent_window() -> None:
    """A slow start (the models loading) stops counting once the window has moved past it."""
    progress = Pace(files=40, size=40_000, now=0.0, window=60.0)
    progress.advance(1, 1_000, 10.0, now=100.0)  # the first commit, after a slow start
    assert progress.figures().realtime == pytest.approx(0.1)
    for i in range(1, 20):
        progress.advance(1, 1_000, 100.0, now=100.0 + 10 * i)  # then 10x realtime, a file every 10 s
    figures = progress.figures()
    assert figures.realtime == pytest.approx(10.0)
    assert figures.eta_seconds == pytest.approx(20 * 10.0)  # 20 files of 1000 bytes at 100 bytes/s
    progress.advance(20, 20_000, 2000.0, now=500.0)
    assert progress.figures().eta_seconds == 0.0


def test_without_bytes_to_read_time_left_counts_files() -> None:
    """Captions redone from stored tokens read nothing: their time left is files at files per second."""
    progress = Pace(files=10, size=0, now=0.0)
    progress.advance(2, 0, 0.0, now=8.0)
    figures = progress.figures()
    assert figures.eta_seconds == pytest.approx(32.0) and figures.realtime == 0.0
    assert figures.text() == "0.00 h audio, 0.0x realtime, ETA 00:32"


def test_page_figures_come_from_the_scan_row() -> None:
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    row = {"started_at": start, "heartbeat": start + dt.timedelta(seconds=160), "files_total": 100,
           "files_done": 50, "audio_seconds": 1200.0}
    assert pace(row, None) == (1200 / 3600, 7.5, None)
    # 40 files were done (unchanged, say) when the page first looked, 100 s in: 10 files in 60 s since
    assert pace(row, (start + dt.timedelta(seconds=100), 40)).eta_seconds == pytest.approx(300.0)
    assert pace(row, (row["heartbeat"], 50)).eta_seconds is None  # no commit seen since
    assert pace({**row, "heartbeat": start}, None).realtime is None


def test_scan_bar_shows_audio_hours_speed_and_time_left(audio_library, indexer_settings, indexer_models,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for i, seconds in enumerate((2.0, 2.0, 6.0)):
        audio_library(f"Band/Album/0{i + 1} Song.flac", seconds=seconds, seed=i)
    summary = scan([str(audio_library.root)], indexer_settings, indexer_models.profile, models=indexer_models,
                   greedy=True, commit_every=1, progress=True)
    assert summary.state == "finished" and len(summary.indexed) == 3
    out, err = capsys.readouterr()
    assert "realtime" not in out, "the bar goes to stderr, never stdout"
    lines = [line for line in re.split(r"[\r\n]+", err) if "files [" in line]
    figures = FIGURES.search(lines[-1])  # the bar as it closed
    assert figures and "3/3 files" in lines[-1], lines
    assert figures.group(3) == "00:00" and float(figures.group(2)) > 0, lines[-1]
    during = [FIGURES.search(line) for line in lines if re.search(r"\| [12]/3 files", line)]
    assert any(m and m.group(3) not in ("--:--", "00:00") for m in during), lines  # time left while files remain


def test_json_scan_prints_only_json(audio_library, tmp_path) -> None:
    audio_library("Band/Album/01 Song.flac", seconds=2.0, seed=1)
    data = make_data_dir(tmp_path / "data")
    done = subprocess.run(scan_cmd([audio_library.root], data), cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # all of stdout is the one object
    assert summary["state"] == "finished" and summary["counts"]["indexed"] == 1
    assert "realtime" not in done.stdout + done.stderr and "files [" not in done.stderr


def test_library_page_shows_a_running_scans_pace(audio_library, indexer_settings, indexer_models, tmp_path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    audio_library("Band/Album/01 Song.flac", seconds=2.0, seed=1)
    scan([str(audio_library.root)], indexer_settings, indexer_models.profile, models=indexer_models, greedy=True)
    catalog = Catalog(indexer_settings.catalog_path)
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    with catalog.write() as conn:  # as the writer leaves it after a batch: 40 files done, 600 s of audio
        scan_id = conn.execute(insert(scans).values(
            started_at=start, heartbeat=start + dt.timedelta(seconds=100), roots="[]", profile="lite",
            state="running", files_total=100, files_done=40, audio_seconds=600.0).returning(scans.c.id)).scalar_one()
    for key in [k for k in os.environ if k.startswith("MUSILINGO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MUSILINGO_DATA_DIR", str(indexer_settings.data_dir))
    monkeypatch.setenv("MUSILINGO_PROFILE", str(lite_variant(tmp_path / "lite.toml", adapter="", name="lite")))
    monkeypatch.setenv("MUSILINGO_DEVICE", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=180).run()
    at = at.sidebar.radio(key="nav").set_value("Library").run()
    assert not at.exception
    (bar,) = at.get("progress")
    assert bar.value == 40
    assert bar.text == "Scanning: 40 of 100 files · 0.17 h audio · 6.0x realtime · ETA after the next batch"
    with catalog.write() as conn:  # the next batch: 10 more files in 60 s, 600 s more audio
        conn.execute(update(scans).where(scans.c.id == scan_id).values(
            heartbeat=start + dt.timedelta(seconds=160), files_done=50, audio_seconds=1200.0))
    at = at.run()
    (bar,) = at.get("progress")
    assert bar.text == "Scanning: 50 of 100 files · 0.33 h audio · 7.5x realtime · ETA 5:00"
    assert any("x realtime" in c.value and "ETA" in c.value for c in at.caption)
