"""The artifact store misbehaving for the operator: throttling, an endpoint
that is down, corrupted bytes and a missing training output.

The operator reaches S3 through a proxy that injects the faults; the
training Jobs write to the server directly, so only the operator's reads
are affected. Transient faults delay a release and lose nothing; corrupted
bytes stop it (fail closed) with a condition that says why.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client

from modelgate import handlers
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
from tests.support.faulty_proxy import FaultyProxy
from tests.support.s3server import running_s3

NAMESPACE = "team-store"


@dataclass
class World:
    emulator: RunningEmulator
    api: client.ApiClient
    controllers: Controllers
    proxy: FaultyProxy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        proxy = FaultyProxy(s3.endpoint).start()
        try:
            # The operator talks to the proxy; the Jobs (controllers) to S3.
            with running_emulator() as emulator, operator_environment(emulator, proxy, BUCKET):
                api = api_client(emulator)
                controllers = start_controllers(api, s3)
                for document in _documents("gate.yaml") + _documents("environments.yaml"):
                    create(api, document, NAMESPACE)
                try:
                    with running_operator():
                        yield World(emulator, api, controllers, proxy)
                finally:
                    controllers.stop()
                    assert controllers.errors == []
        finally:
            proxy.stop()


def status(world: World, name: str) -> dict[str, object]:
    found: dict[str, object] = get(world.api, "ModelRelease", NAMESPACE, name).get("status") or {}
    return found


def errors(reason: str) -> float:
    value = handlers.runtime().metrics.registry.get_sample_value(
        "modelgate_reconcile_errors_total", {"kind": "ModelRelease", "reason": reason}
    )
    return value or 0.0


def rollouts(world: World, name: str) -> dict[str, object]:
    """The Deployments (and their generations) in the release's own stage."""
    return {
        d["metadata"]["name"]: d["metadata"].get("generation")
        for d in world.emulator.objects("deployments", f"ml-{name}")
    }


def start(world: World, name: str, version: str) -> None:
    """The release, promoted to a stage of its own (a copy of staging): the
    tests run in any order, and one test's release going live must not
    replace another's while it is verified."""
    stage = copy.deepcopy(
        next(d for d in _documents("environments.yaml") if d["metadata"]["name"] == "staging")
    )
    stage["metadata"]["name"] = name
    stage["spec"]["namespace"] = f"ml-{name}"
    for item in stage["spec"]["config"]:  # its own hosts: no leakage from staging's
        item["value"] = item["value"].replace("staging", name)
    create(world.api, stage, NAMESPACE)
    document = release_document(**{"metadata.name": name, "spec.model.version": version})
    document["spec"]["promotion"] = {"environments": [name]}
    create(world.api, document, NAMESPACE)


def test_a_throttling_then_unreachable_store_delays_the_release_and_loses_nothing(
    world: World,
) -> None:
    name = "credit-risk-throttled"
    before = errors("ArtifactUnavailable")
    # Every read of a stored artifact (the gate reads the predictions) is
    # throttled, then the connection drops, then the store is back.
    throttled = world.proxy.fail("GET", "/sha256/", 503, times=10_000)
    start(world, name, "7.0.0")
    wait_for(lambda: errors("ArtifactUnavailable") > before, 60, "a transient store error")
    assert throttled.hits >= 6  # botocore retried before giving up
    # Meanwhile what was done is kept: training recorded, artifacts listed.
    held = status(world, name)
    assert held["training"]["state"] == "Succeeded"  # type: ignore[index]
    assert {a["name"] for a in held["artifacts"]} >= {"model", "predictions"}  # type: ignore[attr-defined]
    assert held["phase"] != "Released"
    throttled.remaining = 0
    dropped = world.proxy.drop("GET", "/sha256/", times=10_000)
    wait_for(lambda: dropped.hits >= 4, 60, "reads against a store that is down")
    dropped.remaining = 0
    # Generous: after throttling, botocore's adaptive mode sends slowly for a
    # while, and the rest of the release (gate, deploy, verification) follows
    # on a shared, busy CI machine (a fresh-clone run once took over 120 s).
    wait_for(
        lambda: status(world, name).get("phase") == "Released",
        300,
        "Released once the store answers again",
        lambda: status(world, name),
    )
    found = conditions(get(world.api, "ModelRelease", NAMESPACE, name))
    assert found["Ready"]["status"] == "True"
    assert "Stalled" not in found or found["Stalled"]["status"] == "False"
    jobs = [p for p in world.emulator.emulator.created if "/jobs/" in p and f"{name}-train-" in p]
    assert len(jobs) == 1, jobs  # trained once, however often the gate was retried


def test_corrupted_predictions_fail_closed(world: World) -> None:
    """What the operator reads of the gate's evaluation (the evaluator's
    summary, content-addressed) comes back with one byte flipped: its SHA-256
    refuses it, every check is Inconclusive naming the evaluation Job, the
    gate blocks, nothing is deployed, and the reason is said once."""
    name = "credit-risk-corrupted"
    rollouts_before = rollouts(world, name)
    corrupted = world.proxy.corrupt("GET", "/sha256/", times=10_000)
    try:
        start(world, name, "8.0.0")
        wait_for(
            lambda: status(world, name).get("phase") == "GateFailed",
            90,
            "GateFailed on corrupted predictions",
            lambda: status(world, name),
        )
    finally:
        corrupted.remaining = 0
    assert corrupted.hits >= 1
    release = get(world.api, "ModelRelease", NAMESPACE, name)
    found = conditions(release)
    assert (found["GatePassed"]["status"], found["GatePassed"]["reason"]) == (
        "False",
        "GateInconclusive",
    )
    message = found["Ready"]["message"]
    assert f"evaluation failed: Job {name}-eval-" in message
    assert message.count("refusing to use it") == 2, message  # blocking checks, the warning
    assert found["Stalled"]["status"] == "True"
    # Fail closed: nothing deployed, nothing rolled out again.
    assert release["status"].get("environments", []) == []
    assert rollouts(world, name) == rollouts_before == {}


def test_training_outputs_the_operator_cannot_find_fail_the_release_closed(
    world: World,
) -> None:
    name = "credit-risk-lost-output"
    missing = world.proxy.fail("GET", f"{name}-train-", 404, times=10_000)
    try:
        start(world, name, "9.0.0")
        wait_for(
            lambda: status(world, name).get("phase") == "Failed",
            90,
            "Failed without the predictions",
            lambda: status(world, name),
        )
    finally:
        missing.remaining = 0
    assert missing.hits >= 1
    release = get(world.api, "ModelRelease", NAMESPACE, name)
    assert release["status"]["phase"] == "Failed"
    trained = conditions(release)["Trained"]
    assert trained["status"] == "False"
    assert "wrote no predictions" in trained["message"]
    # Fail closed: nothing is gated or deployed without them.
    assert not release["status"].get("gate")
    assert release["status"].get("environments", []) == []
