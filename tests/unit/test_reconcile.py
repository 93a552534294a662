"""Transitions of the pure reconciliation core, driven by hand-made observations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelgate.api import Environment, ModelRelease, QualityGate
from modelgate.api.common import format_time
from modelgate.api.modelrelease import (
    ArtifactRecord,
    CheckResult,
    EnvironmentPhase,
    GateStatus,
    Phase,
)
from modelgate.backends.evaluation_job import record_failed_evaluation
from modelgate.promotion import (
    Deploy,
    DeploymentObservation,
    EvaluateGate,
    Observed,
    Plan,
    Rollback,
    StartTraining,
    StartVerification,
    TrainingObservation,
    reconcile,
)
from modelgate.promotion.conditions import find
from modelgate.promotion.evaluation import gate_summary
from modelgate.promotion.paths import graph_problems
from modelgate.trainer import contract

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DIGEST_IMAGE = "registry.example.com/m@sha256:" + "ab" * 32
PREDICTIONS = ArtifactRecord(name="predictions", uri="file:///p", sha256="1" * 64, size=10)
MODEL = ArtifactRecord(name="model", uri="file:///m", sha256="2" * 64, size=10)
METADATA = ArtifactRecord(name="metadata", uri="file:///md", sha256="3" * 64, size=10)


def make_gate(**spec: Any) -> QualityGate:
    return QualityGate.model_validate(
        {
            "metadata": {"name": "gate", "namespace": "team"},
            "spec": {
                "task": "binary",
                "checks": [{"name": "auc", "metric": {"name": "roc_auc", "min": 0.8}}],
                **spec,
            },
        }
    )


def make_env(name: str, tier: str = "preproduction", **spec: Any) -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"tier": tier, "namespace": f"ml-{name}", **spec},
        }
    )


def make_envs(**production: Any) -> dict[str, Environment]:
    return {
        "staging": make_env(
            "staging", config=[{"name": "URL", "value": "https://staging.example.com"}]
        ),
        "production": make_env(
            "production",
            "production",
            promotesFrom="staging",
            config=[{"name": "URL", "value": "https://prod.example.com"}],
            configRules=[{"key": "URL", "required": True, "forbid": ["backtest"]}],
            **production,
        ),
    }


def make_release(**spec: Any) -> ModelRelease:
    body: dict[str, Any] = {
        "model": {"name": "m", "version": "1.0.0"},
        "image": DIGEST_IMAGE,
        "training": {
            "image": "trainer:1",
            "params": {"n_estimators": 10},
            "data": {"train": "train.csv", "evaluation": "eval.csv", "target": "y"},
        },
        "gate": {"name": "gate"},
        "promotion": {"environments": ["staging", "production"]},
    }
    body.update(spec)
    return ModelRelease.model_validate(
        {"metadata": {"name": "m-1", "namespace": "team", "generation": 1}, "spec": body}
    )


class World:
    """A tiny in-memory cluster that performs the core's actions."""

    def __init__(
        self,
        gate_outcome: str = "Passed",
        train_state: str = "Succeeded",
        outputs: tuple[ArtifactRecord, ...] = (PREDICTIONS, MODEL),
    ) -> None:
        self.outputs = outputs
        self.training: TrainingObservation | None = None
        self.deployments: dict[str, DeploymentObservation] = {}
        self.gate_outcome = gate_outcome
        self.train_state = train_state
        self.deploys: list[Deploy] = []
        self.trainings: list[StartTraining] = []

    def observed(self) -> Observed:
        return Observed(training=self.training, deployments=dict(self.deployments))

    def act(self, release: ModelRelease, plan: Plan, now: datetime) -> ModelRelease:
        release = release.model_copy(update={"status": plan.status})
        for action in plan.actions:
            if isinstance(action, StartTraining):
                self.trainings.append(action)
                artifacts = self.outputs if self.train_state == "Succeeded" else ()
                self.training = TrainingObservation(
                    job_name=action.job_name,
                    state=self.train_state,
                    message=None if self.train_state == "Succeeded" else "OOMKilled",
                    artifacts=artifacts,
                )
            elif isinstance(action, EvaluateGate):
                assert release.status is not None
                failed = self.gate_outcome != "Passed"
                release.status.gate = GateStatus(
                    inputs_hash=action.inputs_hash,
                    outcome=self.gate_outcome,
                    evaluated_at=format_time(now),
                    passed=0 if failed else 1,
                    failed=1 if failed else 0,
                    checks=[
                        CheckResult(
                            name="auc",
                            kind="metric",
                            severity="blocking",
                            outcome=self.gate_outcome,
                            value=0.7 if failed else 0.9,
                            min=0.8,
                            message="roc_auc = 0.7000 does not meet >= 0.8" if failed else "ok",
                        )
                    ],
                )
            elif isinstance(action, Deploy):
                self.deploys.append(action)
                self.deployments[action.environment] = DeploymentObservation(
                    environment=action.environment,
                    release=action.release,
                    image=action.image,
                    config_hash=action.config_hash,
                    deployed_at=format_time(now),
                    predictions=action.predictions,
                )
        return release


