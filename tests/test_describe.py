"""What an analysis says in words: captions, the chat context, and where that context goes in the prompt."""

from __future__ import annotations

import math

import pytest

from model.answers import TOPICS, TRUST, Heard
from model.describe import HEAD_TAGGER, THRESHOLDS, describe, tempo_word
from model.prompt import get_template, text_after_audio

TECHNO = {"MTT_musicnn": {"techno": 0.74, "electronic": 0.46, "fast": 0.42, "synth": 0.35, "drums": 0.31,
                          "no vocals": 0.5, "piano": 0.02},
          "MSD_musicnn": {"electronic": 0.55, "House": 0.1, "instrumental": 0.4, "female vocalists": 0.01}}


def test_caption_says_what_is_heard_with_confidence_and_nothing_else() -> None:
    said = describe(TECHNO, bpm=139.6, tonic="F", mode="minor")
    assert said.caption() == ("A fast techno electronic piece with synth and drums, instrumental, "
                              "in F minor at about 140 BPM.")
    assert said.genre == "techno" and said.vocals == "instrumental"
    # below every threshold: only the numbers are said
    quiet = {t: {k: min(p, 0.1) for k, p in tags.items()} for t, tags in TECHNO.items()}
    assert describe(quiet, bpm=70.0, tonic="A", mode="major").caption() == "A slow piece, in A major at about 70 BPM."
    assert describe({}, bpm=None).caption() == "A piece."


def test_words_come_from_either_tagger_and_vocals_need_both_sides() -> None:
    vocal = {"MTT_musicnn": {"female vocal": 0.6, "no vocals": 0.1}, "MSD_musicnn": {"Hip-Hop": 0.5}}
    said = describe(vocal, bpm=95.0, tonic="C#", mode="minor")
    assert said.vocals == "vocal" and said.genre == "hip-hop"
    assert said.caption().startswith("A mid-tempo hip-hop song") and "with vocals" in said.caption()
    torn = {"MTT_musicnn": {"vocal": 0.5, "no vocals": 0.5}}
    assert describe(torn).vocals is None
    assert THRESHOLDS["vocal"] > THRESHOLDS["instrument"]  # a wrong "with vocals" costs more than a missing one


def test_tempo_words_follow_the_corpus_classes() -> None:
    assert [tempo_word(b) for b in (None, 0.0, 84.9, 85.0, 125.0, 125.1)] == [
        None, None, "slow", "mid-tempo", "mid-tempo", "fast"]


def test_chat_context_names_top_tags_tempo_and_key_once_before_the_first_question() -> None:
    said = describe(TECHNO, bpm=139.6, tonic="F", mode="minor")
    context = said.context(TECHNO, n=3)
    assert "MTT_musicnn tags: techno 0.74, no vocals 0.50, electronic 0.46" in context
    assert "Tempo: about 140 BPM (fast)." in context and "Key: F minor." in context
    template = get_template("chatml")
    first = text_after_audio(template, "What is the tempo?", context=context)
    assert first.index("Key: F minor.") < first.index("What is the tempo?")
    later = text_after_audio(template, "And the key?", [("What is the tempo?", "About 140 BPM.")], context=context)
    assert later.count("Key: F minor.") == 1 and later.index("Key: F minor.") < later.index("What is the tempo?")
    assert text_after_audio(template, "Q") == template.after_audio.format(question="Q")  # no context: as before


def test_a_confident_instrument_family_leads_and_drops_the_words_it_contradicts() -> None:
    musicnn = {"MTT_musicnn": {"piano": 0.5, "drums": 0.4, "violin": 0.35}}
    sure = {**musicnn, HEAD_TAGGER: {"brass": 0.8, "piano": 0.1, "strings": 0.1}}
    assert [w for w, _ in describe(sure).instruments] == ["brass", "drums"]
    agreeing = {**musicnn, HEAD_TAGGER: {"strings": 0.7, "brass": 0.3}}
    assert [w for w, _ in describe(agreeing).instruments] == ["strings", "drums", "violin"]
    unsure = {**musicnn, HEAD_TAGGER: {"brass": THRESHOLDS["family"] - 0.01, "piano": 0.41}}
    assert [w for w, _ in describe(unsure).instruments] == ["piano", "drums", "violin"]


def test_what_the_analysis_believes_of_each_chosen_answer() -> None:
    """Chat weighs a chosen answer by the analysis: its tempo class, key and vocals at TRUST (the rest
    shared), the head's families as they are; nothing where the analysis heard nothing of the topic."""
    families = {"piano": 0.1, "strings": 0.05, "brass": 0.05, "woodwind": 0.05, "guitar": 0.05, "organ": 0.6,
                "synth": 0.1}
    heard = Heard({**TECHNO, HEAD_TAGGER: families}, bpm=139.6, tonic="F", mode="minor")
    assert heard.text() == describe(heard.tags, 139.6, "F", "minor").context(heard.tags)
    topics = {t.name: t for t in TOPICS}
    for name, said in (("tempo", "fast"), ("mode", "F minor"), ("vocals", "is instrumental, without vocals")):
        belief = dict(zip(topics[name].values, heard.belief(topics[name]), strict=True))
        assert belief[said] == TRUST and sum(belief.values()) == pytest.approx(1.0)
        rest = [p for v, p in belief.items() if v != said]
        assert rest == pytest.approx([(1 - TRUST) / len(rest)] * len(rest))
    assert heard.belief(topics["instrument"]) == pytest.approx([families[f] for f in topics["instrument"].values])
    assert all(Heard({}).belief(t) is None for t in TOPICS)
    assert Heard({}, bpm=70.0).log_belief(topics["tempo"])[0] == pytest.approx(math.log(TRUST))
