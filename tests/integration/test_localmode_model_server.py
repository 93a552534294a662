"""Local mode releases credit-risk, registered in a real MLflow server by a
team that serves it with MLServer: the release names MLServer as its model
server (serving: ModelServer), the version is imported and scored by a real
MLServer for the gate, each environment is served by an MLServer process on
the hash-checked registered file, staging's built-in verification asks it
over the Open Inference Protocol, and the registry's aliases follow what is
live. Modelgate never unpickles the model."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import yaml

from modelgate.backends.mlflow import MlflowRegistry
from modelgate.cli import main
from modelgate.serving.model import trusted_loads
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.integration.test_localmode import GATE, SAMPLE_DATA, conditions, items, run_json
from tests.support.mlflow_server import MlflowServer, running_mlflow
from tests.support.mlserver import MLSERVER, MLSERVER_IMAGE
from tests.support.registered_models import mlserver_release, register_credit_risk
from tests.unit.test_trainer import contract_env

# Pinned by digest, as production asks (local mode runs the local command).

ENVIRONMENTS = """
apiVersion: modelgate.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  tier: preproduction
  namespace: ml-staging
  verification:
    servedPredictions: {sampleSize: 100}
---
apiVersion: modelgate.dev/v1alpha1
kind: Environment
metadata: {name: production}
spec:
  tier: production
  promotesFrom: staging
  namespace: ml-prod
  verification:
    # A test of one's own that fails release b only.
    image: verify:1
    command:
    - python
    - -c
    - "import os, sys; sys.exit(os.environ['MODELGATE_RELEASE'].endswith('-b'))"
