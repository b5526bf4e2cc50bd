"""`python -m model caption|ask|tags|prepare|profiles`: the models on their own, for people and scripts."""

from __future__ import annotations

import argparse
import sys

from model import cmd_ask, cmd_caption, cmd_prepare, cmd_profiles, cmd_tags

COMMANDS = {"caption": cmd_caption, "ask": cmd_ask, "tags": cmd_tags, "prepare": cmd_prepare,
            "profiles": cmd_profiles}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every model command shares: where data lives and which profile (or parts) to run."""
    parser.add_argument("--data-dir", help="data directory (catalog, model caches); default ./data")
    parser.add_argument("--profile", help="profile name or TOML path (default: settings, else 'lite')")
    parser.add_argument("--encoder", help="a MERT-v1 checkpoint folder (overrides the profile's encoder)")
    parser.add_argument("--llm", help="an LLM folder or .gguf file (overrides the profile's LLM)")
    parser.add_argument("--adapter", help="an adapter checkpoint: .pth, .safetensors or a MusiLingo folder")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        add_model_options(p)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
