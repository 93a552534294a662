"""spec.retry: the failed step runs again as a new run, once per request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelgate.api import ModelRelease
from modelgate.api.modelrelease import RetryStep
from modelgate.backends.evaluation_job import record_failed_evaluation
from modelgate.promotion import EvaluateGate, StartTraining, reconcile
from modelgate.promotion.training import training_job
from tests.unit.test_reconcile import (
    NOW,
    World,
    condition,
    drive,
    make_envs,
    make_gate,
    make_release,
    release_of,
)

ASKED = "2026-11-22T12:30:00Z"


def asking(release: ModelRelease, at: str = ASKED, **more: str) -> ModelRelease:
    """``release`` with spec.retry set, as the plugin's patch leaves it."""
    body = release.wire()
    body["spec"]["retry"] = {"requestedAt": at, **more}
    return ModelRelease.model_validate({**body, "status": body.get("status")})


def test_a_failed_training_runs_again_under_a_new_name_and_the_release_goes_on() -> None:
    world = World(train_state="Failed")
    failed, _ = drive(make_release(), world)
    assert failed.status is not None
    assert failed.status.phase == "Failed"
    assert "kubectl modelgate retry" in condition(failed, "Stalled")[2]
    first = world.trainings[0].job_name

    world.train_state = "Succeeded"  # the cause (say, a node lost) is gone
    released, plans = drive(asking(failed, requestedBy="alice", reason="node lost"), world)

    second = world.trainings[1].job_name
    assert second != first
    assert second.startswith("m-1-train-")
    assert released.status is not None
    assert released.status.phase == "Released"
    record = released.status.retry
    assert record is not None
    assert (record.handled, record.step, record.training) == (ASKED, RetryStep.TRAINING, 1)
    assert record.message == "the training (or import) run runs again (retry 1)"
    events = [(e.reason, e.message) for p in plans for e in p.events if e.reason == "Retrying"]
    assert events == [("Retrying", f"retry by alice (node lost): {record.message}")]
    # The handler's name for the run follows the retry too.
    assert training_job(released, make_gate()) == second


def test_a_request_is_acted_on_once_and_a_new_one_again() -> None:
    world = World(train_state="Failed")
    failed, _ = drive(make_release(), world)
    retried, _ = drive(asking(failed), world)  # fails again
    assert retried.status is not None
    assert retried.status.phase == "Failed"
    again, _ = drive(retried, world)  # the same request: nothing more
    assert len(world.trainings) == 2
    assert again.status is not None
    assert again.status.retry is not None
    assert again.status.retry.training == 1

    later, _ = drive(asking(again, at="2026-11-22T13:00:00.250Z"), world)
    assert len(world.trainings) == 3
    assert len({t.job_name for t in world.trainings}) == 3
    assert later.status is not None
    assert later.status.retry is not None
    assert later.status.retry.training == 2


def test_a_status_write_lost_after_the_retry_starts_the_same_run() -> None:
    world = World(train_state="Failed")
    failed, _ = drive(make_release(), world)
    request = asking(failed)
    first = reconcile(request, make_gate(), make_envs(), world.observed(), NOW)
    second = reconcile(request, make_gate(), make_envs(), world.observed(), NOW)  # the write lost
    started = [a for p in (first, second) for a in p.actions if isinstance(a, StartTraining)]
    assert len(started) == 2
    assert started[0].job_name == started[1].job_name


def test_a_gate_that_could_not_be_evaluated_is_evaluated_again() -> None:
    world = World()
    release, _ = drive(make_release(), world)
    gate = make_gate(checks=[{"name": "auc", "metric": {"name": "roc_auc", "min": 0.95}}])
    [evaluate] = reconcile(release, gate, make_envs(), world.observed(), NOW).actions
    assert isinstance(evaluate, EvaluateGate)
    assert release.status is not None
    release.status.gate = record_failed_evaluation(
        release.model_copy(deep=True), evaluate, "Job m-1-eval-x: the data was unreadable", NOW
    )
    blocked = release_of(release, reconcile(release, gate, make_envs(), world.observed(), NOW))
    assert "kubectl modelgate retry" in condition(blocked, "GatePassed")[2]

    plan = reconcile(asking(blocked), gate, make_envs(), world.observed(), NOW)
    [again] = plan.actions
    assert isinstance(again, EvaluateGate)
    assert again.inputs_hash != evaluate.inputs_hash  # a new evaluation Job
    assert plan.status.retry is not None
    assert plan.status.retry.step == RetryStep.EVALUATION
    assert plan.status.phase == "Evaluating"


def test_a_release_with_nothing_failed_records_why_nothing_ran() -> None:
    world = World()
    released, _ = drive(make_release(), world)
    plan = reconcile(asking(released), make_gate(), make_envs(), world.observed(), NOW)
    assert plan.actions == []
    assert plan.status.retry is not None
    assert plan.status.retry.step is None
    assert plan.status.retry.message is not None
    assert plan.status.retry.message.startswith("nothing had failed to run again (phase Released)")
    assert [e.reason for e in plan.events] == ["RetryIgnored"]
    assert plan.status.phase == "Released"
    later = reconcile(release_of(released, plan), make_gate(), make_envs(), world.observed(), NOW)
    assert later.events == []


@pytest.mark.parametrize("when", ["yesterday", "2026-11-22", "2026-11-22 12:00:00"])
def test_a_request_time_that_is_not_rfc3339_is_refused_naming_the_field(when: str) -> None:
    body = make_release().wire()
    body["spec"]["retry"] = {"requestedAt": when}
    with pytest.raises(ValidationError) as caught:
        ModelRelease.model_validate(body)
    assert "retry.requestedAt" in str(caught.value)


@pytest.mark.parametrize("when", ["2026-11-22T12:00:00+01:00", "2026-11-22T12:00:00.123456Z"])
def test_offsets_and_fractions_of_a_second_are_accepted(when: str) -> None:
    retry = asking(make_release(), at=when).spec.retry
    assert retry is not None
    assert retry.requested_at == when
