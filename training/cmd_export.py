"""Write a training checkpoint's adapter as a plain adapter file that a profile can name."""

from __future__ import annotations

import argparse

from model.runtime import profile_of
from model.settings import Settings

OPTIONS = ("profile",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a CHECKPOINT_DIR/step-NNNNNNN folder")
    p.add_argument("--output", required=True, help="the adapter file to write (.safetensors)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.train import export_checkpoint

    profile = profile_of(args, settings, adapter="")  # what the adapter's metadata records: profile and encoder
    export_checkpoint(args.checkpoint, args.output, profile=profile.name, pool_window=profile.pool_window,
                      encoder_version=profile.version("encoder"))
    print(args.output)
    return 0
