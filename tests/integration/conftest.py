"""Fixtures shared by the integration tests: the reference model server, and
local mode's servers scraped by a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.support.model_server import ModelServer, running_model_server, start_args
from tests.support.prometheus import Prometheus, running_prometheus
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


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[Path, Prometheus]]:
    """A state directory whose model servers a real Prometheus scrapes."""
    state = tmp_path / "state"
    targets = state / "prometheus" / "targets.json"
    targets.parent.mkdir(parents=True)
    targets.write_text("[]")
    (tmp_path / "prometheus").mkdir()
    with running_prometheus([], tmp_path / "prometheus", target_files=[targets]) as prometheus:
        yield state, prometheus
