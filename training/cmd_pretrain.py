"""Stage 1 adapter training (captioning) from a training config; a rerun resumes from its checkpoints.

Here --config is the training config (training/configs/*.toml); the settings (the models' cache dir, and
the device where the config leaves it "auto") come from $MUSILINGO_CONFIG or <data-dir>/config.toml and
--device. Prints the run's summary as JSON.
"""

from __future__ import annotations

import argparse
import json

from model.cli import UserError
from model.settings import Settings

OPTIONS = ("device",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the training config TOML, e.g. training/configs/pretrain.toml")
    p.add_argument("--steps", type=int, default=0, help="override: this many steps in one epoch")
    p.add_argument("--output", default="")
    p.add_argument("--init-adapter", default="")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop at this step (a checkpoint is written; `export` turns it into an adapter)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return train_stage(args, settings, "pretrain")


def train_stage(args: argparse.Namespace, settings: Settings, stage: str) -> int:
    """Train the stage `stage` names (the config must be one of that stage); shared by pretrain and finetune."""
    from training.train import load_config, train

    overrides: dict[str, object] = {}
    if args.steps:
        overrides.update(iters_per_epoch=args.steps, epochs=1)
    if args.output:
        overrides["output"] = args.output
    if args.init_adapter:
        overrides["init_adapter"] = args.init_adapter
    cfg = load_config(args.config, **overrides)
    if cfg.stage != stage:
        raise UserError(f"{args.config} is a '{cfg.stage}' config, not '{stage}'")
    summary = train(cfg, settings=settings, stop_after=args.stop_after or None)
    summary.pop("adapter", None)
    print(json.dumps(summary))
    return 0
