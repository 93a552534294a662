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
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.conftest import sample_module
from tests.e2e.workloads import (
    assert_writes_only_to_empty_dirs,
    delete_namespaces,
    kubectl_json,
    kubectl_modelgate,
    scraped,
    wait_exists,
    wait_finished,
    workload_templates,
)

pytestmark = pytest.mark.e2e


def _sample() -> ModuleType:
    return sample_module()


@pytest.fixture(scope="module")
def team() -> Iterator[tuple[ModuleType, str]]:
    sample = _sample()
    namespace = f"team-e2e-{uuid.uuid4().hex[:5]}"
    sample.apply(namespace)
    try:
        yield sample, namespace
    finally:
        delete_namespaces(namespace, "", "-staging", "-production", "-backtest")


@pytest.fixture(scope="module")
def finished(team: tuple[ModuleType, str]) -> dict[str, Any]:
    """The sample's release once it has finished, however it finished (the
    tests that need it say what they expect)."""
    _, namespace = team
    return wait_finished(namespace, "credit-risk-1-4-0")


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
    # Each step's logs through the plugin, read from the real kubelet.
    said = {
        step: kubectl_modelgate("logs", "credit-risk-1-4-0", "-n", namespace, *flags)
        for step, flags in (
            ("training", ("--step", "training")),
            ("evaluation", ("--step", "evaluation", "--tail", "5")),
            ("verification", ("--environment", "production")),
        )
    }
    for step, done in said.items():
        assert done.returncode == 0, (step, done.stderr)
    assert f"==> {namespace}/{status['training']['jobName']}-" in said["training"].stdout
    assert "modelgate-trainer: trained" in said["training"].stdout
    assert "modelgate-evaluate: evaluated" in said["evaluation"].stdout
    assert f"==> {namespace}-production/" in said["verification"].stdout
    assert "verified: 0/" in said["verification"].stdout


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
    # The name is recorded before the Job is made (a restart finds it by
    # name); it exists before the delete.
    wait_exists(namespace, "job", job)
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


def test_every_workload_runs_non_root_and_writes_only_to_its_empty_dirs(
    team: tuple[ModuleType, str], finished: dict[str, Any]
) -> None:
    _, namespace = team
    templates = workload_templates(namespace)
    assert {"training", "verification", "model-server"} <= set(templates), sorted(templates)
    assert_writes_only_to_empty_dirs(templates, "write-probe")


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
    found = scraped(queries)
    (operator,) = found["operator"]
    assert operator["metric"]["namespace"] == "modelgate-system"
    for environment in ("staging", "production"):
        (server,) = found[environment]
        assert server["metric"]["model"] == "credit-risk"
        assert server["metric"]["pod"].startswith(f"credit-risk-{environment}-")
