"""What the taggers heard, as page content: the facts and tag words of a result card, and the track page's charts.

The words come from `model.describe`, so a card says what the lite captions and the chat model say ("techno
0.81"); when it hears too little with confidence, the taggers' own top tags fill in. The charts are Altair
(it ships with Streamlit) over tidy frames built here, so tests can read the numbers behind a picture.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from model.describe import describe
from search.analysis import AnalysisSummary, TrackAnalysisView
from ui.render import html_text

MAX_WORDS = 5  # tag chips on a card
MIN_WORDS = 3  # filled from the raw tags when describe() says fewer
TOP_TAGS = 12  # bars on the track page, and rows of its heat map
ROW_PX = 22  # height of one bar or heat-map row
VOCALS_SHOWN = {"vocal": "with vocals", "instrumental": "instrumental"}  # the `vocals` column in words


def facts(summary: AnalysisSummary) -> list[str]:
    """["128 BPM", "A minor", "instrumental"]: what is known, in that order."""
    vocals = VOCALS_SHOWN.get(summary.vocals or "")
    return [f for f in (f"{summary.bpm:.0f} BPM" if summary.bpm else None, summary.key, vocals) if f]


def tag_words(summary: AnalysisSummary) -> list[tuple[str, float]]:
    """Up to MAX_WORDS (word, probability), most probable first: describe()'s genres, instruments and moods,
    then the taggers' top tags while there are fewer than MIN_WORDS."""
    said = describe(summary.tags, summary.bpm, summary.tonic, summary.mode)
    words = sorted([*said.genres, *said.instruments, *said.moods], key=lambda wp: -wp[1])[:MAX_WORDS]
    seen = {w for w, _ in words}
    for _, tag, p in summary.top_tags(MAX_WORDS + MIN_WORDS):
        if len(words) >= MIN_WORDS:
            break
        if tag.lower() not in seen:
            seen.add(tag.lower())
            words.append((tag.lower(), p))
    return words


def sound_html(summary: AnalysisSummary | None) -> str:
    """A card's line of facts and tag chips; empty for a track not analysed yet."""
    if summary is None:
        return ""
    chips = "".join(f'<span class="ml-chip ml-tag">{html_text(w)} {p:.2f}</span>' for w, p in tag_words(summary))
    line = html_text(" · ".join(facts(summary)))
    return f'<div class="ml-sound"><span class="ml-facts">{line}</span>{chips}</div>'


def _short(tagger: str) -> str:
    """MTT_musicnn -> MTT: the dataset a tagger learnt its words from."""
    return tagger.split("_", 1)[0]


def _names(pairs: list[tuple[str, str]]) -> list[str]:
    """A display name per (tagger, tag): the tag, with its tagger where both taggers chose that tag."""
    counts: dict[str, int] = {}
    for _, tag in pairs:
        counts[tag] = counts.get(tag, 0) + 1
    return [tag if counts[tag] == 1 else f"{tag} ({_short(tagger)})" for tagger, tag in pairs]


def top_tags_frame(summary: AnalysisSummary, n: int = TOP_TAGS) -> pd.DataFrame:
    """The n most probable tags over both taggers (the track's mean): tag, tagger, probability."""
    top = summary.top_tags(n)
    names = _names([(tagger, tag) for tagger, tag, _ in top])
    return pd.DataFrame({"tag": names, "tagger": [_short(t) for t, _, _ in top],
                         "probability": [p for _, _, p in top]})


def heatmap_frame(view: TrackAnalysisView, n: int = TOP_TAGS) -> pd.DataFrame:
    """The n tags heard most, patch by patch, in long form: tag, tagger, start (s), probability.

    Rows come tag by tag, most heard first, so the frame's order is the chart's row order.
    """
    cols = view.columns_by_mean(n)
    names = _names([view.labels[c] for c in cols])
    rows = [(name, _short(view.labels[c][0]), round(start, 2), float(view.probabilities[i, c]))
            for c, name in zip(cols, names, strict=True) for i, start in enumerate(view.patch_seconds)]
    return pd.DataFrame(rows, columns=["tag", "tagger", "start", "probability"])


def top_tags_chart(frame: pd.DataFrame) -> alt.Chart:
    """Horizontal bars on a 0-1 axis, most probable on top, coloured by tagger."""
    return alt.Chart(frame, height=alt.Step(ROW_PX)).mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
        y=alt.Y("tag:N", sort=list(frame["tag"]), title=None),
        color=alt.Color("tagger:N", legend=alt.Legend(orient="bottom", title="tagger")),
        tooltip=["tag", "tagger", alt.Tooltip("probability:Q", format=".2f")])


def heatmap_chart(frame: pd.DataFrame) -> alt.Chart:
    """Tags (rows, most heard on top) by patch start (columns, m:ss), shaded by probability on a 0-1 scale."""
    order = list(dict.fromkeys(frame["tag"]))  # the frame's rows come tag by tag, most heard first
    minutes = "floor(round(datum.value) / 60) + ':' + format(round(datum.value) % 60, '02d')"
    return alt.Chart(frame, height=alt.Step(ROW_PX)).mark_rect().encode(
        x=alt.X("start:O", title="patch start", axis=alt.Axis(labelExpr=minutes, labelAngle=0)),
        y=alt.Y("tag:N", sort=order, title=None),
        color=alt.Color("probability:Q", scale=alt.Scale(domain=[0, 1], scheme="viridis"),
                        legend=alt.Legend(orient="bottom", title="probability")),
        tooltip=["tag", "tagger", alt.Tooltip("start:Q", title="start (s)", format=".1f"),
                 alt.Tooltip("probability:Q", format=".2f")])
