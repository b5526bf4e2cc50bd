"""`python -m training`: adapter training and evaluation.

    python -m training cache-features --dataset synth --root data/synth/train --out data/features/synth-train
    python -m training pretrain --config training/configs/pretrain.toml
    python -m training finetune --config training/configs/lite_finetune.toml
    python -m training export --checkpoint data/runs/checkpoints/step-0000300 --output adapter.safetensors
    python -m training eval --split test --dataset synth --root data/synth/heldout \\
        --cache data/features/synth-heldout --profile lite --adapter model/weights/lite-adapter.safetensors --json

Models come from the settings' cache dir like every other command (`<cache_dir>/models`, by default
~/.cache/musilingo-search/models), the device from --device or the settings (auto: cuda when present).
"""

from __future__ import annotations

from collections.abc import Sequence

from model.cli import run_cli

COMMANDS = {"cache-features": "training.cmd_cache_features", "pretrain": "training.cmd_pretrain",
            "finetune": "training.cmd_finetune", "export": "training.cmd_export", "eval": "training.cmd_eval"}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m training", __doc__, COMMANDS, argv, user_errors=("training.features.CacheError",))
