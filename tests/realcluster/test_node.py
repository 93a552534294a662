"""The test node with the real Job controller: Pods run as local processes and
report what happened, and what the node does not run is refused clearly."""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelgate.backends.manifests import build_verification_job
from modelgate.promotion import StartVerification
from modelgate.settings import OperatorSettings
from tests.support.cluster import wait_for
from tests.support.controlplane import ControlPlane
from tests.support.exits import EXITS_IN_TURN
from tests.support.node import ForeignImage, TestNode, expand, image_repository, running_node

IMAGE = "ghcr.io/modelgate/modelgate:0.1.0"


TOOLS = "registry.test/tools"


@pytest.fixture
def node(control_plane: ControlPlane, tmp_path: Path) -> Iterator[TestNode]:
    # A foreign image of the tests' own: its only command is a python.
    tools = tmp_path / "tools" / "bin"
    tools.mkdir(parents=True)
    (tools / "python").symlink_to(sys.executable)
    foreign = {TOOLS: ForeignImage(bin=tools, env=(("GREETING", "from $(MODELGATE_POD_IP)"),))}
    with running_node(control_plane.api_client(), tmp_path / "node", foreign=foreign) as running:
        yield running
    assert running.errors == []


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace({"metadata": {"name": name}})
    # The ServiceAccount admission plugin refuses pods until `default` exists.
    wait_for(
        lambda: core.list_namespaced_service_account(name).items,
        30,
        "the default service account",
    )
    yield name
    core.delete_namespace(name)


def _job(name: str, command: list[str], image: str = IMAGE) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "command": command,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                }
            },
        },
    }


def _finished(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    job = batch.read_namespaced_job(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def _pod(core: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def test_the_job_controller_completes_and_fails_jobs_the_node_runs(
    control_plane: ControlPlane, node: TestNode, namespace: str
) -> None:
    api = control_plane.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, _job("ok", ["python", "-m", "modelgate", "--help"]))
    batch.create_namespaced_job(namespace, _job("bad", ["python", "-m", "modelgate.verify"]))
    assert wait_for(lambda: _finished(batch, namespace, "ok"), 60, "job ok") == "Complete"
    assert wait_for(lambda: _finished(batch, namespace, "bad"), 60, "job bad") == "Failed"
    ok, bad = _pod(core, namespace, "ok"), _pod(core, namespace, "bad")
    assert ok.status.phase == "Succeeded"
    assert ok.spec.node_name == node.name
    terminated = bad.status.container_statuses[0].state.terminated
    assert bad.status.phase == "Failed"
    assert terminated.exit_code == 2
    assert terminated.reason == "Error"
    # FallbackToLogsOnError: the log's tail is the termination message.
    assert "missing environment variables: MODELGATE_VERIFY_URL" in terminated.message
    assert bad.status.pod_ip != ok.status.pod_ip
    assert bad.status.pod_ip.startswith("127.")


def test_foreign_images_and_commands_are_refused_clearly(
    control_plane: ControlPlane, node: TestNode, namespace: str
) -> None:
    api = control_plane.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, _job("nginx", ["nginx"], image="nginx:1.27"))
    batch.create_namespaced_job(namespace, _job("shell", ["sh", "-c", "rm -rf /"]))

    def waiting_reason() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=nginx").items
        statuses = pods[0].status.container_statuses if pods else None
        waiting = statuses[0].state.waiting if statuses else None
        return f"{waiting.reason}: {waiting.message}" if waiting else None

    reason = wait_for(waiting_reason, 60, "the nginx pod to be refused")
    assert reason.startswith("ErrImagePull: image 'nginx:1.27' is not one of the project's own")
    assert wait_for(lambda: _finished(batch, namespace, "shell"), 60, "job shell") == "Failed"
    terminated = _pod(core, namespace, "shell").status.container_statuses[0].state.terminated
    assert terminated.exit_code == 127
    assert "is not one of the project image's commands" in terminated.message
    assert not any(started.endswith("shell") for started in node.started)


def _tool(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"{TOOLS}:1",
        "command": ["python", "-c", code],
        # Paths reach the process through env: the node rewrites values
        # that start with a mount path, not code that names one inside.
        "env": [{"name": "SHARED", "value": "/shared"}],
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **extra,
    }


def _pod_job(name: str, init: list[dict[str, Any]], main: dict[str, Any]) -> dict[str, Any]:
    job = _job(name, [])
    pod = job["spec"]["template"]["spec"]
    pod.update(initContainers=init, containers=[main], volumes=[{"name": "shared", "emptyDir": {}}])
    return job


def test_init_containers_run_in_order_and_a_sidecar_serves_the_pod_until_it_ends(
    control_plane: ControlPlane, node: TestNode, namespace: str
) -> None:
    api = control_plane.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    sidecar = _tool(
        "server",
        "import http.server, os; os.chdir(os.environ['SHARED']); "
        "http.server.ThreadingHTTPServer(('', 8080), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()",
        restartPolicy="Always",
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/model.txt", "port": "http"}},
    )
    fetch = _tool(
        "fetch",
        "import os; open(os.environ['SHARED'] + '/model.txt', 'w').write(os.environ['GREETING'])",
    )
    # As with a real kubelet, the pod's own container starts once the sidecar
    # has started, not once it is ready: it waits for its server itself.
    ask = _tool(
        "ask",
        "import time, urllib.request\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        print(urllib.request.urlopen('http://localhost:8080/model.txt').read().decode())\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.2)\n",
    )
    batch.create_namespaced_job(namespace, _pod_job("steps", [fetch, sidecar], ask))
    broken = _tool("fetch", "raise SystemExit('the model is not there')")
    never = _tool("ask", "print('never run')")
    batch.create_namespaced_job(namespace, _pod_job("broken", [broken, sidecar], never))
    assert wait_for(lambda: _finished(batch, namespace, "steps"), 90, "job steps") == "Complete"
    assert wait_for(lambda: _finished(batch, namespace, "broken"), 90, "job broken") == "Failed"

    pod = _pod(core, namespace, "steps")
    assert pod.status.phase == "Succeeded"
    inits = {s.name: s.state for s in pod.status.init_container_statuses}
    assert inits["fetch"].terminated.exit_code == 0
    assert inits["server"].terminated is not None  # stopped once the pod's own ended
    [ask_status] = pod.status.container_statuses
    assert ask_status.state.terminated.exit_code == 0
    logs = node.logs()
    [asked] = [v for k, v in logs.items() if "_steps-" in k and k.endswith("/ask")]
    # The sidecar served, at the pod's own address, what the first step wrote
    # with the image's env (expanded against the pod's runtime values).
    assert asked.strip() == f"from {pod.status.pod_ip}"

    failed = _pod(core, namespace, "broken")
    assert failed.status.phase == "Failed"
    fetch_state = failed.status.init_container_statuses[0].state.terminated
    assert fetch_state.exit_code == 1
    assert "the model is not there" in fetch_state.message
    assert failed.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert not any(k.endswith("/ask") for k in logs if "_broken-" in k)


def test_env_sources_resolve_like_the_kubelet(
    control_plane: ControlPlane, node: TestNode, namespace: str
) -> None:
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "keys"}, "stringData": {"token": "s3cr3t"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"level": "debug", "mode": "fast"}}
    )
    pod = {
        "metadata": {
            "name": "p",
            "namespace": namespace,
            "uid": "u-1",
            "labels": {"app": "demo"},
        },
        "spec": {"nodeName": node.name, "serviceAccountName": "default"},
    }
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "PLAIN", "value": "a"},
            {"name": "EXPANDED", "value": "$(PLAIN)-b-$(MISSING)-$$"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "token"}}},
            {
                "name": "LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}},
            },
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "OPTIONAL",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}},
            },
        ],
    }
    env = node._environment(pod, container, "127.1.9.9")
    assert env == {
        "CFG_level": "debug",
        "CFG_mode": "fast",
        "PLAIN": "a",
        "EXPANDED": "a-b-$(MISSING)-$",
        "TOKEN": "s3cr3t",
        "LEVEL": "debug",
        "POD": "p",
        "IP": "127.1.9.9",
        "APP": "demo",
    }
    container["env"].append(
        {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "missing"}}}
    )
    with pytest.raises(Exception, match=r"couldn't find key missing in secret"):
        node._environment(pod, container, "127.1.9.9")