def drive(
    release: ModelRelease,
    world: World,
    gate: QualityGate | None = None,
    envs: dict[str, Environment] | None = None,
    now: datetime = NOW,
    steps: int = 20,
    server_image: str | None = None,
) -> tuple[ModelRelease, list[Plan]]:
    gate = gate or make_gate()
    envs = envs if envs is not None else make_envs()
    plans = []
    for _ in range(steps):
        plan = reconcile(release, gate, envs, world.observed(), now, server_image=server_image)
        plans.append(plan)
        release = world.act(release, plan, now)
        if not plan.actions:
            break
    return release, plans


def condition(release: ModelRelease, kind: str) -> tuple[str, str, str]:
    assert release.status is not None
    found = find(release.status.conditions, kind)
    assert found is not None, kind
    return found.status, found.reason, found.message


def test_happy_path_trains_gates_and_promotes_in_order() -> None:
    world = World()
    release, plans = drive(make_release(), world)
    assert release.status is not None
    assert release.status.phase == "Released"
    assert [type(a).__name__ for p in plans for a in p.actions] == [
        "StartTraining",
        "EvaluateGate",
        "Deploy",
        "Deploy",
    ]
    assert [d.environment for d in world.deploys] == ["staging", "production"]
    for kind in ("Trained", "GatePassed", "ConfigValid", "Deployed", "Ready"):
        assert condition(release, kind)[0] == "True", kind
    assert find(release.status.conditions, "Stalled") is None
    assert find(release.status.conditions, "Reconciling") is None
    assert release.status.live_in == "production"
    assert release.status.observed_generation == 1
    assert [e.phase for e in release.status.environments] == ["Deployed", "Deployed"]
    assert all(c.observed_generation == 1 for c in release.status.conditions)


def test_phases_on_the_way() -> None:
    world = World()
    release, plans = drive(make_release(), world)
    assert [p.status.phase for p in plans] == [
        "Training",
        "Evaluating",
        "Promoting",
        "Promoting",
        "Released",
    ]
    assert condition(release, "Ready")[1] == "Released"


def test_training_job_contract_environment() -> None:
    world = World()
    drive(make_release(), world)
    job = world.trainings[0]
    assert job.job_name.startswith("m-1-train-")
    assert len(job.job_name) <= 63
    assert job.env[contract.TARGET] == "y"
    assert job.env[contract.TASK] == "binary"
    assert job.env[contract.PARAMS] == '{"n_estimators": 10}'
    assert job.env[contract.RELEASE] == "team/m-1"


def test_reconcile_is_idempotent_once_released() -> None:
    world = World()
    release, _ = drive(make_release(), world)
    again = reconcile(release, make_gate(), make_envs(), world.observed(), NOW + timedelta(hours=1))
    assert again.actions == []
    assert again.status == release.status
    assert again.events == []


def test_lost_status_write_never_deploys_twice() -> None:
    # The deploy happened but the status write was lost (crash): the core
    # recognises the live deployment as its own and does not deploy again.
    world = World()
    release, _ = drive(make_release(), world, steps=3)
    assert [d.environment for d in world.deploys] == ["staging"]
    assert release.status is not None
    stale = release.model_copy(deep=True)
    assert stale.status is not None
    stale.status.environments = []
    plan = reconcile(stale, make_gate(), make_envs(), world.observed(), NOW)
    assert [a.environment for a in plan.actions if isinstance(a, Deploy)] == ["production"]


