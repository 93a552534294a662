"""Faults that only real containers produce: a container killed by its
memory limit, an image that cannot be pulled, the operator's pod deleted
and the kubelet restarted in the middle of a release."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, sample_module
from tests.e2e.workloads import delete_namespaces, kubectl_json

pytestmark = pytest.mark.e2e
RELEASE = "credit-risk-1-4-0"


def _sample() -> ModuleType:
    return sample_module()


@pytest.fixture
def team(cluster: Cluster) -> Iterator[str]:
    namespace = f"fault-{uuid.uuid4().hex[:5]}"
    yield namespace
    delete_namespaces(namespace, "", "-staging", "-production", "-backtest")


def _release(namespace: str) -> dict[str, Any]:
    return kubectl_json("-n", namespace, "get", "modelrelease", RELEASE)


def _conditions(release: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (release.get("status") or {}).get("conditions", [])}


def _wait_for(
    cluster: Cluster,
    namespace: str,
    what: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 600,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    release: dict[str, Any] = {}
    while time.monotonic() < deadline:
        release = _release(namespace)
        if done(release):
            return release
        time.sleep(3)
    raise AssertionError(
        f"{what}: not after {timeout}s: {json.dumps(release.get('status'), indent=1)[:3000]}"
    )


def _training(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def on_release(document: dict[str, Any]) -> None:
        if document["kind"] == "ModelRelease":
            edit(document["spec"]["training"])

    return on_release


def test_a_training_pod_killed_by_its_memory_limit_says_so(cluster: Cluster, team: str) -> None:
    def small(training: dict[str, Any]) -> None:
        # The trainer imports pandas and scikit-learn: far beyond 48 MiB.
        training["resources"] = {"limits": {"memory": "48Mi"}, "requests": {"memory": "48Mi"}}
        training["backoffLimit"] = 0

    _sample().apply(team, edit=_training(small))
    release = _wait_for(
        cluster, team, "training failed", lambda r: (r.get("status") or {}).get("phase") == "Failed"
    )
    message = _conditions(release)["Trained"]["message"]
    assert "OOMKilled (exit 137)" in message, message
    assert "memory limit of 48Mi" in message
    assert "raise spec.training.resources.limits.memory" in message


def test_an_image_that_cannot_be_pulled_is_named_with_the_reason(
    cluster: Cluster, team: str
) -> None:
    missing = "localhost/modelgate/no-such-trainer:1"

    def unpullable(training: dict[str, Any]) -> None:
        training["image"] = missing

    _sample().apply(team, edit=_training(unpullable))
    release = _wait_for(
        cluster,
        team,
        "the release names the image it waits for",
        lambda r: _conditions(r).get("Trained", {}).get("reason") == "TrainingPodWaiting",
        timeout=300,
    )
    message = _conditions(release)["Trained"]["message"]
    assert missing in message, message
    assert "ErrImagePull" in message or "ImagePullBackOff" in message
    assert _conditions(release)["Ready"]["status"] == "False"
    assert (release.get("status") or {}).get("phase") == "Training"


def _phase(release: dict[str, Any]) -> str:
    return str((release.get("status") or {}).get("phase") or "")


def _operator_pods(cluster: Cluster) -> list[str]:
    done = cluster.run(
        "kubectl",
        "-n",
        "modelgate-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=modelgate",
        "-o",
        "name",
    )
    return done.stdout.split()


def _names(cluster: Cluster, namespace: str, kind: str) -> list[str]:
    done = cluster.run("kubectl", "-n", namespace, "get", kind, "-o", "name")
    return sorted(done.stdout.split())


def test_the_operator_pod_deleted_mid_promotion_comes_back_and_does_nothing_twice(
    cluster: Cluster, team: str
) -> None:
    _sample().apply(team)
    _wait_for(
        cluster,
        team,
        "staging deployed",
        lambda r: any(
            e.get("name") == "staging" for e in (r.get("status") or {}).get("environments", [])
        ),
    )
    before = _operator_pods(cluster)
    cluster.run("kubectl", "-n", "modelgate-system", "delete", *before, "--wait=false")
    release = _wait_for(cluster, team, "Released", lambda r: _phase(r) in {"Released", "Failed"})
    assert _phase(release) == "Released", json.dumps(release.get("status"), indent=1)[:3000]
    after = _operator_pods(cluster)
    assert after  # the Deployment made a new pod
    assert not set(after) & set(before)
    # One training run, one evaluation; one rollout and one verification per
    # environment: the new operator picked up where the old one was.
    jobs = _names(cluster, team, "jobs")
    assert len([j for j in jobs if "-train-" in j]) == 1, jobs
    assert len([j for j in jobs if "-eval-" in j]) == 1, jobs
    for environment in ("staging", "production"):
        target = f"{team}-{environment}"
        assert len(_names(cluster, target, "replicasets")) == 1
        assert len([j for j in _names(cluster, target, "jobs") if "-verify-" in j]) == 1


def test_a_kubelet_restarted_mid_release_leaves_running_pods_and_the_release_completes(
    cluster: Cluster, team: str
) -> None:
    from tests.support.realnode import RealNode  # noqa: PLC0415

    node = cluster.node
    if not isinstance(node, RealNode):
        pytest.skip("restarts the real node's kubelet: not on a cluster the tests did not start")
    _sample().apply(team)
    # A model server's pod runs; restart the kubelet under it.
    servers: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while not servers and time.monotonic() < deadline:
        servers = _running_servers(cluster, f"{team}-staging")
        time.sleep(2)
    assert servers
    node.restart_kubelet()
    release = _wait_for(cluster, team, "Released", lambda r: _phase(r) in {"Released", "Failed"})
    assert _phase(release) == "Released", json.dumps(release.get("status"), indent=1)[:3000]
    # The same container, never restarted.
    after = _running_servers(cluster, f"{team}-staging")
    assert after == servers


def _running_servers(cluster: Cluster, namespace: str) -> dict[str, str]:
    """The running model servers' pods of a namespace and their containers."""
    pods = json.loads(cluster.run("kubectl", "-n", namespace, "get", "pods", "-o", "json").stdout)
    return {
        p["metadata"]["name"]: str(p["status"]["containerStatuses"][0].get("containerID"))
        for p in pods["items"]
        if p["status"].get("phase") == "Running"
        and "-verify-" not in p["metadata"]["name"]
        and p["status"]["containerStatuses"][0]["restartCount"] == 0
    }
