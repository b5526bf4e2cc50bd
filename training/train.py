"""The adapter's two training stages; only the linear adapter learns, everything else stays frozen.

Stage 1 (`pretrain`): no prompt, `[BOS] + audio + caption + "\n"`, caption cut to 32 tokens.
Stage 2 (`finetune`): `[BOS] ###Human: <Audio> audio </Audio> {question} ###Assistant: ` + answer + "###",
cut to 160 tokens; caption items become the captioning instruction. Stage 2 starts from the stage-1
adapter (`init_adapter`).

Optimiser as in the reference: AdamW (0.9, 0.999), weight decay 0.05 on the weight only (never the
bias), a linear warm-up from `warmup_lr` to `lr`, then cosine from `lr` to `min_lr` (per step, or per
epoch with schedule = "epoch", which is what the reference's LAVIS scheduler does). `bias_lr_scale`
(1 in the reference) runs the bias's schedule that many times higher: on the lite profile the bias, a
constant soft prompt, learns the answers' form, and the weight, which carries the audio, keeps more of
its closed-form start at a lower rate (docs/benchmarks.md, "Training the lite adapter"). `accelerate` gives
multi-GPU data parallelism and mixed precision (forced to "no" on CPU for fp16).

Input standardisation (`normalise_inputs`): the adapter is trained on (x - mean) / std with per-dim
statistics of the training cache, and the statistics are folded back into the saved Linear
(W' = W / std, b' = b - W' mean), so what ships is one plain nn.Linear on raw encoder features.
A fresh adapter on standardised inputs is also rescaled so that its outputs start at the mean norm of
the LLM's word embeddings: PyTorch's default init on unit-variance inputs gives audio tokens about
7x larger than any word of SmolLM2, and on the lite profile that start learned to use the audio
measurably slower (held-out loss gap real-vs-shuffled audio after 100 steps: 0.04 unscaled, 0.12 scaled).

Checkpoints (CHECKPOINT_DIR/step-NNNNNNN/): adapter.safetensors (the inner Linear + mean + std),
optimizer.pt (a plain tensor state dict, loaded with weights_only=True), state.json (step, lr, config
digest). Resuming restarts at the saved step; the data order is a pure function of (seed, step), so a
resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.checkpoints import save_adapter
from model.config import Profile, load_profile, read_toml_fields
from model.settings import Settings, load_settings
from training.datasets import Item, as_instruction, read_dataset
from training.features import FeatureCache
from training.synth.text import SUMMARY_ATTRIBUTES, summary_caption

if TYPE_CHECKING:
    from accelerate import Accelerator

    from model.musilingo import MusiLingo


@dataclass
class TrainConfig:
    stage: str = "pretrain"  # pretrain (stage 1) or finetune (stage 2)
    profile: str = "musilingo"
    datasets: list[dict] = field(default_factory=list)  # [{kind, root, split, cache, audio_dir}]
    caption_instruction: str = ""  # stage 2: "" uses the profile's (what captioning will ask at run time)
    include_captions: bool = True  # stage 2: also train captioning as an instruction
    caption_repeat: int = 1  # stage 2: each caption item appears this many times per epoch
    caption_target: str = "corpus"  # corpus: the dataset's captions; summary: synth labels as one fixed sentence
    include_qa: bool = True  # stage 2: train on the datasets' question/answer pairs too
    qa_attributes: list[str] = field(default_factory=list)  # synth pairs about these attributes only ([]: all)
    init_label_words: list[str] = field(default_factory=list)  # fresh adapter: closed-form start, see label_word_init
    init_adapter: str = ""  # stage 2: the stage-1 adapter
    output: str = "data/runs/adapter.safetensors"
    checkpoint_dir: str = "data/runs/checkpoints"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resume: bool = True
    lr: float = 1e-4
    min_lr: float = 8e-5
    warmup_lr: float = 1e-6
    warmup_steps: int = 5000
    bias_lr_scale: float = 1.0  # the bias's lr over the weight's: the bias learns the answers' form, the weight the audio
    iters_per_epoch: int = 5000
    epochs: int = 4
    schedule: str = "step"  # step: cosine over optimiser steps; epoch: the reference's per-epoch cosine
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    seed: int = 42
    mixed_precision: str = "fp16"  # no / fp16 / bf16; fp16 becomes "no" on CPU
    normalise_inputs: bool = False
    device: str = "auto"  # "auto": the settings' device (`Settings.resolved_device`); anything else overrides it
    llm_dtype: str = ""  # "" keeps the profile's
    threads: int = 0  # torch CPU threads (0: torch's default)
    log_every: int = 50
    max_items: int = 0  # 0: all

    @property
    def total_steps(self) -> int:
        return self.iters_per_epoch * self.epochs

    def digest(self) -> str:
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("resume", "log_every", "checkpoint_every", "keep_checkpoints", "threads")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def load_config(path: str | Path, **overrides) -> TrainConfig:
    raw = read_toml_fields(path, TrainConfig)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**raw)


# ----- learning-rate schedule ---------------------------------------------------------------------------
def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up from warmup_lr to lr over warmup_steps, then cosine from lr down to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / max(1, cfg.warmup_steps)
    if cfg.schedule == "epoch":
        progress = (step // cfg.iters_per_epoch) / max(1, cfg.epochs)
    else:
        progress = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ----- the adapter with folded-back input standardisation ----------------------------------------------
class StandardisedLinear(nn.Module):
    """linear((x - mean) / std); `folded()` returns the equivalent plain nn.Linear on raw x."""

    def __init__(self, linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clamp(min=1e-6).clone())

    @classmethod
    def from_raw(cls, raw: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> StandardisedLinear:
        """The inverse of `folded`: the same function as `raw`, re-expressed on standardised inputs."""
        std = std.float().clamp(min=1e-6)
        inner = nn.Linear(raw.in_features, raw.out_features)
        with torch.no_grad():
            inner.weight.copy_(raw.weight.float() * std[None, :])
            inner.bias.copy_(raw.bias.float() + raw.weight.float() @ mean.float())
        return cls(inner, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)

    def folded(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features)
        with torch.no_grad():
            w = self.linear.weight.float() / self.std[None, :]
            out.weight.copy_(w)
            out.bias.copy_(self.linear.bias.float() - w @ self.mean)
        return out


def plain_linear(adapter: nn.Module) -> nn.Linear:
    return adapter.folded() if isinstance(adapter, StandardisedLinear) else adapter


@torch.no_grad()
def match_embedding_norm(adapter: StandardisedLinear, rows: torch.Tensor, embeddings: torch.Tensor) -> float:
    """Scale a fresh adapter so its mean output norm on `rows` equals the mean word-embedding norm."""
    target = embeddings.detach().float().norm(dim=1).mean()
    current = adapter(rows[:1024].float()).norm(dim=1).mean().clamp(min=1e-8)
    scale = float(target / current)
    adapter.linear.weight.mul_(scale)
    adapter.linear.bias.mul_(scale)
    return scale


@torch.no_grad()
def label_word_init(adapter: StandardisedLinear, items: list[Item], tokens: dict[str, torch.Tensor],
                    attributes: list[str], tokenizer, embeddings: torch.Tensor, ridge: float = 10.0) -> float:
    """Start a fresh adapter as the ridge-regression map from each clip's standardised audio tokens to the
    sum of the word embeddings of its label values (e.g. "brass" + "slow" + "minor"); returns the fit's R^2
    (nan when every clip has the same labels).

    Why: the audio tokens then already point at the words the captions must say, and gradient steps on a
    CPU budget refine that instead of discovering it (docs/benchmarks.md, "Training the lite adapter").
    """
    table = embeddings.detach().float()

    def word(value: str) -> torch.Tensor:
        return table[tokenizer(" " + value, add_special_tokens=False).input_ids].mean(0)

    xs, ys = [], []
    for key, labels in {it.audio_key: it.meta.get("labels") or {} for it in items}.items():
        if tokens[key].shape[0] and all(labels.get(a) for a in attributes):
            xs.append((tokens[key].float() - adapter.mean) / adapter.std)
            ys.append(sum(word(labels[a]) for a in attributes).expand(tokens[key].shape[0], -1))
    if not xs:
        raise SystemExit(f"init_label_words needs items labelled with {attributes}")
    x, y = torch.cat(xs), torch.cat(ys)
    z = torch.cat([x, torch.ones(len(x), 1)], 1)
    solution = torch.linalg.solve(z.T @ z + ridge * torch.eye(z.shape[1]), z.T @ y)
    adapter.linear.weight.copy_(solution[:-1].T)
    adapter.linear.bias.copy_(solution[-1])
    spread = float(((y - y.mean(0)) ** 2).sum())
    varies = spread > 1e-9 * float((y ** 2).sum())  # not just rounding noise around one target
    return 1 - float(((z @ solution - y) ** 2).sum()) / spread if varies else float("nan")


class StageModel(nn.Module):
    """Wraps MusiLingo so that accelerate/DDP sees one forward() returning the loss."""

    def __init__(self, musilingo) -> None:
        super().__init__()
        self.m = musilingo

    def forward(self, audio: list[torch.Tensor], targets: list[str], questions: list[str] | None):
        return self.m.loss(audio, targets, questions)


# ----- data --------------------------------------------------------------------------------------------
def load_training_items(cfg: TrainConfig, profile) -> tuple[list[Item], FeatureCache | dict, list[str]]:
    """Items of every configured dataset whose clip is in its feature cache, and a report line per set."""
    items: list[Item] = []
    tokens: dict[str, torch.Tensor] = {}
    reports = []
    for spec in cfg.datasets:
        result = read_dataset(spec["kind"], spec["root"], spec.get("split", "train"), spec.get("audio_dir"))
        cache = FeatureCache.open(spec["cache"], profile)
        kept = [it for it in result.items if it.audio_key in cache]
        for it in kept:
            tokens[it.audio_key] = cache.get(it.audio_key)
        reports.append(result.report() + f"; not in feature cache: {len(result.items) - len(kept)}")
        items.extend(kept)
    if cfg.caption_target == "summary":
        items = [summary_item(it) if it.question is None else it for it in items]
    elif cfg.caption_target != "corpus":
        raise SystemExit(f"caption_target must be 'corpus' or 'summary', not '{cfg.caption_target}'")
    captions = [it for it in items if it.question is None]
    pairs = [it for it in items if it.question is not None] if cfg.stage == "finetune" and cfg.include_qa else []
    if cfg.qa_attributes:
        pairs = [it for it in pairs if it.meta.get("attribute") in cfg.qa_attributes]
    if cfg.stage == "pretrain":
        items = captions
        if not items:
            raise SystemExit("stage 1 needs caption items; the configured datasets have none")
    elif cfg.include_captions:
        items = as_instruction(captions * max(1, cfg.caption_repeat),
                               cfg.caption_instruction or profile.caption_instruction) + pairs
    else:
        items = pairs
    if cfg.max_items:
        items = items[: cfg.max_items]
    if not items:
        raise SystemExit("no training items: check the dataset roots and that their features are cached")
    return items, tokens, reports


def summary_item(item: Item) -> Item:
    """A synthetic caption item whose target becomes the fixed-form summary of its labels."""
    values = item.meta.get("labels") or {}
    if not all(values.get(k) for k in SUMMARY_ATTRIBUTES):
        raise SystemExit(f"caption_target = 'summary' needs synthetic labels; item {item.id} has none")
    return replace(item, answer=summary_caption(values))


def sample_positions(n: int, seed: int, start: int, count: int) -> list[int]:
    """Items at positions [start, start + count) of an endless stream of seeded per-epoch permutations."""
    out = []
    for pos in range(start, start + count):
        epoch, k = divmod(pos, n)
        perm = _perm(n, seed, epoch)
        out.append(int(perm[k]))
    return out


_PERMS: dict[tuple[int, int, int], torch.Tensor] = {}


def _perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _PERMS:
        if len(_PERMS) > 4:
            _PERMS.clear()
        _PERMS[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return _PERMS[key]


# ----- checkpoints -------------------------------------------------------------------------------------
def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def save_checkpoint(folder: Path, step: int, adapter: StandardisedLinear | nn.Linear, optimizer, scaler,
                    cfg: TrainConfig) -> Path:
    target = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {f"adapter.{k}": v.detach().float().contiguous().cpu() for k, v in adapter.state_dict().items()}
    save_file(tensors, str(tmp / "adapter.safetensors"))
    blob = {"optimizer": optimizer.state_dict()}
    if scaler is not None:
        blob["scaler"] = scaler.state_dict()
    torch.save(blob, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "lr": lr_at(cfg, step), "config": cfg.digest(),
                                                "stage": cfg.stage}, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    old = sorted(p for p in folder.glob("step-*") if p != target)
    for p in old[: max(0, len(old) - max(0, cfg.keep_checkpoints - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return target


def load_checkpoint(path: Path, adapter: nn.Module, optimizer, scaler) -> int:
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "adapter.safetensors"))
    adapter.load_state_dict({k[len("adapter."):]: v for k, v in tensors.items()})
    blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    if scaler is not None and "scaler" in blob:
        scaler.load_state_dict(blob["scaler"])
    return int(state["step"])


# ----- the loop ----------------------------------------------------------------------------------------
def _param_groups(adapter: nn.Module, weight_decay: float, bias_lr_scale: float) -> list[dict]:
    """The weight (decayed) and the bias (not decayed, its lr scaled); `lr_scale` is read each step."""
    decay = [p for n, p in adapter.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in adapter.named_parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": bias_lr_scale}]


def build_model(cfg: TrainConfig, device: str, llm=None, tokenizer=None, *, settings: Settings | None = None):
    """The MusiLingo with a trainable adapter (fresh or from init_adapter); `llm` lets tests pass a tiny one.

    The profile is looked up as every command does (`settings.data_dir` first) and a GGUF LLM is converted
    once into `settings.models_dir`, the cache the other commands share.
    """
    from model.musilingo import MusiLingo

    settings = settings or load_settings()
    overrides = {"llm_dtype": cfg.llm_dtype} if cfg.llm_dtype else {}
    profile = load_profile(cfg.profile, settings.data_dir, adapter=cfg.init_adapter, **overrides)
    if llm is None:
        model = MusiLingo.from_profile(profile, device, cache_dir=settings.models_dir, with_encoder=False,
                                       adapter=cfg.init_adapter)
    else:
        model = MusiLingo.from_llm(profile, llm, tokenizer, adapter=cfg.init_adapter)
    return model, profile


@dataclass
class _Stage:
    """What every step of one stage shares, built once by `_prepare`."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: MusiLingo  # its adapter is the (possibly standardised) module being trained
    wrapped: nn.Module  # the accelerate-prepared StageModel
    optimizer: torch.optim.Optimizer
    profile: Profile
    items: list[Item]
    tokens: dict[str, torch.Tensor]
    say: Callable[[str], None]

    @property
    def scaler(self):
        """The fp16 gradient scaler, whose state a checkpoint keeps; None without fp16."""
        return getattr(self.accelerator, "scaler", None)