def test_training_failure_is_failed_with_reason() -> None:
    release, plans = drive(make_release(), World(train_state="Failed"))
    assert release.status is not None
    assert release.status.phase == "Failed"
    assert condition(release, "Trained") == ("False", "TrainingFailed", "OOMKilled")
    assert condition(release, "Stalled")[0] == "True"
    assert condition(release, "Ready")[1] == "TrainingFailed"
    assert any(e.type == "Warning" and e.reason == "PhaseFailed" for p in plans for e in p.events)


def test_running_training_requeues_without_actions() -> None:
    world = World()
    release = make_release()
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    job = plan.actions[0]
    assert isinstance(job, StartTraining)
    world.training = TrainingObservation(job_name=job.job_name, state="Running")
    release = release.model_copy(update={"status": plan.status})
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    assert plan.actions == []
    assert plan.requeue_after is not None
    assert plan.status.phase == "Training"
    assert condition(release.model_copy(update={"status": plan.status}), "Reconciling")[0] == "True"


def test_a_training_pod_that_cannot_start_says_why_and_waits() -> None:
    world = World()
    release = make_release()
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    job = plan.actions[0]
    assert isinstance(job, StartTraining)
    stuck = 'pod p-1 container trainer: ImagePullBackOff: Back-off pulling image "x:1"'
    world.training = TrainingObservation(job_name=job.job_name, state="Running", message=stuck)
    release = release.model_copy(update={"status": plan.status})
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    assert plan.actions == []  # nothing to do but wait: a fixed image or Secret goes on
    waiting = release.model_copy(update={"status": plan.status})
    status, reason, message = condition(waiting, "Trained")
    assert (status, reason) == ("Unknown", "TrainingPodWaiting")
    assert stuck in message
    assert "spec.training.deadline" in message
    assert condition(waiting, "Ready")[1:] == ("TrainingPodWaiting", message)


def test_training_without_predictions_fails_closed() -> None:
    world = World()
    release = make_release()
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    job = plan.actions[0]
    assert isinstance(job, StartTraining)
    world.training = TrainingObservation(
        job_name=job.job_name, state="Succeeded", artifacts=(MODEL,)
    )
    release = release.model_copy(update={"status": plan.status})
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    assert plan.status.phase == "Failed"
    trained = find(plan.status.conditions, "Trained")
    assert trained is not None
    assert "wrote no predictions" in trained.message


def test_gate_failure_stops_before_any_deploy() -> None:
    world = World(gate_outcome="Failed")
    release, _ = drive(make_release(), world)
    assert release.status is not None
    assert release.status.phase == "GateFailed"
    status, reason, message = condition(release, "GatePassed")
    assert (status, reason) == ("False", "GateFailed")
    assert "blocking auc Failed: roc_auc = 0.7000 does not meet >= 0.8" in message
    assert world.deploys == []


def test_gate_summary_names_checks_that_share_a_reason_once() -> None:
    """Unreadable predictions make every check Inconclusive for one reason:
    the condition says the reason once, not once per check."""
    reason = "predictions unreadable: SHA-256 mismatch: refusing to use it"
    checks = [
        CheckResult(
            name=n, kind="metric", severity="blocking", outcome="Inconclusive", message=reason
        )
        for n in ("auc", "parity", "schema")
    ] + [
        CheckResult(
            name="recall", kind="slice", severity="blocking", outcome="Failed", message="low"
        ),
        CheckResult(
            name="drift", kind="drift", severity="warning", outcome="Inconclusive", message=reason
        ),
    ]
    summary = gate_summary(
        GateStatus.model_validate(
            {
                "name": "g",
                "inputsHash": "0" * 16,
                "evaluatedAt": format_time(NOW),
                "outcome": "Inconclusive",
                "passed": 0,
                "failed": 1,
                "inconclusive": 4,
                "checks": checks,
            }
        )
    )
    assert summary.count(reason) == 2  # once for the blocking checks, once for the warning
    assert f"blocking auc, parity, schema Inconclusive: {reason}" in summary
    assert "blocking recall Failed: low" in summary
    assert f"warning drift Inconclusive: {reason}" in summary


