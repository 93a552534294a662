"""The release lifecycle on a real cluster (kind), with the operator installed
by the Helm chart (`make kind-up images kind-load deploy e2e`).

Skipped unless --with-e2e. The same story as the emulator tests, with the
real API server, controllers, scheduler, admission webhooks and images:
train as a Job, gate, deploy to staging and production, verify, and refuse
the backtest leak at admission.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import sample_module

pytestmark = pytest.mark.e2e


def _sample() -> ModuleType:
    return sample_module()


def kubectl_json(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        ["kubectl", *args, "-o", "json"], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def team() -> Iterator[tuple[ModuleType, str]]:
    sample = _sample()
    namespace = f"team-e2e-{uuid.uuid4().hex[:5]}"
    sample.apply(namespace)
    try:
        yield sample, namespace
    finally:
        for suffix in ("", "-staging", "-production", "-backtest"):
            subprocess.run(
                ["kubectl", "delete", "namespace", namespace + suffix, "--wait=false"],
                capture_output=True,
                check=False,
            )


def _release(namespace: str) -> dict[str, Any]:
    return kubectl_json("-n", namespace, "get", "modelrelease", "credit-risk-1-4-0")


@pytest.fixture(scope="module")
def finished(team: tuple[ModuleType, str]) -> dict[str, Any]:
    """The sample's release once it has finished, however it finished (the
    tests that need it say what they expect)."""
    _, namespace = team
    deadline = time.monotonic() + 900
    release: dict[str, Any] = {}
    while time.monotonic() < deadline:
        release = _release(namespace)
        if (release.get("status") or {}).get("phase") in {"Released", "GateFailed", "Failed"}:
            break
        time.sleep(5)
    return release


def test_release_is_trained_gated_deployed_and_verified(
    team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    sample, namespace = team
    release = finished
    status = release.get("status") or {}
    assert status.get("phase") == "Released", json.dumps(status, indent=2)[:4000]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    for kind in ("Trained", "GatePassed", "ConfigValid", "Deployed", "Verified", "Ready"):
        assert conditions[kind] == "True", kind
    job = kubectl_json("-n", namespace, "get", "job", status["training"]["jobName"])
    assert job["status"]["succeeded"] == 1
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelRelease"
    for environment in ("staging", "production"):
        deployment = kubectl_json(
            "-n", f"{namespace}-{environment}", "get", "deployment", f"credit-risk-{environment}"
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == sample.IMAGE  # the reference server, the local build
        assert container["command"] == ["python", "-m", "modelgate.server"]
        assert deployment["status"]["availableReplicas"] == 1
    production = kubectl_json("-n", namespace, "get", "environment", "production")
    assert production["status"]["liveRelease"] == "credit-risk-1-4-0"
    listed = subprocess.run(
        ["kubectl", "-n", namespace, "get", "modelreleases"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Released" in listed


def test_backtest_leak_is_refused_at_admission(team: tuple[ModuleType, str]) -> None:
    _, namespace = team
    leak = yaml.safe_load((ROOT / "examples/credit-risk/release-backtest-leak.yaml").read_text())
    leak["metadata"]["namespace"] = namespace
    done = subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=yaml.safe_dump(leak),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "violates rule leakage:backtest" in done.stderr


def test_deleting_the_release_removes_its_jobs(team: tuple[ModuleType, str]) -> None:
    # A release of its own, deleted while it trains: the lifecycle test's
    # release is left alone, so the module passes in any order.
    sample, namespace = team
    name = "credit-risk-deleted"
    (release,) = [d for d in sample.documents(namespace) if d["kind"] == "ModelRelease"]
    release["metadata"]["name"] = name
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=yaml.safe_dump(release),
        capture_output=True,
        text=True,
        check=True,
    )
    job = ""
    deadline = time.monotonic() + 300
    while not job and time.monotonic() < deadline:
        found = kubectl_json("-n", namespace, "get", "modelrelease", name)
        job = ((found.get("status") or {}).get("training") or {}).get("jobName", "")
        time.sleep(0 if job else 2)
    assert job, f"release {name} made no training Job in 300 s"
    kubectl_json("-n", namespace, "get", "job", job)  # it exists before the delete
    subprocess.run(
        ["kubectl", "-n", namespace, "delete", "modelrelease", name, "--wait=true"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found_job = subprocess.run(
            ["kubectl", "-n", namespace, "get", "job", job],
            capture_output=True,
            check=False,
        )
        if found_job.returncode != 0:
            return
        time.sleep(2)
    raise AssertionError(f"Job {job} still exists after its release was deleted")


# Run in each container's place: write to the root, the image's own folder
# and every mount, and say what happened.
WRITE_PROBE = """
import json, os, sys
writes = {}
for folder in sys.argv[1:]:
    try:
        with open(os.path.join(folder, ".write-probe"), "w") as f:
            f.write("x")
        writes[folder] = "written"
    except OSError as error:
        writes[folder] = error.strerror