"""


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def registered(mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return register_credit_risk(mlflow, tmp_path_factory, versions=2)


def release_document(tracking_uri: str, suffix: str, version: str) -> dict[str, Any]:
    """The release a team writes for a cluster, run in local mode: MLServer
    on loopback, started by server.local's command."""
    document = mlserver_release(
        tracking_uri, suffix, version, image=MLSERVER_IMAGE, data=dict(SAMPLE_DATA)
    )
    server = document["spec"]["server"]
    server.pop("command")
    server["env"].insert(0, {"name": "MLSERVER_HOST", "value": "127.0.0.1"})
    server["local"] = {"command": [str(MLSERVER), "start", "$(MODELGATE_MODEL_DIR)"]}
    return document


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_release_served_by_mlserver_is_gated_verified_and_kept_in_step(
    mlflow: MlflowServer, registered: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = MlflowRegistry(mlflow.url)
    environments = tmp_path / "environments.yaml"
    environments.write_text(ENVIRONMENTS)
    state = tmp_path / "state"
    paths = {}
    for suffix, version in (("a", registered[0]), ("b", registered[1])):
        paths[suffix] = tmp_path / f"{suffix}.yaml"
        paths[suffix].write_text(yaml.safe_dump(release_document(mlflow.url, suffix, version)))
    try:
        code, listing = run_json(capsys, GATE, environments, paths["a"], "--state-dir", state)
        found = items(listing, "ModelRelease")["credit-risk-a"]
        status = found["status"]
        assert code == 0, conditions(found)["Ready"]
        assert status["phase"] == "Released"
        states = {c: v["status"] for c, v in conditions(found).items()}
        assert states.items() >= {
            "Trained": "True", "GatePassed": "True", "Verified": "True", "Ready": "True",
        }.items()  # fmt: skip
        assert status["gate"]["outcome"] == "Passed"

        # The gate judged what MLServer answered for the registered file.
        artifacts = {a["name"]: a for a in status["artifacts"]}
        metadata = json.loads(
            Path(artifacts["metadata"]["uri"].removeprefix("file://")).read_text()
        )
        files = {f["path"]: f["sha256"] for f in metadata["source"]["mlflow"]["files"]}
        assert metadata["servedBy"]["modelFile"] == "model.pkl"
        assert artifacts["model"]["sha256"] == files["model.pkl"]
        assert metadata["scoring"]["requests"] >= 2

        # Each environment is served by MLServer on that file, and staging's
        # built-in verification asked it over the Open Inference Protocol.
        for environment in ("staging", "production"):
            record = json.loads((state / "servers" / "default" / f"{environment}.json").read_text())
            assert record["state"] == "ready", record
            assert record["marker"] == str(MLSERVER)
            assert _alive(record["pid"])
            served = Path(record["log"]).with_suffix(".model") / "model.pkl"
            assert (
                served.read_bytes()
                == Path(artifacts["model"]["uri"].removeprefix("file://")).read_bytes()
            )
        staging = status["environments"][0]
        verification = (state / "runs" / staging["verificationJob"] / "log.txt").read_text()
        assert "verified: 0/100 served answers differ" in verification, verification
        assert registry.by_alias("credit-risk", "champion").version == registered[0]

        # b fails production's test: a is put back, and champion stays a's.
        code, listing = run_json(
            capsys, GATE, environments, paths["a"], paths["b"], "--state-dir", state
        )
        second = items(listing, "ModelRelease")["credit-risk-b"]["status"]
        assert code == 1
        assert [(e["name"], e["phase"]) for e in second["environments"]] == [
            ("staging", "Deployed"),
            ("production", "RolledBack"),
        ]
        assert registry.by_alias("credit-risk", "champion").version == registered[0]
        assert registry.by_alias("credit-risk", "staging").version == registered[1]
        record = json.loads((state / "servers" / "default" / "production.json").read_text())
        assert record["state"] == "ready"
        assert record["modelSha256"] == artifacts["model"]["sha256"]  # a's file, served again
    finally:
        main(["stop", "--state-dir", str(state)])


def test_a_stored_pickle_is_served_by_mlserver_and_never_unpickled_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The third source: a joblib file a team stored, its columns named in
    the release; MLServer loads it, Modelgate only hashes and serves it."""
    trained = tmp_path / "trained"
    train(contract_env(trained))
    pickled = tmp_path / "model.joblib"
    joblib.dump(trusted_loads((trained / contract.MODEL_FILE).read_bytes()), pickled)
    features = [
        f["name"] for f in json.loads((trained / contract.METADATA_FILE).read_text())["features"]
    ]
    environments = tmp_path / "environments.yaml"
    # Staging only, verified through MLServer.
    environments.write_text(ENVIRONMENTS.split("---", maxsplit=1)[0])
    document = release_document("http://unused.example.com", "stored", "1")
    spec = document["spec"]
    data = spec.pop("mlflow")["data"]
    spec["artifact"] = {
        "uri": str(pickled),
        "sha256": hashlib.sha256(pickled.read_bytes()).hexdigest(),
        "format": "Pickle",
        "features": features,
        "data": data,
    }
    spec["promotion"] = {"environments": ["staging"]}
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(document))
    state = tmp_path / "state"
    try:
        code, listing = run_json(capsys, GATE, environments, path, "--state-dir", state)
        found = items(listing, "ModelRelease")["credit-risk-stored"]
        assert code == 0, conditions(found)["Ready"]
        status = found["status"]
        assert status["gate"]["outcome"] == "Passed"
        assert conditions(found)["Verified"]["status"] == "True"
        artifacts = {a["name"]: a for a in status["artifacts"]}
        assert artifacts["model"]["sha256"] == spec["artifact"]["sha256"]
        metadata = json.loads(
            Path(artifacts["metadata"]["uri"].removeprefix("file://")).read_text()
        )
        assert metadata["servedBy"]["modelFile"] == "model.pkl"
        assert [f["name"] for f in metadata["features"]] == features
        record = json.loads((state / "servers" / "default" / "staging.json").read_text())
        assert (record["state"], record["marker"]) == ("ready", str(MLSERVER))
    finally:
        main(["stop", "--state-dir", str(state)])
