"""The real kopf operator against the emulator and a real S3 server: a
training Job and an evaluation Job the played controller fails on purpose, and
a release the operator cannot parse. The lifecycles themselves (train, gate, staging,
production, verification, rollback, the leak, a gate failure), the never
written spec, the unpublished secrets and the RBAC are proven on the real
control plane (tests/realcluster); this module also holds the helpers the
other emulator modules share.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelgate.api import ModelRelease, QualityGate
from modelgate.promotion.keys import training_job_name, training_key
from tests.conftest import EXAMPLES
from tests.support.cluster import (
    Controllers,
    api_client,
    create,
    get,
    operator_environment,
    running_operator,
    seed_sample_data,
    start_controllers,
    wait_for,
)
from tests.support.emulator import RunningEmulator, running_emulator
from tests.support.s3server import S3Server, running_s3

NAMESPACE = "team"
BUCKET = "operator-artifacts"
SAMPLE = EXAMPLES / "credit-risk"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        seed_sample_data(server, BUCKET, SAMPLE / "data")
        yield server


@pytest.fixture(scope="module")
def cluster(s3: S3Server) -> Iterator[tuple[RunningEmulator, client.ApiClient, Controllers]]:
    yield from _cluster(s3)


def _cluster(s3: S3Server) -> Iterator[tuple[RunningEmulator, client.ApiClient, Controllers]]:
    with running_emulator() as emulator, operator_environment(emulator, s3, BUCKET):
        api = api_client(emulator)
        controllers = start_controllers(api, s3)
        try:
            with running_operator():
                for document in _documents("gate.yaml") + _documents("environments.yaml"):
                    create(api, document, NAMESPACE)
                yield emulator, api, controllers
        finally:
            controllers.stop()
            assert controllers.errors == []


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLE / name).read_text()) if d]


def release_document(name: str = "release.yaml", **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(_documents(name)[0])
    data = document["spec"]["training"]["data"]
    data["train"], data["evaluation"] = (
        f"s3://{BUCKET}/data/train.csv",
        f"s3://{BUCKET}/data/eval.csv",
    )
    document["spec"]["training"]["command"] = ["python", "-m", "modelgate.trainer"]
    for path, value in changes.items():
        target = document
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return document


def phase(api: client.ApiClient, name: str) -> str | None:
    status = get(api, "ModelRelease", NAMESPACE, name).get("status") or {}
    return status.get("phase")


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def test_training_failure_reports_the_reason(
    cluster: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    _, api, controllers = cluster
    document = release_document(
        **{"metadata.name": "credit-risk-oom", "spec.model.version": "9.9.9"}
    )

    gate = get(api, "QualityGate", NAMESPACE, "credit-gate")

    parsed = ModelRelease.model_validate(
        {**document, "metadata": {"name": "credit-risk-oom", "namespace": NAMESPACE}}
    )
    job = training_job_name(parsed, training_key(parsed, QualityGate.model_validate(gate)))
    controllers.fail_jobs[job] = (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    create(api, document, NAMESPACE)
    wait_for(lambda: phase(api, "credit-risk-oom") == "Failed", 60, "Failed")
    trained = conditions(get(api, "ModelRelease", NAMESPACE, "credit-risk-oom"))["Trained"]
    assert trained["status"] == "False"
    assert trained["reason"] == "TrainingFailed"
    assert "BackoffLimitExceeded" in trained["message"]


def test_invalid_release_gets_a_condition_not_a_crash(
    cluster: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    _, api, _ = cluster
    document = release_document(**{"metadata.name": "credit-risk-bad"})
    document["spec"]["gate"] = {"nmae": "credit-gate"}
    create(api, document, NAMESPACE)
    ready = wait_for(
        lambda: conditions(get(api, "ModelRelease", NAMESPACE, "credit-risk-bad")).get("Ready"),
        30,
        "a Ready condition",
    )
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidSpec"
    assert "spec.gate.nmae: unknown field" in ready["message"]


def test_an_evaluation_job_that_fails_fails_closed_with_its_reason(
    cluster: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    """The gate is evaluated by a Job; one past its deadline (or OOM-killed)
    leaves every check Inconclusive with the Job's reason, and nothing is
    deployed."""
    _, api, controllers = cluster
    name = "credit-risk-slow-gate"
    controllers.fail_evaluations[name] = (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    create(api, release_document(**{"metadata.name": name}), NAMESPACE)
    wait_for(lambda: phase(api, name) == "GateFailed", 90, "GateFailed")
    release = get(api, "ModelRelease", NAMESPACE, name)
    gate = release["status"]["gate"]
    assert gate["outcome"] == "Inconclusive"
    assert gate["passed"] == 0
    assert all(
        c["outcome"] == "Inconclusive" and "DeadlineExceeded" in c["message"]
        for c in gate["checks"]
    )
    assert f"{name}-eval-" in gate["checks"][0]["message"]
    found = conditions(release)
    assert found["GatePassed"]["status"] == "False"
    assert found["Ready"]["status"] == "False"
    jobs = client.BatchV1Api(api).list_namespaced_job(NAMESPACE).items
    [evaluation] = [
        j
        for j in jobs
        if j.metadata.labels.get("modelgate.dev/release") == name
        and j.metadata.labels.get("app.kubernetes.io/component") == "evaluation"
    ]
    assert evaluation.metadata.name.startswith(f"{name}-eval-")
    deployments = client.AppsV1Api(api).list_deployment_for_all_namespaces().items
    assert not [
        d
        for d in deployments
        if (d.metadata.annotations or {}).get("modelgate.dev/release") == f"{NAMESPACE}/{name}"
    ]


def test_a_sharded_evaluation_runs_its_shards_then_merges_them(
    cluster: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    """spec.evaluation.parallelism: 2 is an Indexed Job of two shards, then a
    merge Job; the gate is evaluated on every row. A shard that fails makes
    every check Inconclusive naming the shards' Job."""
    _, api, controllers = cluster
    sharded, broken = "credit-risk-sharded", "credit-risk-broken-shard"
    controllers.fail_evaluations[broken] = ("BackoffLimitExceeded", "Job has reached the limit")
    for name in (sharded, broken):
        document = release_document(**{"metadata.name": name})
        document["spec"]["evaluation"] = {"parallelism": 2}
        create(api, document, NAMESPACE)

    def gate(name: str) -> dict[str, Any]:
        status = get(api, "ModelRelease", NAMESPACE, name).get("status") or {}
        return dict(status.get("gate") or {})

    for name in (sharded, broken):
        wait_for(lambda name=name: gate(name).get("outcome"), 120, f"{name} evaluated", gate)
    assert gate(sharded)["outcome"] == "Passed", gate(sharded)
    rows = len((SAMPLE / "data" / "eval.csv").read_text().splitlines()) - 1
    assert {c["sampleSize"] for c in gate(sharded)["checks"] if c["kind"] == "metric"} >= {rows}
    jobs = {
        j.metadata.name: j
        for j in client.BatchV1Api(api).list_namespaced_job(NAMESPACE).items
        if j.metadata.labels.get("modelgate.dev/release") == sharded
        and j.metadata.labels.get("app.kubernetes.io/component") == "evaluation"
    }
    [shards] = [j for n, j in jobs.items() if n.startswith(f"{sharded}-evs-")]
    [merge] = [j for n, j in jobs.items() if n.startswith(f"{sharded}-eval-")]
    assert (shards.spec.completion_mode, shards.spec.completions) == ("Indexed", 2)
    [container] = merge.spec.template.spec.containers
    assert {e.name: e.value for e in container.env}["MODELGATE_MERGE"] == "2"
    # The merge ran after the shards, once.
    ran = [n for n in controllers.jobs_run if n in jobs]
    assert ran == [shards.metadata.name, merge.metadata.name]
    failed = gate(broken)
    assert failed["outcome"] == "Inconclusive"
    assert all(
        c["outcome"] == "Inconclusive" and f"Job {broken}-evs-" in c["message"]
        for c in failed["checks"]
    ), failed
    assert failed["failedEvaluation"]
