"""A new release judged beside the live one on live traffic (policy.rollout):
deployed as the challenger, verified, given its share, looked at every
minute, then promoted or removed. The core against a world whose Prometheus
counts each arm's requests as a traffic model says."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from modelgate.api import Environment, ModelRelease
from modelgate.api.common import format_time
from modelgate.backends.gitops import promotion_message
from modelgate.metrics import Metrics
from modelgate.promotion import reconcile
from modelgate.promotion.plan import (
    Deploy,
    DeploymentObservation,
    MeasurementObservation,
    Observed,
    Plan,
    RemoveChallenger,
    SetTraffic,
    StartVerification,
)
from modelgate.promotion.rollout import (
    ArmQuery,
    due_queries,
    removals_for_deleted,
    traffic_description,
)
from tests.unit.test_reconcile import (
    NOW,
    VerifyingWorld,
    condition,
    drive,
    make_envs,
    make_gate,
    make_release,
)

REQUESTS = 'sum(increase(modelgate_requests_total{arm="{{arm}}",model="{{model}}"}[{{window}}]))'
APPROVALS = 'sum(increase(modelgate_positive_total{arm="{{arm}}"}[{{window}}]))'
SECONDS = 'sum(increase(modelgate_seconds_sum{arm="{{arm}}"}[{{window}}]))'
SQUARES = 'sum(increase(modelgate_seconds_squares{arm="{{arm}}"}[{{window}}]))'
APPROVAL_RATE = {
    "name": "approval-rate", "role": "Primary", "statistic": "Proportion", "better": "Higher",
    "count": REQUESTS, "successes": APPROVALS, "minimumDetectableEffect": 0.03,
}  # fmt: skip
LATENCY = {
    "name": "latency", "role": "Guardrail", "statistic": "Mean", "better": "Lower",
    "count": REQUESTS, "sum": SECONDS, "sumOfSquares": SQUARES, "margin": 0.01,
}  # fmt: skip
CHALLENGER_IMAGE = "registry.example.com/m@sha256:" + "cd" * 32


@dataclass
class Arm:
    """What one model does with the requests it gets."""

    approval: float = 0.30
    latency: float = 0.050  # seconds, mean
    latency_sd: float = 0.010
    disagreement: float = 0.0  # a shadow: share answered differently from the champion


@dataclass
class Traffic:
    """Requests per second to the environment, and how each arm answers."""

    rate: float = 20.0
    champion: Arm = field(default_factory=Arm)
    challenger: Arm = field(default_factory=Arm)
    # A share of the challenger's requests that never reach it (a routing fault).
    lost: float = 0.0


class BesideWorld(VerifyingWorld):
    """Deploys challengers beside the live release, splits traffic, and
    answers each arm's queries with the counts the traffic model implies
    since the split (exact expected counts: the tests are deterministic)."""

    def __init__(self, traffic: Traffic, verification: str = "Succeeded") -> None:
        super().__init__(verification)
        self.traffic = traffic
        self.challengers: dict[str, DeploymentObservation] = {}
        self.splits: list[SetTraffic] = []
        self.removed: list[RemoveChallenger] = []
        self.verified_challengers: list[str] = []
        self.split_since: dict[str, datetime] = {}

    def observed(self) -> Observed:
        return replace(super().observed(), challengers=dict(self.challengers))

    def act(self, release: ModelRelease, plan: Plan, now: datetime) -> ModelRelease:
        for action in plan.actions:
            if isinstance(action, Deploy) and action.challenger:
                self.challengers[action.environment] = DeploymentObservation(
                    environment=action.environment, release=action.release, image=action.image,
                    config_hash=action.config_hash, deployed_at=format_time(now),
                )  # fmt: skip
            elif isinstance(action, Deploy):
                self.challengers.pop(action.environment, None)
            elif isinstance(action, SetTraffic):
                self.splits.append(action)
                live = self.challengers[action.environment]
                self.challengers[action.environment] = replace(
                    live, weight=action.weight, mirror=action.mirror
                )
                self.split_since[action.environment] = now
            elif isinstance(action, RemoveChallenger):
                self.removed.append(action)
                self.challengers.pop(action.environment, None)
            elif isinstance(action, StartVerification) and action.challenger:
                self.verified_challengers.append(action.job_name)
        challenger_deploys = [a for a in plan.actions if isinstance(a, Deploy) and a.challenger]
        return super().act(
            release,
            replace(plan, actions=[a for a in plan.actions if a not in challenger_deploys]),
            now,
        )

    def answer(self, query: ArmQuery, now: datetime) -> MeasurementObservation:
        """The arm's counters since the split (before it: the champion's last hour)."""
        at = format_time(now)
        traffic = self.traffic
        challenger = self.challengers.get(query.environment)
        since = self.split_since.get(query.environment)
        if (
            challenger is None
            or since is None
            or (challenger.weight == 0 and not challenger.mirror)
        ):
            seconds, share = 3600.0, 1.0 if query.arm == "champion" else 0.0
        else:
            seconds = (now - since).total_seconds()
            weight = challenger.weight / 100
            share = 1 - weight if query.arm == "champion" else weight * (1 - traffic.lost)
        arm = traffic.champion if query.arm == "champion" else traffic.challenger
        count = traffic.rate * share * seconds
        if query.metric == "shadow":
            mirrored = traffic.rate * seconds
            values = {
                "requests": mirrored,
                "rows": mirrored,
                "disagreements": mirrored * traffic.challenger.disagreement,
                "scoreDifference": mirrored * traffic.challenger.disagreement * 0.5,
                "errors": 0.0,
                "championSeconds": mirrored * traffic.champion.latency,
                "challengerSeconds": mirrored * traffic.challenger.latency,
            }
            return MeasurementObservation(at=at, value=values[query.field])
        mean, sd = arm.latency, arm.latency_sd
        values = {
            "count": count,
            "successes": count * arm.approval,
            "sum": count * mean,
            "sumOfSquares": count * (sd * sd + mean * mean),
        }
        return MeasurementObservation(at=at, value=values[query.field])


def rollout_envs(rollout: dict[str, Any], verified: bool = True) -> dict[str, Environment]:
    extra: dict[str, Any] = {"policy": {"rollout": rollout}}
    if verified:
        extra["verification"] = {"image": "verify:1", "command": ["verify"]}
    return make_envs(**extra)


def experiment(**settings: Any) -> dict[str, Any]:
    return {
        "strategy": "Experiment",
        "experiment": {"split": {"champion": 50, "challenger": 50}, "deadline": "6h",
                       "minSamples": 200, **settings},
        "metrics": [APPROVAL_RATE, LATENCY],
    }  # fmt: skip


def newer_release() -> ModelRelease:
    release = make_release(image=CHALLENGER_IMAGE)
    metadata = release.metadata.model_copy(update={"name": "m-2"})
    return release.model_copy(update={"metadata": metadata})


def champion_live(world: BesideWorld) -> None:
    """m-1 is live in both environments (the first release always replaces)."""
    first, _ = drive(make_release(), world, envs=make_envs())
    assert first.status is not None
    assert first.status.phase == "Released"


def run(
    release: ModelRelease,
    world: BesideWorld,
    envs: dict[str, Environment],
    hours: float = 8,
) -> tuple[ModelRelease, list[Plan], list[ArmQuery]]:
    """Reconcile at once after actions, otherwise when asked to (at most a
    minute later), answering every query the core asks for."""
    plans: list[Plan] = []
    asked: list[ArmQuery] = []
    now = NOW
    end = NOW + timedelta(hours=hours)
    while now <= end:
        queries = due_queries(release, envs, now)
        asked.extend(queries)
        observed = replace(
            world.observed(),
            arm_measurements={
                (q.environment, q.metric, q.arm, q.field): world.answer(q, now) for q in queries
            },
        )
        plan = reconcile(release, make_gate(), envs, observed, now)
        plans.append(plan)
        release = world.act(release, plan, now)
        if plan.actions:
            continue
        if plan.requeue_after is None:
            break
        now += min(plan.requeue_after, timedelta(minutes=1))
    return release, plans, asked


def events(plans: list[Plan]) -> list[str]:
    return [e.reason for p in plans for e in p.events]


def test_a_better_challenger_is_deployed_beside_verified_split_and_promoted() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36)))
    champion_live(world)
    envs = rollout_envs(experiment())
    release, plans, asked = run(newer_release(), world, envs)
    assert release.status is not None
    assert release.status.phase == "Released", release.status.environments[1].message
    production = release.status.environments[1]
    judged = production.judged
    assert judged is not None
    assert judged.phase == "Promoted"
    assert judged.champion == "team/m-1"
    # Sized before the split from the champion's rate (0.3: variance 0.21).
    assert judged.required_samples is not None
    assert 1_000 < judged.required_samples < 10_000
    sizing = [q for q in asked if q.arm == "champion" and q.query.endswith("[3600s]))")]
    assert {q.field for q in sizing} == {"count", "successes"}
    primary = next(m for m in judged.metrics if m.name == "approval-rate")
    assert primary.verdict == "Better"
    assert primary.effect == pytest.approx(0.06, abs=1e-3)
    assert primary.low is not None
    assert primary.low > 0
    assert primary.p_value is not None
    assert primary.p_value < 0.05
    assert primary.champion is not None
    assert primary.challenger is not None
    assert primary.champion.value == pytest.approx(0.30, abs=1e-3)
    # Decided early, well before its 6h deadline, on fewer samples than sized.
    assert judged.decided_at is not None
    assert judged.split_at is not None
    assert judged.deadline is not None
    assert judged.decided_at < judged.deadline
    # Queries name the arm and the window since the split.
    looked = [q for q in asked if q.arm == "challenger" and q.field == "count"]
    assert looked[0].query == (
        'sum(increase(modelgate_requests_total{arm="challenger",model="m"}[60s]))'
    )
    # Verified beside the champion (no traffic), then half the traffic.
    assert len(world.verified_challengers) == 1
    assert [(s.weight, s.mirror, s.champion) for s in world.splits] == [(50, False, "team/m-1")]
    assert world.deployments["production"].release == "team/m-2"
    assert "production" not in world.challengers
    kinds = events(plans)
    assert (
        kinds.index("ExperimentSized") < kinds.index("TrafficSplit") < kinds.index("ChallengerWon")
    )
    assert condition(release, "Ready")[0] == "True"


def test_a_guardrail_proven_worse_rolls_back_at_once() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36, latency=0.090)))
    champion_live(world)
    release, plans, _ = run(newer_release(), world, rollout_envs(experiment()), hours=1)
    assert release.status is not None
    assert release.status.phase == "RolledBack"
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.phase == "RolledBack"
    latency = next(m for m in judged.metrics if m.name == "latency")
    assert latency.verdict == "Worse"
    assert "guardrail failed: latency" in (judged.message or "")
    assert judged.decided_at is not None
    assert judged.split_at is not None
    # At the first looks: one minute of traffic shows 40 ms worse.
    decided = datetime.fromisoformat(judged.decided_at.replace("Z", "+00:00"))
    split = datetime.fromisoformat(judged.split_at.replace("Z", "+00:00"))
    assert decided - split <= timedelta(minutes=2)
    assert [r.release for r in world.removed] == ["team/m-2"]
    assert world.deployments["production"].release == "team/m-1"
    assert "production" not in world.challengers
    stalled = condition(release, "Stalled")
    assert stalled[:2] == ("True", "RolledBack")
    assert "guardrail failed: latency" in stalled[2]
    assert "the champion keeps all traffic" in condition(release, "Ready")[2]
    assert "ChallengerLost" in events(plans)
    # Level-based: reconciling again deploys nothing.
    again = reconcile(release, make_gate(), rollout_envs(experiment()), world.observed(), NOW)
    assert again.actions == []


def test_no_difference_ends_inconclusive_at_the_deadline_and_rolls_back() -> None:
    world = BesideWorld(Traffic())
    champion_live(world)
    release, plans, _ = run(newer_release(), world, rollout_envs(experiment(deadline="2h")))
    assert release.status is not None
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.phase == "Inconclusive"
    assert judged.decided_at == judged.deadline
    assert "deadline passed undecided" in (judged.message or "")
    assert release.status.phase == "RolledBack"
    assert world.deployments["production"].release == "team/m-1"
    assert "RolloutInconclusive" in events(plans)


def test_the_policy_may_promote_an_inconclusive_challenger() -> None:
    world = BesideWorld(Traffic())
    champion_live(world)
    envs = rollout_envs(experiment(deadline="2h", onInconclusive="Promote"))
    release, _, _ = run(newer_release(), world, envs)
    assert release.status is not None
    assert release.status.phase == "Released"
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.phase == "Inconclusive"
    assert world.deployments["production"].release == "team/m-2"


def test_an_arm_starved_of_traffic_is_inconclusive_never_promoted() -> None:
    # 99.9 % of the challenger's share is lost: far better, but never measured enough.
    world = BesideWorld(Traffic(rate=2.0, challenger=Arm(approval=0.6), lost=0.999))
    champion_live(world)
    release, _, _ = run(newer_release(), world, rollout_envs(experiment(deadline="1h")))
    assert release.status is not None
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.phase == "Inconclusive"
    primary = next(m for m in judged.metrics if m.name == "approval-rate")
    assert primary.challenger is not None
    assert primary.challenger.samples < 200
    assert primary.verdict == "Undecided"
    assert world.deployments["production"].release == "team/m-1"


CANARY = {
    "strategy": "Canary",
    "canary": {"steps": [{"weight": 10, "duration": "10m"}, {"weight": 50, "duration": "10m"}],
               "minSamples": 100},
    "metrics": [LATENCY],
}  # fmt: skip


def test_a_canary_moves_through_its_steps_then_takes_over() -> None:
    world = BesideWorld(Traffic())
    champion_live(world)
    release, plans, _ = run(newer_release(), world, rollout_envs(CANARY), hours=1)
    assert release.status is not None
    assert release.status.phase == "Released"
    assert [s.weight for s in world.splits] == [10, 50]
    assert events(plans).count("CanaryStepPassed") == 1
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.phase == "Promoted"
    assert judged.step == 2
    assert world.deployments["production"].release == "team/m-2"


def test_a_canary_step_that_hurts_latency_rolls_back() -> None:
    world = BesideWorld(Traffic(challenger=Arm(latency=0.080)))
    champion_live(world)
    release, _, _ = run(newer_release(), world, rollout_envs(CANARY), hours=1)
    assert release.status is not None
    assert release.status.phase == "RolledBack"
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.step == 1
    assert [s.weight for s in world.splits] == [10]
    assert world.deployments["production"].release == "team/m-1"


SHADOW = {"strategy": "Shadow", "shadow": {"duration": "30m", "maxDisagreement": 0.02}}


def test_a_shadow_that_agrees_takes_over_after_its_duration() -> None:
    world = BesideWorld(Traffic(challenger=Arm(disagreement=0.01)))
    champion_live(world)
    release, _, asked = run(newer_release(), world, rollout_envs(SHADOW), hours=1)
    assert release.status is not None
    assert release.status.phase == "Released"
    assert [(s.weight, s.mirror) for s in world.splits] == [(0, True)]
    judged = release.status.environments[1].judged
    assert judged is not None
    assert judged.shadow is not None
    assert judged.shadow.rows == 36_000
    assert judged.shadow.requests == 36_000
    assert judged.shadow.disagreements == 360
    assert judged.decided_at == judged.deadline
    assert any(q.query.startswith("sum(increase(modelgate_shadow_requests_total{") for q in asked)


def test_a_shadow_that_disagrees_is_caught_and_removed() -> None:
    world = BesideWorld(Traffic(challenger=Arm(disagreement=0.08)))
    champion_live(world)
    release, _, _ = run(newer_release(), world, rollout_envs(SHADOW), hours=1)
    assert release.status is not None
    assert release.status.phase == "RolledBack"
    judged = release.status.environments[1].judged
    assert judged is not None
    assert "disagreement 8.00% above 2.00%" in (judged.message or "")
    assert world.deployments["production"].release == "team/m-1"
    assert [r.release for r in world.removed] == ["team/m-2"]


def test_a_challenger_that_fails_verification_is_removed_before_any_traffic() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.5)))
    champion_live(world)
    world.verification = "Failed"
    release, _, _ = run(newer_release(), world, rollout_envs(experiment()), hours=1)
    assert release.status is not None
    assert release.status.phase == "RolledBack"
    assert world.splits == []
    assert [r.release for r in world.removed] == ["team/m-2"]
    production = release.status.environments[1]
    assert "verification of the challenger failed" in (production.message or "")
    assert world.rollbacks == []  # nothing is put back: the champion never left


def test_the_first_release_of_an_environment_replaces_there_is_nothing_to_judge() -> None:
    world = BesideWorld(Traffic())
    release, _ = drive(make_release(), world, envs=rollout_envs(experiment()))
    assert release.status is not None
    assert release.status.phase == "Released"
    assert world.challengers == {}
    assert world.splits == []
    assert release.status.environments[1].judged is None


def test_a_lost_status_write_never_deploys_a_second_challenger() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36)))
    champion_live(world)
    envs = rollout_envs(experiment())
    release, _, _ = run(newer_release(), world, envs, hours=0)
    assert "production" in world.challengers
    # The status the next reconcile reads lost the production entry.
    assert release.status is not None
    stale = release.model_copy(deep=True)
    assert stale.status is not None
    stale.status.environments = stale.status.environments[:1]
    plan = reconcile(stale, make_gate(), envs, world.observed(), NOW)
    assert not any(isinstance(a, Deploy) for a in plan.actions)
    # The judgement starts over on the challenger that runs (its looks were lost).
    production = plan.status.environments[1]
    assert production.phase == "Judging"
    assert production.judged is not None
    assert production.judged.champion == "team/m-1"


def test_a_driver_that_runs_no_challengers_blocks_rather_than_replace() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36)))
    champion_live(world)
    envs = rollout_envs(experiment())
    release = newer_release()
    for _ in range(10):
        plan = reconcile(
            release, make_gate(), envs, world.observed(), NOW,
            rollout_unsupported=lambda env: "this driver runs no challenger here",
        )  # fmt: skip
        release = world.act(release, plan, NOW)
        if not plan.actions:
            break
    assert release.status is not None
    assert release.status.phase == "Blocked"
    production = release.status.environments[1]
    assert production.phase == "Blocked"
    assert "policy.rollout strategy Experiment), and this driver runs no challenger here: " in (
        production.message or ""
    )
    assert world.deployments["production"].release == "team/m-1"
    assert world.challengers == {}
    assert condition(release, "Stalled")[:2] == ("True", "RolloutUnsupported")


def _metrics_over(release: ModelRelease, plans: list[Plan]) -> Metrics:
    """The operator's metrics as they would have followed these statuses."""
    metrics = Metrics()
    before = None
    for plan in plans:
        metrics.release_changed(release, before, plan.status, NOW)
        before = plan.status
    return metrics


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_won_experiment_is_counted_with_its_numbers_and_recorded_in_the_history() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36)))
    champion_live(world)
    release, plans, _ = run(newer_release(), world, rollout_envs(experiment()))
    metrics = _metrics_over(release, plans)
    where = {"namespace": "team", "environment": "production", "model": "m"}
    assert (
        _sample(
            metrics, "modelgate_rollouts_total", **where, strategy="Experiment", outcome="Promoted"
        )
        == 1
    )
    effect = _sample(metrics, "modelgate_rollout_effect", **where, metric="approval-rate")
    assert effect == pytest.approx(0.06, abs=1e-3)
    p_value = _sample(metrics, "modelgate_rollout_p_value", **where, metric="approval-rate")
    assert p_value is not None
    assert p_value < 0.05
    assert _sample(metrics, "modelgate_rollout_weight", **where) == 0  # decided
    # The deploy that made it live carries the judgement (history, commit).
    [took_over] = [d for d in world.deploys if d.environment == "production" and not d.challenger
                   and d.release == "team/m-2"]  # fmt: skip
    assert took_over.judged is not None
    assert took_over.judged.startswith("Experiment against team/m-1: the challenger is better")
    assert "approval-rate: challenger +0.06" in took_over.judged