def test_inconclusive_gate_blocks_too() -> None:
    world = World(gate_outcome="Inconclusive")
    release, _ = drive(make_release(), world)
    assert release.status is not None
    assert release.status.phase == "GateFailed"
    assert condition(release, "GatePassed")[1] == "GateInconclusive"


def test_changing_the_gate_re_evaluates_without_retraining() -> None:
    world = World()
    release, _ = drive(make_release(), world)
    stricter = make_gate(checks=[{"name": "auc", "metric": {"name": "roc_auc", "min": 0.95}}])
    plan = reconcile(release, stricter, make_envs(), world.observed(), NOW)
    assert [type(a).__name__ for a in plan.actions] == ["EvaluateGate"]
    assert len(world.trainings) == 1


def test_changing_training_params_retrains() -> None:
    world = World()
    release, _ = drive(make_release(), world)
    assert release.status is not None
    changed = make_release(
        training={
            "image": "trainer:1",
            "params": {"n_estimators": 20},
            "data": {"train": "train.csv", "evaluation": "eval.csv", "target": "y"},
        }
    ).model_copy(update={"status": release.status})
    plan = reconcile(changed, make_gate(), make_envs(), world.observed(), NOW)
    assert [type(a).__name__ for a in plan.actions] == ["StartTraining"]
    assert plan.status.gate is None
    assert plan.status.artifacts == []


def test_backtest_config_blocks_production_only() -> None:
    world = World()
    leak = make_release(
        promotion={
            "environments": ["staging", "production"],
            "config": [
                {
                    "environment": "production",
                    "values": [{"name": "URL", "value": "https://backtest.example.com"}],
                }
            ],
        }
    )
    release, _ = drive(leak, world)
    assert release.status is not None
    assert release.status.phase == "Blocked"
    assert [d.environment for d in world.deploys] == ["staging"]
    assert [e.phase for e in release.status.environments] == ["Deployed", "Blocked"]
    status, reason, message = condition(release, "ConfigValid")
    assert (status, reason) == ("False", "ConfigRuleViolated")
    assert "URL='https://backtest.example.com' violates rule forbid=backtest" in message
    assert condition(release, "Stalled")[0] == "True"
    assert release.status.live_in == "staging"


def test_production_requires_digest() -> None:
    world = World()
    release, _ = drive(make_release(image="registry.example.com/m:1.0"), world)
    assert release.status is not None
    assert release.status.phase == "Blocked"
    assert condition(release, "Ready")[1] == "ImageNotPinned"
    assert [d.environment for d in world.deploys] == ["staging"]


@pytest.mark.parametrize(
    ("allowed", "deployed"),
    [
        (["registry.example.com"], ["staging", "production"]),
        (["registry.example.com/"], ["staging", "production"]),
        (["registry.example.com/other-team"], ["staging"]),
        (["registry.example.co"], ["staging"]),  # whole segments, not prefixes of names
    ],
)
def test_registry_allow_list(allowed: list[str], deployed: list[str]) -> None:
    envs = make_envs(policy={"allowedRegistries": allowed})
    world = World()
    release, _ = drive(make_release(), world, envs=envs)
    assert [d.environment for d in world.deploys] == deployed
    if deployed == ["staging"]:
        assert release.status is not None
        assert release.status.phase == "Blocked"
        _, reason, message = condition(release, "Ready")
        assert reason == "ImageNotAllowed"
        assert f"only takes images from {allowed[0]}" in message


def test_approval_required_waits_then_proceeds() -> None:
    envs = make_envs(policy={"requireApproval": True})
    world = World()
    release, _ = drive(make_release(), world, envs=envs)
    assert release.status is not None
    assert release.status.phase == "Promoting"
    assert condition(release, "Ready")[1] == "AwaitingApproval"
    assert condition(release, "Reconciling")[0] == "True"
    approved = make_release(
        promotion={
            "environments": ["staging", "production"],
            "approvals": [{"environment": "production", "approvedBy": "alice"}],
        }
    ).model_copy(update={"status": release.status})
    released, _ = drive(approved, world, envs=envs)
    assert released.status is not None
    assert released.status.phase == "Released"
    assert released.status.environments[1].approved_by == "alice"


