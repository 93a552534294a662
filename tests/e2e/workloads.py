"""What the e2e tests ask of the cluster as a user does, with kubectl: objects
as JSON, the in-cluster Prometheus, a release's end, and the security
context's write probe run in the place of every container Modelgate made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

# The phases a release stays in.
FINISHED = {"Released", "GateFailed", "Failed", "RolledBack", "Blocked", "Aborted"}


def kubectl_json(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        ["kubectl", *args, "-o", "json"], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def kubectl_logs(namespace: str, *target: str) -> str:
    """A pod's or a Job's logs (``job/NAME``, ``POD -c CONTAINER``), errors included."""
    done = subprocess.run(
        ["kubectl", "-n", namespace, "logs", *target],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout + done.stderr


def kubectl_modelgate(*args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl modelgate ARGS``: kubectl finds the plugin pip installed
    next to this Python."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["kubectl", "modelgate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PATH": path},
    )


def delete_namespaces(namespace: str, *suffixes: str) -> None:
    """A test's namespaces (``namespace`` + each suffix), not waited for."""
    for suffix in suffixes:
        subprocess.run(
            ["kubectl", "delete", "namespace", namespace + suffix, "--wait=false"],
            capture_output=True,
            check=False,
        )


def wait_exists(namespace: str, kind: str, name: str, timeout: float = 60) -> dict[str, Any]:
    """The object once it exists; fails when it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            ["kubectl", "-n", namespace, "get", kind, name, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            found: dict[str, Any] = json.loads(done.stdout)
            return found
        if time.monotonic() > deadline:
            missing = f"{kind} {namespace}/{name} not there in {timeout:.0f} s"
            raise AssertionError(f"{missing}: {done.stderr}")
        time.sleep(1)


def wait_finished(namespace: str, name: str, timeout: float = 900) -> dict[str, Any]:
    """The release once it has finished (or as it was at the deadline)."""
    deadline = time.monotonic() + timeout
    release: dict[str, Any] = {}
    while time.monotonic() < deadline:
        release = kubectl_json("-n", namespace, "get", "modelrelease", name)
        if (release.get("status") or {}).get("phase") in FINISHED:
            break
        time.sleep(5)
    return release


def prometheus(query: str) -> list[dict[str, Any]]:
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


def scraped(queries: dict[str, str], timeout: float = 90) -> dict[str, list[dict[str, Any]]]:
    """Each query's series once every query has some (a few scrape intervals
    and pod discovery); fails naming the queries that found none by then."""
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {what: prometheus(query) for what, query in queries.items()}
        if all(found.values()):
            return found
        time.sleep(3)
    missing = {what: queries[what] for what, series in found.items() if not series}
    raise AssertionError(f"no series in {timeout:.0f} s for {missing}")


# Run in each container's place: write to the root, the image's own
# environment (sys.prefix: its virtualenv) and every mount; say what happened.
WRITE_PROBE = """
import json, os, sys
writes = {}
for folder in ["/", sys.prefix, *sys.argv[1:]]:
    try:
        with open(os.path.join(folder, ".write-probe"), "w") as f:
            f.write("x")
        writes[folder] = "written"
    except OSError as error:
        writes[folder] = error.strerror
print(json.dumps({"uid": os.getuid(), "writes": writes}))
"""


def workload_templates(namespace: str) -> dict[str, dict[str, Any]]:
    """Each kind of pod Modelgate made for a team's releases (its component
    label), from the Jobs and Deployments in ``namespace`` and its
    environments' (``-staging``, ``-production``): the pod template as the
    operator wrote it."""
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
                    "command": ["python", "-c", WRITE_PROBE, *mounts],
                }
            ],
        },
    }


def assert_writes_only_to_empty_dirs(templates: dict[str, dict[str, Any]], prefix: str) -> None:
    """Each container of each template (init containers too), run as the
    write probe: not root, and every write outside its writable emptyDirs
    refused by the read-only root. ``prefix`` names the probe pods."""
    probes: dict[tuple[str, str], dict[str, Any]] = {}
    for component, template in templates.items():
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            name = f"{prefix}-{component}-{container['name']}"[:63]
            probes[(component, container["name"])] = _probe_pod(name, template, container)
    subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=yaml.safe_dump_all(list(probes.values())),
        capture_output=True,
        text=True,
        check=True,
    )
    for (component, container_name), pod in probes.items():
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        phase, deadline = "", time.monotonic() + 180
        while phase not in {"Succeeded", "Failed"} and time.monotonic() < deadline:
            time.sleep(1)
            phase = kubectl_json("-n", namespace, "get", "pod", name)["status"].get("phase", "")
        logs = kubectl_logs(namespace, name)
        what = f"{component}/{container_name} ({pod['spec']['containers'][0]['image']})"
        assert phase == "Succeeded", (what, phase, logs)
        said = json.loads(logs)
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
