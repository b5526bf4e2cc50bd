"""Metric functions against values computed by hand on fixed strings, and against NLTK / rouge_score."""

from __future__ import annotations

import math

import pytest

from training import metrics as M

REF = "the cat sat on the mat"
HYP = "the cat is on the mat"


def test_bleu_by_hand() -> None:
    ref, hyp = REF.split(), HYP.split()
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3; equal lengths, so no brevity penalty.
    assert M.corpus_bleu_own([[ref]], [hyp], (1.0,)) == pytest.approx(5 / 6)
    assert M.corpus_bleu_own([[ref]], [hyp], (0.5, 0.5)) == pytest.approx(math.sqrt(0.5))
    assert M.corpus_bleu_own([[ref]], [hyp], (1 / 3,) * 3) == pytest.approx(0.5)
    assert M.corpus_bleu_own([[ref]], [hyp]) < 1e-60  # no 4-gram match: NLTK's unsmoothed rule gives ~0
    assert M.sentence_bleu_own([ref], ref) == pytest.approx(1.0)
    # Brevity penalty: 3 of the 6 reference words, all 1- to 3-grams match -> exp(1 - 6/3).
    assert M.corpus_bleu_own([[ref]], [ref[:3]], (1 / 3,) * 3) == pytest.approx(math.exp(-1))


def test_bleu_on_raw_strings_is_character_level() -> None:
    # Published form: sentence_bleu([reference], generated) with strings -> characters are the tokens.
    assert M.sentence_bleu_own(["abcd"], "abcd") == pytest.approx(1.0)
    # "abce" vs "abcd": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1.
    assert M.sentence_bleu_own(["abcd"], "abce", (1 / 3,) * 3) == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3))


def test_bleu_matches_nltk() -> None:
    pytest.importorskip("nltk")
    cases = [(REF, HYP), ("a slow piano piece in a minor key", "a slow piano song in minor"),
             ("It is fast.", "It is quite fast, at 140 BPM.")]
    for ref, hyp in cases:
        assert M.sentence_bleu([ref], hyp) == pytest.approx(M.sentence_bleu_own([ref], hyp), abs=1e-12)
        r, h = M.word_tokens(ref), M.word_tokens(hyp)
        for n in range(1, 5):
            w = (1 / n,) * n
            assert M.corpus_bleu([[r]], [h], w) == pytest.approx(M.corpus_bleu_own([[r]], [h], w), abs=1e-12)


def test_rouge_l_by_hand() -> None:
    # LCS "the cat on the mat" = 5 of 6 words on both sides.
    for fn in (M.rouge_l_own, M.rouge_l):
        s = fn(REF, HYP)
        assert s["recall"] == pytest.approx(5 / 6)
        assert s["precision"] == pytest.approx(5 / 6)
        assert s["fmeasure"] == pytest.approx(5 / 6)
    s = M.rouge_l("a b c d", "a c")  # LCS 2: recall 2/4, precision 2/2
    assert (s["recall"], s["precision"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert M.lcs_length("abcbdab", "bdcaba") == 4


def test_meteor_by_hand() -> None:
    ref, hyp = REF.split(), HYP.split()
    # Identical: P = R = 1, one chunk of 6 -> 1 - 0.5 * (1/6)^3.
    assert M.meteor_own(ref, ref) == pytest.approx(1 - 0.5 / 216)
    # 5 matches in 2 chunks ("the cat" / "on the mat"): fmean = 5/6, penalty 0.5 * (2/5)^3.
    expected = (1 - 0.5 * (2 / 5) ** 3) * 5 / 6
    assert M.meteor_own(ref, hyp) == pytest.approx(expected)
    assert M.meteor(ref, hyp) == pytest.approx(expected)
    assert M.meteor_own(["a"], ["b"]) == 0.0


def test_meteor_stem_stage() -> None:
    pytest.importorskip("nltk")
    # "running" and "runs" share the Porter stem "run": 2 matches, one chunk -> 1 - 0.5 * (1/2)^3.
    assert M.meteor_own(["he", "runs"], ["he", "running"]) == pytest.approx(1 - 0.5 / 8)
    assert M.meteor(["he", "runs"], ["he", "running"]) == pytest.approx(1 - 0.5 / 8)
    assert "stem" in M.meteor_matching()


def test_wordpunct_tokenize() -> None:
    assert M.wordpunct_tokenize("It's 4/4, isn't it?") == ["It", "'", "s", "4", "/", "4", ",", "isn", "'", "t", "it", "?"]


def test_report_shapes_and_labels() -> None:
    rep = M.qa_metrics([REF, "slow"], [HYP, "slow"], with_bertscore=True)
    assert set(rep["published"]) >= {"bleu_char_sentence_mean", "meteor_wordpunct_mean", "rougeL_recall_mean",
                                      "bertscore_recall"}
    assert set(rep["standard"]) >= {"bleu1_corpus", "bleu4_corpus", "meteor_mean", "rougeL_f1_mean"}
    bs = rep["published"]["bertscore_recall"]
    assert isinstance(bs, float) or bs.startswith("not computed")
    assert rep["published"]["rougeL_recall_mean"] == pytest.approx((5 / 6 + 1) / 2)


def test_attribute_parser() -> None:
    p = M.parse_attribute
    assert p("A slow jazz piece for a brass section in C minor.", "instrument_family") == "brass"
    assert p("A slow jazz piece for a brass section in C minor.", "tempo_class") == "slow"
    assert p("A slow jazz piece for a brass section in C minor.", "mode") == "minor"
    assert p("The melody is played by a clarinet, with piano backing.", "instrument_family") == "woodwind"
    assert p("It is moderate-tempo, at about 116 BPM.", "tempo_class") == "medium"
    assert p("About 140 beats per minute.", "tempo_class") == "fast"
    assert p("No drums here; the mood is serene.", "drums") == "none"
    assert p("No drums here; the mood is serene.", "mood") == "calm"
    assert p("Nothing to see.", "mode") is None
    acc = M.attribute_accuracy(["a fast guitar tune in E major", "a slow piano piece"],
                               [{"instrument_family": "guitar", "tempo_class": "fast", "mode": "major"},
                                {"instrument_family": "organ", "tempo_class": "slow", "mode": "minor"}])
    assert acc["instrument_family"]["accuracy"] == 0.5
    assert acc["tempo_class"]["accuracy"] == 1.0
    assert acc["mode"]["accuracy"] == 0.5 and acc["mode"]["named"] == 0.5