def train(cfg: TrainConfig, stop_after: int | None = None, llm=None, tokenizer=None, log=None, *,
          settings: Settings | None = None) -> dict:
    """Run (or resume) one stage; returns a summary. `stop_after` ends early (for tests of resuming).

    `settings` (default: `load_settings()`) gives the model cache and, when the config's device is "auto",
    the device.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    stage = _prepare(cfg, settings or load_settings(), llm, tokenizer, say)
    step = _resume(stage)
    end = cfg.total_steps if stop_after is None else min(cfg.total_steps, stop_after)
    _announce(stage, step, end)
    started = time.monotonic()
    losses, history = _optimise(stage, step, end, started)
    last = step + len(losses)
    summary = {"stage": cfg.stage, "steps": last, "total_steps": cfg.total_steps, "items": len(stage.items),
               "seconds": round(time.monotonic() - started, 1), "final_loss": losses[-1] if losses else None,
               "history": history}
    if stage.accelerator.is_main_process:
        summary.update(_save_results(stage, first=step, last=last))
    summary["adapter"] = plain_linear(stage.model.adapter)
    return summary


def _prepare(cfg: TrainConfig, settings: Settings, llm, tokenizer, say: Callable[[str], None]) -> _Stage:
    """Accelerator, seeded model, training items, starting adapter and optimiser, in the order that makes a
    fixed seed reproduce a run."""
    from accelerate.utils import set_seed

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = _accelerator(cfg, settings)
    set_seed(cfg.seed)
    device = str(accelerator.device)
    model, profile = build_model(cfg, device, llm, tokenizer, settings=settings)
    items, tokens, reports = load_training_items(cfg, profile)
    for line in reports:
        say(f"{cfg.stage}: {line}")
    model.adapter = _starting_adapter(cfg, model, items, tokens, say).to(device)
    model.llm.requires_grad_(False)
    optimizer = torch.optim.AdamW(_param_groups(model.adapter, cfg.weight_decay, cfg.bias_lr_scale), lr=lr_at(cfg, 0),
                                  betas=(cfg.beta1, cfg.beta2))
    wrapped, optimizer = accelerator.prepare(StageModel(model), optimizer)
    return _Stage(cfg, accelerator, model, wrapped, optimizer, profile, items, tokens, say)


def _accelerator(cfg: TrainConfig, settings: Settings) -> Accelerator:
    """On CUDA when the config's device (or, for "auto", the settings') asks for it and one is present;
    fp16 needs CUDA, so on a CPU it becomes full precision."""
    from accelerate import Accelerator

    device = settings.resolved_device() if cfg.device == "auto" else cfg.device
    cuda = torch.cuda.is_available() and device.split(":")[0] == "cuda"
    mixed = cfg.mixed_precision if cuda or cfg.mixed_precision == "bf16" else "no"
    return Accelerator(mixed_precision=mixed, cpu=not cuda)


def _starting_adapter(cfg: TrainConfig, model: MusiLingo, items: list[Item], tokens: dict[str, torch.Tensor],
                      say: Callable[[str], None]) -> nn.Module:
    """The adapter as training starts: with `normalise_inputs`, re-expressed on standardised inputs and, when
    fresh, started at the label words' least-squares map or at the word embeddings' norm."""
    if not cfg.normalise_inputs:
        return model.adapter
    keys = sorted({it.audio_key for it in items})
    rows = torch.cat([tokens[k] for k in keys if tokens[k].shape[0]])
    adapter = StandardisedLinear.from_raw(model.adapter, rows.mean(0), rows.std(0))
    if cfg.init_adapter:  # a trained start keeps the function it learned
        return adapter
    embeddings = model.llm.get_input_embeddings().weight
    if cfg.init_label_words:
        fit = label_word_init(adapter, items, tokens, cfg.init_label_words, model.tokenizer, embeddings)
        say(f"{cfg.stage}: adapter starts as the least-squares map onto label words (R^2 {fit:.2f})")
    else:
        match_embedding_norm(adapter, rows, embeddings)
    return adapter


def _resume(stage: _Stage) -> int:
    """The step to start at: the latest checkpoint's, after loading it, else 0; a checkpoint of another
    config is refused rather than mixed in."""
    cfg = stage.cfg
    folder = Path(cfg.checkpoint_dir)
    latest = _latest_checkpoint(folder) if cfg.resume and folder.is_dir() else None
    if latest is None:
        return 0
    saved = json.loads((latest / "state.json").read_text())
    if saved.get("config") != cfg.digest():
        raise SystemExit(f"{latest} was written by a different config ({saved.get('config')} != "
                         f"{cfg.digest()}): delete {folder} or set another checkpoint_dir")
    step = load_checkpoint(latest, stage.model.adapter, stage.optimizer, stage.scaler)
    stage.say(f"{cfg.stage}: resumed from {latest} at step {step}")
    return step


def _announce(stage: _Stage, step: int, end: int) -> None:
    """One line saying what this call will run, on what, so a log shows a run's shape before its losses."""
    cfg, accelerator = stage.cfg, stage.accelerator
    stage.say(f"{cfg.stage}: {len(stage.items)} items, {len({i.audio_key for i in stage.items})} clips; steps "
              f"{step}->{end} of {cfg.total_steps}, batch {cfg.batch_size} x accum {cfg.grad_accum} x "
              f"{accelerator.num_processes} process(es), device {accelerator.device}, "
              f"mixed precision {accelerator.mixed_precision}")


