"""Operator lifecycle: holds, restarts, conflicts and deletion, against the emulator."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.integration.test_operator import BUCKET, SAMPLE, _documents, conditions, release_document
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
from tests.support.s3server import running_s3

NAMESPACE = "team-hold"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningEmulator, client.ApiClient, Controllers]]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        with running_emulator() as emulator, operator_environment(emulator, s3, BUCKET):
            api = api_client(emulator)
            controllers = start_controllers(api, s3)
            try:
                yield emulator, api, controllers
            finally:
                controllers.stop()
                assert controllers.errors == []


def ready(api: client.ApiClient, name: str) -> dict[str, Any]:
    return conditions(get(api, "ModelRelease", NAMESPACE, name)).get("Ready") or {}


def creates(emulator: RunningEmulator, fragment: str) -> Counter[str]:
    return Counter(path for path in emulator.emulator.created if fragment in path)


def test_soak_and_approval_hold_and_a_restart_deploys_nothing_twice(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    emulator, api, _ = world
    for document in _documents("gate.yaml") + _documents("environments.yaml"):
        if document["metadata"]["name"] == "staging":
            document["spec"]["policy"] = {"soak": "3s"}
        if document["metadata"]["name"] == "production":
            document["spec"]["policy"] = {"requireApproval": True, "requireDigest": True}
        create(api, document, NAMESPACE)
    with running_operator():
        create(api, release_document(), NAMESPACE)
        wait_for(lambda: ready(api, "credit-risk-1-4-0").get("reason") == "Soaking", 60, "Soaking")
        held = wait_for(
            lambda: (
                ready(api, "credit-risk-1-4-0").get("reason") == "AwaitingApproval"
                and ready(api, "credit-risk-1-4-0")
            ),
            60,
            "AwaitingApproval",
        )
        assert "spec.promotion.approvals" in held["message"]
        assert emulator.objects("deployments", "ml-prod") == []
    # The operator is down; a person approves; a new operator takes over.
    custom = client.CustomObjectsApi(api)
    custom.patch_namespaced_custom_object(
        "modelgate.dev",
        "v1alpha1",
        NAMESPACE,
        "modelreleases",
        "credit-risk-1-4-0",
        {
            "spec": {
                "promotion": {
                    "environments": ["staging", "production"],
                    "approvals": [
                        {
                            "environment": "production",
                            "approvedBy": "alice@example.com",
                            "approvedAt": "2026-11-22T12:00:00Z",
                        }
                    ],
                }
            }
        },
    )
    with running_operator():
        wait_for(
            lambda: (
                (get(api, "ModelRelease", NAMESPACE, "credit-risk-1-4-0").get("status") or {}).get(
                    "phase"
                )
                == "Released"
            ),
            60,
            "Released after approval",
        )
    status = get(api, "ModelRelease", NAMESPACE, "credit-risk-1-4-0")["status"]
    production = {e["name"]: e for e in status["environments"]}["production"]
    assert production["approvedBy"] == "alice@example.com"
    assert production["approvedAt"] == "2026-11-22T12:00:00Z"
    # Exactly one Job and one Deployment per environment across both operators.
    assert list(creates(emulator, "/jobs/").values()) == [1]
    deployments = creates(emulator, "/deployments/")
    assert sorted(deployments) == [
        "/apis/apps/v1/namespaces/ml-prod/deployments/credit-risk-production",
        "/apis/apps/v1/namespaces/ml-staging/deployments/credit-risk-staging",
    ]
    assert set(deployments.values()) == {1}


def test_conflicts_on_patches_are_retried(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    # The staging ConfigMap of this model exists (first scenario), so the
    # deploy patches it; the first three patches answer 409 Conflict.
    emulator, api, _ = world
    fault = ("PATCH", "/configmaps/credit-risk-staging-config")
    emulator.emulator.inject(*fault, 409, times=3)
    document = release_document(
        **{"metadata.name": "credit-risk-conflict", "spec.model.version": "2.0.0"}
    )
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with running_operator():
        create(api, document, NAMESPACE)
        wait_for(
            lambda: (
                (
                    get(api, "ModelRelease", NAMESPACE, "credit-risk-conflict").get("status") or {}
                ).get("phase")
                == "Released"
            ),
            90,
            "Released despite 409s",
        )
    assert emulator.emulator._faults[fault][1] == 0, "the injected conflicts were not all hit"
    [config] = emulator.objects("configmaps", "ml-staging")
    assert config["metadata"]["labels"]["modelgate.dev/release"] == "credit-risk-conflict"


def test_deleting_a_release_deletes_its_jobs(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    emulator, api, _ = world
    document = release_document(
        **{"metadata.name": "credit-risk-doomed", "spec.model.version": "3.0.0"}
    )
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with running_operator():
        create(api, document, NAMESPACE)
        wait_for(
            lambda: any(
                j["metadata"]["labels"].get("modelgate.dev/release") == "credit-risk-doomed"
                for j in emulator.objects("jobs", NAMESPACE)
            ),
            60,
            "the training Job",
        )
        release = get(api, "ModelRelease", NAMESPACE, "credit-risk-doomed")
        assert "modelgate.dev/finalizer" in release["metadata"].get("finalizers", [])
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", NAMESPACE, "modelreleases", "credit-risk-doomed"
        )
        wait_for(
            lambda: (
                not [
                    j
                    for j in emulator.objects("jobs", NAMESPACE)
                    if j["metadata"]["labels"].get("modelgate.dev/release") == "credit-risk-doomed"
                ]
                and not [
                    r
                    for r in emulator.objects("modelreleases", NAMESPACE)
                    if r["metadata"]["name"] == "credit-risk-doomed"
                ]
            ),
            60,
            "Jobs and release gone",
        )


def test_server_errors_and_throttling_are_retried_without_duplicates(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    """503 on creating the training Job, 429 on reading the Deployment, 500 on
    patching the ConfigMap: each is retried with backoff, nothing is created
    twice, and the release still ends Released with its status intact."""
    emulator, api, _ = world
    name = "credit-risk-flaky"
    faults = [
        ("POST", "/jobs", 503),
        ("GET", "/deployments/credit-risk-staging", 429),
        ("PATCH", "/configmaps/credit-risk-staging-config", 500),
    ]
    for method, path, status in faults:
        emulator.emulator.inject(method, path, status, times=1)
    document = release_document(**{"metadata.name": name, "spec.model.version": "4.0.0"})
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with running_operator():
        create(api, document, NAMESPACE)
        wait_for(
            lambda: (
                (get(api, "ModelRelease", NAMESPACE, name).get("status") or {}).get("phase")
                == "Released"
            ),
            120,
            "Released despite server errors",
            lambda: get(api, "ModelRelease", NAMESPACE, name).get("status"),
        )
    for method, path, _ in faults:
        assert emulator.emulator._faults[(method, path)][1] == 0, f"{method} {path} not hit"
    jobs = [p for p in emulator.emulator.created if "/jobs/" in p and name in p]
    assert len(jobs) == 1, jobs
    status = get(api, "ModelRelease", NAMESPACE, name)["status"]
    assert conditions({"status": status})["Ready"]["status"] == "True"
    assert status["training"]["state"] == "Succeeded"
