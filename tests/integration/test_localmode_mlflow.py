"""Local mode releases a model registered in a real MLflow server: the alias
is resolved once to a version, the version imported (its digest recorded)
and scored by the reference server for the gate, then deployed and verified
through the Open Inference Protocol like a trained release."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgate.backends.mlflow import MlflowRegistry
from modelgate.cli import main
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.integration.test_localmode import GATE, SAMPLE, SAMPLE_DATA, conditions, items, run_json
from tests.support.mlflow_server import MlflowServer, running_mlflow
from tests.unit.test_trainer import contract_env

ENVS = SAMPLE / "environments.yaml"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def registered(mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """credit-risk trained elsewhere (here by the reference trainer, on the
    sample data) and logged twice; alias candidate names the first."""
    trained = tmp_path_factory.mktemp("trained")
    train(contract_env(trained))
    work = tmp_path_factory.mktemp("register")
    versions = [mlflow.register_sklearn(trained / contract.MODEL_FILE, "credit-risk", work)]
    versions.append(mlflow.register_sklearn(trained / contract.MODEL_FILE, "credit-risk", work))
    MlflowRegistry(mlflow.url).set_alias("credit-risk", "candidate", versions[0])
    return versions


def release_file(tmp_path: Path, mlflow: MlflowServer, **source: Any) -> Path:
    document = {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": "credit-risk-registered"},
        "spec": {
            "model": {"name": "credit-risk", "version": "2.0.0"},
            "serving": "ReferenceServer",
            "mlflow": {
                "trackingUri": mlflow.url,
                "name": "credit-risk",
                **source,
                "data": dict(SAMPLE_DATA),
            },
            "gate": {"name": "credit-gate"},
            "promotion": {"environments": ["staging"]},
        },
    }
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_registered_model_is_resolved_once_imported_gated_and_released(
    mlflow: MlflowServer,
    registered: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    release = release_file(tmp_path, mlflow, alias="candidate")
    state = tmp_path / "state"
    code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", state)
    found = items(listing, "ModelRelease")["credit-risk-registered"]
    status = found["status"]
    assert code == 0, status
    assert status["phase"] == "Released"
    assert status["source"]["mlflow"]["version"] == registered[0]
    assert status["source"]["mlflow"]["alias"] == "candidate"
    states = {c: v["status"] for c, v in conditions(found).items()}
    assert states.items() >= {
        "Trained": "True", "GatePassed": "True", "Verified": "True", "Ready": "True",
    }.items()  # fmt: skip
    artifacts = {a["name"]: a for a in status["artifacts"]}
    assert {"model", "metadata", "predictions"} <= set(artifacts)
    metadata = json.loads(Path(artifacts["metadata"]["uri"].removeprefix("file://")).read_text())
    source = metadata["source"]["mlflow"]
    assert (source["name"], source["version"]) == ("credit-risk", registered[0])
    assert len(source["digest"]) == 64
    assert {f["path"] for f in source["files"]} >= {"MLmodel", "model.skops"}
    assert metadata["classes"] == ["0", "1"]
    assert status["gate"]["outcome"] == "Passed"

    # The alias moves; the release keeps the version it resolved.
    MlflowRegistry(mlflow.url).set_alias("credit-risk", "candidate", registered[1])
    code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", state)
    again = items(listing, "ModelRelease")["credit-risk-registered"]["status"]
    assert code == 0
    assert again["source"]["mlflow"]["version"] == registered[0]
    assert again["training"] == status["training"]  # not imported again
    main(["stop", "--state-dir", str(state)])


def test_an_alias_the_registry_does_not_know_fails_naming_it(
    mlflow: MlflowServer, registered: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = release_file(tmp_path, mlflow, alias="nobody")
    code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", tmp_path / "state")
    found = items(listing, "ModelRelease")["credit-risk-registered"]
    assert code == 1
    trained = conditions(found)["Trained"]
    assert (trained["status"], trained["reason"]) == ("False", "ModelUnresolved")
    assert "credit-risk@nobody" in trained["message"]
    assert "alias nobody not found" in trained["message"]
    assert "training" not in found["status"]  # nothing was started


STAGING_FAILING_B = """
apiVersion: modelgate.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  tier: preproduction
  namespace: ml-staging
  verification:
    # A test of one's own that fails release b only.
    image: verify:1
    command:
    - python
    - -c
    - "import os, sys; sys.exit(os.environ['MODELGATE_RELEASE'].endswith('-b'))"
"""


def test_the_environments_alias_names_the_live_version_only(
    mlflow: MlflowServer, registered: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = MlflowRegistry(mlflow.url)
    environments = tmp_path / "environments.yaml"
    environments.write_text(STAGING_FAILING_B)
    state = tmp_path / "state"
    releases = {}
    for suffix, version in (("a", registered[0]), ("b", registered[1])):
        folder = tmp_path / suffix
        folder.mkdir()
        path = release_file(folder, mlflow, version=version)
        document = yaml.safe_load(path.read_text())
        document["metadata"]["name"] = f"credit-risk-{suffix}"
        document["spec"]["model"]["version"] = f"2.0.{version}"
        document["spec"]["mlflow"]["aliases"] = {"staging": "staging-live"}
        path.write_text(yaml.safe_dump(document))
        releases[suffix] = path

    code, listing = run_json(capsys, GATE, environments, releases["a"], "--state-dir", state)
    first = items(listing, "ModelRelease")["credit-risk-a"]["status"]
    assert code == 0, first
    [synced] = first["source"]["mlflow"]["synced"]
    assert (synced["environment"], synced["alias"], synced["reason"], synced["state"]) == (
        "staging", "staging-live", "Live", "Synced",
    )  # fmt: skip
    live = registry.by_alias("credit-risk", "staging-live")
    assert live.version == registered[0]
    assert live.tags["modelgate.dev/release"] == "default/credit-risk-a"
    assert live.tags["modelgate.dev/gate"] == "Passed"
    assert live.tags["modelgate.dev/staging.config-hash"]

    code, listing = run_json(
        capsys, GATE, environments, releases["a"], releases["b"], "--state-dir", state
    )
    second = items(listing, "ModelRelease")["credit-risk-b"]["status"]
    assert code == 1
    assert [(e["name"], e["phase"]) for e in second["environments"]] == [("staging", "RolledBack")]
    [moved] = second["source"]["mlflow"]["synced"]
    assert (moved["reason"], moved["state"], moved["version"]) == (
        "RolledBack", "Synced", registered[0],
    )  # fmt: skip
    # b was never live there (its verification failed before): the alias still
    # names a's version, and is left so.
    assert moved["message"] == (
        f"alias staging-live names version {registered[0]}, not this one: left so"
    )
    assert registry.by_alias("credit-risk", "staging-live").version == registered[0]
    main(["stop", "--state-dir", str(state)])