def _optimise(stage: _Stage, step: int, end: int, started: float) -> tuple[list[float], list[dict]]:
    """Optimiser steps `step`..`end`, logging every log_every and checkpointing every checkpoint_every;
    returns each step's loss and the logged averages."""
    cfg = stage.cfg
    first = step
    losses: list[float] = []
    history = []
    stage.wrapped.train()
    while step < end:
        lr = lr_at(cfg, step)
        losses.append(_optimisation_step(stage, step, lr))
        step += 1
        if step % cfg.log_every == 0 or step == end:
            recent = sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:])
            rate = (step - first) / max(time.monotonic() - started, 1e-6)
            stage.say(f"{cfg.stage}: step {step}/{cfg.total_steps} loss {recent:.4f} lr {lr:.2e} {rate:.2f} steps/s")
            history.append({"step": step, "loss": recent, "lr": lr})
        if stage.accelerator.is_main_process and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(Path(cfg.checkpoint_dir), step, stage.model.adapter, stage.optimizer, stage.scaler, cfg)
    return losses, history


def _optimisation_step(stage: _Stage, step: int, lr: float) -> float:
    """One optimiser step at `lr` over grad_accum micro-batches; returns its loss."""
    cfg, accelerator = stage.cfg, stage.accelerator
    for group in stage.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    step_loss = 0.0
    for micro in range(cfg.grad_accum):
        batch = _micro_batch(stage, step, micro)
        audio = [stage.tokens[it.audio_key] for it in batch]
        targets = [it.answer for it in batch]
        questions = [it.question for it in batch] if cfg.stage != "pretrain" else None
        last = micro == cfg.grad_accum - 1
        # gradients are all-reduced across processes only on the last micro-batch
        sync = nullcontext() if accelerator.num_processes == 1 or last else accelerator.no_sync(stage.wrapped)
        with sync, accelerator.autocast():
            loss = stage.wrapped(audio, targets, questions) / cfg.grad_accum
            accelerator.backward(loss)
        step_loss += float(loss.detach())
    stage.optimizer.step()
    stage.optimizer.zero_grad(set_to_none=True)
    return step_loss


