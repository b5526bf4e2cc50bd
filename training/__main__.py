"""Command line: `python -m training {cache-features,pretrain,finetune,export,eval} ...`.

    python -m training cache-features --dataset synth --root data/synth/train --out data/features/synth-train
    python -m training pretrain --config training/configs/pretrain.toml
    python -m training finetune --config training/configs/lite_finetune.toml
    python -m training eval --split test --dataset synth --root data/synth/heldout \
        --cache data/features/synth-heldout --profile lite --adapter model/weights/lite-adapter.safetensors --json
"""

from __future__ import annotations

import argparse
import json
import sys


def _cache_features(args) -> int:
    from model.config import load_profile
    from training.datasets import read_dataset
    from training.features import build_cache

    profile = load_profile(args.profile, adapter="")
    result = read_dataset(args.dataset, args.root, args.split, args.audio_dir)
    print(result.report(), file=sys.stderr)
    index = build_cache(result.items, args.out, profile, args.device, args.batch)
    print(json.dumps({"clips": len(index["clips"]), "missing_audio": result.missing_audio,
                      "undecodable": len(index["failed"]), "version": index["version"]}))
    return 0


def _train(args) -> int:
    from training.train import load_config, train

    overrides = {}
    if args.steps:
        overrides.update(iters_per_epoch=args.steps, epochs=1)
    if args.output:
        overrides["output"] = args.output
    if args.init_adapter:
        overrides["init_adapter"] = args.init_adapter
    cfg = load_config(args.config, **overrides)
    expected = "pretrain" if args.command == "pretrain" else "finetune"
    if cfg.stage != expected:
        print(f"{args.config} is a '{cfg.stage}' config, not '{expected}'", file=sys.stderr)
        return 2
    summary = train(cfg, stop_after=args.stop_after or None)
    summary.pop("adapter", None)
    print(json.dumps(summary))
    return 0


def _eval(args) -> int:
    from training.evaluate import main as eval_main

    return eval_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cache-features", help="encode every clip once and store its compressed tokens")
    c.add_argument("--dataset", required=True, help="lp-musiccaps-msd, musiccaps, musicinstruct, musicqa, synth")
    c.add_argument("--root", required=True)
    c.add_argument("--out", required=True, help="cache root; a subfolder per encoder version")
    c.add_argument("--profile", default="lite")
    c.add_argument("--split", default="all")
    c.add_argument("--audio-dir", default=None)
    c.add_argument("--device", default="cpu")
    c.add_argument("--batch", type=int, default=8)

    for name in ("pretrain", "finetune"):
        t = sub.add_parser(name, help=f"stage {'1' if name == 'pretrain' else '2'} adapter training")
        t.add_argument("--config", required=True)
        t.add_argument("--steps", type=int, default=0, help="override: this many steps in one epoch")
        t.add_argument("--output", default="")
        t.add_argument("--init-adapter", default="")
        t.add_argument("--stop-after", type=int, default=0,
                       help="stop at this step (a checkpoint is written; `export` turns it into an adapter)")

    x = sub.add_parser("export", help="write a training checkpoint's adapter as a plain adapter file")
    x.add_argument("--checkpoint", required=True, help="a CHECKPOINT_DIR/step-NNNNNNN folder")
    x.add_argument("--output", required=True)
    x.add_argument("--profile", default="lite")

    e = sub.add_parser("eval", help="greedy generation + captioning / QA metrics (+ attribute accuracy)")
    e.add_argument("--dataset", required=True)
    e.add_argument("--root", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--audio-dir", default=None)
    e.add_argument("--cache", default="", help="feature cache root (default: encode the audio now)")
    e.add_argument("--profile", default="lite")
    e.add_argument("--adapter", default=None, help="adapter checkpoint (default: the profile's)")
    e.add_argument("--model-cache-dir", default="data/models")
    e.add_argument("--device", default="cpu")
    e.add_argument("--limit", type=int, default=0, help="at most this many clips")
    e.add_argument("--qa-per-clip", type=int, default=0, help="at most this many QA pairs per clip (0: all)")
    e.add_argument("--qa-attributes", default="", help="synth: only QA about these attributes (comma list)")
    e.add_argument("--qa-max-new-tokens", type=int, default=32)
    e.add_argument("--batch", type=int, default=16)
    e.add_argument("--max-new-tokens", type=int, default=80)
    e.add_argument("--baseline", action="store_true", help="also run the no-audio baseline")
    e.add_argument("--no-audio", action="store_true", help="only the no-audio baseline")
    e.add_argument("--shuffled", action="store_true",
                   help="also run with each clip's audio swapped for another clip's (what the model hears)")
    e.add_argument("--free-captions", action="store_true",
                   help="generate captions freely even when the profile has a caption template")
    e.add_argument("--forced-choice", action="store_true",
                   help="synth: also score each clip's summary caption with every value of each attribute")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--samples", default="", help="write every generation to this jsonl file")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument("--out", default="", help="also write the JSON report here")

    args = parser.parse_args(argv)
    if args.command == "cache-features":
        return _cache_features(args)
    if args.command in ("pretrain", "finetune"):
        return _train(args)
    if args.command == "export":
        from model.config import load_profile
        from training.train import export_checkpoint

        profile = load_profile(args.profile, adapter="")
        export_checkpoint(args.checkpoint, args.output, profile=profile.name, pool_window=profile.pool_window,
                          encoder_version=profile.version("encoder"))
        print(args.output)
        return 0
    return _eval(args)


if __name__ == "__main__":
    raise SystemExit(main())
