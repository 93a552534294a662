"""Shared fixtures. Real-cluster e2e tests run only with --with-e2e."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The operator's handlers read their resync interval when first imported; the
# operator tests need it short. Set before any test module imports them.
os.environ.setdefault("MODELGATE_RESYNC_SECONDS", "0.5")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help="run end-to-end tests against a real Kubernetes cluster (kind)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--with-e2e"):
        return
    skip = pytest.mark.skip(reason="needs a real cluster: run with --with-e2e")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)
