"""The Streamlit app driven with AppTest on a small real catalog: real audio, the real indexer, the lite model.

The catalog is built once per session: a few short FLAC files synthesised here and tagged with mutagen
(one with a hostile title), plus one corrupt file, scanned by `python -m indexer scan` with the lite
profile and a fresh adapter. The chat uses greedy decoding and short answers through the `[ui]` table.
What the taggers hear is tested on a copy of it (`analysed`) where the real writer stores an analysis
with known numbers for one track and another track has none, as after the schema 3 migration.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mutagen.flac import FLAC
from sqlalchemy import delete, select, update
from streamlit.testing.v1 import AppTest

from catalog.store import ANALYSIS_COLUMNS, Catalog, analyses, auto_tags, tracks
from catalog.vectors import IndexSet
from indexer.writer import Batch, ScanLock, Writer
from model.analysis import TrackAnalysis, instrument_head
from model.musicnn import load_config
from model.settings import load_settings
from search import Filters, SearchEngine
from search.analysis import analysis_summaries, track_analysis
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
    assert any("matches your words" in m.value for m in at.markdown)
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


# The analysis the `analysed` catalog stores for "Thunder Drums": four patches, twelve tags clearly heard
# (electronic by both taggers), every other tag below 0.05.
PATCH_SECONDS = [0.0, 2.992, 5.984, 8.976]
HEARD = {("MTT_musicnn", "techno"): [0.7, 0.8, 0.85, 0.9], ("MTT_musicnn", "drums"): [0.95, 0.85, 0.75, 0.65],
         ("MSD_musicnn", "electronic"): [0.6, 0.65, 0.7, 0.77], ("MTT_musicnn", "no vocals"): [0.6] * 4,
         ("MTT_musicnn", "electronic"): [0.5, 0.55, 0.6, 0.65], ("MTT_musicnn", "fast"): [0.55] * 4,
         ("MTT_musicnn", "synth"): [0.5] * 4, ("MSD_musicnn", "dance"): [0.3, 0.4, 0.5, 0.6],
         ("MTT_musicnn", "beat"): [0.4] * 4, ("MSD_musicnn", "House"): [0.35] * 4, ("MSD_musicnn", "party"): [0.3] * 4,
         ("MTT_musicnn", "loud"): [0.25] * 4}
HEATMAP_ROWS = ["techno", "drums", "electronic (MSD)", "no vocals", "electronic (MTT)", "fast", "synth", "dance",
                "beat", "House", "party", "loud"]  # by mean probability, most heard first


def _known_analysis() -> TrackAnalysis:
    taggers = ["MTT_musicnn", "MSD_musicnn"]
    columns = [(t, label) for t in taggers for label in load_config(t).labels]
    matrix = np.tile(np.linspace(0.0, 0.04, len(columns), dtype=np.float32), (len(PATCH_SECONDS), 1))
    for pair, values in HEARD.items():
        matrix[:, columns.index(pair)] = values
    return TrackAnalysis.from_matrix(taggers, matrix.astype(np.float16), PATCH_SECONDS, np.zeros(400, np.float32),
                                     bpm=128.0, key="A", mode="minor", version="test-analysis")


@pytest.fixture(scope="module")
def analysed(catalog: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the session catalog: "Thunder Drums" re-analysed through the real writer with known numbers,
    "Calm Piano Morning" with no analysis at all; the other tracks keep what the scan heard."""
    data = tmp_path_factory.mktemp("ui-analysed") / "data"
    shutil.copytree(catalog["data"], data, ignore=shutil.ignore_patterns("scan.lock", "*.log"))
    db = Catalog(data / "catalog.duckdb")
    with db.read() as conn:
        ids = dict(conn.execute(select(tracks.c.title, tracks.c.id)).all())
    drums, piano = ids["Thunder Drums"], ids["Calm Piano Morning"]
    with db.write() as conn:  # as a track indexed before the schema had analyses
        conn.execute(update(tracks).where(tracks.c.id == piano).values({name: None for name in ANALYSIS_COLUMNS}))
        for table in (auto_tags, analyses):
            conn.execute(delete(table).where(table.c.track_id == piano))
    with ScanLock(data):
        indexes = IndexSet(db, data)
        indexes.open()
        writer = Writer(db, indexes)
        writer.commit(Batch(reanalyses=[(drums, _known_analysis())]))
        writer.close()
    env = {**catalog["env"], "MUSILINGO_DATA_DIR": str(data), "MUSILINGO_CONFIG": str(data / "config.toml")}
    return {"data": data, "env": env, "catalog": db, "drums": drums, "piano": piano}


