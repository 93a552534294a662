"""Faults only an emulator can inject on demand: 409 conflicts, 5xx and 429
answers, broken watch streams and requests with no answer. (Holds, restarts
and deletion are proven on the real control plane, tests/realcluster.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.test_operator import BUCKET, SAMPLE, _documents, conditions, release_document
from tests.support.cluster import (
    Controllers,
    api_client,
    collect_quietly,
    create,
    get,
    operator_environment,
    patched_environ,
    running_operator,
    seed_sample_data,
    start_controllers,
    wait_for,
)
from tests.support.emulator import RunningEmulator, running_emulator
from tests.support.s3server import running_s3

NAMESPACE = "team-hold"


@pytest.fixture
def world(
    tmp_path: Path,
) -> Iterator[tuple[RunningEmulator, client.ApiClient, Controllers]]:
    # A world per test: an operator started with 1 s deadlines must not first
    # reconcile every release the earlier tests left (it would time out on
    # the emulator's load, not on the injected delays), and any order holds.
    with running_s3(tmp_path / "moto.log") as s3:
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        with running_emulator() as emulator, operator_environment(emulator, s3, BUCKET):
            api = api_client(emulator)
            ensure_references(api)
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


def test_conflicts_on_patches_are_retried(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    # A release in staging first, so the next deploy patches its ConfigMap;
    # the first three patches answer 409 Conflict.
    emulator, api, _ = world
    fault = ("PATCH", "/configmaps/credit-risk-staging-config")
    document = release_document(
        **{"metadata.name": "credit-risk-conflict", "spec.model.version": "2.0.0"}
    )
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with running_operator():
        released_in_staging(api, "credit-risk-before-conflict", "1.9.0")
        emulator.emulator.inject(*fault, 409, times=3)
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
    document = release_document(**{"metadata.name": name, "spec.model.version": "4.0.0"})
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with running_operator():
        # A release in staging first: the next deploy patches its ConfigMap.
        released_in_staging(api, "credit-risk-before-errors", "3.9.0")
        for method, path, status in faults:
            emulator.emulator.inject(method, path, status, times=1)
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
    jobs = [p for p in emulator.emulator.created if "/jobs/" in p and f"{name}-train-" in p]
    assert len(jobs) == 1, jobs
    status = get(api, "ModelRelease", NAMESPACE, name)["status"]
    assert conditions({"status": status})["Ready"]["status"] == "True"
    assert status["training"]["state"] == "Succeeded"


def test_watch_streams_that_break_are_listed_again(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
) -> None:
    """A watch answered with 410 Gone (kopf lists again: its resource version
    is too old), one that ends at once and one that goes silent (kopf
    watches again from the last version it saw): a release created while
    the streams were broken is still found and released."""
    emulator, api, _ = world
    name = "credit-risk-watched"
    for mode in ("gone", "end", "stall"):
        emulator.emulator.break_watch("/modelreleases", mode)
    lists_before, watches_before = _requests(emulator, "list"), _requests(emulator, "watch")
    document = release_document(**{"metadata.name": name, "spec.model.version": "5.0.0"})
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with patched_environ({"MODELGATE_WATCH_SECONDS": "3"}), running_operator():
        # Created once the stream has gone silent: only a new watch sees it.
        wait_for(
            lambda: emulator.emulator.remaining()["watch stall /modelreleases"] == 0,
            30,
            "the silent watch",
        )
        create(api, document, NAMESPACE)
        wait_for(
            lambda: phase(api, name) == "Released",
            120,
            "Released after the watch broke three ways",
            lambda: get(api, "ModelRelease", NAMESPACE, name).get("status"),
        )
    assert all(
        count == 0 for what, count in emulator.emulator.remaining().items() if "watch" in what
    ), emulator.emulator.remaining()
    # The first list and one after 410; a new watch after each broken stream.
    assert _requests(emulator, "list") - lists_before >= 2
    assert _requests(emulator, "watch") - watches_before >= 4


def test_requests_without_an_answer_time_out_and_are_retried(
    world: tuple[RunningEmulator, client.ApiClient, Controllers],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a 1 s request deadline: the training Job's POST answered after 3 s
    (it lands anyway), a Deployment read slow on every urllib3 attempt, and
    kopf's own status PATCH slow: each times out, is retried, nothing is
    created twice, and the release ends Released."""
    emulator, api, _ = world
    name = "credit-risk-slow"
    slow = [
        ("POST", f"/namespaces/{NAMESPACE}/jobs", 1),
        ("GET", "/deployments/credit-risk-staging", 4),
        ("PATCH", f"/modelreleases/{name}", 1),
    ]
    for method, path, times in slow:
        emulator.emulator.delay(method, path, 3.0, times)
    document = release_document(**{"metadata.name": name, "spec.model.version": "6.0.0"})
    document["spec"]["promotion"] = {"environments": ["staging"]}
    with patched_environ({"MODELGATE_API_TIMEOUT": "1"}), running_operator():
        create(api, document, NAMESPACE)
        wait_for(
            lambda: phase(api, name) == "Released",
            180,
            "Released despite requests that timed out",
            lambda: get(api, "ModelRelease", NAMESPACE, name).get("status"),
        )
    assert all(
        count == 0 for what, count in emulator.emulator.remaining().items() if "delay" in what
    ), emulator.emulator.remaining()
    jobs = [p for p in emulator.emulator.created if "/jobs/" in p and f"{name}-train-" in p]
    assert len(jobs) == 1, jobs
    status = get(api, "ModelRelease", NAMESPACE, name)["status"]
    assert status["training"]["state"] == "Succeeded"
    assert [e["name"] for e in status["environments"]] == ["staging"]
    # The operator's own client gave up and said so (a retry, not a crash).
    timed_out = [
        r.getMessage() for r in caplog.records if "no answer from the API server" in r.getMessage()
    ]
    assert any("deadline 1 s" in message for message in timed_out), timed_out
    # The records hold tracebacks, and those the kopf client's dropped
    # connections: let them go now rather than at interpreter exit.
    caplog.clear()
    collect_quietly()


def ensure_references(api: client.ApiClient) -> None:
    """The sample's gate and environments, which every release refers to."""
    for document in _documents("gate.yaml") + _documents("environments.yaml"):
        try:
            create(api, document, NAMESPACE)
        except ApiException as error:
            if error.status != 409:
                raise


def released_in_staging(api: client.ApiClient, name: str, version: str) -> None:
    """A release of the model Released in staging (under a running operator)."""
    document = release_document(**{"metadata.name": name, "spec.model.version": version})
    document["spec"]["promotion"] = {"environments": ["staging"]}
    create(api, document, NAMESPACE)
    wait_for(lambda: phase(api, name) == "Released", 90, f"{name} Released in staging")


def phase(api: client.ApiClient, name: str) -> str | None:
    found: str | None = (get(api, "ModelRelease", NAMESPACE, name).get("status") or {}).get("phase")
    return found


def _requests(emulator: RunningEmulator, kind: str) -> int:
    return sum(
        1
        for _, _, _, plural, _, action in emulator.emulator.requests
        if plural == "modelreleases" and action == kind
    )
