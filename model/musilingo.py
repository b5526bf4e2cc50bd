"""MusiLingo: compressed audio tokens -> one linear adapter -> a frozen causal LLM.

The model works from stored audio tokens (see model/encoder.py), so a library is encoded once and
captioned, questioned or trained on without touching the audio again. Everything a caller needs is a
method: `caption`, `ask`, `stream`, `generate`, `loss`, `score`.

Captions are generated freely, or, when the profile has a `caption_template`, are the sentence the
template allows that the model scores likeliest as the answer to the captioning instruction (all
sentences scored jointly, teacher-forced): a 135M LLM keeps no caption form of its own, so the lite
profile names what its adapter conveys in a fixed sentence (docs/benchmarks.md, "Training the lite
adapter").
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from model.answers import BELIEF_WEIGHT, Heard, Topic, topic_of
from model.checkpoints import load_adapter
from model.config import Profile, load_profile, resolve_path
from model.encoder import Encoder
from model.llm import load_llm
from model.prompt import cut_at_stop, expand_caption_template, get_template, text_after_audio

STAGE1_MAX_TOKENS = 32  # caption tokens in stage-1 pre-training, "\n" included
STAGE2_MAX_TOKENS = 160  # answer tokens in instruction tuning, "###" included
SCORE_ROWS = 48  # sentences scored per LLM forward pass: bounds the memory of template captions


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    n_audio_tokens: int
    prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)


class MusiLingo(nn.Module):
    def __init__(self, profile: Profile, llm: nn.Module, tokenizer, d_enc: int,
                 adapter: nn.Linear | None = None, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.profile = profile
        self.llm = llm
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.template = get_template(profile.prompt)
        self.adapter = adapter if adapter is not None else nn.Linear(d_enc, llm.config.hidden_size)
        self.adapter.to(device=self.device, dtype=torch.float32)  # the adapter stays fp32, as in the reference
        self._text_cache: dict[str, list[int]] = {}
        self._answer_priors: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    @classmethod
    def from_profile(cls, profile: Profile | str, device: str = "cpu", cache_dir: Path | None = None,
                     with_encoder: bool = True, adapter: str | None = None) -> MusiLingo:
        """Load everything a profile names; `adapter` overrides the profile's ('' = fresh, for training)."""
        if isinstance(profile, str):
            profile = load_profile(profile)
        llm, tokenizer = load_llm(profile.llm, device, profile.llm_dtype, cache_dir)
        encoder = Encoder.from_profile(profile, device) if with_encoder else None
        return cls.from_llm(profile, llm, tokenizer, adapter, encoder)

    @classmethod
    def from_llm(cls, profile: Profile, llm: nn.Module, tokenizer, adapter: str | None = None,
                 encoder: Encoder | None = None) -> MusiLingo:
        """Around an LLM already loaded (training, tests with a tiny one): the adapter as `from_profile`
        loads it, its input size taken from `encoder` or, without one, from the profile's encoder."""
        d_enc = encoder.dim if encoder else _encoder_dim(profile)
        location = profile.adapter if adapter is None else adapter
        module = None
        if location:
            module, _ = load_adapter(resolve_path(location), d_enc, llm.config.hidden_size)
        return cls(profile, llm, tokenizer, d_enc, module, encoder)

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    @property
    def d_llm(self) -> int:
        return self.llm.config.hidden_size

    # ----- prompt assembly ------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        if text not in self._text_cache:
            self._text_cache[text] = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(self._text_cache) > 4096:
                self._text_cache.clear()
        return self._text_cache[text]

    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=self.device))

    def project(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Audio tokens [T', D_enc] -> LLM input embeddings [T', D_llm] in the LLM's dtype."""
        x = audio_tokens.to(self.device, torch.float32)
        return self.adapter(x).to(self.llm.dtype)

    def _prompt_pieces(self, audio: torch.Tensor, question: str | None, history,
                       context: str | None = None) -> tuple[list[torch.Tensor], int]:
        """Embeddings of one row's prompt in order, and its length; question None is the stage-1 layout."""
        bos = [self.tokenizer.bos_token_id] if self.template.add_bos and self.tokenizer.bos_token_id is not None else []
        if question is None:
            pieces = [self._embed_ids(bos)] if bos else []
            pieces.append(self.project(audio))
        else:
            pieces = [self._embed_ids(bos + self._ids(self.template.before_audio)), self.project(audio),
                      self._embed_ids(self._ids(text_after_audio(self.template, question, history or [], context)))]
        return pieces, sum(p.shape[0] for p in pieces)

    def _pad_rows(self, rows: list[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(r.shape[0] for r in rows)
        pad = self._embed_ids([self.tokenizer.pad_token_id])[0]
        embeds = pad.expand(len(rows), width, pad.shape[-1]).clone()
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            span = slice(width - r.shape[0], width) if left else slice(0, r.shape[0])
            embeds[i, span] = r
            mask[i, span] = 1
        return embeds, mask

    # ----- training -------------------------------------------------------------------------------------
    def loss_inputs(self, audio: list[torch.Tensor], targets: list[str], questions: list[str] | None = None):
        """(inputs_embeds, attention_mask, labels): labels are -100 on BOS, prompt, audio and padding."""
        rows, label_rows = [], []
        for i, (a, target) in enumerate(zip(audio, targets, strict=True)):
            q = None if questions is None else questions[i]
            pieces, n_prompt = self._prompt_pieces(a, q, None)
            if q is None:
                ids = self._ids(target + "\n")[:STAGE1_MAX_TOKENS]
            else:
                ids = self._ids(target + self.template.stop)[:STAGE2_MAX_TOKENS]
            rows.append(torch.cat(pieces + [self._embed_ids(ids)]))
            label_rows.append([-100] * n_prompt + ids)
        embeds, mask = self._pad_rows(rows, left=False)
        labels = torch.full(mask.shape, -100, dtype=torch.long, device=self.device)
        for i, lab in enumerate(label_rows):
            labels[i, : len(lab)] = torch.tensor(lab, device=self.device)
        return embeds, mask, labels

    def loss(self, audio: list[torch.Tensor], targets: list[str], questions: list[str] | None = None) -> torch.Tensor:
        """Mean next-token loss on the target tokens only; questions None gives the stage-1 (no prompt) layout."""
        embeds, mask, labels = self.loss_inputs(audio, targets, questions)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    def _target_logprobs(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Sum over each row of log p(ids[j] | hidden[j]) where ids >= 0. The LM head runs on those positions
        only: over a 49k-word vocabulary the full logits of a template's sentences would take most of the memory."""
        rows, cols = (ids >= 0).nonzero(as_tuple=True)
        logits = self.llm.get_output_embeddings()(hidden[rows, cols]).float()
        picked = torch.log_softmax(logits, -1).gather(-1, ids[rows, cols][:, None])[:, 0]
        return torch.zeros(len(ids), device=picked.device).index_add_(0, rows, picked)

    @torch.no_grad()
    def score(self, audio: list[torch.Tensor], targets: list[str], questions: list[str]) -> torch.Tensor:
        """Log-likelihood of each target (its tokens and the stop string) as the answer to its question."""
        out = []
        for i in range(0, len(targets), SCORE_ROWS):
            embeds, mask, labels = self.loss_inputs(audio[i:i + SCORE_ROWS], targets[i:i + SCORE_ROWS],
                                                    questions[i:i + SCORE_ROWS])
            hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            out.append(self._target_logprobs(hidden[:, :-1], labels[:, 1:]))
        return torch.cat(out)

    @torch.no_grad()
    def answer_scores(self, audio: torch.Tensor, question: str, sentences: list[str] | tuple[str, ...],
                      history: list[tuple[str, str]] | None = None,
                      context: str | None = None) -> tuple[torch.Tensor, int]:
        """`score` of every sentence as the answer, with the shared prompt run once and its cache reused (the
        sentences are a quarter of a template's tokens; docs/benchmarks.md, "Model: caption speed and
        memory"): the log-likelihoods and the prompt's length."""
        pieces, n_prompt = self._prompt_pieces(audio, question, history, context)
        decoder = self.llm.get_decoder()
        prompt = decoder(inputs_embeds=torch.cat(pieces)[None], use_cache=True)
        targets = [self._ids(s + self.template.stop)[:STAGE2_MAX_TOKENS] for s in sentences]
        scores = []
        for i in range(0, len(targets), SCORE_ROWS):
            part = targets[i:i + SCORE_ROWS]
            cache = copy.deepcopy(prompt.past_key_values)
            cache.batch_repeat_interleave(len(part))
            embeds, mask = self._pad_rows([self._embed_ids(t) for t in part], left=False)
            hidden = decoder(inputs_embeds=embeds, attention_mask=torch.cat([mask.new_ones(len(part), n_prompt), mask], 1),
                             cache=cache).last_hidden_state
            # The first target token is predicted from the prompt's last position, each next from the one before.
            hidden = torch.cat([prompt.last_hidden_state[:, -1:].expand(len(part), 1, -1), hidden[:, :-1]], 1)
            ids = torch.full(mask.shape, -100, dtype=torch.long, device=self.device)
            for row, t in enumerate(part):
                ids[row, : len(t)] = torch.tensor(t, device=self.device)
            scores.append(self._target_logprobs(hidden, ids))
        return torch.cat(scores), n_prompt

    def _template_caption(self, audio: torch.Tensor) -> Generation:
        """The likeliest sentence of the profile's caption template."""
        sentences = expand_caption_template(self.profile.caption_template)
        scores, n_prompt = self.answer_scores(audio, self.profile.caption_instruction, sentences)
        best = int(scores.argmax())
        return Generation(sentences[best], self._ids(sentences[best]), int(audio.shape[0]), n_prompt,
                          extra={"decoding": "template", "log_likelihood": round(float(scores[best]), 4),
                                 "sentences": len(sentences)})

    def choose(self, audio: torch.Tensor, question: str, topic: Topic, history: list[tuple[str, str]] | None = None,
               context: Heard | None = None, calibrated: bool = True,
               belief_weight: float = BELIEF_WEIGHT) -> Generation:
        """The topic's answer sentence (model/answers.py) likeliest as the answer to `question`, times what the
        analysis believes of its value to the power `belief_weight` when `context` is given (the analysis is
        also told in the prompt).

        `calibrated`: each sentence's likelihood is divided by its likelihood after the question alone (no
        audio, analysis or history), so what counts is what hearing the track changed, not which sentence
        the LLM favours whatever it hears (contextual calibration, Zhao et al. 2021)."""
        scores, n_prompt = self.answer_scores(audio, question, topic.answers, history, _text(context))
        total = scores.cpu()
        if calibrated:
            total = total - self.answer_prior(question, topic.answers, audio.shape[-1])
        belief = context.log_belief(topic) if context and belief_weight else None
        if belief:
            total = total + belief_weight * torch.tensor(belief, dtype=total.dtype)
        best = int(total.argmax())
        text = topic.answers[best]
        extra = {"decoding": "choice", "topic": topic.name, "log_likelihood": round(float(scores[best]), 4),
                 "choices": len(topic.answers), "score": round(float(total[best]), 4)}
        if belief:
            extra["belief"] = round(math.exp(belief[best]), 4)
        return Generation(text, self._ids(text), int(audio.shape[0]), n_prompt, extra=extra)

    def answer_prior(self, question: str, sentences: tuple[str, ...], d_audio: int) -> torch.Tensor:
        """Each sentence's log-likelihood as the answer to `question` asked with no audio tokens, analysis or
        history: the LLM's own leaning, computed once per question (the LLM is frozen)."""
        key = (question, sentences)
        if key not in self._answer_priors:
            silent = torch.zeros(0, d_audio, device=self.device)
            self._answer_priors[key] = self.answer_scores(silent, question, sentences)[0].cpu()
        return self._answer_priors[key]

    def _topic(self, question: str) -> Topic | None:
        """The topic to answer by choice, in a profile with `answer_choices`."""
        return topic_of(question) if self.profile.answer_choices else None

    # ----- generation -----------------------------------------------------------------------------------
    def _generation_kwargs(self, greedy: bool, max_new_tokens: int | None) -> dict:
        p = self.profile
        kw = dict(max_new_tokens=max_new_tokens or p.max_new_tokens, num_beams=1,
                  repetition_penalty=p.repetition_penalty, pad_token_id=self.tokenizer.pad_token_id,
                  stop_strings=[self.template.stop], tokenizer=self.tokenizer)
        if greedy:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=0)
        return kw

    def _prompt_batch(self, audio, questions, histories, contexts=None):
        rows, lengths = [], []
        for a, q, h, c in zip(audio, questions, histories, contexts or [None] * len(audio), strict=True):
            pieces, n = self._prompt_pieces(a, q, h, c)
            rows.append(torch.cat(pieces))
            lengths.append(n)
        embeds, mask = self._pad_rows(rows, left=True)
        return embeds, mask, lengths

    @torch.no_grad()
    def generate(self, audio: list[torch.Tensor], questions: list[str], histories: list | None = None,
                 greedy: bool = False, max_new_tokens: int | None = None,
                 contexts: list[str | None] | None = None) -> list[Generation]:
        """Answer one question per audio, batched with left padding over inputs_embeds; stops on the stop string.
        `contexts`: text told beside each audio (see `prompt.text_after_audio`)."""
        histories = histories or [None] * len(audio)
        embeds, mask, lengths = self._prompt_batch(audio, questions, histories, contexts)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask,
                                **self._generation_kwargs(greedy, max_new_tokens))
        results = []
        for row, a, n in zip(out.tolist(), audio, lengths, strict=True):
            ids = _trim(row, self.tokenizer)
            text = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), self.template.stop)
            results.append(Generation(text, ids, int(a.shape[0]), n))
        return results

    def caption(self, audio: list[torch.Tensor], greedy: bool = False, max_new_tokens: int | None = None) -> list[Generation]:
        """One caption per audio; with a caption template, decoding settings do not apply (nothing is sampled)."""
        if self.profile.caption_template:
            return [self._template_caption(a) for a in audio]
        questions = [self.profile.caption_instruction] * len(audio)
        return self.generate(audio, questions, greedy=greedy, max_new_tokens=max_new_tokens)

    def ask(self, audio: torch.Tensor, question: str, history: list[tuple[str, str]] | None = None,
            greedy: bool = False, max_new_tokens: int | None = None, context: Heard | None = None) -> Generation:
        """One answer: chosen among a topic's sentences when the profile says so and the question has one
        (`choose`), else generated."""
        topic = self._topic(question)
        if topic is not None:
            return self.choose(audio, question, topic, history, context)
        return self.generate([audio], [question], [history], greedy, max_new_tokens, [_text(context)])[0]

    def stream(self, audio: torch.Tensor, question: str, history: list[tuple[str, str]] | None = None,
               greedy: bool = False, max_new_tokens: int | None = None, context: Heard | None = None) -> Iterator[str]:
        """Yield the answer's text as it is generated, cut at the stop string (for a chat UI); a chosen
        answer (`ask`) comes whole."""
        from transformers import TextIteratorStreamer

        topic = self._topic(question)
        if topic is not None:
            yield self.choose(audio, question, topic, history, context).text
            return

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        embeds, mask, _ = self._prompt_batch([audio], [question], [history], [_text(context)])
        kwargs = dict(inputs_embeds=embeds, attention_mask=mask, streamer=streamer,
                      **self._generation_kwargs(greedy, max_new_tokens))
        worker = threading.Thread(target=torch.no_grad()(self.llm.generate), kwargs=kwargs, daemon=True)
        worker.start()
        text, sent = "", 0
        for piece in streamer:
            text += piece
            visible = text.split(self.template.stop, 1)[0]
            # Hold back a tail that could be the start of the stop string.
            hold = next((k for k in range(len(self.template.stop) - 1, 0, -1)
                         if visible.endswith(self.template.stop[:k])), 0)
            ready = visible[: len(visible) - hold] if self.template.stop not in text else visible
            if len(ready) > sent:
                yield ready[sent:]
                sent = len(ready)
            if self.template.stop in text:
                break
        worker.join()
        visible = text.split(self.template.stop, 1)[0]
        if len(visible) > sent:
            yield visible[sent:]


def _trim(row: list[int], tokenizer) -> list[int]:
    """Generated ids without the padding that finished rows receive, and without a trailing EOS."""
    ids = list(row)
    while ids and ids[-1] == tokenizer.pad_token_id:
        ids.pop()
    if ids and ids[-1] == tokenizer.eos_token_id:
        ids.pop()
    return ids


def _encoder_dim(profile: Profile) -> int:
    if profile.encoder == "lite":
        from model.frontend import LiteFrontend

        return LiteFrontend().dim
    import json

    config = json.loads((resolve_path(profile.encoder_path) / "config.json").read_text())
    return int(config["hidden_size"])


def _text(context: Heard | None) -> str | None:
    """The analysis as the prompt tells it, if any."""
    return context.text() if context else None
