"""The project layout guards: operator/ must never shadow stdlib ``operator``."""

from __future__ import annotations

import importlib
import operator
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import ROOT


def test_operator_folder_is_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists(), (
        "operator/__init__.py would make a package named 'operator' that shadows "
        "Python's own operator module: delete it"
    )


def test_stdlib_operator_still_resolves() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    origin = Path(operator.__file__ or "").resolve()
    assert stdlib in origin.parents, f"'operator' resolves to {origin}, not the stdlib"
    assert operator.add(2, 3) == 5


def test_stdlib_operator_resolves_with_operator_folder_on_path() -> None:
    # pytest and mypy put operator/ on sys.path; run from the repo root too.
    code = "import operator, modelgate; print(operator.itemgetter(1)([0, 7]), modelgate.GROUP)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["7", "modelgate.dev"]


def test_package_imports_from_operator_folder() -> None:
    module = importlib.import_module("modelgate")
    assert Path(module.__file__ or "").resolve().parent == ROOT / "operator" / "modelgate"
