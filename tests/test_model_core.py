"""MusiLingo core: the project's forward pass against a straightforward computation of the reference maths."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.answers import BELIEF_WEIGHT, TOPICS, Heard, topic_of
from model.config import load_profile
from model.describe import HEAD_TAGGER
from model.encoder import Encoder, pool_frames
from model.frontend import LiteFrontend, feature_slice
from model.instrument_head import FAMILIES
from model.musilingo import SCORE_ROWS, MusiLingo
from model.prompt import expand_caption_template
from tests.harness import tiny_llama_folder, tiny_mert_folder, tone, write_profile


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> MusiLingo:
    root = tmp_path_factory.mktemp("tiny")
    profile = write_profile(root / "tiny.toml", encoder="mert", encoder_path=str(tiny_mert_folder(root / "mert")),
                            llm=str(tiny_llama_folder(root / "llm")), adapter="", pool_window=325)
    torch.manual_seed(1)
    model = MusiLingo.from_profile(load_profile(profile), cache_dir=root)
    torch.nn.init.normal_(model.adapter.weight, std=0.5)
    torch.nn.init.normal_(model.adapter.bias, std=0.1)
    return model


def reference_tokens(model: MusiLingo, wave: np.ndarray) -> torch.Tensor:
    """Layer mean over all hidden states, then non-overlapping mean pooling, written out plainly."""
    states = model.encoder.net.hidden_states(torch.from_numpy(wave)[None])
    frames = torch.stack(states).mean(0)[0]
    t = 325
    return torch.stack([frames[i:i + t].mean(0) for i in range(0, frames.shape[0], t)])


def test_mert_tokens_match_reference_maths(tiny: MusiLingo) -> None:
    wave = tone(10.0)
    tokens = tiny.encoder.encode([wave])[0]
    assert tokens.shape == (3, 32)  # 10 s -> 749 frames -> ceil(749 / 325) = 3 tokens
    torch.testing.assert_close(tokens, reference_tokens(tiny, wave), atol=1e-5, rtol=1e-5)


def _reference_loss(model: MusiLingo, audio: torch.Tensor, question: str | None, target: str):
    tok, emb = model.tokenizer, model.llm.get_input_embeddings()

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    projected = audio @ model.adapter.weight.T + model.adapter.bias
    if question is None:  # stage 1: [BOS] + audio + caption + "\n" (32 tokens at most)
        before, after, target_ids = [tok.bos_token_id], [], ids(target + "\n")[:32]
    else:
        before = [tok.bos_token_id] + ids("###Human: <Audio>")
        after = ids(f"</Audio> {question} ###Assistant: ")
        target_ids = ids(target + "###")[:160]
    embeds = torch.cat([emb(torch.tensor(before)), projected, emb(torch.tensor(after + target_ids))])
    logits = model.llm(inputs_embeds=embeds[None]).logits[0]
    n_prompt = len(before) + audio.shape[0] + len(after)
    loss = torch.nn.functional.cross_entropy(logits[n_prompt - 1:-1], torch.tensor(target_ids))
    return loss, [-100] * n_prompt + target_ids


@pytest.mark.parametrize("question", [None, "What is the tempo?"])
def test_loss_and_label_mask_match_reference(tiny: MusiLingo, question: str | None) -> None:
    audio = [tiny.encoder.encode([tone(5.0, 330.0)])[0], tiny.encoder.encode([tone(12.0, 220.0)])[0]]
    targets = ["A calm piano piece in C major.", "Fast drums with a loud electric guitar and bass."]
    questions = None if question is None else [question, "Which instrument leads?"]
    ours = tiny.loss(audio, targets, questions)
    _, _, labels = tiny.loss_inputs(audio, targets, questions)
    total, count = 0.0, 0
    for i, (a, t) in enumerate(zip(audio, targets, strict=True)):
        ref, ref_labels = _reference_loss(tiny, a, None if questions is None else questions[i], t)
        row = labels[i].tolist()
        assert row[: len(ref_labels)] == ref_labels and set(row[len(ref_labels):]) <= {-100}
        n = sum(1 for x in ref_labels if x != -100)
        total, count = total + ref.item() * n, count + n
    assert ours.item() == pytest.approx(total / count, abs=1e-5)


def test_only_the_adapter_gets_gradients(tiny: MusiLingo) -> None:
    tiny.zero_grad()
    audio = tiny.encoder.encode([tone(6.0)])
    tiny.loss(audio, ["a tone"], ["Describe it."]).backward()
    assert tiny.adapter.weight.grad is not None and tiny.adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.llm.parameters())
    assert all(p.grad is None for p in tiny.encoder.net.parameters())
    tiny.zero_grad()


def test_batched_left_padded_generation_equals_single(tiny: MusiLingo) -> None:
    audio = [tiny.encoder.encode([tone(s, f)])[0] for s, f in ((4.5, 440.0), (14.0, 300.0))]
    batch = tiny.generate(audio, ["Describe the music.", "What is the key?"], greedy=True, max_new_tokens=8)
    for a, q, got in zip(audio, ["Describe the music.", "What is the key?"], batch, strict=True):
        alone = tiny.generate([a], [q], greedy=True, max_new_tokens=8)[0]
        assert got.token_ids == alone.token_ids
        assert got.n_audio_tokens == a.shape[0]


def test_stream_yields_the_same_text_as_generate(tiny: MusiLingo) -> None:
    audio = tiny.encoder.encode([tone(5.0)])[0]
    streamed = "".join(tiny.stream(audio, "What is playing?", greedy=True, max_new_tokens=10))
    assert streamed.strip() == tiny.ask(audio, "What is playing?", greedy=True, max_new_tokens=10).text


def test_history_keeps_audio_in_first_turn(tiny: MusiLingo) -> None:
    audio = tiny.encoder.encode([tone(5.0)])[0]
    pieces, n = tiny._prompt_pieces(audio, "And the tempo?", [("What instrument?", "A piano.")])
    text_ids = tiny.tokenizer("</Audio> What instrument? ###Assistant: A piano.###Human: And the tempo? "
                              "###Assistant: ", add_special_tokens=False).input_ids
    assert pieces[1].shape[0] == audio.shape[0] and pieces[2].shape[0] == len(text_ids)
    assert n == sum(p.shape[0] for p in pieces)


def test_template_caption_is_the_likeliest_sentence(tiny: MusiLingo) -> None:
    """Each sentence scored alone with full logits and no padding; the caption is the argmax, and the
    batched scores (more sentences than one pass holds, right-padded) equal the one-by-one ones."""
    template = "A {slow|fast} {piano|organ|synth|brass|flute} tune in {C|D|E|F|G}."
    sentences = expand_caption_template(template)
    assert len(sentences) == 50 > SCORE_ROWS and sentences[0] == "A slow piano tune in C."
    model = MusiLingo(replace(tiny.profile, caption_template=template), tiny.llm, tiny.tokenizer, 32, tiny.adapter)
    question = model.profile.caption_instruction
    torch.manual_seed(3)
    for audio in (torch.randn(3, 32), torch.randn(1, 32)):
        alone = []
        for sentence in sentences:
            embeds, _, labels = model.loss_inputs([audio], [sentence], [question])
            with torch.no_grad():
                logp = torch.log_softmax(model.llm(inputs_embeds=embeds).logits[0, :-1], -1)
            alone.append(sum(float(logp[i, t]) for i, t in enumerate(labels[0, 1:].tolist()) if t >= 0))
        batched = model.score([audio] * len(sentences), sentences, [question] * len(sentences))
        torch.testing.assert_close(batched, torch.tensor(alone), atol=1e-4, rtol=1e-5)
        gen = model.caption([audio])[0]
        assert gen.text == sentences[int(np.argmax(alone))]
        assert gen.n_audio_tokens == audio.shape[0] and tiny.tokenizer.decode(gen.token_ids) == gen.text
        assert gen.extra["sentences"] == 50 and gen.extra["log_likelihood"] == pytest.approx(max(alone), abs=1e-3)


def test_caption_template_is_checked_when_the_profile_loads(tmp_path) -> None:
    good = load_profile(write_profile(tmp_path / "a.toml", caption_template="A {slow|fast} piece."))
    assert good.version() != load_profile(write_profile(tmp_path / "b.toml", caption_template="")).version()
    for bad in ("A {slow|} piece.", "A {slow|{fast}} piece.", "A slow} piece.", "{a|b|c|d|e|f|g|h} " * 4):
        with pytest.raises(ValueError, match="caption template"):
            load_profile(write_profile(tmp_path / "c.toml", caption_template=bad))


@settings(max_examples=200, deadline=None)
@given(t=st.integers(0, 3000), window=st.integers(1, 700))
def test_pooling_count_is_ceil(t: int, window: int) -> None:
    frames = torch.arange(t * 2, dtype=torch.float32).reshape(t, 2)
    pooled = pool_frames(frames, window)
    assert pooled.shape == (math.ceil(t / window), 2)
    if t:
        assert torch.allclose(pooled[-1], frames[(pooled.shape[0] - 1) * window:].mean(0))


def test_lite_frames_and_tokens_follow_mert_arithmetic() -> None:
    lite = LiteFrontend()
    for seconds, frames in ((10.0, 749), (1.0, 74), (30.0, 2249)):
        n = int(seconds * 24000)
        assert lite.num_frames(n) == frames
        assert lite(torch.zeros(1, n)).shape == (1, frames, lite.dim)
    encoder = Encoder.from_profile(load_profile("lite"))
    assert [t.shape[0] for t in encoder.encode([tone(10.0), tone(30.0)])] == [3, 7]


def _rich_notes(chords: list[tuple[int, ...]], seconds: float = 1.5, plucked: bool = False) -> np.ndarray:
    """MIDI chords played with 8 overtones at 1/k amplitude, as real instruments sound: the overtones
    put a fifth and a major third above every note, which is what a naive chroma mistakes for the key."""
    t = np.arange(int(seconds * 24000)) / 24000
    envelope = np.exp(-4.0 * t) if plucked else np.minimum(1.0, t / 0.05)
    out = []
    for chord in chords:
        f0 = 440.0 * 2.0 ** ((np.array(chord)[:, None] - 69) / 12)
        partials = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9)).sum(0)
        out.append(0.05 * envelope * partials)
    return np.concatenate(out).astype(np.float32)


@pytest.mark.parametrize("mode,third", [("major", 64), ("minor", 63)])
def test_lite_frontend_names_tonic_and_mode_through_overtones(mode: str, third: int) -> None:
    """I-IV-V-I in C with a bass line: the key fits peak at C of the right mode, and the mode's best fit wins."""
    sixth = 69 if mode == "major" else 68
    chords = [(48, 60, third, 67), (53, 60, 65, sixth), (55, 59, 62, 67), (48, 60, third, 67)] * 2
    feats = LiteFrontend()(torch.from_numpy(_rich_notes(chords)))[0].mean(0)
    fits = feats[feature_slice("key_fit")]
    assert int(fits.argmax()) == (0 if mode == "major" else 12)  # C major is key 0, C minor key 12
    best_major, best_minor = feats[feature_slice("best_major_minor")].tolist()
    assert (best_major > best_minor) == (mode == "major")


