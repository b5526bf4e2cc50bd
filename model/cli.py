"""The one way every `python -m PACKAGE` command line is built, resolves its settings and fails.

A CLI is an ordered mapping of subcommand names to modules (import names, imported when the parser is
built). A subcommand module has
    a docstring              its first line is the subcommand's help, the whole its description;
    add_arguments(parser)    its own options;
    run(args, settings)      the work; returns the exit status. `settings` is resolved once, here, from the
                             shared options (model/runtime.py, settings_of);
    OPTIONS (optional)       shared option groups it takes besides --data-dir, --config and --json:
                             "profile" (--profile), "device" (--device), "models" (--encoder, --llm, --adapter).
A module's own option replaces a shared one of the same name (training's --config is its training TOML).

Errors have one path. A user error (UserError, a settings or profile problem, an unknown profile, a
missing file or model, a value that means nothing, audio that does not decode, and the CLI's own
`user_errors`) prints one line `error: ...` on stderr, or {"ok": false, "error": ...} on stdout with
--json, and exits 2. The CLI's `resumable_errors` (a full or failing disk under a scan) exit 1 the same
way, saying that committed work is kept. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import NoReturn

from model.config import UnknownProfileError
from model.runtime import settings_of

# An exception type, or its import path ("package.module.Name"): one named by its path counts only once its
# module is imported (if it is not, nothing raised it), so naming it costs a command's start nothing.
ErrorTypes = tuple[type[BaseException] | str, ...]

# Mistakes the user can fix, whatever the CLI: ConfigError, CheckpointError and SearchError are ValueErrors,
# ModelNotFoundError a FileNotFoundError.
USER_ERRORS: ErrorTypes = (ValueError, FileNotFoundError, UnknownProfileError, "model.audio.AudioDecodeError")

_SHARED = {
    "profile": [("--profile", "model profile name or TOML path (default: settings, else 'lite')")],
    "device": [("--device", "cpu, cuda, cuda:1 ... (default: settings, else auto: cuda when present)")],
    "models": [("--encoder", "a MERT-v1 checkpoint folder; on a profile with the lite encoder it runs the "
                             "musilingo profile (its prompt and model-written captions)"),
               ("--llm", "an LLM folder or .gguf file, replacing the profile's"),
               ("--adapter", "an adapter: .pth, .safetensors or a MusiLingo folder ('' for a fresh one), "
                             "replacing the profile's")],
}


class UserError(Exception):
    """A mistake the user can fix (a wrong option, a missing input); printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes go down the same error path as every other user error."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print `payload` as one JSON object with --json, else the human-readable `text`."""
    print(json.dumps(payload, default=str) if args.json else text)


def build_parser(prog: str, description: str, commands: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in commands.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve")
        p.add_argument("--data-dir", help="where the catalog and indexes live (default: $MUSILINGO_DATA_DIR, else "
                                          "./data); models are in the settings' cache dir, by default "
                                          "~/.cache/musilingo-search/models")
        p.add_argument("--config", dest="settings_file", metavar="TOML",
                       help="settings TOML (default: $MUSILINGO_CONFIG, else <data-dir>/config.toml)")
        p.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
        for group in getattr(module, "OPTIONS", ()):
            for flag, text in _SHARED[group]:
                p.add_argument(flag, help=text)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def run_cli(prog: str, description: str, commands: Mapping[str, str], argv: Sequence[str] | None = None, *,
            user_errors: ErrorTypes = (), resumable_errors: ErrorTypes = (), default: str | None = None) -> int:
    """Parse `argv`, resolve the settings and run the subcommand; returns the exit status.

    `default` names the subcommand that runs when `argv` does not start with one (`python -m search
    "slow piano"` is `python -m search find "slow piano"`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if default and not (argv and (argv[0] in commands or argv[0] in ("-h", "--help"))):
        argv.insert(0, default)
    quiet_libraries()
    args = None
    try:
        args = build_parser(prog, description, commands).parse_args(argv)
        return args.run(args, settings_of(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        if isinstance(exc, _loaded((UserError, *USER_ERRORS, *user_errors))):
            code, reason = 2, "; ".join(lines)
        elif isinstance(exc, _loaded(resumable_errors)):
            detail = str(getattr(exc, "orig", None) or "").splitlines() or lines  # DBAPIError: the driver's error
            code, reason = 1, f"{detail[0]} (committed work is kept; rerun to resume)"
        else:
            raise
    if getattr(args, "json", "--json" in argv):
        print(json.dumps({"ok": False, "error": reason}, ensure_ascii=False))
    else:
        print(f"error: {reason}", file=sys.stderr)
    return code


def _loaded(kinds: ErrorTypes) -> tuple[type[BaseException], ...]:
    """The types among `kinds`, those named by import path only where their module is loaded."""
    found = []
    for kind in kinds:
        if isinstance(kind, str):
            module, _, name = kind.rpartition(".")
            kind = getattr(sys.modules.get(module), name, None)
        if kind is not None:
            found.append(kind)
    return tuple(found)


def quiet_libraries() -> None:
    """A command prints its own output only: no download or weight-loading progress bars, no library
    warnings and log lines. Environment variables, read when those libraries are first imported, so that
    commands that never load transformers do not pay for importing it; an explicit -W or PYTHONWARNINGS,
    or a variable already set, still wins."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    if "transformers" in sys.modules:  # imported before the variables were set
        from transformers.utils import logging

        logging.set_verbosity_error()
    quiet_progress_bars()


def quiet_progress_bars() -> None:
    """No download or weight-loading progress bars, warnings left as they are: for a server's log (the UI
    loads its chat model in the process that also runs its tests) as much as a command's output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before the variable was set
        from transformers.utils import logging

        logging.disable_progress_bar()


COMMANDS = {"caption": "model.cmd_caption", "ask": "model.cmd_ask", "tags": "model.cmd_tags",
            "prepare": "model.cmd_prepare", "profiles": "model.cmd_profiles"}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m model`: the models on their own, for people and scripts."""
    return run_cli("python -m model", "The models on their own (caption, ask, tags), for people and scripts.",
                   COMMANDS, argv)