def test_a_lost_experiment_is_no_change_failure() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36, latency=0.090)))
    champion_live(world)
    release, plans, _ = run(newer_release(), world, rollout_envs(experiment()), hours=1)
    metrics = _metrics_over(release, plans)
    where = {"namespace": "team", "environment": "production", "model": "m"}
    assert (
        _sample(
            metrics,
            "modelgate_rollouts_total",
            **where,
            strategy="Experiment",
            outcome="RolledBack",
        )
        == 1
    )
    # The live release never changed: no rollback, no failed verification.
    assert not _sample(metrics, "modelgate_rollbacks_total", **where)
    assert not _sample(metrics, "modelgate_verification_failures_total", **where)


def test_a_gitops_promotion_commit_says_how_it_was_judged() -> None:
    world = BesideWorld(Traffic(challenger=Arm(approval=0.36)))
    champion_live(world)
    run(newer_release(), world, rollout_envs(experiment()))
    [took_over] = [d for d in world.deploys if d.release == "team/m-2" and not d.challenger
                   and d.environment == "production"]  # fmt: skip
    message = promotion_message(took_over, "ident", "production")
    assert f"Judged on live traffic: {took_over.judged}" in message.splitlines()


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        (experiment(), "by replicas behind the model's Service"),
        ({**experiment(), "traffic": {"gateway": {"name": "public", "namespace": "edge"}}},
         "HTTPRoute on Gateway edge/public (exact weights)"),
        ({**experiment(stickyHeader="x-user-id"), "traffic": {"gateway": {"name": "public"}}},
         "HTTPRoute on Gateway public to Modelgate's router, sticky by x-user-id"),
        ({"strategy": "Shadow", "shadow": {"duration": "1m"},
          "traffic": {"gateway": {"name": "public"}}},
         "HTTPRoute on Gateway public to Modelgate's router, mirroring every request"),
    ],
)  # fmt: skip
def test_status_says_how_the_split_reaches_callers(rollout: dict[str, Any], expected: str) -> None:
    environment = rollout_envs(rollout)["production"]
    assert environment.spec.policy.rollout is not None
    assert traffic_description(environment.spec.policy.rollout).startswith(expected)


def test_a_deleted_release_leaves_no_challenger_of_its_own_behind() -> None:
    environments = rollout_envs(experiment())
    beside = {
        "production": DeploymentObservation(
            environment="production", release="team/m-2", image=CHALLENGER_IMAGE,
            config_hash="c" * 64, deployed_at=format_time(NOW), ready=True, weight=50,
        ),
        # Another release's challenger, and one where no environment is known.
        "staging": DeploymentObservation(
            environment="staging", release="team/m-3", image=CHALLENGER_IMAGE,
            config_hash="c" * 64, deployed_at=format_time(NOW), ready=True,
        ),
        "gone": DeploymentObservation(
            environment="gone", release="team/m-2", image=CHALLENGER_IMAGE,
            config_hash="c" * 64, deployed_at=format_time(NOW), ready=True,
        ),
    }  # fmt: skip
    [removal] = removals_for_deleted("team/m-2", "credit-risk", environments, beside)
    assert removal == RemoveChallenger(
        environment="production", namespace=environments["production"].spec.namespace,
        model="credit-risk", release="team/m-2", reason="release team/m-2 was deleted",
    )  # fmt: skip
    assert removals_for_deleted("team/m-9", "credit-risk", environments, beside) == []
