"""The operator's process loads no data library: it reads results, never data.

``python -m modelgate operator`` imports the command line, kopf and the
handlers. The gate engine (numpy, pyarrow) and the model libraries belong to
the evaluator's and trainer's pods; in the controller they cost ~50 MB of
resident memory and do nothing (issue 19's RSS target). ``.importlinter``
guards the handlers' import graph; this checks the process as it runs,
imports inside functions and third-party chains included.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = (
    "numpy",
    "pyarrow",
    "pandas",
    "sklearn",
    "skops",
    "modelgate.gates.engine",
    "modelgate.gates.streaming",
    "modelgate.backends.evaluation",
    "modelgate.localmode",
)


def loaded_after(*modules: str) -> list[str]:
    """The HEAVY modules present in a fresh interpreter after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator")},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_operator_process_loads_no_data_library() -> None:
    # What command_operator imports: the CLI, kopf, then the handlers.
    assert loaded_after("modelgate.cli", "kopf", "modelgate.handlers") == []


def test_the_probe_sees_the_engine_where_it_belongs() -> None:
    # The evaluator's entry point does load them: the probe is not blind.
    loaded = loaded_after("modelgate.evaluate")
    assert {"numpy", "pyarrow", "modelgate.gates.engine", "modelgate.backends.evaluation"} <= set(
        loaded
    )
