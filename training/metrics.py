"""Text metrics for captioning and QA, in the forms papers published AND the standard forms, labelled.

Published QA forms (MU-LLaMA's evaluation, reused by MusiLingo), averaged per sample:
  - `bleu_published`: NLTK `sentence_bleu([reference], generated)` on the RAW STRINGS, i.e. over
    characters (4-gram, uniform weights, no smoothing);
  - `meteor_published`: NLTK METEOR on `wordpunct_tokenize` tokens;
  - `rougeL_recall_published`: rouge_score ROUGE-L recall with the Porter stemmer;
  - `bertscore_recall_published`: BERTScore recall (roberta-large), when that model is available.
Standard forms: corpus BLEU-1..4 on lower-cased word tokens, mean METEOR, mean ROUGE-L F1, BERTScore F1.

Backends: NLTK and rouge_score when importable; otherwise the implementations here (same formulas:
NLTK's modified precision, brevity penalty and zero-count rule; ROUGE-L from the LCS; METEOR with
NLTK's alignment order and parameters alpha 0.9, beta 3, gamma 0.5). METEOR needs WordNet for its
synonym stage; WordNet data cannot be downloaded here, so when it is absent METEOR runs with exact and
stem matching only and every METEOR key says so (`meteor_matching`). BERTScore is reported as not
computed, with the reason, when bert_score or the roberta-large weights are absent. Nothing is faked.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Sequence

# ----- tokenisation ------------------------------------------------------------------------------------
_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")


def wordpunct_tokenize(text: str) -> list[str]:
    """NLTK's WordPunctTokenizer pattern: runs of word characters, or runs of other non-space characters."""
    return _WORDPUNCT.findall(text)


def word_tokens(text: str) -> list[str]:
    return wordpunct_tokenize(text.lower())


# ----- BLEU (NLTK's formulas) --------------------------------------------------------------------------
def _ngrams(seq: Sequence, n: int) -> Counter:
    return Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))


def _modified_precision(refs: list[Sequence], hyp: Sequence, n: int) -> tuple[int, int]:
    counts = _ngrams(hyp, n)
    max_ref: Counter = Counter()
    for ref in refs:
        for gram, c in _ngrams(ref, n).items():
            max_ref[gram] = max(max_ref[gram], c)
    clipped = sum(min(c, max_ref[g]) for g, c in counts.items())
    return clipped, max(1, sum(counts.values()))


def _closest_ref_len(refs: list[Sequence], hyp_len: int) -> int:
    return min((len(r) for r in refs), key=lambda r: (abs(r - hyp_len), r))


def _brevity_penalty(ref_len: int, hyp_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1 - ref_len / hyp_len)


def corpus_bleu_own(list_of_refs: list[list[Sequence]], hyps: list[Sequence],
                    weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)) -> float:
    """NLTK corpus_bleu without smoothing: a zero n-gram count makes its log-precision about -708."""
    nums, dens = Counter(), Counter()
    hyp_len = ref_len = 0
    for refs, hyp in zip(list_of_refs, hyps, strict=True):
        for n in range(1, len(weights) + 1):
            a, b = _modified_precision(refs, hyp, n)
            nums[n] += a
            dens[n] += b
        hyp_len += len(hyp)
        ref_len += _closest_ref_len(refs, len(hyp))
    if nums[1] == 0:
        return 0.0
    bp = _brevity_penalty(ref_len, hyp_len)
    logs = []
    for n, w in enumerate(weights, start=1):
        p = nums[n] / dens[n] if nums[n] else sys.float_info.min
        logs.append(w * math.log(p))
    return bp * math.exp(math.fsum(logs))


def sentence_bleu_own(refs: list[Sequence], hyp: Sequence, weights=(0.25, 0.25, 0.25, 0.25)) -> float:
    return corpus_bleu_own([refs], [hyp], weights)


def _nltk_bleu():
    try:
        from nltk.translate.bleu_score import corpus_bleu, sentence_bleu
    except ImportError:
        return None
    return corpus_bleu, sentence_bleu


def sentence_bleu(refs: list[Sequence], hyp: Sequence, weights=(0.25, 0.25, 0.25, 0.25)) -> float:
    lib = _nltk_bleu()
    if lib is None:
        return sentence_bleu_own(refs, hyp, weights)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(lib[1](refs, hyp, weights=weights))


