"""The Streamlit app driven with AppTest on a small real catalog: real audio, the real indexer, the lite model.

The catalog is built once per session: a few short FLAC files synthesised here and tagged with mutagen
(one with a hostile title), plus one corrupt file, scanned by `python -m indexer scan` with the lite
profile and a fresh adapter. The chat uses greedy decoding and short answers through the `[ui]` table.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
from mutagen.flac import FLAC
from streamlit.testing.v1 import AppTest

from model.settings import load_settings
from search import SearchEngine
from tests.harness import lite_variant
from ui.render import md_escape

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "ui" / "main.py")
RATE = 22050
HOSTILE_TITLE = "<script>window.__pwned=1</script> **Bold** [click](javascript:alert(1))"

# (relative path, tags, kind of sound, seconds)
TRACKS = [
    ("Ada Keys/Quiet Hours/01 Calm Piano Morning.flac",
     dict(title="Calm Piano Morning", artist="Ada Keys", album="Quiet Hours", genre="Classical", date="1999"),
     "chord", 5.0),
    ("Beat Unit/Loud/01 Thunder Drums.flac",
     dict(title="Thunder Drums", artist="Beat Unit", album="Loud", genre="Rock", date="2015"), "drums", 6.0),
    ("Beat Unit/Loud/02 Night Bass.flac",
     dict(title="Night Bass", artist="Beat Unit", album="Loud", genre="Electronic", date="2016"), "bass", 4.0),
    ("Evil & Co/Tags/01 Hostile.flac",
     dict(title=HOSTILE_TITLE, artist="Evil & Co", album="<b>Tags</b>", genre="Jazz", date="2001"), "chord", 3.0),
]


def synth(kind: str, seconds: float, seed: int) -> np.ndarray:
    """Distinct, deterministic sounds so 'more like this' and search have something to tell apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    if kind == "chord":
        wave = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) / 3
    elif kind == "bass":
        wave = np.sin(2 * np.pi * 55 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    else:
        wave = rng.normal(0, 0.3, t.size) * np.exp(-((t * 4) % 1) * 12)  # noise bursts on every beat
    return (0.5 * wave).astype(np.float32)


def write_flac(path: Path, samples: np.ndarray, tags: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    audio = FLAC(str(path))
    audio.update(tags)
    audio.save()


def build_catalog(base: Path) -> dict[str, Path | str]:
    """Write the library, a lite profile with a fresh adapter, a config file, then scan with the real indexer."""
    library = base / "library"
    for i, (rel, tags, kind, seconds) in enumerate(TRACKS):
        write_flac(library / rel, synth(kind, seconds, i), tags)
    (library / "Broken" / "Junk").mkdir(parents=True)
    (library / "Broken" / "Junk" / "01 Corrupt.mp3").write_bytes(b"this is not audio at all" * 40)
    data = base / "data"
    data.mkdir()
    profile = base / "lite.toml"  # the shipped lite profile, but with a fresh adapter: no trained file needed
    lite_variant(profile, adapter="", max_new_tokens=24, name="lite")
    config = data / "config.toml"
    config.write_text("[ui]\nchat_greedy = true\nchat_max_new_tokens = 12\npage_size = 10\n")
    env = {**os.environ, "MUSILINGO_DATA_DIR": str(data), "MUSILINGO_ROOTS": str(library),
           "MUSILINGO_PROFILE": str(profile), "MUSILINGO_CONFIG": str(config), "MUSILINGO_DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "indexer", "scan", str(library), "--data-dir", str(data), "--greedy"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"library": library, "data": data, "env": {k: env[k] for k in env if k.startswith(("MUSILINGO_", "HF_"))}}


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_catalog(tmp_path_factory.mktemp("ui-catalog"))


@pytest.fixture()
def app(catalog: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    for key, value in catalog["env"].items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=180)
    return at.run()


def _html(at: AppTest) -> str:
    return "\n".join(el.value for el in at.get("html"))


def _search(at: AppTest, query: str) -> AppTest:
    return at.text_input(key="query").input(query).run()


def _track_id(at: AppTest, title_word: str) -> int:
    """The id behind the Open button of the first card whose HTML mentions `title_word`."""
    cards = [re.sub(r"</?mark>", "", el.value) for el in at.get("html") if 'class="ml-card"' in el.value]
    buttons = [b for b in at.button if b.key and b.key.startswith("hit-open-")]
    for card, button in zip(cards, buttons, strict=True):
        if title_word in card:
            return int(button.key.rsplit("-", 1)[1])
    raise AssertionError(f"no card mentions {title_word}")


def test_search_shows_cards_with_players_and_highlights(app: AppTest) -> None:
    assert not app.exception
    at = _search(app, "drums")
    assert not at.exception
    page = _html(at)
    assert "Thunder <mark>Drums</mark>" in page
    assert "Beat Unit · Loud · 2015 · Rock · 0:06 · FLAC" in page
    assert len(at.get("audio")) >= 1  # players read through ui.serve
    assert any("tracks match" in m.value for m in at.markdown)
    assert at.get("download_button"), "the result list can be exported as M3U"


def test_hostile_tags_are_shown_literally(app: AppTest) -> None:
    at = _search(app, "hostile script bold")
    page = _html(at)
    assert "&lt;<mark>script</mark>&gt;window.__pwned=1&lt;/<mark>script</mark>&gt;" in page
    assert "**<mark>Bold</mark>** [click](javascript:alert(1))" in page  # markdown syntax stays visible text
    assert "&lt;b&gt;Tags&lt;/b&gt;" in page and "<script" not in page and "<b>" not in page


def test_filters_narrow_the_results(app: AppTest) -> None:
    """With no query the filters list the matching tracks; with one they narrow its results."""
    at = app.sidebar.selectbox(key="f_artist").set_value("Beat Unit").run()
    page = _html(at)
    assert "Thunder Drums" in page and "Night Bass" in page and "Calm Piano" not in page
    at = _search(at, "drums")
    page = _html(at)
    # the keyword hit leads; the artist's other track may follow on caption meaning (fresh-adapter
    # captions are arbitrary), but no other artist's track may appear
    assert "Thunder <mark>Drums</mark>" in page and "Calm Piano" not in page
    assert "Night Bass" not in page or page.index("Thunder <mark>Drums</mark>") < page.index("Night Bass")
    at = _search(at, "")
    at.sidebar.selectbox(key="f_artist").set_value(None).run()
    at.sidebar.slider(key="f_year").set_value((2014, 2016)).run()
    page = _html(at)
    assert "Thunder" in page and "Night Bass" in page and "Calm Piano" not in page


def test_track_page_chat_and_similar(app: AppTest) -> None:
    at = _search(app, "piano")
    track_id = _track_id(at, "Calm Piano Morning")
    at.button(key=f"hit-open-{track_id}").click().run()
    assert at.query_params["track"] == str(track_id)
    assert not at.exception
    page = _html(at)
    assert 'class="ml-card ml-hero"' in page and "Calm Piano Morning" in page
    assert any("lite" in info.value for info in at.info), "the lite profile is announced"
    assert at.get("image"), "waveform picture"
    assert any(b.key.startswith("like-open-") for b in at.button if b.key), "more like this"
    assert any("Caption from pipeline" in c.value for c in at.caption)

    at.chat_input(key=f"chat-{track_id}").set_value("What instruments can you hear?").run()
    assert not at.exception
    bubbles = at.chat_message
    assert [b.name for b in bubbles] == ["user", "assistant"]
    assert bubbles[0].markdown[0].value == md_escape("What instruments can you hear?")
    assert bubbles[1].markdown[0].value.strip(), "the model answered"

    at.chat_input(key=f"chat-{track_id}").set_value("And the tempo?").run()
    assert [b.name for b in at.chat_message] == ["user", "assistant", "user", "assistant"]
    at.button[[b.label for b in at.button].index("Clear conversation")].click().run()
    assert len(at.chat_message) == 0

    at.button[0].click().run()  # back to search, the query is still there
    assert "track" not in at.query_params and at.text_input(key="query").value == "piano"


def test_unknown_track_is_reported(catalog: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in catalog["env"].items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["track"] = "999999"
    at.run()
    assert any("No track with id 999999" in e.value for e in at.error)


def test_library_page_shows_counts_failures_and_versions(app: AppTest) -> None:
    at = app.sidebar.radio(key="nav").set_value("Library").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tracks"] == "4" and metrics["Failed"] == "1"
    frames = [df.value for df in at.dataframe]
    failures = next(f for f in frames if "reason" in f.columns)
    assert failures["path"].str.endswith("01 Corrupt.mp3").any()


def test_scan_button_runs_the_indexer_in_the_background(app: AppTest, catalog: dict) -> None:
    engine = SearchEngine(load_settings())
    before = engine.stats()["latest_scan"]["id"]
    at = app.sidebar.radio(key="nav").set_value("Library").run()
    button = next(b for b in at.button if b.label == "Scan library now")
    at = button.click().run()
    assert not at.exception
    assert next(b for b in at.button if b.label == "Scan library now").disabled, "one scan at a time"
    deadline = time.monotonic() + 120
    while (engine.stats()["latest_scan"] or {}).get("id") == before or \
            engine.stats()["latest_scan"]["state"] == "running":
        assert time.monotonic() < deadline, (catalog["data"] / "ui-scan.log").read_text()
        time.sleep(0.5)
    assert engine.stats()["latest_scan"]["state"] == "finished"
    assert engine.stats()["tracks"] == 4  # nothing changed on disk, nothing was added or lost


def test_query_by_clip_finds_the_same_sound(app: AppTest, catalog: dict) -> None:
    clip = catalog["library"] / "Beat Unit" / "Loud" / "02 Night Bass.flac"
    at = app.file_uploader(key="clip").set_value(("clip.flac", clip.read_bytes(), "audio/flac")).run()
    assert not at.exception
    cards = [el.value for el in at.get("html") if 'class="ml-card"' in el.value]
    assert cards and "Night Bass" in cards[0]
    assert not list(Path(tempfile.gettempdir()).glob("musilingo-clip-*")), "temp clip deleted"


def test_oversized_clip_is_refused(catalog: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in catalog["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MUSILINGO_MAX_UPLOAD_MB", "1")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader(key="clip").set_value(("big.wav", b"RIFF" + b"\0" * (2**20 + 1), "audio/wav")).run()
    assert any("the limit is 1 MB" in e.value for e in at.error)
    assert not at.get("html") or not any('class="ml-card"' in h.value for h in at.get("html"))