def test_image_names_and_expansion() -> None:
    assert image_repository("ghcr.io/modelgate/modelgate:0.1.0") == "ghcr.io/modelgate/modelgate"
    assert image_repository("ghcr.io/modelgate/modelgate@sha256:" + "ab" * 32) == (
        "ghcr.io/modelgate/modelgate"
    )
    assert image_repository("localhost:5000/modelgate:dev") == "localhost:5000/modelgate"
    assert image_repository("modelgate") == "modelgate"
    assert expand("$(A)$(B)", {"A": "1"}) == "1$(B)"


def _verification_job(name: str, codes: str, counter: Path) -> dict[str, Any]:
    """The verification Job the operator makes, exiting with ``codes`` in turn
    (the node's pods are this machine's processes: they share ``counter``)."""
    action = StartVerification(
        job_name=name,
        environment="production",
        namespace="unused",
        release="team/m-1",
        model="m",
        image=f"{TOOLS}:1",
        command=("python", "-c", EXITS_IN_TURN),
        args=(),
        timeout=timedelta(minutes=2),
        predictions=None,
        env=(("COUNTER", str(counter)), ("CODES", codes)),
        attempts=3,
    )
    job = build_verification_job(action, OperatorSettings(s3_secret=None))
    del job["metadata"]["namespace"]
    return job


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder the pods share: not under /tmp, which the node gives each pod
    its own of (the Job's emptyDir)."""
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="modelgate-node-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_job_controller_retries_a_verification_that_could_not_check_and_not_a_failed_model(
    control_plane: ControlPlane, node: TestNode, namespace: str, outside_tmp: Path
) -> None:
    api = control_plane.api_client()
    batch = client.BatchV1Api(api)
    could_not, failed = outside_tmp / "could-not-check", outside_tmp / "model-failed"
    batch.create_namespaced_job(namespace, _verification_job("could-not", "2,0", could_not))
    batch.create_namespaced_job(namespace, _verification_job("failed", "1,0", failed))
    # The pod failure policy's FailJob: the model failing is final at once.
    assert wait_for(lambda: _finished(batch, namespace, "failed"), 60, "job failed") == "Failed"
    job = batch.read_namespaced_job("failed", namespace)
    reasons = {c.type: c.reason for c in job.status.conditions}
    assert reasons["Failed"] == "PodFailurePolicy"
    assert failed.read_text() == "1"
    # Exit 2 counts against backoffLimit: a second pod runs (after the Job
    # controller's back-off) and verifies.
    assert (
        wait_for(lambda: _finished(batch, namespace, "could-not"), 90, "job could-not")
        == "Complete"
    )
    job = batch.read_namespaced_job("could-not", namespace)
    assert (job.status.failed, job.status.succeeded) == (1, 1)
    assert could_not.read_text() == "2"
