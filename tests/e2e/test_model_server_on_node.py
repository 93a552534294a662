"""A model registered in MLflow and served by MLServer, in containers: the
MLflow server runs as a pod (deploy/kind/mlflow.yaml, as a user applies it),
the model is registered from outside through a port-forward as a data
scientist's laptop would, and the release names MLServer's image
(`serving: ModelServer`). The import Job fetches the version from the
registry by its Service's DNS name and MLServer, its native sidecar, answers
the gate; each environment's Deployment runs MLServer on the hash-checked
file its layout step put in place; the verification Job asks it by Service
name; Prometheus scrapes its metrics; the registry's aliases follow.

The process node's half of this story (a second version rolled back in
production by the team's own test, and the aliases on rollback; a swapped
file refused) is tests/realcluster/test_model_server_on_apiserver.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelgate.backends.mlflow import MlflowRegistry
from tests.conftest import ROOT
from tests.e2e.conftest import Cluster, sample_module
from tests.e2e.workloads import (
    assert_writes_only_to_empty_dirs,
    delete_namespaces,
    kubectl_json,
    kubectl_logs,
    scraped,
    wait_finished,
    workload_templates,
)
from tests.support.mlflow_server import MlflowServer
from tests.support.mlserver import MLSERVER_TAGGED
from tests.support.registered_models import mlserver_release, register_credit_risk, s3_data

pytestmark = pytest.mark.e2e

MLFLOW_MANIFEST = ROOT / "deploy" / "kind" / "mlflow.yaml"
# The registry as pods reach it: the release's tracking URI.
IN_CLUSTER_MLFLOW = "http://mlflow.modelgate-mlflow.svc:5000"
RELEASE = "credit-risk-mlserver"


@pytest.fixture(scope="module")
def registry(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """MLflow running in the cluster, with credit-risk registered once:
    (its URL from here, through a port-forward; the version)."""
    cluster.run("kubectl", "apply", "-f", str(MLFLOW_MANIFEST))
    cluster.run(
        "kubectl", "-n", "modelgate-mlflow", "rollout", "status", "deploy/mlflow",
        "--timeout=300s", timeout=320,
    )  # fmt: skip
    sample = sample_module()
    try:
        with sample.port_forward("modelgate-mlflow", "svc/mlflow", 5000) as url:
            server = MlflowServer(url, Path(tmp_path_factory.mktemp("mlflow")) / "unused.log")
            [version] = register_credit_risk(server, tmp_path_factory, versions=1)
            yield url, version
    finally:
        cluster.run("kubectl", "delete", "-f", str(MLFLOW_MANIFEST), "--wait=false", check=False)


@pytest.fixture(scope="module")
def team(registry: tuple[str, str]) -> Iterator[tuple[ModuleType, str]]:
    """The sample's gate and environments, and a release of the registered
    version served by MLServer instead of the sample's trained one."""
    _, version = registry
    sample = sample_module()
    namespace = f"registry-e2e-{uuid.uuid4().hex[:5]}"

    def served_by_mlserver(document: dict[str, Any]) -> None:
        if document["kind"] == "ModelRelease":
            release = mlserver_release(
                IN_CLUSTER_MLFLOW,
                "mlserver",
                version,
                image=MLSERVER_TAGGED,
                data=s3_data(sample.BUCKET),
            )
            # MLServer's metrics files go to its working directory, which in
            # Seldon's image is in the read-only root: to the emptyDir.
            release["spec"]["server"]["env"].append(
                {"name": "MLSERVER_METRICS_DIR", "value": "/tmp/mlserver-metrics"}
            )
            document["metadata"]["name"] = release["metadata"]["name"]
            document["spec"] = release["spec"]

    sample.apply(namespace, edit=served_by_mlserver)
    try:
        yield sample, namespace
    finally:
        delete_namespaces(namespace, "", "-staging", "-production")


@pytest.fixture(scope="module")
def finished(team: tuple[ModuleType, str]) -> dict[str, Any]:
    _, namespace = team
    return wait_finished(namespace, RELEASE)


def _running_pod(namespace: str) -> dict[str, Any]:
    pods = kubectl_json("-n", namespace, "get", "pods", "-l", "modelgate.dev/model=credit-risk")
    running = [
        p
        for p in pods["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(running) == 1, [(p["metadata"]["name"], p["status"].get("phase")) for p in running]
    return running[0]


def test_a_registered_model_served_by_mlserver_is_released_and_the_registry_follows(
    registry: tuple[str, str], team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    url, version = registry
    _, namespace = team
    status = finished.get("status") or {}
    assert status.get("phase") == "Released", json.dumps(status, indent=2)[:4000]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    for kind in ("Trained", "GatePassed", "Deployed", "Verified", "Ready"):
        assert conditions[kind] == "True", (kind, status["conditions"])

    # The import Job: the fetch step (from the registry, by its Service's
    # name), MLServer as a native sidecar, the scoring run that asked it.
    job = status["training"]["jobName"]
    [pod] = kubectl_json("-n", namespace, "get", "pods", "-l", f"job-name={job}")["items"]
    name = pod["metadata"]["name"]
    fetch = kubectl_logs(namespace, name, "-c", "fetch")
    assert "fetched model.pkl for the model server" in fetch, fetch
    assert "scored" in kubectl_logs(namespace, name, "-c", "trainer")
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "server")
    assert (sidecar["image"], sidecar["restartPolicy"]) == (MLSERVER_TAGGED, "Always")

    # Each environment: MLServer's container, on the file the layout step
    # checked, ready by its probes and never restarted.
    for environment in ("staging", "production"):
        served = _running_pod(f"{namespace}-{environment}")
        [layout] = served["spec"]["initContainers"]
        [server] = served["spec"]["containers"]
        assert (layout["name"], server["image"]) == ("layout", MLSERVER_TAGGED)
        layout_state = served["status"]["initContainerStatuses"][0]["state"]
        assert layout_state["terminated"]["exitCode"] == 0
        [server_status] = served["status"]["containerStatuses"]
        assert (server_status["ready"], server_status["restartCount"]) == (True, 0)
        verification = next(
            e["verificationJob"] for e in status["environments"] if e["name"] == environment
        )
        said = kubectl_logs(f"{namespace}-{environment}", f"job/{verification}")
        assert re.search(r"verified: 0/\d+ served answers differ", said), said

    registered = MlflowRegistry(url)
    assert registered.by_alias("credit-risk", "staging").version == version
    assert registered.by_alias("credit-risk", "champion").version == version


def test_prometheus_scrapes_mlserver_in_each_environment(
    team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    """MLServer's own metrics (its metrics port, the serving contract's)
    from its pods, labelled by the scrape job with the environment."""
    _, namespace = team
    assert (finished.get("status") or {}).get("phase") == "Released"
    queries = {
        environment: (
            f'up{{job="modelgate-model-servers",namespace="{namespace}-{environment}",'
            f'environment="{environment}",model="credit-risk"}} == 1'
        )
        for environment in ("staging", "production")
    }
    # MLServer's own request counter, scraped from its pods.
    queries["served"] = f'sum(rest_server_requests_total{{namespace=~"{namespace}-.*"}}) > 0'
    scraped(queries)


def test_mlserver_pods_run_non_root_and_write_only_to_their_empty_dirs(
    team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    _, namespace = team
    templates = workload_templates(namespace)
    images = {
        c["image"]
        for t in templates.values()
        for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]
    }
    assert MLSERVER_TAGGED in images, sorted(images)
    assert_writes_only_to_empty_dirs(templates, "mlserver-probe")
