"""The `python -m indexer` command line: one module per subcommand (indexer/cmd_*.py), shared flags here.

Every subcommand takes `--json` and then prints one JSON object on stdout with what a script checks
(ids, counts, reasons); setup errors print {"ok": false, "error": ...} and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

COMMANDS = ("scan", "status", "forget", "verify")


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print `payload` as JSON with --json, else the human-readable `text`."""
    print(json.dumps(payload, default=str) if args.json else text)


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.exc import DBAPIError

    from catalog.store import CatalogError
    from indexer.writer import ScanBusyError
    from model.config import ModelNotFoundError
    from model.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m indexer",
                                     description="Index a music library into the catalog and FAISS indexes.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="where the catalog, indexes and models live (default: settings)")
    common.add_argument("--config", help="settings TOML (default: $MUSILINGO_CONFIG or <data-dir>/config.toml)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"indexer.cmd_{name}").add_parser(sub, common)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
        return args.run(args, settings)
    except (CatalogError, ScanBusyError, ModelNotFoundError, FileNotFoundError, KeyError, ValueError) as exc:
        return _fail(args, exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc), 2)
    except (OSError, DBAPIError) as exc:  # the data dir's disk is full or failing: committed work is kept
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return _fail(args, f"{reason} (committed work is kept; rerun to resume)", 1)


def _fail(args: argparse.Namespace, reason: str, code: int) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": reason}))
    else:
        print(f"error: {reason}", file=sys.stderr)
    return code
