"""spec.promotion.rollbacks: an environment taken back on request, once."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelgate.api import ModelRelease
from modelgate.promotion import Deploy, reconcile
from tests.unit.test_reconcile import (
    NOW,
    VerifyingWorld,
    condition,
    drive,
    make_env,
    make_envs,
    make_gate,
    make_release,
    release_of,
)
from tests.unit.test_rollout_judging import (
    BesideWorld,
    Traffic,
    champion_live,
    experiment,
    newer_release,
    rollout_envs,
    run,
)

NEWER_IMAGE = "registry.example.com/m@sha256:" + "cd" * 32


def asking(release: ModelRelease, environment: str, at: str = "2026-11-22T13:00:00Z") -> Any:
    body = release.wire()
    body["spec"]["promotion"]["rollbacks"] = [
        {"environment": environment, "requestedAt": at, "requestedBy": "carol",
         "reason": "INC-42: latency"},
    ]  # fmt: skip
    return ModelRelease.model_validate({**body, "status": body.get("status")})


def two_releases(world: VerifyingWorld) -> ModelRelease:
    """m-1 live everywhere, then m-2 released over it."""
    drive(make_release(), world)
    newer = make_release(image=NEWER_IMAGE)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    released, _ = drive(newer, world)
    assert released.status is not None
    assert released.status.phase == "Released"
    return released


def test_production_goes_back_to_the_release_before_and_stays_there() -> None:
    world = VerifyingWorld()
    released = two_releases(world)
    rolled, plans = drive(asking(released, "production"), world)

    [rollback] = world.rollbacks
    assert (rollback.environment, rollback.release, rollback.config_hash) == (
        "production", "team/m-2", None,
    )  # fmt: skip
    assert world.deployments["production"].release == "team/m-1"
    assert world.deployments["staging"].release == "team/m-2"
    assert rolled.status is not None
    assert rolled.status.phase == "RolledBack"
    production = rolled.status.environments[1]
    assert production.phase == "RolledBack"
    assert production.rolled_back_by == "carol"
    assert production.rollback_request == "2026-11-22T13:00:00Z"
    assert production.message == (
        "rolled back on request by carol (INC-42: latency): the previous release was put back"
    )
    assert condition(rolled, "Deployed")[:2] == ("False", "RolledBack")
    assert [(e.type, e.reason) for p in plans for e in p.events if e.reason == "RolledBack"] == [
        ("Warning", "RolledBack")
    ]
    # Level-based: it is never deployed there again, and the request is not acted on twice.
    deploys = len(world.deploys)
    again = reconcile(rolled, make_gate(), make_envs(), world.observed(), NOW)
    assert again.actions == []
    assert again.status.environments[1].phase == "RolledBack"
    assert len(world.deploys) == deploys


def test_a_rollback_a_gitops_agent_has_not_applied_yet_is_asked_again_and_holds() -> None:
    world = VerifyingWorld()
    released = two_releases(world)
    plan = reconcile(
        asking(released, "production"), make_gate(), make_envs(), world.observed(), NOW
    )
    # The revert is committed but the agent has not synced: m-2 still runs.
    still = reconcile(
        release_of(asking(released, "production"), plan),
        make_gate(),
        make_envs(),
        world.observed(),
        NOW,
    )
    assert [a.environment for a in still.actions] == ["production"]
    assert not any(isinstance(a, Deploy) for a in still.actions)
    assert still.status.environments[1].phase == "RolledBack"
    assert still.status.phase == "RolledBack"


def test_a_request_where_the_release_is_not_live_is_recorded_and_does_nothing() -> None:
    world = VerifyingWorld()
    drive(make_release(), world)
    newer = make_release(image=NEWER_IMAGE)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    # Asked while the release trains: acted on when promotion starts, where
    # production is still ahead of it.
    released, plans = drive(asking(newer, "production"), world)
    [ignored] = [e for p in plans for e in p.events if e.reason == "RollbackIgnored"]
    assert ignored.message == (
        "production: the rollback asked by carol: the release is not live there "
        "(phase Pending): nothing was rolled back"
    )
    # It then goes to production as usual: the request was for another time.
    assert released.status is not None
    assert released.status.phase == "Released"
    assert released.status.environments[1].rollback_request == "2026-11-22T13:00:00Z"
    assert world.deployments["production"].release == "team/m-2"
    assert world.rollbacks == []


def test_verified_says_nothing_failed_when_a_person_rolled_back() -> None:
    world = VerifyingWorld()
    drive(make_release(), world)
    newer = make_release(image=NEWER_IMAGE)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    envs = make_envs(verification={"image": "verify:1", "command": ["verify"]})
    released, _ = drive(newer, world, envs=envs)
    rolled, _ = drive(asking(released, "production"), world, envs=envs)
    assert condition(rolled, "Verified")[0] == "True"
    assert condition(rolled, "Ready")[:2] == ("False", "RolledBack")


@pytest.mark.parametrize(
    ("rollbacks", "message"),
    [
        ([{"environment": "qa", "requestedAt": "2026-11-22T13:00:00Z"}],
         r"rollbacks\[0\].environment: 'qa' is not in environments"),
        ([{"environment": "production", "requestedAt": "2026-11-22T13:00:00Z"},
          {"environment": "production", "requestedAt": "2026-11-22T14:00:00Z"}],
         r"rollbacks\[1\]: 'production' has two entries; keep one"),
        ([{"environment": "production", "requestedAt": "now"}],
         r"promotion.rollbacks.0.requestedAt"),
    ],
)  # fmt: skip
def test_a_request_that_cannot_be_acted_on_is_refused_naming_the_field(
    rollbacks: list[dict[str, str]], message: str
) -> None:
    body = make_release().wire()
    body["spec"]["promotion"]["rollbacks"] = rollbacks
    with pytest.raises(ValidationError, match=message):
        ModelRelease.model_validate(body)


def test_a_challenger_judged_beside_the_live_release_is_removed_on_request() -> None:
    world = BesideWorld(Traffic())  # no difference: judged until its deadline
    champion_live(world)
    envs = rollout_envs(experiment())
    judging, _, _ = run(newer_release(), world, envs, hours=0.25)
    assert judging.status is not None
    assert judging.status.environments[1].phase == "Judging"
    assert [s.weight for s in world.splits] == [50]

    rolled, _, _ = run(asking(judging, "production"), world, envs, hours=0.1)

    assert [r.release for r in world.removed] == ["team/m-2"]
    assert world.rollbacks == []  # the champion never left: nothing to put back
    assert world.deployments["production"].release == "team/m-1"
    assert rolled.status is not None
    assert rolled.status.phase == "RolledBack"
    production = rolled.status.environments[1]
    assert production.message == (
        "rolled back on request by carol (INC-42: latency): the challenger is removed and the "
        "live release keeps all traffic"
    )
    assert production.judged is not None
    assert production.judged.phase == "RolledBack"


VERIFIED = {"verification": {"image": "verify:1", "command": ["verify"]}}


def reverifying(release: ModelRelease, environment: str, at: str = "2026-11-22T14:00:00Z") -> Any:
    body = release.wire()
    body["spec"]["promotion"]["reverifications"] = [
        {"environment": environment, "requestedAt": at, "requestedBy": "dave"}
    ]
    return ModelRelease.model_validate({**body, "status": body.get("status")})


def test_a_verification_asked_for_again_runs_as_a_new_job_and_passes() -> None:
    world = VerifyingWorld()
    envs = make_envs(**VERIFIED)
    released, _ = drive(make_release(), world, envs=envs)
    assert released.status is not None
    first = released.status.environments[1].verification_job
    checked, plans = drive(reverifying(released, "production"), world, envs=envs)

    kinds = [type(a).__name__ for p in plans for a in p.actions]
    assert kinds == ["StartVerification"]
    assert [p.status.environments[1].phase for p in plans] == ["Verifying", "Deployed"]
    assert checked.status is not None
    production = checked.status.environments[1]
    assert production.verification_job not in (None, first)
    assert production.reverify_request == "2026-11-22T14:00:00Z"
    assert checked.status.phase == "Released"
    assert [e.message for p in plans for e in p.events if e.reason == "Reverifying"] == [
        "production: verification again, asked by dave"
    ]
    assert world.rollbacks == []
    # Once: reconciling again runs nothing more.
    again = reconcile(checked, make_gate(), envs, world.observed(), NOW)
    assert again.actions == []


def test_a_verification_asked_for_again_that_fails_rolls_back() -> None:
    world = VerifyingWorld()
    drive(make_release(), world)  # m-1 live, no verification then
    envs = make_envs(**VERIFIED)
    newer = make_release(image=NEWER_IMAGE)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    released, _ = drive(newer, world, envs=envs)
    world.verification = "Failed"  # what it serves went wrong since
    rolled, _ = drive(reverifying(released, "production"), world, envs=envs)

    assert rolled.status is not None
    assert rolled.status.phase == "RolledBack"
    assert [r.environment for r in world.rollbacks] == ["production"]
    assert world.deployments["production"].release == "team/m-1"
    assert "3 of 200 answers differ" in (rolled.status.environments[1].message or "")
    assert condition(rolled, "Verified")[:2] == ("False", "VerificationFailed")


def test_a_verification_asked_for_where_there_is_none_is_recorded_and_runs_nothing() -> None:
    world = VerifyingWorld()
    released, _ = drive(make_release(), world)  # no environment verifies
    plan = reconcile(
        reverifying(released, "production"), make_gate(), make_envs(), world.observed(), NOW
    )
    assert plan.actions == []
    [event] = [e for e in plan.events if e.reason == "ReverifyIgnored"]
    assert event.message == (
        "production: the verification again asked by dave: environment production does not "
        "verify (spec.verification): nothing was run"
    )
    assert plan.status.environments[1].reverify_request == "2026-11-22T14:00:00Z"


def promoting(release: ModelRelease, environment: str) -> Any:
    body = release.wire()
    body["spec"]["promotion"]["promotions"] = [
        {"environment": environment, "requestedAt": "2026-11-22T12:10:00Z",
         "requestedBy": "frank", "reason": "hotfix"},
    ]  # fmt: skip
    return ModelRelease.model_validate({**body, "status": body.get("status")})


def test_a_promotion_asked_for_does_not_wait_out_the_soak() -> None:
    envs = make_envs()
    envs["staging"] = make_env(
        "staging", config=[{"name": "URL", "value": "https://s.example.com"}], policy={"soak": "1h"}
    )
    world = VerifyingWorld()
    soaking, _ = drive(make_release(), world, envs=envs)
    assert condition(soaking, "Ready")[1] == "Soaking"
    released, plans = drive(promoting(soaking, "production"), world, envs=envs)
    assert released.status is not None
    assert released.status.phase == "Released"
    assert [d.environment for d in world.deploys] == ["staging", "production"]
    [event] = [e for p in plans for e in p.events if e.reason == "PromotedOnRequest"]
    assert event.message == (
        "production: promoted on request by frank (hotfix) before the previous environment's "
        "soak ended (2026-11-22T13:00:00Z)"
    )


def test_a_promotion_asked_for_ends_a_judgement_once_the_challenger_is_verified() -> None:
    world = BesideWorld(Traffic())  # no difference: it would be judged for hours
    champion_live(world)
    envs = rollout_envs(experiment())
    judging, _, _ = run(newer_release(), world, envs, hours=0.25)
    assert judging.status is not None
    assert judging.status.environments[1].phase == "Judging"

    promoted, plans, _ = run(promoting(judging, "production"), world, envs, hours=0.25)
    assert promoted.status is not None
    assert promoted.status.phase == "Released"
    assert world.deployments["production"].release == "team/m-2"
    judged = promoted.status.environments[1].judged
    assert judged is not None
    assert judged.phase == "Promoted"
    assert judged.message == "promoted on request by frank (hotfix) before its judgement ended"
    assert [e.reason for p in plans for e in p.events].count("PromotedOnRequest") == 1
