"""Config changes after a release: rolled out in path order under each
environment's policy, or refused with production untouched; Ready tells the truth."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelgate.api import Environment, ModelRelease
from modelgate.api.modelrelease import Phase
from modelgate.promotion import Deploy, Rollback, reconcile
from modelgate.promotion.conditions import find
from modelgate.promotion.environment_status import environment_verdicts
from tests.unit.test_reconcile import (
    DIGEST_IMAGE,
    METADATA,
    MODEL,
    NOW,
    PREDICTIONS,
    VerifyingWorld,
    World,
    condition,
    drive,
    make_env,
    make_envs,
    make_gate,
    make_release,
)


def edited(release: ModelRelease, generation: int | None = None, **promotion: Any) -> ModelRelease:
    """``release`` after a spec edit of its promotion (the API server bumps generation)."""
    spec = release.spec.wire()
    spec["promotion"].update(promotion)
    body = release.wire()
    body["spec"] = spec
    body["metadata"]["generation"] = generation or release.generation + 1
    return ModelRelease.model_validate(body)


def production_override(value: str) -> list[dict[str, Any]]:
    return [{"environment": "production", "values": [{"name": "URL", "value": value}]}]


def released(world: World, envs: dict[str, Environment] | None = None) -> ModelRelease:
    release, _ = drive(make_release(), world, envs=envs)
    assert release.status is not None
    assert release.status.phase == Phase.RELEASED
    return release


def test_a_leaking_override_after_release_is_refused_and_production_keeps_its_config() -> None:
    world = World()
    release = released(world)
    live_before = world.deployments["production"]
    leak = edited(release, config=production_override("https://backtest.example.com"))
    after, plans = drive(leak, world)
    assert [a for p in plans for a in p.actions] == []
    assert world.deployments["production"] == live_before
    assert after.status is not None
    assert after.status.phase == Phase.BLOCKED
    assert condition(after, "ConfigValid")[:2] == ("False", "ConfigRuleViolated")
    ready = condition(after, "Ready")
    assert ready[:2] == ("False", "ConfigRuleViolated")
    assert "forbid" in ready[2]
    assert "keeps running config" in ready[2]
    assert condition(after, "Stalled")[0] == "True"
    production = after.status.environments[1]
    assert production.phase == "Blocked"
    assert production.previous_config_hash == live_before.config_hash
    assert after.status.live_in == "production"


def test_a_valid_override_change_rolls_out_as_the_next_rollout() -> None:
    world = World()
    release = released(world)
    first = world.deploys[-1]
    change = edited(release, config=production_override("https://prod-2.example.com"))
    after, _ = drive(change, world)
    assert [d.environment for d in world.deploys] == ["staging", "production", "production"]
    deploy = world.deploys[-1]
    assert deploy.rollout == 2
    assert deploy.config["URL"] == "https://prod-2.example.com"
    assert deploy.config_hash != first.config_hash
    assert after.status is not None
    assert after.status.phase == Phase.RELEASED
    assert condition(after, "Ready")[0] == "True"
    production = after.status.environments[1]
    assert (production.rollout, production.config_hash) == (2, deploy.config_hash)
    assert production.previous_config_hash == first.config_hash
    # At rest again: nothing more to do.
    again = reconcile(after, make_gate(), make_envs(), world.observed(), NOW)
    assert again.actions == []
    assert again.status == after.status


def test_changes_to_several_environments_go_in_path_order() -> None:
    world = VerifyingWorld()
    envs = make_envs(verification={"image": "verify:1", "command": ["verify"]})
    envs["staging"] = make_env(
        "staging",
        config=[{"name": "URL", "value": "https://staging.example.com"}],
        verification={"image": "verify:1", "command": ["verify"]},
    )
    release, _ = drive(make_release(), world, envs=envs)
    assert release.status is not None
    assert release.status.phase == Phase.RELEASED
    count = len(world.deploys)
    change = edited(
        release,
        config=[
            {"environment": "staging", "values": [{"name": "URL", "value": "https://s2.example"}]},
            *production_override("https://p2.example.com"),
        ],
    )
    plan = reconcile(change, make_gate(), envs, world.observed(), NOW)
    assert [a.environment for a in plan.actions if isinstance(a, Deploy)] == ["staging"]
    assert plan.status.environments[1].phase == "Pending"
    assert "waits for the environments before production" in (
        plan.status.environments[1].message or ""
    )
    assert condition(change.model_copy(update={"status": plan.status}), "Ready")[0] == "False"
    after, _ = drive(change, world, envs=envs)
    new = world.deploys[count:]
    assert [d.environment for d in new] == ["staging", "production"]
    assert after.status is not None
    assert after.status.phase == Phase.RELEASED
    # Each rollout was verified before the next environment moved.
    assert len(world.verifications) == 4


def test_an_environment_config_change_rolls_out_too() -> None:
    world = World()
    release = released(world)
    envs = make_envs()
    envs["production"] = make_env(
        "production",
        "production",
        promotesFrom="staging",
        config=[{"name": "URL", "value": "https://prod.example.com"}, {"name": "X", "value": "1"}],
        configRules=[{"key": "URL", "required": True, "forbid": ["backtest"]}],
    )
    after, _ = drive(release, world, envs=envs)
    assert world.deploys[-1].environment == "production"
    assert world.deploys[-1].config["X"] == "1"
    assert after.status is not None
    assert after.status.phase == Phase.RELEASED


def test_a_config_change_needs_an_approval_naming_it() -> None:
    world = World()
    envs = make_envs(policy={"requireApproval": True})
    approvals = [{"environment": "production", "approvedBy": "alice"}]
    start = edited(make_release(), generation=1, approvals=approvals)
    release, _ = drive(start, world, envs=envs)
    assert release.status is not None
    assert release.status.phase == Phase.RELEASED
    change = edited(release, config=production_override("https://p2.example.com"))
    waiting, _ = drive(change, world, envs=envs)
    assert waiting.status is not None
    assert len(world.deploys) == 2  # the first approval does not cover the change
    production = waiting.status.environments[1]
    assert production.phase == "Waiting"
    digest = production.config_hash
    assert digest is not None
    assert f"configHash: {digest[:12]}" in (production.message or "")
    approved = edited(
        waiting,
        approvals=[
            *approvals,
            {"environment": "production", "approvedBy": "bob", "configHash": digest[:12]},
        ],
    )
    after, _ = drive(approved, world, envs=envs)
    assert world.deploys[-1].approved_by == "bob"
    assert after.status is not None
    assert after.status.phase == Phase.RELEASED


def test_a_frozen_environment_holds_a_config_change() -> None:
    world = World()
    release = released(world)
    frozen = make_envs(
        policy={
            "freezeWindows": [
                {"name": "holidays", "start": "2026-11-20T00:00:00Z", "end": "2026-11-30T00:00:00Z"}
            ]
        }
    )
    change = edited(release, config=production_override("https://p2.example.com"))
    after, _ = drive(change, world, envs=frozen)
    assert len(world.deploys) == 2
    assert after.status is not None
    assert after.status.environments[1].phase == "Waiting"
    assert condition(after, "Ready")[:2] == ("False", "FreezeWindow")
    later, _ = drive(after, world, envs=frozen, now=NOW + timedelta(days=9))
    assert world.deploys[-1].rollout == 2
    assert later.status is not None
    assert later.status.phase == Phase.RELEASED


def test_a_config_change_that_fails_verification_puts_the_last_config_back() -> None:
    world = VerifyingWorld()
    envs = make_envs(verification={"image": "verify:1", "command": ["verify"]})
    release, _ = drive(make_release(), world, envs=envs)
    first = world.deployments["production"]
    world.verification = "Failed"
    change = edited(release, config=production_override("https://p2.example.com"))
    after, _ = drive(change, world, envs=envs)
    assert [r.config_hash for r in world.rollbacks] == [first.config_hash]
    assert world.deployments["production"].config_hash == first.config_hash
    assert after.status is not None
    assert after.status.phase == Phase.ROLLED_BACK
    production = after.status.environments[1]
    assert production.phase == "RolledBack"
    assert "put back" in (production.message or "")
    count = len(world.deploys)
    again, _ = drive(after, world, envs=envs)
    assert len(world.deploys) == count  # the failed change is never deployed again
    assert again.status is not None
    assert again.status.phase == Phase.ROLLED_BACK
    # A new change is a new rollout.
    world.verification = "Succeeded"
    fixed = edited(again, config=production_override("https://p3.example.com"))
    done, _ = drive(fixed, world, envs=envs)
    assert len(world.deploys) == count + 1
    assert done.status is not None
    assert done.status.phase == Phase.RELEASED
    assert done.status.environments[1].rollout == 3


def test_rollback_of_a_first_deployment_still_puts_the_previous_release_back() -> None:
    world = VerifyingWorld(verification="Failed")
    drive(make_release(), world, envs=make_envs())
    newer = make_release(image="registry.example.com/m@sha256:" + "cd" * 32)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    envs = make_envs(verification={"image": "verify:1", "command": ["verify"]})
    drive(newer, world, envs=envs)
    assert world.rollbacks == [
        Rollback(
            environment="production",
            namespace="ml-production",
            release="team/m-2",
            model="m",
            config_hash=None,
            reason="verification failed (3 of 200 answers differ); the previous release was "
            "put back",
        )
    ]


def test_a_superseded_environment_takes_no_config_changes_and_an_invalid_one_is_still_said() -> (
    None
):
    world = World()
    release = released(world)
    other = make_release(image="registry.example.com/m@sha256:" + "cd" * 32)
    other = other.model_copy(update={"metadata": other.metadata.model_copy(update={"name": "m-2"})})
    drive(other, world)
    count = len(world.deploys)
    valid = edited(release, config=production_override("https://p2.example.com"))
    after, _ = drive(valid, world)
    assert len(world.deploys) == count
    assert after.status is not None
    assert after.status.environments[1].phase == "Superseded"
    assert condition(after, "Ready")[0] == "True"
    leak = edited(after, config=production_override("https://backtest.example.com"))
    refused, _ = drive(leak, world)
    assert len(world.deploys) == count
    assert condition(refused, "Ready")[:2] == ("False", "ConfigRuleViolated")
    assert condition(refused, "Stalled")[0] == "True"


def test_after_an_edit_every_gating_condition_speaks_for_the_new_generation() -> None:
    world = World()
    release = released(world)
    change = edited(release, config=production_override("https://p2.example.com"))
    assert change.generation == 2
    after, _ = drive(change, world)
    assert after.status is not None
    assert after.status.observed_generation == 2
    for kind in ("Trained", "GatePassed", "ConfigValid", "Deployed", "Ready"):
        found = find(after.status.conditions, kind)
        assert found is not None, kind
        assert found.status == "True", kind
        assert found.observed_generation == 2, kind


def test_a_rule_added_after_a_release_shows_on_the_environment_and_the_release() -> None:
    world = World()
    envs = make_envs()
    envs["production"] = make_env(
        "production",
        "production",
        promotesFrom="staging",
        config=[{"name": "URL", "value": "https://prod.example.com"}],
    )
    leak = edited(
        make_release(), generation=1, config=production_override("https://backtest.example.com")
    )
    release, _ = drive(leak, world, envs=envs)  # no rule yet: it goes live
    assert release.status is not None
    assert release.status.phase == Phase.RELEASED
    count = len(world.deploys)
    strict = make_envs()  # production now forbids backtest
    verdicts = {v.kind: v for v in environment_verdicts(strict["production"], strict, [release])}
    assert verdicts["ConfigValid"].ok is False
    assert verdicts["ConfigValid"].reason == "LiveConfigViolatesRules"
    assert "live release m-1" in verdicts["ConfigValid"].message
    assert "forbid=backtest" in verdicts["ConfigValid"].message
    assert verdicts["Ready"].ok is False
    after, _ = drive(release, world, envs=strict)
    assert len(world.deploys) == count  # nothing undeployed, nothing redeployed
    assert world.deployments["production"].release == "team/m-1"
    assert condition(after, "ConfigValid")[0] == "False"
    assert condition(after, "Ready")[:2] == ("False", "ConfigRuleViolated")
    staging = {v.kind: v for v in environment_verdicts(strict["staging"], strict, [after])}
    assert staging["ConfigValid"].ok is True
    assert staging["Ready"].ok is True


def test_a_new_reference_server_image_rolls_out_instead_of_leaving_the_release_behind() -> None:
    """An operator upgrade changes the reference server image: each release it
    serves rolls the new one out, in path order, verified again."""
    world = VerifyingWorld()
    world.outputs = (PREDICTIONS, MODEL, METADATA)
    envs = make_envs(verification={"image": "verify:1", "command": ["verify"]})
    body = make_release(serving="ReferenceServer").wire()
    body["spec"].pop("image")
    release = ModelRelease.model_validate(body)
    old, new = DIGEST_IMAGE, "registry.example.com/server@sha256:" + "ef" * 32
    release, _ = drive(release, world, envs=envs, server_image=old)
    assert release.status is not None
    assert release.status.phase == Phase.RELEASED
    count = len(world.deploys)
    after, _ = drive(release, world, envs=envs, server_image=new)
    assert [(d.environment, d.image, d.rollout) for d in world.deploys[count:]] == [
        ("staging", new, 2),
        ("production", new, 2),
    ]
    assert after.status is not None
    assert after.status.phase == Phase.RELEASED
    assert [e.phase for e in after.status.environments] == ["Deployed", "Deployed"]
    assert len(world.verifications) == 2  # production verified the old and the new image


def test_a_verification_added_after_the_release_went_live_does_not_unready_it() -> None:
    world = World()
    release = released(world)  # no environment verifies
    count = len(world.deploys)
    verifying = make_envs(verification={"image": "verify:1", "command": ["verify"]})
    after, plans = drive(release, world, envs=verifying)
    assert len(world.deploys) == count
    assert [a for p in plans for a in p.actions] == []
    assert condition(after, "Ready")[0] == "True"
    # A config change from now on is verified there.
    change = edited(after, config=production_override("https://p2.example.com"))
    plan = reconcile(change, make_gate(), verifying, world.observed(), NOW)
    assert [type(a).__name__ for a in plan.actions] == ["Deploy"]
