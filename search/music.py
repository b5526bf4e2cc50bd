"""What the analysis columns (tempo, key, vocals: catalog/store.py) mean to a search: what a query's words
ask of them (`MusicIntent`, found by search/query.py), the ranking boosts that answer it, and the words
that explain a hit by them or by its auto-tags.

Query words about tempo, key and vocals boost the tracks a search finds by its other lists and filter
nothing: a caption that says "slow" is still found by "slow" when the tempo estimator heard 90 BPM, and a
track not analysed yet is still listed. Hard limits are filters (`Filters.bpm_min`, `tonic`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.text import split_words
from model.describe import FAST_ABOVE, SLOW_BELOW, tempo_word
from search.types import MODES, VOCALS, one_of, tonic_name

# A ranking boost per attribute a query asks for (tempo, key, vocals), added to the fused score of each
# track that has it. The best fused score from the two lists is 2 / 61 = 0.033 (search/rank.py): 0.02 lifts
# a track the lists rank 30th in both (2 / 90 = 0.022) above one they rank 5th that lacks it (2 / 65 =
# 0.031), while a named title (0.05) still comes first. Each attribute counts alike.
MUSIC_BOOST = 0.02
# "120 bpm" asks for 114-126: tempo estimates of one track differ by a few percent between estimators and
# excerpts, and a listener naming a tempo means about that.
BPM_TOLERANCE = 0.05
# A beat tracker often hears half or double the tempo (60 or 240 for 120); a named tempo accepts those.
OCTAVES = (1.0, 2.0, 0.5)
BOOST_COLUMNS = ("b_tempo", "b_key", "b_vocals")  # one per attribute, as `MusicIntent.columns` names them
MAX_TAG_REASONS = 3  # the likeliest auto-tags named per hit: a rock track may match six rock tags


@dataclass(frozen=True)
class MusicIntent:
    """What a query's words ask of the analysis: a tempo word or a BPM range, a key or mode, vocals."""

    tempo: str | None = None  # slow | mid-tempo | fast (model/describe.py's classes)
    bpm: tuple[float, float] | None = None  # a named tempo or range, before octave tolerance
    tonic: str | None = None  # only with a mode
    mode: str | None = None
    vocals: str | None = None  # vocal | instrumental

    @property
    def active(self) -> bool:
        return bool(self.tempo or self.bpm or self.mode or self.vocals)

    def columns(self, alias: str) -> dict[str, str]:
        """The boost columns (b_tempo, b_key, b_vocals) over track table alias `alias`: MUSIC_BOOST where
        the track has what is asked, else 0 (also when it is not analysed). Values are numbers or words of
        the fixed vocabularies of search/types.py, checked here, so they are inlined."""
        a = alias
        conditions: dict[str, str | None] = dict.fromkeys(BOOST_COLUMNS)
        if self.bpm:
            lo, hi = (float(v) for v in self.bpm)
            conditions["b_tempo"] = " OR ".join(f"{a}.bpm * {k} BETWEEN {lo} AND {hi}" for k in OCTAVES)
        elif self.tempo:
            conditions["b_tempo"] = {"slow": f"{a}.bpm < {SLOW_BELOW}", "fast": f"{a}.bpm > {FAST_ABOVE}",
                                     "mid-tempo": f"{a}.bpm BETWEEN {SLOW_BELOW} AND {FAST_ABOVE}",
                                     }[self.tempo]
        if self.mode:
            mode = f"{a}.mode = '{one_of('mode', self.mode, MODES)}'"
            conditions["b_key"] = f"{a}.tonic = '{tonic_name(self.tonic)}' AND {mode}" if self.tonic else mode
        if self.vocals:
            conditions["b_vocals"] = f"{a}.vocals = '{one_of('vocals', self.vocals, VOCALS)}'"
        return {name: f"CASE WHEN {cond} THEN {MUSIC_BOOST} ELSE 0 END::DOUBLE" if cond else "0::DOUBLE"
                for name, cond in conditions.items()}

    def best_boost(self) -> float:
        """The most the boosts add to one track's score."""
        return MUSIC_BOOST * sum(bool(x) for x in (self.tempo or self.bpm, self.mode, self.vocals))


def music_reasons(row: dict) -> list[str]:
    """The tempo, key and vocals of a hit that a query's words asked for (its b_* columns are set)."""
    out = []
    if row.get("b_tempo") and row.get("bpm") is not None:
        out.append(f"{row['bpm']:.0f} BPM ({tempo_word(row['bpm'])})")
    if row.get("b_key"):
        out.append(f"key {row['tonic']} {row['mode']}")
    if row.get("b_vocals"):
        out.append("instrumental" if row["vocals"] == "instrumental" else "with vocals")
    return out


def tag_reasons(tags: list[tuple[str, str, float]], words: list[list[str]]) -> list[str]:
    """The auto-tags a query matched (`words`: the query's words found in each tag's text), likeliest
    first: `auto-tag "techno" (MTT_musicnn 0.81)`, or `auto-tag "chillout" (MSD_musicnn 0.52) as mellow`
    when only model/describe.py's words for the tag matched."""
    matched = sorted(((p, tagger, tag, ws) for (tagger, tag, p), ws in zip(tags, words, strict=True) if ws),
                     key=lambda m: (-m[0], m[1], m[2]))
    out = []
    for p, tagger, tag, ws in matched[:MAX_TAG_REASONS]:
        own = set(split_words(tag, keep_accents=True) or ())
        said = "" if own & set(ws) else f" as {', '.join(ws)}"
        out.append(f'auto-tag "{tag}" ({tagger} {p:.2f}){said}')
    return out
