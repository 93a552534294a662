"""The operator releases a model registered in a real MLflow server, on the
real control plane: it resolves the alias once, the import Job (run by the
test node) fetches and scores it, and the registry's aliases follow the
environments the release goes live in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelgate.backends.mlflow import MlflowRegistry
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.realcluster.conftest import BUCKET, Team, conditions
from tests.support.mlflow_server import MlflowServer, running_mlflow
from tests.unit.test_trainer import contract_env


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        trained = tmp_path_factory.mktemp("trained")
        train(contract_env(trained))
        work = tmp_path_factory.mktemp("register")
        version = server.register_sklearn(trained / contract.MODEL_FILE, "credit-risk", work)
        MlflowRegistry(server.url).set_alias("credit-risk", "candidate", version)
        yield server


def test_the_operator_releases_a_registered_model_and_keeps_the_aliases_in_step(
    new_team: Callable[..., Team], mlflow: MlflowServer, tmp_path: Path
) -> None:
    team = new_team()
    document = team.release_document(name="credit-risk-registered")
    spec = document["spec"]
    spec.pop("training")
    spec["model"]["version"] = "2.0.0"
    spec["mlflow"] = {
        "trackingUri": mlflow.url,
        "name": "credit-risk",
        "alias": "candidate",
        "aliases": {"production": "champion"},
        "data": {
            "train": f"s3://{BUCKET}/data/train.csv",
            "evaluation": f"s3://{BUCKET}/data/eval.csv",
            "target": "default",
            "idColumn": "id",
        },
    }
    team.create(document)
    release = team.wait_phase("credit-risk-registered", "Released", timeout=300)
    status = release["status"]
    resolved = status["source"]["mlflow"]
    assert (resolved["version"], resolved["alias"]) == ("1", "candidate")
    found = conditions(release)
    assert found["Trained"]["status"] == "True"
    assert found["GatePassed"]["status"] == "True"
    assert found["Verified"]["status"] == "True"
    assert status["training"]["jobName"].startswith("credit-risk-registered-train-")
    synced = {s["environment"]: s for s in resolved["synced"]}
    assert {e: (s["alias"], s["state"]) for e, s in synced.items()} == {
        "staging": ("staging", "Synced"),
        "production": ("champion", "Synced"),
    }
    registry = MlflowRegistry(mlflow.url)
    assert registry.by_alias("credit-risk", "champion").version == "1"
    tags = registry.version("credit-risk", "1").tags
    assert tags["modelgate.dev/release"] == f"{team.namespace}/credit-risk-registered"
    assert tags["modelgate.dev/gate"] == "Passed"