def _micro_batch(stage: _Stage, step: int, micro: int) -> list[Item]:
    """This process's items for one micro-batch: a pure function of (seed, step, micro, rank), so that a
    resumed run sees the data an uninterrupted one would."""
    cfg, accelerator = stage.cfg, stage.accelerator
    global_micro = (step * cfg.grad_accum + micro) * accelerator.num_processes + accelerator.process_index
    positions = sample_positions(len(stage.items), cfg.seed, global_micro * cfg.batch_size, cfg.batch_size)
    return [stage.items[i] for i in positions]


def _save_results(stage: _Stage, first: int, last: int) -> dict:
    """A checkpoint of where this call stopped (unless one was just written) and, once the stage is done,
    the plain adapter with its training metadata; returns the summary's additions."""
    cfg, profile = stage.cfg, stage.profile
    if cfg.checkpoint_every and last % cfg.checkpoint_every and last > first:
        save_checkpoint(Path(cfg.checkpoint_dir), last, stage.model.adapter, stage.optimizer, stage.scaler, cfg)
    if last < cfg.total_steps:
        return {}
    save_adapter(plain_linear(stage.model.adapter), Path(cfg.output), profile=profile.name,
                 pool_window=profile.pool_window, encoder_version=profile.version("encoder"),
                 stage=cfg.stage, steps=last, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                 lr=cfg.lr, min_lr=cfg.min_lr, normalised_inputs=cfg.normalise_inputs,
                 train_items=len(stage.items), init_adapter=cfg.init_adapter, seed=cfg.seed)
    stage.say(f"{cfg.stage}: saved adapter to {cfg.output}")
    return {"output": cfg.output}


def export_checkpoint(checkpoint: Path, output: Path, **meta) -> nn.Linear:
    """Write a training checkpoint's adapter (standardisation folded in) as a plain adapter file."""
    tensors = load_file(str(Path(checkpoint) / "adapter.safetensors"))
    state = json.loads((Path(checkpoint) / "state.json").read_text())
    w = tensors["adapter.linear.weight"] if "adapter.linear.weight" in tensors else tensors["adapter.weight"]
    inner = nn.Linear(w.shape[1], w.shape[0])
    if "adapter.mean" in tensors:
        module = StandardisedLinear(inner, tensors["adapter.mean"], tensors["adapter.std"])
    else:
        module = inner
    module.load_state_dict({k[len("adapter."):]: v for k, v in tensors.items()})
    linear = plain_linear(module)
    save_adapter(linear, Path(output), stage=state.get("stage"), steps=state["step"],
                 exported_from=str(checkpoint), **meta)
    return linear

