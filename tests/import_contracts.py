"""An import-linter contract that import-linter lacks: no module imports another package's private names.

`from model.musilingo import _encoder_dim` in training/ couples training to a detail model/ may change
without notice; a name another package needs is public. Checked by `lint-imports` (pyproject.toml,
[tool.importlinter]), which `make test` runs.
"""

from __future__ import annotations

import re

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

_FROM_IMPORT = re.compile(r"from\s+[\w.]+\s+import\s+\(?(?P<names>[^)#]*)")


def _private_names(line: str) -> list[str]:
    """The private names (`_x`, not dunders) a `from ... import ...` line takes."""
    found = _FROM_IMPORT.search(line)
    if found is None:
        return []
    names = [n.split(" as ")[0].strip() for n in found.group("names").split(",")]
    return [n for n in names if n.startswith("_") and not n.startswith("__")]


class PrivateNamesContract(Contract):
    """Modules of `packages` may not import private names from a package other than their own."""

    type_name = "private_names"
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        packages = set(self.packages)  # type: ignore[arg-type]
        found = []
        for importer in sorted(graph.modules):
            home = importer.split(".")[0]
            if home not in packages:
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported.split(".")[0] in (home,) or imported.split(".")[0] not in packages:
                    continue
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    names = _private_names(detail["line_contents"])
                    if names:
                        found.append((importer, imported, detail["line_number"], names))
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, imported, line, names in check.metadata["found"]:
            output.print_error(f"- {importer} (l.{line}) imports {', '.join(names)} from {imported}", bold=False)
