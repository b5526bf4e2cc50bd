"""`python -m indexer`: index a music library into the catalog and FAISS indexes.

One module per subcommand (indexer/cmd_*.py), run by the shared runner (model/cli.py). Every subcommand
takes `--json` and then prints one JSON object on stdout with what a script checks (ids, counts, reasons);
user errors print {"ok": false, "error": ...} and exit with status 2, a failing disk exits 1 (committed
work is kept; a rerun resumes).
"""

from __future__ import annotations

from collections.abc import Sequence

from model.cli import run_cli

COMMANDS = {"scan": "indexer.cmd_scan", "status": "indexer.cmd_status", "forget": "indexer.cmd_forget",
            "verify": "indexer.cmd_verify"}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m indexer", "Index a music library into the catalog and FAISS indexes.", COMMANDS, argv,
                   user_errors=("catalog.store.CatalogError", "indexer.writer.ScanBusyError"),
                   resumable_errors=(OSError, "sqlalchemy.exc.DBAPIError"))  # the data dir's disk is full or failing
