"""ui.render, ui.sound and ui.playlist: tag text stays literal, highlighting never opens markup, tag keys get
friendly names, card words follow what the taggers heard, M3U stays well formed, the header counts matches."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np

from search.analysis import AnalysisSummary
from search.types import Hit, SearchResult
from ui.playlist import to_m3u
from ui.render import fmt_duration, html_text, md_escape, tag_label, tag_rows, waveform_image
from ui.sound import facts, sound_html, tag_words, top_tags_frame
from ui.views.search_page import result_header

HOSTILE = '<script>alert("x")</script> **bold** [link](javascript:alert(1)) :red[red] $x^2$ & <b>rock</b>'


def _strip_tags(markup: str) -> str:
    return html.unescape(re.sub(r"</?mark>", "", markup))


def test_html_text_escapes_then_highlights() -> None:
    out = html_text(HOSTILE, ["rock", "script"])
    assert "<script" not in out and "<b>" not in out
    assert "<mark>rock</mark>" in out and "&lt;<mark>script</mark>&gt;" in out
    assert _strip_tags(out) == HOSTILE  # what the reader sees is exactly the tag text


def test_highlight_cannot_match_inside_an_entity() -> None:
    out = html_text("Tom & Jerry <amp>", ["amp", "lt"])
    assert "&amp;" in out and "&lt;<mark>amp</mark>&gt;" in out
    assert _strip_tags(out) == "Tom & Jerry <amp>"


def test_highlight_is_case_insensitive_on_word_starts() -> None:
    assert html_text("Piano and PIANOS, not a soprano", ["piano"]) == (
        "<mark>Piano</mark> and <mark>PIANOS</mark>, not a soprano")


def test_md_escape_leaves_no_markdown_syntax() -> None:
    out = md_escape(HOSTILE + "\n# heading\n1. item")
    for raw in ("<", "*", "[", "(", ":", "$", "#", "&"):
        assert re.search(r"(?<!\\)" + re.escape(raw), out) is None, raw
    assert re.sub(r"\\(.)", r"\1", out).replace("  \n", "\n") == HOSTILE + "\n# heading\n1. item"


def test_fmt_duration() -> None:
    assert [fmt_duration(s) for s in (None, 7.4, 65, 3725, float("nan"))] == ["—", "0:07", "1:05", "1:02:05", "—"]


def test_waveform_image_draws_the_envelope() -> None:
    t = np.linspace(0, 1, 8000, dtype=np.float32)
    samples = np.sin(2 * np.pi * 220 * t) * np.linspace(0, 1, t.size, dtype=np.float32)  # a fade-in
    image = waveform_image(samples, width=100, height=40)
    assert image.shape == (40, 100, 4) and image.dtype == np.uint8
    filled = (image[..., 3] > 0).sum(axis=0)
    assert filled[-1] > 30 and filled[0] <= 3  # loud end tall, silent start flat
    assert waveform_image(np.zeros(0), width=10, height=4).sum() == 0


@dataclass
class Entry:
    path: str
    title: str | None
    artist: str | None
    duration: float | None


def test_m3u_lines_cannot_be_injected() -> None:
    entries = [Entry("/music/a.flac", "Song\n/etc/passwd", "Band", 61.6),
               Entry("/music/b.mp3", None, None, None)]
    assert to_m3u(entries).splitlines() == [
        "#EXTM3U", "#EXTINF:62,Band - Song /etc/passwd", "/music/a.flac", "#EXTINF:-1,b.mp3", "/music/b.mp3"]


def test_tag_keys_get_friendly_names_in_every_format() -> None:
    id3 = {"TIT2": "title", "TPE1": "artist", "TPE2": "album artist", "TALB": "album", "TCON": "genre",
           "TDRC": "date", "TRCK": "track number", "TPOS": "disc number", "TCOM": "composer", "TSSE": "encoder",
           "COMM::eng": "comment", "COMM:iTunNORM:eng": "comment (iTunNORM)", "USLT::eng": "lyrics",
           "TXXX:replaygain_track_gain": "ReplayGain track gain", "TXXX:My Field": "My Field"}
    vorbis = {"TITLE": "title", "artist": "artist", "ALBUMARTIST": "album artist", "tracknumber": "track number",
              "DATE": "date", "encoder": "encoder", "COMMENT": "comment"}
    mp4 = {"\xa9nam": "title", "\xa9ART": "artist", "aART": "album artist", "\xa9alb": "album", "\xa9gen": "genre",
           "\xa9day": "date", "trkn": "track number", "\xa9wrt": "composer", "\xa9too": "encoder",
           "----:com.apple.iTunes:iTunSMPB": "iTunSMPB"}
    asf = {"Author": "artist", "WM/AlbumTitle": "album", "WM/Genre": "genre", "WM/TrackNumber": "track number"}
    for key, name in {**id3, **vorbis, **mp4, **asf}.items():
        assert tag_label(key) == name, key
    for unknown in ("XYZW", "my:own:key", "TXXX:", "Lavf"):
        assert tag_label(unknown) == unknown


def test_tag_rows_put_the_usual_fields_first() -> None:
    rows = tag_rows({"TSSE": "Lavf61", "TCON": "Techno", "TIT2": "Night", "TPE1": "Ada", "XYZW": "?"})
    assert [r["tag"] for r in rows] == ["title", "artist", "genre", "encoder", "XYZW"]
    assert rows[0] == {"tag": "title", "value": "Night"}


def _summary(tags: dict[str, dict[str, float]], **numbers: object) -> AnalysisSummary:
    fields = dict(bpm=None, tonic=None, mode=None, vocals=None, auto_genre=None) | numbers
    return AnalysisSummary(track_id=1, version="v", tags=tags, **fields)


def test_card_words_come_from_describe_then_the_top_tags() -> None:
    heard = _summary({"MTT_musicnn": {"techno": 0.81, "drums": 0.7, "synth": 0.5, "fast": 0.45},
                      "MSD_musicnn": {"electronic": 0.66, "dance": 0.4}},
                     bpm=128.4, tonic="A", mode="minor", vocals="instrumental")
    assert tag_words(heard) == [("techno", 0.81), ("drums", 0.7), ("electronic", 0.66), ("synth", 0.5)]
    assert facts(heard) == ["128 BPM", "A minor", "instrumental"]
    faint = _summary({"MTT_musicnn": {"beat": 0.2, "Guitar": 0.1}, "MSD_musicnn": {"00s": 0.15, "<b>x</b>": 0.12}},
                     tonic="C", vocals="vocal")
    assert tag_words(faint) == [("beat", 0.2), ("00s", 0.15), ("<b>x</b>", 0.12)]  # nothing said: the top tags
    assert facts(faint) == ["with vocals"]  # a key needs both halves
    html_out = sound_html(faint)
    assert "&lt;b&gt;x&lt;/b&gt; 0.12" in html_out and "<b>" not in html_out
    assert sound_html(None) == ""


def test_tags_of_both_taggers_are_told_apart_only_where_they_clash() -> None:
    frame = top_tags_frame(_summary({"MTT_musicnn": {"rock": 0.6, "guitar": 0.5}, "MSD_musicnn": {"rock": 0.7}}))
    assert list(frame["tag"]) == ["rock (MSD)", "rock (MTT)", "guitar"]
    assert list(frame["tagger"]) == ["MSD", "MTT", "MTT"] and list(frame["probability"]) == [0.7, 0.6, 0.5]


def _hit(i: int, keyword: float | None) -> Hit:
    return Hit(track_id=i, path=f"/m/{i}.flac", title=str(i), artist=None, album=None, genre=None, year=None,
               duration=None, format="flac", root="/m", caption=None, score=1.0 / (i + 1), keyword=keyword,
               semantic=0.4)


def test_header_counts_matches_not_the_ranked_library() -> None:
    hits = [_hit(0, 1.7), _hit(1, None), _hit(2, None)]
    assert result_header(SearchResult(hits, 3), "drums") == "**1 track** matches your words · 2 more close in meaning"
    assert result_header(SearchResult(hits[:1], 1), "drums") == "**1 track** matches your words"
    assert result_header(SearchResult(hits[1:], 2), "drums") == "No track matches your words · **2 tracks** close in meaning"
    assert result_header(SearchResult(hits, 24), "drums") == "The best 3 of 24 tracks found by words or meaning"
    assert result_header(SearchResult(hits, 24), "") == "**24 tracks** match the filters · showing 3"