def test_soak_time_holds_the_next_environment() -> None:
    envs = make_envs()
    envs["staging"] = make_env(
        "staging", config=[{"name": "URL", "value": "https://s.example.com"}], policy={"soak": "1h"}
    )
    world = World()
    release, plans = drive(make_release(), world, envs=envs)
    assert release.status is not None
    assert release.status.phase == "Promoting"
    assert plans[-1].requeue_after == timedelta(hours=1)
    assert condition(release, "Ready")[1] == "Soaking"
    later, _ = drive(release, world, envs=envs, now=NOW + timedelta(hours=1, seconds=1))
    assert later.status is not None
    assert later.status.phase == "Released"


def test_superseded_release_is_never_redeployed() -> None:
    world = World()
    old, _ = drive(make_release(), world)
    newer = make_release(
        model={"name": "m", "version": "2.0.0"}, image="registry.example.com/m@sha256:" + "cd" * 32
    )
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    drive(newer, world)
    assert world.deployments["production"].release == "team/m-2"
    count = len(world.deploys)
    plan = reconcile(old, make_gate(), make_envs(), world.observed(), NOW)
    assert plan.actions == []
    assert len(world.deploys) == count
    assert [e.phase for e in plan.status.environments] == ["Superseded", "Superseded"]
    assert plan.status.phase == "Released"


