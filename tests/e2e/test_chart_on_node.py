"""The chart as a user installs it (`make deploy`), on a cluster whose pods
are real containers: the operator's pod runs the built image under the
chart's security context, passes its probes, and the API server calls its
webhook through its Service."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.e2e

NAMESPACE = "modelgate-system"


def _operator_pod(cluster: Cluster) -> dict[str, Any]:
    listed = json.loads(
        cluster.run(
            "kubectl",
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=modelgate",
            "-o",
            "json",
        ).stdout
    )
    running = [p for p in listed["items"] if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [p["metadata"]["name"] for p in listed["items"]]
    pod: dict[str, Any] = running[0]
    return pod


def test_the_operator_pod_runs_the_built_image_ready(cluster: Cluster) -> None:
    pod = _operator_pod(cluster)
    container = pod["spec"]["containers"][0]
    assert container["image"] == cluster.image
    statuses = pod["status"]["containerStatuses"]
    assert statuses[0]["ready"] is True
    assert statuses[0]["restartCount"] == 0, statuses
    # A real container: the runtime reports its id and the image it resolved.
    assert statuses[0]["containerID"].startswith("containerd://")


def test_the_operator_runs_non_root_on_a_read_only_root(cluster: Cluster) -> None:
    pod = _operator_pod(cluster)["metadata"]["name"]

    def in_pod(script: str) -> str:
        done = cluster.run(
            "kubectl", "-n", NAMESPACE, "exec", pod, "--", "python", "-c", script, check=False
        )
        return done.stdout.strip() + done.stderr.strip()

    assert in_pod("import os; print(os.getuid(), os.getgid())") == "65532 65532"
    refused = in_pod("open('/opt/modelgate/written', 'w')")
    assert "Read-only file system" in refused, refused
    assert "Read-only file system" in in_pod("open('/written', 'w')")
    # The chart's emptyDirs are where it may write.
    assert in_pod("open('/tmp/written', 'w').write('x'); print('ok')") == "ok"
    capabilities = in_pod(
        "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])"
    )
    assert capabilities == "0000000000000000"
