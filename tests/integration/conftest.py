"""Fixtures shared by the integration tests of the reference model server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.support.model_server import ModelServer, running_model_server, start_args
from tests.unit.test_trainer import contract_env


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's model, trained by the reference trainer (a module's own)."""
    output = tmp_path_factory.mktemp("trained")
    train(contract_env(output))
    return output


@pytest.fixture(scope="module")
def server(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """The reference server serving it."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = start_args(trained / contract.MODEL_FILE, trained / contract.METADATA_FILE)
    with running_model_server(args, log) as running:
        yield running
