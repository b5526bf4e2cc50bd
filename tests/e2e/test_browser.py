"""The real app in a real browser: `streamlit run ui/main.py` on a small catalog, driven by headless Chromium.

Playwright's `launch` gives each run a fresh temporary profile (user-data-dir), so nothing leaks between runs.

Type a query, see results with what the taggers heard, open a track and see its tag charts, ask a question,
get an answer; hostile tags must render as text.
Screenshots go to the pytest tmp dir and, when UI_SCREENSHOT_DIR is set, there too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_ui_app import APP, HOSTILE_TITLE, REPO, build_catalog

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (install it with: apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a free localhost port; its log is printed if it fails to come up."""
    catalog = build_catalog(tmp_path_factory.mktemp("e2e-catalog"))
    port = _free_port()
    log = tmp_path_factory.mktemp("e2e-log") / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", APP, "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env={**os.environ, **catalog["env"]}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("streamlit did not start:\n" + log.read_text(errors="replace"))
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _screenshot(page, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("UI_SCREENSHOT_DIR"):
        target = Path(os.environ["UI_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / name)


def test_search_open_track_and_chat(server: str, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server)
        box = page.get_by_label("Describe what you want to hear")
        box.fill("drums piano")
        box.press("Enter")
        page.locator(".ml-card .ml-title", has_text="Thunder Drums").wait_for()
        page.locator("audio").first.wait_for(state="attached")  # Streamlit draws the player after the title
        assert "BPM" in page.locator(".ml-card .ml-facts").first.inner_text()  # the scan analysed every track
        _screenshot(page, tmp_path, "search.png")

        box.fill("hostile script")
        box.press("Enter")
        hostile = page.locator(".ml-card .ml-title", has_text="window.__pwned=1")
        hostile.wait_for()
        assert hostile.first.inner_text() == HOSTILE_TITLE  # the tag text, shown literally
        assert page.evaluate("window.__pwned === undefined")

        box.fill("piano")
        box.press("Enter")
        page.locator(".ml-card .ml-title", has_text="Calm Piano Morning").wait_for()
        page.get_by_role("button", name="Open ›").first.click()
        page.locator(".ml-hero").wait_for()
        charts = page.locator('[data-testid="stVegaLiteChart"]')  # top tags and tags over time
        charts.nth(1).locator("canvas, svg").first.wait_for()
        assert charts.count() == 2 and "BPM" in page.locator(".ml-hero .ml-facts").inner_text()
        chat = page.get_by_placeholder("Ask about the mood, instruments, tempo…")
        chat.fill("What instruments can you hear?")
        chat.press("Enter")
        answers = page.locator('[data-testid="stChatMessage"]')
        page.get_by_role("button", name="Clear conversation").wait_for()  # drawn once the answer is stored
        assert answers.count() == 2
        assert answers.nth(1).inner_text().strip()
        page.set_viewport_size({"width": 1400, "height": 1800})  # Streamlit scrolls inside the page: grow it
        _screenshot(page, tmp_path, "track.png")

        page.get_by_role("button", name="← Back to search").click()
        page.get_by_text("Library", exact=True).click()
        page.get_by_text("Failed files (1)").wait_for()
        page.get_by_text("Ask about this track").wait_for(state="detached")  # the track page is gone
        page.locator('[data-testid="stMetricValue"]', has_text="4").first.wait_for()
        _screenshot(page, tmp_path, "library.png")
        browser.close()