def test_missing_references_wait_with_a_clear_message() -> None:
    plan = reconcile(make_release(), None, make_envs(), Observed(), NOW)
    assert plan.status.phase == "Pending"
    ready = find(plan.status.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "ReferenceNotFound"
    assert "QualityGate 'gate' not found in namespace team" in ready.message
    assert plan.requeue_after is not None
    plan = reconcile(
        make_release(), make_gate(), {"staging": make_envs()["staging"]}, Observed(), NOW
    )
    ready = find(plan.status.conditions, "Ready")
    assert ready is not None
    assert "Environment 'production' not found" in ready.message


def test_promotion_order_must_follow_promotes_from() -> None:
    release = make_release(promotion={"environments": ["production", "staging"]})
    plan = reconcile(release, make_gate(), make_envs(), Observed(), NOW)
    assert plan.status.phase == "Blocked"
    ready = find(plan.status.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "PromotionPathInvalid"
    assert "list staging before production" in ready.message


def test_promotes_from_cycles_and_dangling_references() -> None:
    envs = {
        "a": make_env("a", promotesFrom="b"),
        "b": make_env("b", promotesFrom="a"),
        "c": make_env("c", promotesFrom="nowhere"),
        "d": make_env("d", promotesFrom="d"),
    }
    problems = graph_problems(envs)
    assert "cycle: a -> b -> a" in problems["a"]
    assert "'nowhere', which does not exist" in problems["c"]
    assert "promotes from itself" in problems["d"]


def test_inline_checks_add_to_the_named_gate() -> None:
    world = World()
    release = make_release(
        gate={"name": "gate", "checks": [{"name": "f1", "metric": {"name": "f1", "min": 0.1}}]}
    )
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    release = world.act(release, plan, NOW)
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    evaluate = plan.actions[0]
    assert isinstance(evaluate, EvaluateGate)
    assert [c.name for c in evaluate.checks] == ["auc", "f1"]


def test_baselines_come_from_what_is_live() -> None:
    world = World()
    drive(make_release(), world)
    gate = make_gate(
        checks=[
            {"name": "reg", "metric": {"name": "f1"}, "baseline": {"environment": "production"}}
        ]
    )
    second = make_release(image="registry.example.com/m@sha256:" + "ef" * 32)
    second = second.model_copy(
        update={"metadata": second.metadata.model_copy(update={"name": "m-2"})}
    )
    plan = reconcile(second, gate, make_envs(), world.observed(), NOW)
    second = world.act(second, plan, NOW)
    plan = reconcile(second, gate, make_envs(), world.observed(), NOW)
    evaluate = plan.actions[0]
    assert isinstance(evaluate, EvaluateGate)
    assert evaluate.baselines == {"production": PREDICTIONS}


def test_condition_transition_time_only_moves_on_status_change() -> None:
    world = World()
    release = make_release()
    plan = reconcile(release, make_gate(), make_envs(), world.observed(), NOW)
    first = find(plan.status.conditions, "Ready")
    release = world.act(release, plan, NOW)
    world.training = replace(world.training, state="Running") if world.training else None
    plan = reconcile(
        release, make_gate(), make_envs(), world.observed(), NOW + timedelta(minutes=5)
    )
    second = find(plan.status.conditions, "Ready")
    assert first is not None
    assert second is not None
    assert first.status == second.status == "False"
    assert first.last_transition_time == second.last_transition_time


class VerifyingWorld(World):
    """A world whose verification Jobs pass or fail, and which can roll back."""

    def __init__(self, verification: str = "Succeeded") -> None:
        super().__init__()
        self.verification = verification
        self.verifications: dict[str, TrainingObservation] = {}
        self.rollbacks: list[Rollback] = []
        self.history: dict[str, list[DeploymentObservation]] = {}

    def observed(self) -> Observed:
        return Observed(
            training=self.training,
            deployments=dict(self.deployments),
            verifications=dict(self.verifications),
        )

    def act(self, release: ModelRelease, plan: Plan, now: datetime) -> ModelRelease:
        before = dict(self.deployments)
        release = super().act(release, plan, now)
        for environment, live in self.deployments.items():
            if before.get(environment) != live and before.get(environment) is not None:
                self.history.setdefault(environment, []).append(before[environment])
        for action in plan.actions:
            if isinstance(action, StartVerification):
                self.verifications[action.job_name] = TrainingObservation(
                    action.job_name, self.verification, message="3 of 200 answers differ"
                )
            elif isinstance(action, Rollback):
                self.rollbacks.append(action)
                previous = self.history.get(action.environment, [])
                if previous:
                    self.deployments[action.environment] = previous[-1]
                else:
                    del self.deployments[action.environment]
        return release


def verified_envs(**production: Any) -> dict[str, Environment]:
    return make_envs(verification={"image": "verify:1", "command": ["verify"]}, **production)


def test_verification_passes_before_the_release_counts_as_deployed() -> None:
    world = VerifyingWorld()
    release, plans = drive(make_release(), world, envs=verified_envs())
    assert release.status is not None
    assert release.status.phase == "Released"
    kinds = [type(a).__name__ for p in plans for a in p.actions]
    assert kinds == ["StartTraining", "EvaluateGate", "Deploy", "Deploy", "StartVerification"]
    production = release.status.environments[1]
    assert production.verified_at is not None
    assert production.verification_job is not None
    assert condition(release, "Verified") == ("True", "Verified", "verified in production")


def test_failed_verification_rolls_production_back() -> None:
    world = VerifyingWorld(verification="Failed")
    drive(make_release(), world, envs=make_envs())  # m-1 live, no verification then
    newer = make_release(image="registry.example.com/m@sha256:" + "cd" * 32)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    release, _ = drive(newer, world, envs=verified_envs())
    assert release.status is not None
    assert release.status.phase == "RolledBack"
    assert [r.environment for r in world.rollbacks] == ["production"]
    assert "3 of 200 answers differ" in (world.rollbacks[0].reason or "")
    assert world.deployments["production"].release == "team/m-1"
    production = release.status.environments[1]
    assert production.phase == "RolledBack"
    assert "3 of 200 answers differ" in (production.message or "")
    assert condition(release, "Verified")[:2] == ("False", "VerificationFailed")
    assert condition(release, "Stalled")[0] == "True"
    # Level-based: reconciling again never redeploys the rolled-back release.
    count = len(world.deploys)
    again = reconcile(release, make_gate(), verified_envs(), world.observed(), NOW)
    assert again.actions == []
    assert len(world.deploys) == count
    assert again.status.phase == "RolledBack"


def test_a_status_from_before_the_rollback_never_redeploys() -> None:
    """A resync that reads the release before its RolledBack status landed (a
    timer's stale body, or a crash before the write): the failed verification
    Job and what is live say it was rolled back; nothing is deployed again."""
    world = VerifyingWorld(verification="Failed")
    drive(make_release(), world, envs=make_envs())
    newer = make_release(image="registry.example.com/m@sha256:" + "cd" * 32)
    newer = newer.model_copy(update={"metadata": newer.metadata.model_copy(update={"name": "m-2"})})
    release, _ = drive(newer, world, envs=verified_envs())
    assert release.status is not None
    stale = release.model_copy(deep=True)
    assert stale.status is not None
    production = stale.status.environments[1]
    assert production.verification_job is not None
    production.phase = EnvironmentPhase.VERIFYING
    production.message = f"verification {production.verification_job} is running"
    stale.status.phase = Phase.PROMOTING
    again = reconcile(stale, make_gate(), verified_envs(), world.observed(), NOW)
    assert again.actions == []
    assert again.status.phase == "RolledBack"
    assert again.status.environments[1].phase == "RolledBack"
    assert "3 of 200 answers differ" in (again.status.environments[1].message or "")
    assert world.deployments["production"].release == "team/m-1"


def test_a_verification_tried_again_says_which_attempt_and_how_many_failed() -> None:
    """The Job retries a verification that could not check (exit 2); the
    release says which attempt runs, and a failure how many there were."""
    world = VerifyingWorld(verification="Running")
    envs = make_envs(verification={"image": "verify:1", "command": ["verify"], "attempts": 3})
    release, _ = drive(make_release(), world, envs=envs)
    assert release.status is not None
    production = release.status.environments[1]
    job = production.verification_job
    assert job is not None
    assert production.message == f"verification {job} is running"
    world.verifications[job] = TrainingObservation(job, "Running", retries=2)
    running = reconcile(release, make_gate(), envs, world.observed(), NOW).status
    assert running.environments[1].message == (
        f"verification {job} is running (attempt 3 of 3: the first 2 could not check)"
    )
    world.verifications[job] = TrainingObservation(
        job, "Failed", message="BackoffLimitExceeded", retries=2
    )
    failed = reconcile(release, make_gate(), envs, world.observed(), NOW).status
    assert "verification failed (BackoffLimitExceeded (after 3 attempts))" in (
        failed.environments[1].message or ""
    )


def test_verification_failure_without_auto_rollback_fails_in_place() -> None:
    world = VerifyingWorld(verification="Failed")
    release, _ = drive(make_release(), world, envs=verified_envs(policy={"autoRollback": False}))
    assert release.status is not None
    assert world.rollbacks == []
    assert release.status.environments[1].phase == "Failed"
    assert condition(release, "Verified")[0] == "False"


def test_a_failed_evaluation_runs_again_only_when_spec_evaluation_changes() -> None:
    world = World()
    release, _ = drive(make_release(), world)
    gate = make_gate(checks=[{"name": "auc", "metric": {"name": "roc_auc", "min": 0.95}}])
    [evaluate] = reconcile(release, gate, make_envs(), world.observed(), NOW).actions
    assert isinstance(evaluate, EvaluateGate)
    assert release.status is not None
    release.status.gate = record_failed_evaluation(
        release.model_copy(deep=True), evaluate, "Job m-1-eval-x: OOMKilled", NOW
    )
    again = reconcile(release, gate, make_envs(), world.observed(), NOW)
    assert again.actions == []  # the same evaluation would fail the same way
    assert "raise resources.limits.memory" in condition(release_of(release, again), "GatePassed")[2]
    bigger = release.model_copy(deep=True)
    bigger.spec.evaluation.resources.limits["memory"] = "16Gi"
    [retry] = reconcile(bigger, gate, make_envs(), world.observed(), NOW).actions
    assert isinstance(retry, EvaluateGate)
    assert retry.evaluation.resources.limits["memory"] == "16Gi"
    assert retry.inputs_hash == evaluate.inputs_hash


def release_of(release: ModelRelease, plan: Plan) -> ModelRelease:
    return release.model_copy(update={"status": plan.status})


def test_a_release_replaced_while_it_is_verified_goes_no_further() -> None:
    """Another release goes live in staging while this one's verification
    there still runs: staging never proved anything about it, so it is not
    promoted to production; it settles, saying what replaced it."""
    verification = {"image": "verify:1", "command": ["verify"]}
    envs = make_envs(verification=verification)
    envs["staging"] = make_env(
        "staging",
        config=[{"name": "URL", "value": "https://staging.example.com"}],
        verification=verification,
    )
    world = VerifyingWorld(verification="Running")
    release, _ = drive(make_release(), world, envs=envs)
    assert release.status is not None
    assert [e.phase for e in release.status.environments] == ["Verifying", "Pending"]
    world.deployments["staging"] = DeploymentObservation(
        environment="staging",
        release="team/m-2",
        image=DIGEST_IMAGE,
        config_hash="f" * 64,
        deployed_at=format_time(NOW),
    )
    deploys = len(world.deploys)
    for _ in range(3):  # settled: the same answer every time, nothing done
        plan = reconcile(release, make_gate(), envs, world.observed(), NOW)
        release = world.act(release, plan, NOW)
        assert plan.actions == []
        assert len(world.deploys) == deploys
        staging, production = plan.status.environments
        assert (staging.phase, staging.unfinished) == ("Superseded", True)
        assert "replaced by team/m-2 before its verification finished" in (staging.message or "")
        assert production.phase == "Pending"
        assert plan.status.phase == "Blocked"
        assert condition(release, "Stalled")[:2] == ("True", "Superseded")
        assert condition(release, "Ready")[0] == "False"
        assert condition(release, "Verified")[:2] == ("False", "Superseded")


class ScoringWorld(World):
    """Also runs scoring runs: the server's predictions differ in bytes from
    the trainer's (another file), not in what the gate is told."""

    SERVED = ArtifactRecord(name="predictions", uri="file:///served", sha256="4" * 64, size=10)

    def __init__(self, scoring_state: str = "Succeeded") -> None:
        super().__init__(outputs=(PREDICTIONS, MODEL, METADATA))
        self.scoring_state = scoring_state
        self.scoring: TrainingObservation | None = None
        self.started: list[StartTraining] = []

    def observed(self) -> Observed:
        return replace(super().observed(), scoring=self.scoring)

    def act(self, release: ModelRelease, plan: Plan, now: datetime) -> ModelRelease:
        scoring = [
            a for a in plan.actions if isinstance(a, StartTraining) and "-score-" in a.job_name
        ]
        for action in scoring:
            self.started.append(action)
            served = (self.SERVED, MODEL, METADATA) if self.scoring_state == "Succeeded" else ()
            self.scoring = TrainingObservation(
                job_name=action.job_name,
                state=self.scoring_state,
                message=None if self.scoring_state == "Succeeded" else "model not ready",
                artifacts=served,
            )
        others = replace(plan, actions=[a for a in plan.actions if a not in scoring])
        return super().act(release, others, now)


def scored_release() -> ModelRelease:
    return make_release(serving="ReferenceServer", image=None,
                        gate={"name": "gate", "predictionsFrom": "Server"})  # fmt: skip


def test_the_gate_judges_the_servers_predictions_when_asked() -> None:
    world = ScoringWorld()
    release, plans = drive(scored_release(), world, server_image=DIGEST_IMAGE)
    assert release.status is not None
    assert release.status.phase == "Released"
    [scoring] = world.started
    assert scoring.job_name.startswith("m-1-score-")
    assert scoring.command == ("python", "-m", "modelgate.importer")
    assert scoring.image == DIGEST_IMAGE  # the server's image, never the trainer's
    assert scoring.env[contract.ARTIFACT_URI] == MODEL.uri
    assert scoring.env[contract.ARTIFACT_SHA256] == MODEL.sha256
    evaluations = [a for p in plans for a in p.actions if isinstance(a, EvaluateGate)]
    assert [e.predictions for e in evaluations] == [ScoringWorld.SERVED]
    artifacts = {a.name: a for a in release.status.artifacts}
    assert artifacts["predictions"] == ScoringWorld.SERVED
    assert artifacts["model"] == MODEL  # the trained model, as it was
    assert release.status.scoring is not None
    assert release.status.scoring.state == "Succeeded"
    assert condition(release, "Trained")[:2] == ("True", "ScoredByServer")
    # Settled: scored once, whatever happens after.
    again = reconcile(release, make_gate(), make_envs(), world.observed(), NOW,
                      server_image=DIGEST_IMAGE)  # fmt: skip
    assert again.actions == []
    assert len(world.started) == 1


def test_a_failed_scoring_fails_closed_and_is_not_run_again() -> None:
    world = ScoringWorld(scoring_state="Failed")
    release, plans = drive(scored_release(), world, server_image=DIGEST_IMAGE)
    assert release.status is not None
    assert release.status.phase == "Failed"
    status, reason, message = condition(release, "Trained")
    assert (status, reason) == ("False", "ScoringFailed")
    assert "model not ready" in message
    assert not any(isinstance(a, EvaluateGate | Deploy) for p in plans for a in p.actions)
    assert len(world.started) == 1