@pytest.fixture()
def analysed_app(analysed: dict, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    for key, value in analysed["env"].items():
        monkeypatch.setenv(key, value)
    return AppTest.from_file(APP, default_timeout=180).run()


def _cards(at: AppTest) -> dict[str, str]:
    """Each result card's HTML (highlighting removed) by its title."""
    found = {}
    for el in at.get("html"):
        if 'class="ml-card"' in el.value:
            card = re.sub(r"</?mark>", "", el.value)
            found[html.unescape(re.search(r'class="ml-title">(.*?)</div>', card).group(1))] = card
    return found


def _charts(at: AppTest) -> dict[str, tuple[dict, pd.DataFrame]]:
    """The Vega-Lite charts on the page by mark type: the spec and the data the browser is sent."""
    charts = {}
    for el in at.get("vega_lite_chart"):
        spec = json.loads(el.proto.spec)
        (dataset,) = el.proto.datasets
        frame = pa.ipc.open_stream(io.BytesIO(dataset.data.data)).read_all().to_pandas()
        charts[spec["mark"]["type"]] = (spec, frame)
    return charts


def test_analysis_reader_returns_what_was_stored(analysed: dict) -> None:
    stored = _known_analysis()
    view = track_analysis(analysed["catalog"], analysed["drums"])
    assert (view.bpm, view.key, view.vocals, view.auto_genre) == (128.0, "A minor", "instrumental", "techno")
    assert view.patch_seconds == PATCH_SECONDS
    assert view.probabilities.shape == (4, 100) and view.probabilities.dtype == np.float32
    assert np.array_equal(view.probabilities, stored.matrix().astype(np.float32))
    assert view.labels[0] == ("MTT_musicnn", load_config("MTT_musicnn").labels[0])
    assert view.labels[50] == ("MSD_musicnn", load_config("MSD_musicnn").labels[0])
    assert [tag for _, tag, _ in view.top_tags(3)] == ["techno", "drums", "electronic"]
    assert min(p for tags in view.tags.values() for p in tags.values()) >= 0.05  # auto_tags rows only
    assert track_analysis(analysed["catalog"], analysed["piano"]) is None
    assert track_analysis(analysed["catalog"], 999_999) is None
    summaries = analysis_summaries(analysed["catalog"], [analysed["drums"], analysed["piano"], 999_999])
    assert list(summaries) == [analysed["drums"]] and summaries[analysed["drums"]].tags == view.tags
    for tid in set(analysis_summaries(analysed["catalog"], range(1, 10))) - {analysed["drums"]}:
        scanned = track_analysis(analysed["catalog"], tid)  # what the real scan stored reads back whole
        assert scanned.probabilities.shape == (len(scanned.patch_seconds), 100)


def test_cards_show_tempo_key_and_tags_only_for_analysed_tracks(analysed_app: AppTest) -> None:
    at = _search(analysed_app, "drums piano")
    assert not at.exception
    cards = _cards(at)
    drums, piano = cards["Thunder Drums"], cards["Calm Piano Morning"]
    assert '<span class="ml-facts">128 BPM · A minor · instrumental</span>' in drums
    chips = re.findall(r'<span class="ml-chip ml-tag">(.*?)</span>', drums)
    # the shipped instrument head hears "synth" at 0.74 (past describe's 0.6) in the stored all-zero embedding:
    # that family leads the instrument words, as in the caption, in place of MTT's fainter "synth" tag
    families = instrument_head().probabilities(np.zeros(400, np.float32))
    assert max(families, key=families.get) == "synth" and round(families["synth"], 2) == 0.74
    assert chips == ["techno 0.81", "drums 0.80", "synth 0.74", "electronic 0.68", "party 0.30"]
    assert "ml-sound" not in piano and "ml-tag" not in piano, piano


def test_track_page_charts_come_from_the_stored_analysis(analysed_app: AppTest, analysed: dict) -> None:
    analysed_app.query_params["track"] = str(analysed["drums"])
    at = analysed_app.run()
    assert not at.exception
    hero = next(h.value for h in at.get("html") if "ml-hero" in h.value)
    assert "128 BPM · A minor · instrumental" in hero and "techno 0.81" in hero
    charts = _charts(at)
    spec, bars = charts["bar"]
    assert list(bars["tag"]) == HEATMAP_ROWS  # the twelve most probable tags of both taggers
    assert list(bars["tagger"][:3]) == ["MTT", "MTT", "MSD"]
    assert spec["encoding"]["y"]["sort"] == HEATMAP_ROWS and spec["encoding"]["x"]["scale"]["domain"] == [0, 1]
    spec, heat = charts["rect"]
    assert spec["encoding"]["y"]["sort"] == HEATMAP_ROWS
    assert len(heat) == 12 * 4 and sorted(set(heat["start"])) == [0.0, 2.99, 5.98, 8.98]
    techno = heat[heat["tag"] == "techno"].sort_values("start")["probability"]
    assert np.allclose(techno, np.float16([0.7, 0.8, 0.85, 0.9]), atol=1e-6)  # the stored fp16, patch by patch
    dance = heat[heat["tag"] == "dance"].sort_values("start")["probability"]
    assert np.allclose(dance, np.float16([0.3, 0.4, 0.5, 0.6]), atol=1e-6)
    assert any("Sounds like **techno**" in c.value for c in at.caption)
    details = next(df.value for df in at.dataframe if "tag" in df.value.columns)
    assert list(details["tag"][:4]) == ["title", "artist", "album", "genre"]  # friendly names, usual ones first


def test_track_page_without_analysis_shows_none(analysed_app: AppTest, analysed: dict) -> None:
    analysed_app.query_params["track"] = str(analysed["piano"])
    at = analysed_app.run()
    assert not at.exception
    assert not at.get("vega_lite_chart")
    assert any("Not analysed yet" in c.value for c in at.caption)
    assert "ml-sound" not in next(h.value for h in at.get("html") if "ml-hero" in h.value)


def test_header_counts_the_tracks_that_match(analysed_app: AppTest) -> None:
    """Not the engine's total (every caption close enough in meaning): the tracks that match the words."""
    at = _search(analysed_app, "drums piano")
    hits = SearchEngine(load_settings()).search("drums piano").hits  # the app's catalog, through the env
    by_words = {h.title for h in hits if h.keyword}
    assert "Thunder Drums" in by_words  # its auto-tag "drums"
    header = next(m.value for m in at.markdown if "your words" in m.value)
    assert header.startswith(f"**{len(by_words)} track") and "match" in header.split("your words")[0]
    assert header.endswith("close in meaning") == (len(hits) > len(by_words))
    assert len(_cards(at)) == len(hits)
    assert sum('class="ml-chip">words' in card for card in _cards(at).values()) == len(by_words)
    at = _search(at, "")
    at = at.sidebar.selectbox(key="f_artist").set_value("Beat Unit").run()
    header = next(m.value for m in at.markdown if "match the filters" in m.value)
    assert header == "**2 tracks** match the filters · showing 2"


@pytest.mark.parametrize("widgets", [
    {"f_bpm": (125.0, 130.0)}, {"f_tonic": "A", "f_mode": "minor"}, {"f_vocals": "instrumental"},
    {"f_auto_genre": "techno"}], ids=["bpm", "key", "vocals", "genre"])
def test_sound_filters_reach_the_engine(analysed_app: AppTest, widgets: dict) -> None:
    """Each widget narrows the list to what the engine returns for the same Filters; the track never
    analysed passes none of them."""
    at = analysed_app
    for key, value in widgets.items():
        widget = at.sidebar.slider(key=key) if key == "f_bpm" else at.sidebar.selectbox(key=key)
        at = widget.set_value(value).run()
    assert not at.exception
    names = {"f_bpm": ("bpm_min", "bpm_max"), "f_tonic": "tonic", "f_mode": "mode", "f_vocals": "vocals",
             "f_auto_genre": "auto_genre"}
    filters = {}
    for key, value in widgets.items():
        filters.update(zip(names[key], value, strict=True) if key == "f_bpm" else {names[key]: value})
    expected = {h.title for h in SearchEngine(load_settings()).search("", Filters(**filters)).hits}
    assert "Thunder Drums" in expected and "Calm Piano Morning" not in expected
    assert set(_cards(at)) == expected
    assert any(f"**{len(expected)} track" in m.value and "match the filters" in m.value for m in at.markdown)


def test_sound_filter_choices_come_from_the_catalog(analysed_app: AppTest, analysed: dict) -> None:
    with analysed["catalog"].read() as conn:
        rows = conn.execute(select(tracks.c.tonic, tracks.c.mode, tracks.c.vocals, tracks.c.auto_genre, tracks.c.bpm)
                            .where(tracks.c.analysis_version.is_not(None))).all()
    sidebar = analysed_app.sidebar
    assert set(sidebar.selectbox(key="f_tonic").options) == {r.tonic for r in rows}
    assert set(sidebar.selectbox(key="f_auto_genre").options) == {r.auto_genre for r in rows if r.auto_genre}
    assert "instrumental" in sidebar.selectbox(key="f_vocals").options
    bpm = sidebar.slider(key="f_bpm")
    assert bpm.min <= min(r.bpm for r in rows) < max(r.bpm for r in rows) <= bpm.max


def test_the_chat_model_loads_without_progress_bars_in_the_server_log(tmp_path: Path, capfd) -> None:
    """The server's log is for the server: loading the chat model prints no weight-loading bars there."""
    from transformers.utils import logging

    from model.config import load_profile
    from model.musilingo import MusiLingo
    from ui.views.common import _load_chat_model

    logging.enable_progress_bar()  # as in a fresh server process
    _load_chat_model.clear()
    model = _load_chat_model("progress-bars", load_profile("lite"), load_settings(data_dir=tmp_path, device="cpu"))
    assert isinstance(model, MusiLingo)
    assert "Loading weights" not in capfd.readouterr().err