def test_lite_frontend_tells_plucked_from_held_notes() -> None:
    """Struck or plucked notes decay within a frame window; bowed or blown ones hold their level."""
    chords = [(60,), (64,), (67,), (72,)]
    lite = LiteFrontend()
    plucked, held = (lite(torch.from_numpy(_rich_notes(chords, 1.5, p)))[0].mean(0) for p in (True, False))
    spread = feature_slice("level_spread")
    assert plucked[spread].sum() > 1.5 * held[spread].sum()


def test_chunked_encoding_equals_one_pass_when_context_covers_the_field() -> None:
    """Chunks are whole pooling windows, so with enough context chunked tokens equal one-pass tokens."""
    encoder = Encoder.from_profile(load_profile("lite", chunk_seconds=10.0, context_seconds=12.0))
    wave = np.random.default_rng(0).standard_normal(24000 * 47).astype(np.float32) * 0.1
    chunked = encoder.encode([wave])[0]
    whole = pool_frames(encoder.net(torch.from_numpy(wave)[None])[0], 325)
    assert chunked.shape == whole.shape == (11, encoder.dim)
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-4)
    assert encoder.chunk_samples == 2 * 325 * 320  # 10 s rounds to 2 whole windows (8.67 s)


def test_questions_find_their_topic() -> None:
    assert topic_of("Is this piece slow, medium tempo or fast?").name == "tempo"
    assert topic_of("Is it in a major or a minor key?").name == "mode"
    assert topic_of("Which instrument plays the lead?").name == "instrument"
    assert topic_of("Is there a singer?").name == "vocals"
    assert topic_of("What does this remind you of?") is None
    assert all(len(t.answers) == len(set(t.answers)) > 1 for t in TOPICS)


