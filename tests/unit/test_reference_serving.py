"""Serving the trained artifact with the reference server, and the built-in
verification, decided by the pure core."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelgate.api import Environment, ModelRelease
from modelgate.api.environment import Verification
from modelgate.promotion import StartVerification, reconcile
from modelgate.promotion.keys import SERVER_COMMAND, VERIFY_COMMAND
from tests.unit.test_reconcile import (
    DIGEST_IMAGE,
    METADATA,
    MODEL,
    NOW,
    PREDICTIONS,
    World,
    condition,
    drive,
    make_env,
    make_envs,
    make_gate,
    make_release,
)

SERVER = "ghcr.io/modelgate/modelgate@sha256:" + "cd" * 32


def reference_release(**spec: Any) -> ModelRelease:
    return make_release(**{"serving": "ReferenceServer", "image": None, **spec})


def test_the_server_image_and_the_artifact_are_what_is_promoted() -> None:
    world = World(outputs=(PREDICTIONS, MODEL, METADATA))
    release, _ = drive(reference_release(), world, server_image=SERVER)
    assert release.status is not None
    assert release.status.phase == "Released"
    assert [d.environment for d in world.deploys] == ["staging", "production"]
    for deploy in world.deploys:
        assert deploy.image == SERVER
        assert deploy.command == SERVER_COMMAND
        assert deploy.config["MODELGATE_MODEL_URI"] == MODEL.uri
        assert deploy.config["MODELGATE_MODEL_SHA256"] == MODEL.sha256
        assert deploy.config["MODELGATE_METADATA_SHA256"] == METADATA.sha256
        assert deploy.config["URL"].startswith("https://")  # the environment's own config too


def test_a_different_artifact_is_a_different_deployment() -> None:
    """Same server image, another model: the config hash changes, so the
    pair image + artifact hash is what identifies a deployment."""
    first, second = (
        World(outputs=(PREDICTIONS, MODEL, METADATA)),
        World(outputs=(PREDICTIONS, MODEL.model_copy(update={"sha256": "9" * 64}), METADATA)),
    )
    drive(reference_release(), first, server_image=SERVER)
    drive(reference_release(), second, server_image=SERVER)
    assert first.deploys[0].image == second.deploys[0].image
    assert first.deploys[0].config_hash != second.deploys[0].config_hash


def test_without_a_server_image_nothing_deploys_and_the_reason_is_named() -> None:
    world = World(outputs=(PREDICTIONS, MODEL, METADATA))
    release, _ = drive(reference_release(), world, server_image=None)
    assert world.deploys == []
    _, reason, message = condition(release, "Ready")
    assert reason == "ServerImageMissing"
    assert "MODELGATE_SERVER_IMAGE" in message


def test_a_run_without_metadata_cannot_be_served() -> None:
    world = World(outputs=(PREDICTIONS, MODEL))
    release, _ = drive(reference_release(), world, server_image=SERVER)
    assert world.deploys == []
    _, reason, message = condition(release, "Ready")
    assert reason == "ArtifactMissing"
    assert "model and metadata artifacts" in message


def test_production_still_requires_a_digest_for_the_server_image() -> None:
    world = World(outputs=(PREDICTIONS, MODEL, METADATA))
    release, _ = drive(reference_release(), world, server_image="ghcr.io/modelgate/modelgate:0.1")
    assert [d.environment for d in world.deploys] == ["staging"]
    assert condition(release, "Ready")[1] == "ImageNotPinned"


def test_the_release_may_name_its_own_server_image() -> None:
    world = World(outputs=(PREDICTIONS, MODEL, METADATA))
    drive(reference_release(image=DIGEST_IMAGE), world, server_image=SERVER)
    assert {d.image for d in world.deploys} == {DIGEST_IMAGE}


def test_serving_image_needs_an_image() -> None:
    with pytest.raises(ValidationError, match="serving Image needs image"):
        make_release(serving="Image", image=None)


def test_built_in_verification_runs_the_verifier_with_its_settings() -> None:
    envs = make_envs(verification={"servedPredictions": {"sampleSize": 50, "maxLatency": "200ms"}})
    world = World(outputs=(PREDICTIONS, MODEL, METADATA))
    release = reference_release()
    starts: list[StartVerification] = []
    for _ in range(10):
        plan = reconcile(release, make_gate(), envs, world.observed(), NOW, server_image=SERVER)
        starts += [a for a in plan.actions if isinstance(a, StartVerification)]
        release = world.act(release, plan, NOW)
        if starts:
            break
    [start] = starts
    assert start.environment == "production"
    assert start.image == SERVER
    assert start.command == VERIFY_COMMAND
    assert dict(start.env) == {
        "MODELGATE_VERIFY_SAMPLE": "50",
        "MODELGATE_VERIFY_MAX_MISMATCH_RATE": "0.0",
        "MODELGATE_VERIFY_SCORE_TOLERANCE": "1e-06",
        "MODELGATE_VERIFY_MAX_LATENCY": "200ms",
    }
    assert start.predictions == PREDICTIONS


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({}, "set either image"),
        ({"image": "v:1", "servedPredictions": {}}, "set either image"),
        ({"servedPredictions": {}, "command": ["x"]}, "command and args belong"),
        ({"servedPredictions": {"maxMismatchRate": 2}}, "less than or equal to 1"),
    ],
)
def test_verification_is_one_kind_or_the_other(body: dict[str, Any], text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        Verification.model_validate(body)


def test_an_environment_with_the_built_in_check_validates() -> None:
    env = make_env("production", "production", verification={"servedPredictions": {}})
    assert isinstance(env, Environment)
    assert env.spec.verification is not None
    assert env.spec.verification.served_predictions is not None
