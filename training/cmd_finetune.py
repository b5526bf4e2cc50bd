"""Stage 2 adapter training (instructions: captions and answers) from a training config; resumable.

Options as for `pretrain`: --config is the training config (training/configs/*.toml), the settings come
from $MUSILINGO_CONFIG or <data-dir>/config.toml and --device. Prints the run's summary as JSON.
"""

from __future__ import annotations

import argparse

from model.settings import Settings
from training import cmd_pretrain

OPTIONS = cmd_pretrain.OPTIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    cmd_pretrain.add_arguments(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return cmd_pretrain.train_stage(args, settings, "finetune")