def test_a_question_with_a_topic_is_answered_by_its_calibrated_likeliest_sentence_times_the_analysis_belief(
        tiny: MusiLingo) -> None:
    """With `answer_choices`, the answer is the topic's sentence whose likelihood after the whole prompt
    (history and the analysis's text included; each scored alone here with full logits), divided by its
    likelihood after the question alone, times the analysis's belief in its value (to BELIEF_WEIGHT) is largest; the stream gives
    the same answer; without the flag, or without a topic, the answer is generated."""
    model = MusiLingo(replace(tiny.profile, answer_choices=True), tiny.llm, tiny.tokenizer, 32, tiny.adapter)
    question = "Which instrument plays the lead?"
    history = [("What is playing?", "A piano.")]
    topic = topic_of(question)
    torch.manual_seed(4)
    audio = torch.randn(3, 32)

    def likelihoods(audio: torch.Tensor, history: list | None, context: str | None) -> np.ndarray:
        alone = []
        for sentence in topic.answers:
            pieces, n = model._prompt_pieces(audio, question, history, context)
            ids = model._ids(sentence + model.template.stop)
            with torch.no_grad():
                logits = model.llm(inputs_embeds=torch.cat(pieces + [model._embed_ids(ids)])[None]).logits[0]
            logp = torch.log_softmax(logits.float(), -1)
            alone.append(sum(float(logp[n - 1 + j, t]) for j, t in enumerate(ids)))
        return np.array(alone)

    prior = likelihoods(torch.zeros(0, 32), None, None)  # the question alone: the LLM's own leaning
    told = Heard({}, bpm=140.0)  # tempo only: no belief about the lead
    alone = likelihoods(audio, history, told.text())
    calibrated = alone - prior
    assert np.argmax(calibrated) != np.argmax(alone)  # the seed makes calibration change the answer
    best = int(np.argmax(calibrated))
    gen = model.ask(audio, question, history, context=told)
    assert gen.text == topic.answers[best]
    assert gen.extra == {"decoding": "choice", "topic": "instrument", "choices": len(FAMILIES),
                         "log_likelihood": pytest.approx(alone[best], abs=1e-3),
                         "score": pytest.approx(calibrated[best], abs=1e-3)}
    assert tiny.tokenizer.decode(gen.token_ids) == gen.text and gen.n_audio_tokens == 3
    assert "".join(model.stream(audio, question, history, context=told)) == gen.text
    uncalibrated = model.choose(audio, question, topic, history, told, calibrated=False)
    assert uncalibrated.text == topic.answers[int(np.argmax(alone))]

    # the head leans to the least likely family: the answer follows the product, not the likelihood
    least = FAMILIES[int(np.argmin(calibrated))]
    families = {f: (0.9 if f == least else 0.1 / (len(FAMILIES) - 1)) for f in FAMILIES}
    heard = Heard({HEAD_TAGGER: families}, bpm=140.0)
    scores = likelihoods(audio, history, heard.text()) - prior + BELIEF_WEIGHT * np.log([families[f] for f in FAMILIES])
    gen = model.ask(audio, question, history, context=heard)
    assert gen.text == topic.answers[int(np.argmax(scores))] != topic.answers[best]
    assert gen.extra["belief"] == pytest.approx(families[FAMILIES[int(np.argmax(scores))]], abs=1e-4)
    assert "".join(model.stream(audio, question, history, context=heard)) == gen.text
    free = model.ask(audio, "What does this remind you of?", greedy=True, max_new_tokens=6)
    assert "decoding" not in free.extra
    assert "decoding" not in tiny.ask(audio, question, greedy=True, max_new_tokens=6).extra
