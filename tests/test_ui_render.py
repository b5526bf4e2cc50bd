"""ui.render and ui.playlist: tag text stays literal, highlighting never opens markup, M3U stays well formed."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np

from ui.playlist import to_m3u
from ui.render import fmt_duration, html_text, md_escape, waveform_image

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
