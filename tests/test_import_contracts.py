"""The layer contracts hold on this tree, and the private-names contract (tests/import_contracts.py)
finds a private name imported across packages in a tree built here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

from tests.import_contracts import PrivateNamesContract, _private_names

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_private_names_are_read_from_import_lines() -> None:
    assert _private_names("from model.musilingo import MusiLingo, _encoder_dim") == ["_encoder_dim"]
    assert _private_names("from a.b import (\n  _x as y, z)") == ["_x"]
    assert _private_names("from a import __version__, public") == []
    assert _private_names("import a._b") == []


def test_a_private_name_imported_across_packages_breaks_the_contract(tmp_path, monkeypatch) -> None:
    for package, body in {"low": "def _helper():\n    return 1\n\ndef public():\n    return 2\n",
                          "high": "from low.core import _helper, public\n",
                          "fine": "from low.core import public\n"}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "core.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("low", "high", "fine", cache_dir=None)
    contract = PrivateNamesContract(name="private", session_options={},
                                    contract_options={"packages": ["low", "high", "fine"]})
    check = contract.check(graph, verbose=False)
    assert not check.kept
    assert [(i, m, n) for i, m, _, n in check.metadata["found"]] == [("high.core", "low.core", ["_helper"])]
