"""spec.abort: a release stopped where it is, and going on once it is removed."""

from __future__ import annotations

from typing import Any

from modelgate.api import ModelRelease
from modelgate.promotion import Deploy, reconcile
from modelgate.promotion.plan import RemoveChallenger
from tests.unit.test_reconcile import (
    NOW,
    World,
    condition,
    drive,
    make_envs,
    make_gate,
    make_release,
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

ABORT = {"requestedAt": "2026-11-22T12:30:00Z", "requestedBy": "erin", "reason": "wrong dataset"}


def with_abort(release: ModelRelease, abort: dict[str, Any] | None = ABORT) -> ModelRelease:
    body = release.wire()
    body["spec"]["abort"] = abort
    return ModelRelease.model_validate({**body, "status": body.get("status")})


def test_an_aborted_release_goes_no_further_and_goes_on_once_the_abort_is_removed() -> None:
    world = World()
    envs = make_envs(policy={"requireApproval": True})
    # Live in staging, production waiting for an approval: withdrawn.
    staged, _ = drive(make_release(), world, envs=envs)
    assert staged.status is not None
    assert [e.phase for e in staged.status.environments] == ["Deployed", "Waiting"]

    stopped, plans = drive(with_abort(staged), world, envs=envs)
    assert [a for p in plans for a in p.actions] == []
    assert stopped.status is not None
    assert stopped.status.phase == "Aborted"
    message = (
        "aborted by erin at 2026-11-22T12:30:00Z (wrong dataset): promoted no further; it stays "
        "live in staging (kubectl modelgate rollback takes it out); remove spec.abort "
        "(kubectl modelgate retry) to go on"
    )
    assert condition(stopped, "Ready") == ("False", "Aborted", message)
    assert condition(stopped, "Stalled")[0] == "True"
    assert [(e.type, e.reason) for p in plans for e in p.events] == [("Warning", "PhaseAborted")]

    resumed, _ = drive(with_abort(stopped, None), world, envs=envs)
    assert resumed.status is not None
    assert resumed.status.phase == "Promoting"
    assert condition(resumed, "Ready")[1] == "AwaitingApproval"
    assert [d.environment for d in world.deploys] == ["staging"]


def test_an_abort_while_training_leaves_the_run_to_finish_and_reads_it_on_going_on() -> None:
    world = World()
    release = make_release()
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    training = world.act(release, plan, NOW)  # the Job is running (and finishes)
    stopped = reconcile(with_abort(training), make_gate(), make_envs(), world.observed(), NOW)
    assert stopped.actions == []
    assert stopped.status.phase == "Aborted"
    assert stopped.status.training is not None
    assert stopped.status.training.state == "Running"  # recorded as it was
    aborted = with_abort(training).model_copy(update={"status": stopped.status})
    resumed, _ = drive(with_abort(aborted, None), world)
    assert resumed.status is not None
    assert resumed.status.phase == "Released"
    assert len(world.trainings) == 1  # the same run, read when it went on


def test_an_aborted_challenger_is_removed_and_the_live_release_keeps_all_traffic() -> None:
    world = BesideWorld(Traffic())  # no difference: judged until its deadline
    champion_live(world)
    envs = rollout_envs(experiment())
    judging, _, _ = run(newer_release(), world, envs, hours=0.25)
    assert judging.status is not None
    assert judging.status.environments[1].phase == "Judging"

    stopped, plans, _ = run(with_abort(judging), world, envs, hours=0.1)
    removed = [a for p in plans for a in p.actions if isinstance(a, RemoveChallenger)]
    assert [(r.environment, r.release) for r in removed] == [("production", "team/m-2")]
    assert removed[0].reason is not None
    assert removed[0].reason.startswith("team/m-2: aborted by erin")
    assert not any(isinstance(a, Deploy) for p in plans for a in p.actions)
    assert world.deployments["production"].release == "team/m-1"
    assert stopped.status is not None
    assert stopped.status.phase == "Aborted"
    production = stopped.status.environments[1]
    assert production.phase == "Blocked"
    assert (production.message or "").endswith(
        "its challenger is removed and the live release keeps all traffic"
    )