def corpus_bleu(list_of_refs, hyps, weights=(0.25, 0.25, 0.25, 0.25)) -> float:
    lib = _nltk_bleu()
    if lib is None:
        return corpus_bleu_own(list_of_refs, hyps, weights)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(lib[0](list_of_refs, hyps, weights=weights))


# ----- ROUGE-L -----------------------------------------------------------------------------------------
def lcs_length(a: Sequence, b: Sequence) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_tokens(text: str, stem: bool) -> list[str]:
    tokens = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    if stem:
        stemmer = _porter()
        if stemmer is not None:
            tokens = [stemmer.stem(t) if len(t) > 3 else t for t in tokens]
    return tokens


def rouge_l_own(reference: str, generated: str, stem: bool = True) -> dict[str, float]:
    ref, hyp = _rouge_tokens(reference, stem), _rouge_tokens(generated, stem)
    lcs = lcs_length(ref, hyp)
    if lcs == 0:
        return {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    p, r = lcs / len(hyp), lcs / len(ref)
    return {"precision": p, "recall": r, "fmeasure": 2 * p * r / (p + r)}


_SCORER = None


def rouge_l(reference: str, generated: str) -> dict[str, float]:
    """ROUGE-L with the Porter stemmer: rouge_score when installed, else the LCS implementation above."""
    global _SCORER
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return rouge_l_own(reference, generated)
    if _SCORER is None:
        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    s = _SCORER.score(reference, generated)["rougeL"]
    return {"precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure}


# ----- METEOR ------------------------------------------------------------------------------------------
def _porter():
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError:
        return None
    return PorterStemmer()


class _NoSynonyms:
    """Stands in for the WordNet reader: no synsets, so METEOR's synonym stage matches nothing."""

    @staticmethod
    def synsets(word):
        return []


def wordnet_available() -> bool:
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("music")
        return True
    except Exception:  # ImportError, or LookupError when the corpus is not downloaded
        return False


def meteor_matching() -> str:
    if wordnet_available():
        return "exact+stem+wordnet"
    if _porter() is not None:
        return "exact+stem (no WordNet synonyms: WordNet data unavailable)"
    return "exact only (no stemmer, no WordNet: nltk not installed)"


def _match(hyp: list[tuple[int, str]], ref: list[tuple[int, str]]):
    """NLTK's matching order: hypothesis words from the last, each to the last free equal reference word."""
    positions: dict[str, list[int]] = {}
    for j, (_, w) in enumerate(ref):
        positions.setdefault(w, []).append(j)
    pairs, used_h, used_r = [], set(), set()
    for i in range(len(hyp) - 1, -1, -1):
        pos = positions.get(hyp[i][1])
        if pos:
            j = pos.pop()
            used_h.add(i)
            used_r.add(j)
            pairs.append((hyp[i][0], ref[j][0]))
    return pairs, [p for i, p in enumerate(hyp) if i not in used_h], [p for j, p in enumerate(ref) if j not in used_r]


def meteor_own(reference: list[str], hypothesis: list[str], alpha=0.9, beta=3.0, gamma=0.5) -> float:
    """METEOR with exact then Porter-stem matching (no synonyms), NLTK's alignment and formula."""
    hyp = list(enumerate(w.lower() for w in hypothesis))
    ref = list(enumerate(w.lower() for w in reference))
    exact, hyp_left, ref_left = _match(hyp, ref)
    stemmer = _porter()
    stems: list = []
    if stemmer is not None:
        stems, _, _ = _match([(i, stemmer.stem(w)) for i, w in hyp_left], [(j, stemmer.stem(w)) for j, w in ref_left])
    matches = sorted(exact + stems)
    if not matches or not hyp or not ref:
        return 0.0
    m = len(matches)
    precision, recall = m / len(hyp), m / len(ref)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    chunks = 1
    for (h0, r0), (h1, r1) in zip(matches, matches[1:], strict=False):
        if not (h1 == h0 + 1 and r1 == r0 + 1):
            chunks += 1
    return (1 - gamma * (chunks / m) ** beta) * fmean


def meteor(reference: list[str], hypothesis: list[str]) -> float:
    """NLTK METEOR on pre-tokenised words; with no WordNet data, its synonym stage is switched off."""
    try:
        from nltk.translate.meteor_score import meteor_score
    except ImportError:
        return meteor_own(reference, hypothesis)
    if wordnet_available():
        return float(meteor_score([reference], hypothesis))
    return float(meteor_score([reference], hypothesis, wordnet=_NoSynonyms()))


# ----- BERTScore ---------------------------------------------------------------------------------------
def bertscore(references: list[str], candidates: list[str]) -> dict:
    """{'recall': [...], 'f1': [...]} or {'not_computed': reason}."""
    try:
        import bert_score
    except ImportError:
        return {"not_computed": "the bert_score package is not installed"}
    try:
        p, r, f = bert_score.score(candidates, references, lang="en", verbose=False)
    except Exception as exc:  # the roberta-large weights cannot be fetched offline
        return {"not_computed": f"roberta-large unavailable: {str(exc).splitlines()[0][:160]}"}
    return {"recall": r.tolist(), "f1": f.tolist()}


# ----- reports -----------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def qa_metrics(references: list[str], generated: list[str], with_bertscore: bool = True) -> dict:
    """Published per-sample forms and standard forms for question answering."""
    n = len(references)
    if n == 0:
        return {"n": 0}
    out = {"n": n, "meteor_matching": meteor_matching()}
    out["published"] = {
        "bleu_char_sentence_mean": _mean([sentence_bleu([r], g) for r, g in zip(references, generated, strict=True)]),
        "meteor_wordpunct_mean": _mean([meteor(wordpunct_tokenize(r), wordpunct_tokenize(g))
                                        for r, g in zip(references, generated, strict=True)]),
        "rougeL_recall_mean": _mean([rouge_l(r, g)["recall"] for r, g in zip(references, generated, strict=True)]),
    }
    out["standard"] = standard_metrics(references, generated)
    if with_bertscore:
        bs = bertscore(references, generated)
        if "not_computed" in bs:
            out["published"]["bertscore_recall"] = out["standard"]["bertscore_f1"] = "not computed: " + bs["not_computed"]
        else:
            out["published"]["bertscore_recall"] = _mean(bs["recall"])
            out["standard"]["bertscore_f1"] = _mean(bs["f1"])
    return out


def standard_metrics(references: list[str], generated: list[str]) -> dict:
    refs = [[word_tokens(r)] for r in references]
    hyps = [word_tokens(g) for g in generated]
    out = {}
    for n in range(1, 5):
        out[f"bleu{n}_corpus"] = corpus_bleu(refs, hyps, tuple([1.0 / n] * n))
    out["meteor_mean"] = _mean([meteor(r[0], h) for r, h in zip(refs, hyps, strict=True)])
    out["rougeL_f1_mean"] = _mean([rouge_l(r, g)["fmeasure"] for r, g in zip(references, generated, strict=True)])
    return out


def caption_metrics(references: list[str], generated: list[str], with_bertscore: bool = True) -> dict:
    """LP-MusicCaps-style captioning metrics: corpus BLEU-1..4, METEOR, ROUGE-L F1, BERTScore F1."""
    out = {"n": len(references), "meteor_matching": meteor_matching(), "standard": standard_metrics(references, generated)}
    if with_bertscore:
        bs = bertscore(references, generated)
        out["standard"]["bertscore_f1"] = ("not computed: " + bs["not_computed"]) if "not_computed" in bs else _mean(bs["f1"])
    return out


# ----- attributes of the synthetic corpus, read back from free text -----------------------------------
# Keyword lists per attribute value (our own synonyms; matched as whole words, longest phrase first).
ATTRIBUTE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "instrument_family": {
        "piano": ("piano", "pianist", "keyboard", "rhodes"),
        "strings": ("strings", "string section", "string ensemble", "violin", "violins", "viola", "cello",
                    "fiddle", "orchestral strings"),
        "brass": ("brass", "trumpet", "trombone", "tuba", "french horn", "horn section", "horns", "cornet"),
        "woodwind": ("woodwind", "woodwinds", "flute", "piccolo", "clarinet", "oboe", "bassoon", "saxophone",
                     "sax", "reed"),
        "guitar": ("guitar", "guitars", "guitarist"),
        "organ": ("organ", "hammond"),
        "synth": ("synth", "synthesizer", "synthesiser", "synth lead", "sawtooth", "square-wave"),
    },
    "tempo_class": {
        "slow": ("slow", "slowly", "unhurried", "slow-paced", "leisurely", "adagio", "largo", "lento"),
        "medium": ("mid-tempo", "medium tempo", "medium-tempo", "moderate tempo", "moderate-tempo",
                   "moderately paced", "moderately", "andante", "moderato", "medium"),
        "fast": ("fast", "up-tempo", "uptempo", "brisk", "fast-paced", "quick", "rapid", "allegro", "presto"),
    },
    "mode": {"major": ("major",), "minor": ("minor",)},
    "drums": {
        "none": ("no drums", "no percussion", "no drum kit", "without drums", "no beat"),
        "rock": ("backbeat", "rock beat", "rock drums", "drum kit"),
        "electronic": ("four-on-the-floor", "drum-machine", "drum machine", "electronic beat", "dance beat"),
        "latin": ("conga", "congas", "clave", "bongo", "hand percussion", "latin percussion"),
    },
    "mood": {
        "happy": ("happy", "cheerful", "joyful", "sunny", "upbeat mood", "bright mood"),
        "sad": ("sad", "melancholic", "melancholy", "sorrowful", "mournful", "gloomy"),
        "calm": ("calm", "peaceful", "serene", "tranquil", "relaxing", "relaxed"),
        "energetic": ("energetic", "lively", "high-energy", "vigorous", "exciting"),
        "tense": ("tense", "suspenseful", "uneasy", "anxious", "dark"),
    },
    "style": {
        "classical": ("classical",), "ambient": ("ambient",), "jazz": ("jazz", "jazzy"),
        "latin": ("latin", "latin-flavoured", "bossa"), "rock": ("rock",), "pop": ("pop",),
        "electronic": ("electronic", "electronica", "edm", "techno"),
    },
}
PARSED_ATTRIBUTES = tuple(ATTRIBUTE_WORDS)
_BPM = re.compile(r"(\d{2,3})\s*(?:bpm|beats per minute)", re.IGNORECASE)


def _find_all(text: str, phrase: str) -> list[int]:
    return [m.start() for m in re.finditer(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text)]


def parse_attribute(text: str, attribute: str) -> str | None:
    """The value of `attribute` that the text names first (None when it names none)."""
    low = text.lower()
    if attribute == "tempo_class":
        m = _BPM.search(low)
        if m:
            bpm = int(m.group(1))
            return "slow" if bpm < 85 else ("medium" if bpm <= 125 else "fast")
    best: tuple[int, int, str] | None = None
    for value, phrases in ATTRIBUTE_WORDS[attribute].items():
        for phrase in phrases:
            for pos in _find_all(low, phrase):
                if attribute == "drums" and value == "rock" and re.search(r"\bno (drum kit|drums)", low[max(0, pos - 3):pos + 12]):
                    continue
                key = (pos, -len(phrase), value)
                if best is None or key < best:
                    best = key
    if attribute == "mode" and best is None and re.search(r"\bin a minor key\b", low):
        return "minor"
    return best[2] if best else None


def parse_attributes(text: str) -> dict[str, str | None]:
    return {a: parse_attribute(text, a) for a in PARSED_ATTRIBUTES}


def attribute_accuracy(texts: list[str], labels: list[dict], attributes=("instrument_family", "tempo_class", "mode")) -> dict:
    """Per attribute: the share of texts whose parsed value equals the label (unparsed counts as wrong)."""
    out = {}
    for a in attributes:
        pairs = [(parse_attribute(t, a), lab.get(a)) for t, lab in zip(texts, labels, strict=True) if lab.get(a)]
        if not pairs:
            continue
        out[a] = {"accuracy": _mean([float(p == g) for p, g in pairs]),
                  "named": _mean([float(p is not None) for p, _ in pairs]), "n": len(pairs)}
    return out


def majority_accuracy(labels: list[dict], attributes=("instrument_family", "tempo_class", "mode")) -> dict:
    """Accuracy of always answering the most frequent label value (a chance-level reference)."""
    out = {}
    for a in attributes:
        values = [lab[a] for lab in labels if lab.get(a)]
        if values:
            out[a] = Counter(values).most_common(1)[0][1] / len(values)
    return out