print(json.dumps({"uid": os.getuid(), "writes": writes}))
"""


def _workload_templates(namespace: str) -> dict[str, dict[str, Any]]:
    """Each kind of pod Modelgate made for the sample (its component label),
    from the Jobs and Deployments in the team's and the environments'
    namespaces: the pod template as the operator wrote it."""
    templates: dict[str, dict[str, Any]] = {}
    for target in (namespace, f"{namespace}-staging", f"{namespace}-production"):
        for kind in ("jobs", "deployments"):
            listed = kubectl_json(
                "-n", target, "get", kind, "-l", "app.kubernetes.io/managed-by=modelgate"
            )
            for item in listed["items"]:
                component = item["metadata"]["labels"]["app.kubernetes.io/component"]
                if component not in templates:
                    templates[component] = {**item["spec"]["template"], "namespace": target}
    return templates


def _probe_pod(name: str, template: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """``container`` of ``template`` with its pod's security context, volumes
    and mounts, running the write probe instead of its program."""
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    spec = template["spec"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": template["namespace"]},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": spec.get("automountServiceAccountToken", False),
            "securityContext": spec.get("securityContext", {}),
            "volumes": spec.get("volumes", []),
            "containers": [
                {
                    "name": "probe",
                    "image": container["image"],
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": container.get("securityContext", {}),
                    "volumeMounts": container.get("volumeMounts", []),
                    "command": ["python", "-c", WRITE_PROBE, "/", "/opt/modelgate", *mounts],
                }
            ],
        },
    }


def test_every_workload_runs_non_root_and_writes_only_to_its_empty_dirs(
    team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    _, namespace = team
    templates = _workload_templates(namespace)
    assert {"training", "verification", "model-server"} <= set(templates), sorted(templates)
    probes: dict[tuple[str, str], dict[str, Any]] = {}
    for component, template in templates.items():
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            name = f"write-probe-{component}-{container['name']}"[:63]
            probes[(component, container["name"])] = _probe_pod(name, template, container)
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=yaml.safe_dump_all(list(probes.values())),
        capture_output=True,
        text=True,
        check=True,
    )
    for (component, container_name), pod in probes.items():
        where = ("-n", pod["metadata"]["namespace"])
        phase, deadline = "", time.monotonic() + 180
        while phase not in {"Succeeded", "Failed"} and time.monotonic() < deadline:
            time.sleep(1)
            phase = kubectl_json(*where, "get", "pod", pod["metadata"]["name"])["status"].get(
                "phase", ""
            )
        logs = subprocess.run(
            ["kubectl", *where, "logs", pod["metadata"]["name"]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert phase == "Succeeded", (component, container_name, phase, logs.stdout, logs.stderr)
        said = json.loads(logs.stdout)
        what = f"{component}/{container_name}"
        assert said["uid"] != 0, what
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        empty_dirs = {v["name"] for v in pod["spec"]["volumes"] if "emptyDir" in v}
        for folder, outcome in said["writes"].items():
            writable = any(
                m["mountPath"] == folder and m["name"] in empty_dirs and not m.get("readOnly")
                for m in mounts
            )
            expected = "written" if writable else "Read-only file system"
            assert outcome == expected, (what, folder, said)


def _prometheus(query: str) -> list[dict[str, Any]]:
    """An instant query to the cluster's Prometheus (deploy/kind/prometheus.yaml),
    through the API server's service proxy."""
    path = (
        "/api/v1/namespaces/modelgate-monitoring/services/prometheus:web/proxy/api/v1/query?"
        + urllib.parse.urlencode({"query": query})
    )
    done = subprocess.run(
        ["kubectl", "get", "--raw", path], capture_output=True, text=True, check=True
    )
    answer = json.loads(done.stdout)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_in_the_cluster_scrapes_the_operator_and_the_model_servers(
    team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    _, namespace = team
    assert (finished.get("status") or {}).get("phase") == "Released"
    # The verification asked each environment's server: its rows were counted
    # by the server and scraped from its pod.
    queries = {
        "operator": 'modelgate_build_info{job="modelgate-operator"} == 1',
        **{
            environment: (
                f'modelgate_server_rows_total{{job="modelgate-model-servers",'
                f'namespace="{namespace}-{environment}",environment="{environment}"}} > 0'
            )
            for environment in ("staging", "production")
        },
    }
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 90  # a few scrape intervals (5 s) and pod discovery
    while time.monotonic() < deadline:
        found = {what: _prometheus(query) for what, query in queries.items()}
        if all(found.values()):
            break
        time.sleep(3)
    assert all(found.values()), {what: len(series) for what, series in found.items()}
    (operator,) = found["operator"]
    assert operator["metric"]["namespace"] == "modelgate-system"
    for environment in ("staging", "production"):
        (server,) = found[environment]
        assert server["metric"]["model"] == "credit-risk"
        assert server["metric"]["pod"].startswith(f"credit-risk-{environment}-")
