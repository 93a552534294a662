"""The operator releases a model registered in a real MLflow server and served
by a real MLServer, on the real control plane: the import Job fetches the
version into a volume, MLServer serves it there as a native sidecar and the
gate judges MLServer's answers; each environment's Deployment lays the
hash-checked file out for MLServer and staging's built-in verification asks
it over the Open Inference Protocol; the registry's aliases follow."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from modelgate.backends.mlflow import MlflowRegistry
from modelgate.backends.s3 import S3Settings, make_client
from tests.realcluster.conftest import BUCKET, Team, conditions, documents, grants
from tests.support.mlflow_server import MlflowServer, running_mlflow
from tests.support.mlserver import MLSERVER_IMAGE
from tests.support.node import TestNode
from tests.support.registered_models import mlserver_release, register_credit_risk, s3_data
from tests.support.s3server import S3Server

# A test of the team's own in production, run with MLServer's image's
# python: it fails release b only, which is then rolled back.
FAILS_B = "import os, sys; sys.exit(os.environ['MODELGATE_RELEASE'].endswith('-b'))"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def registered(mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return register_credit_risk(mlflow, tmp_path_factory, versions=2)


def environments() -> list[dict[str, Any]]:
    found = copy.deepcopy(documents("environments.yaml"))
    production = next(e for e in found if e["metadata"]["name"] == "production")
    production["spec"]["verification"] = {
        "image": MLSERVER_IMAGE,
        "command": ["python", "-c", FAILS_B],
    }
    return found


def release_document(tracking_uri: str, suffix: str, version: str) -> dict[str, Any]:
    return mlserver_release(
        tracking_uri, suffix, version, image=MLSERVER_IMAGE, data=s3_data(BUCKET)
    )


def _served_pod(team: Team, environment: str) -> dict[str, Any]:
    core = client.CoreV1Api(team.api)
    pods = core.list_namespaced_pod(
        team.targets[environment], label_selector="modelgate.dev/model=credit-risk"
    ).items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    assert len(running) == 1, [(p.metadata.name, p.status.phase) for p in pods]
    found: dict[str, Any] = team.api.sanitize_for_serialization(running[0])
    return found


# A rollback reads the release put back (its registered version).
@grants(
    ("modelgate.dev", "modelreleases", "get"),
)
def test_the_operator_releases_a_model_served_by_mlserver_and_keeps_mlflow_in_step(
    new_team: Callable[..., Team],
    mlflow: MlflowServer,
    registered: list[str],
    test_node: TestNode,
    s3: S3Server,
) -> None:
    team = new_team(environments=environments())
    registry = MlflowRegistry(mlflow.url)
    team.create(release_document(mlflow.url, "a", registered[0]))
    release = team.wait_phase("credit-risk-a", {"Released", "Failed", "Blocked"}, timeout=420)
    found = conditions(release)
    assert release["status"]["phase"] == "Released", found
    assert {c: v["status"] for c, v in found.items()}.items() >= {
        "Trained": "True", "GatePassed": "True", "Verified": "True", "Ready": "True",
    }.items()  # fmt: skip

    # The import Job: the fetch step, MLServer as a sidecar, the import run.
    job = release["status"]["training"]["jobName"]
    logs = test_node.logs()
    [pod] = [key.split("/")[0] for key in logs if key.startswith(f"{team.namespace}_{job}-")][:1]
    assert "fetched model.pkl for the model server" in logs[f"{pod}/fetch"]
    assert "scored" in logs[f"{pod}/trainer"], logs[f"{pod}/trainer"]
    assert "credit-risk" in logs[f"{pod}/server"]

    # The gate judged what MLServer answered for the registered file.
    artifacts = {a["name"]: a for a in release["status"]["artifacts"]}
    store = make_client(S3Settings(bucket=BUCKET, endpoint_url=s3.endpoint, path_style=True))
    key = artifacts["metadata"]["uri"].split(f"s3://{BUCKET}/", 1)[1]
    metadata = json.loads(store.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    files = {f["path"]: f["sha256"] for f in metadata["source"]["mlflow"]["files"]}
    assert metadata["servedBy"]["modelFile"] == "model.pkl"
    assert artifacts["model"]["sha256"] == files["model.pkl"] == metadata["servedBy"]["sha256"]
    assert metadata["scoring"]["requests"] >= 2

    # Each environment is served by MLServer on the hash-checked file the
    # layout step put in /mnt/models.
    for environment in ("staging", "production"):
        pod_spec = _served_pod(team, environment)
        [layout] = pod_spec["spec"]["initContainers"]
        [server] = pod_spec["spec"]["containers"]
        assert (layout["name"], server["image"]) == ("layout", MLSERVER_IMAGE)
        assert (
            pod_spec["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        )
        assert pod_spec["status"]["containerStatuses"][0]["ready"] is True
    staging_job = release["status"]["environments"][0]["verificationJob"]
    verification = next(v for k, v in test_node.logs().items() if staging_job in k)
    assert "verified: 0/100 served answers differ" in verification, verification
    assert registry.by_alias("credit-risk", "staging").version == registered[0]
    assert registry.by_alias("credit-risk", "champion").version == registered[0]

    # b fails production's test: a is put back there, and champion stays a's.
    team.create(release_document(mlflow.url, "b", registered[1]))
    second = team.wait_phase("credit-risk-b", {"Released", "RolledBack", "Failed"}, timeout=420)
    environments_b = [(e["name"], e["phase"]) for e in second["status"]["environments"]]
    assert environments_b == [("staging", "Deployed"), ("production", "RolledBack")], second[
        "status"
    ]
    synced = {s["environment"]: s for s in second["status"]["source"]["mlflow"]["synced"]}
    # The rollback's sync names the version put back (a's, read from a).
    assert (
        synced["production"]["reason"],
        synced["production"]["state"],
        synced["production"]["version"],
    ) == ("RolledBack", "Synced", registered[0])
    assert registry.by_alias("credit-risk", "champion").version == registered[0]
    assert registry.by_alias("credit-risk", "staging").version == registered[1]
    deployment = client.AppsV1Api(team.api).read_namespaced_deployment(
        "credit-risk-production", team.targets["production"]
    )
    annotations = deployment.metadata.annotations
    assert annotations["modelgate.dev/release"] == f"{team.namespace}/credit-risk-a"


def test_a_stored_model_that_is_not_the_recorded_one_never_reaches_the_server(
    new_team: Callable[..., Team], s3: S3Server, test_node: TestNode
) -> None:
    """The import Job's first step refuses a file whose SHA-256 is not the
    release's: the release says so (the step's own words), MLServer never
    starts on it and nothing is deployed."""
    store = make_client(S3Settings(bucket=BUCKET, endpoint_url=s3.endpoint, path_style=True))
    store.put_object(Bucket=BUCKET, Key="uploads/swapped.pkl", Body=b"not the model you gated")
    team = new_team(environments=environments())
    document = release_document("http://unused", "swapped", "1")
    spec = document["spec"]
    data = spec.pop("mlflow")["data"]
    spec["artifact"] = {
        "uri": f"s3://{BUCKET}/uploads/swapped.pkl",
        "sha256": "ab" * 32,
        "format": "Pickle",
        "features": ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"],
        "data": data,
    }
    team.create(document)
    release = team.wait_phase("credit-risk-swapped", {"Failed", "Blocked"}, timeout=180)
    trained = conditions(release)["Trained"]
    assert trained["status"] == "False"
    assert "container fetch" in trained["message"], trained
    assert "refusing to load it" in trained["message"], trained
    job = release["status"]["training"]["jobName"]
    logs = {k: v for k, v in test_node.logs().items() if f"_{job}-" in k}
    # Each try (the import's backoff limit) stopped at its first step.
    assert {k.rsplit("/", 1)[1] for k in logs} == {"fetch"}
    apps = client.AppsV1Api(team.api)
    for environment in ("staging", "production"):
        assert apps.list_namespaced_deployment(team.targets[environment]).items == []
