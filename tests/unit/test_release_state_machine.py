"""A model-based test of the reconcile core: hypothesis drives one release
through random sequences of edits (overrides valid, invalid and leaking; an
Environment's config, rules and policy; the gate's threshold), approvals,
time passing, failing verifications and driver restarts that replay an older
status, and checks the core's promises after every step.

The world below performs the core's actions the way the backends do: a
deploy makes the release live with that config and rollout, a rollback puts
back the previous config of the release (or the previous release), a
verification Job passes or fails as the step says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from modelgate.api import Environment, ModelRelease, QualityGate
from modelgate.api.common import format_time
from modelgate.api.environment import EnvironmentStatus, Promotion
from modelgate.api.modelrelease import (
    ArtifactRecord,
    CheckResult,
    EnvironmentPhase,
    GateStatus,
    ModelReleaseStatus,
)
from modelgate.envconfig import validate_config
from modelgate.promotion import (
    Deploy,
    DeploymentObservation,
    EvaluateGate,
    Observed,
    Rollback,
    StartTraining,
    StartVerification,
    TrainingObservation,
    reconcile,
)
from modelgate.promotion.conditions import find
from modelgate.promotion.reconcile import gating_conditions

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IMAGE = "registry.example.com/m@sha256:" + "ab" * 32
PREDICTIONS = ArtifactRecord(name="predictions", uri="file:///p", sha256="1" * 64, size=10)
MEASURED_AUC = 0.9  # what the gate measures on the candidate's predictions
URLS = {
    "valid": "https://features.{env}.example.com",
    "valid-2": "https://features-2.{env}.example.com",
    "invalid": "not a url",
    "leak": "https://features.backtest.example.com",
}
# What a Stalled release's message must say for each reason: the fix.
FIXES = {
    "ConfigRuleViolated": "fix:",
    "ConfigChangeRolledBack": "change the config again",
    "RolledBack": "put back",
    "VerificationFailed": "verification failed",
    "GateFailed": "gate Failed",
    "LiveConfigViolatesRules": "fix",
}


def environment(name: str, **spec: Any) -> Environment:
    return Environment.model_validate(
        {"metadata": {"name": name, "namespace": "team"}, "spec": spec}
    )


@dataclass
class Live:
    observation: DeploymentObservation
    config: dict[str, str]


@dataclass
class World:
    """Performs the core's actions as the backends do."""

    now: datetime = START
    training: TrainingObservation | None = None
    live: dict[str, Live] = field(default_factory=dict)
    history: dict[str, list[Live]] = field(default_factory=dict)
    verifications: dict[str, TrainingObservation] = field(default_factory=dict)
    next_verification: str = "Succeeded"
    deploys: list[tuple[Deploy, dict[str, Environment]]] = field(default_factory=list)
    # Each Environment's status.history as the handler records it, newest first.
    promotions: dict[str, list[Promotion]] = field(default_factory=dict)

    def record(self, environment: str, live: DeploymentObservation, rolled_back: bool) -> None:
        entry = Promotion(
            release=live.release.split("/", 1)[1],
            image=live.image,
            config_hash=live.config_hash,
            deployed_at=format_time(self.now),
            rolled_back=rolled_back,
            rollout=live.rollout,
        )
        self.promotions[environment] = [entry, *self.promotions.get(environment, [])][:10]

    def observed(self) -> Observed:
        return Observed(
            training=self.training,
            deployments={name: live.observation for name, live in self.live.items()},
            verifications=dict(self.verifications),
        )

    def act(
        self,
        status: ModelReleaseStatus,
        action: Any,
        environments: dict[str, Environment],
        gate_min: float,
    ) -> None:
        if isinstance(action, StartTraining):
            self.training = TrainingObservation(
                action.job_name, "Succeeded", artifacts=(PREDICTIONS,)
            )
        elif isinstance(action, EvaluateGate):
            passed = gate_min <= MEASURED_AUC
            outcome = "Passed" if passed else "Failed"
            status.gate = GateStatus(
                inputs_hash=action.inputs_hash,
                outcome=outcome,
                evaluated_at=format_time(self.now),
                passed=int(passed),
                failed=int(not passed),
                checks=[
                    CheckResult(
                        name="auc",
                        kind="metric",
                        severity="blocking",
                        outcome=outcome,
                        value=MEASURED_AUC,
                        min=gate_min,
                        message=f"roc_auc {MEASURED_AUC}",
                    )
                ],
            )
        elif isinstance(action, Deploy):
            self.deploys.append(
                (action, {n: e.model_copy(deep=True) for n, e in environments.items()})
            )
            before = self.live.get(action.environment)
            if before is not None:
                self.history.setdefault(action.environment, []).append(before)
            self.live[action.environment] = Live(
                DeploymentObservation(
                    environment=action.environment,
                    release=action.release,
                    image=action.image,
                    config_hash=action.config_hash,
                    deployed_at=format_time(self.now),
                    predictions=action.predictions,
                    rollout=action.rollout,
                ),
                dict(action.config),
            )
            self.record(action.environment, self.live[action.environment].observation, False)
        elif isinstance(action, StartVerification):
            self.verifications[action.job_name] = TrainingObservation(
                action.job_name, self.next_verification, message="answers differ"
            )
        elif isinstance(action, Rollback):
            current = self.live.get(action.environment)
            if current is None or current.observation.release != action.release:
                return
            earlier = self.history.get(action.environment, [])
            if action.config_hash is not None:
                match = [
                    e
                    for e in earlier
                    if e.observation.release == action.release
                    and e.observation.config_hash == action.config_hash
                ]
                if current.observation.config_hash == action.config_hash:
                    return
                if match:
                    self.live[action.environment] = match[-1]
                    self.record(action.environment, match[-1].observation, True)
                    return
            others = [e for e in earlier if e.observation.release != action.release]
            if others:
                self.live[action.environment] = others[-1]
                self.record(action.environment, others[-1].observation, True)
            else:
                del self.live[action.environment]


class ReleaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.gate_min = 0.8
        self.overrides: dict[str, str] = {}  # environment -> FEATURE_STORE_URL kind
        self.extra: dict[str, str] = {}  # environment -> an Environment config value
        self.forbid_backtest = True
        self.require_approval = False
        self.frozen = False
        self.soak: str | None = None
        self.verify_production = True
        self.verify_staging = True
        self.approvals: list[dict[str, Any]] = []
        self.generation = 1
        self.status: ModelReleaseStatus | None = None
        self.statuses: list[ModelReleaseStatus] = []  # every status written, oldest first
        self.reached: set[str] = set()
        self.settle()

    # -- the declared objects ------------------------------------------------

    def environments(self) -> dict[str, Environment]:
        production_rules: list[dict[str, Any]] = [
            {"key": "FEATURE_STORE_URL", "required": True, "type": "url"}
        ]
        if self.forbid_backtest:
            production_rules.append({"key": "FEATURE_STORE_URL", "forbid": ["backtest"]})
        policy: dict[str, Any] = {"requireApproval": self.require_approval}
        if self.soak:
            policy["soak"] = self.soak
        if self.frozen:
            policy["freezeWindows"] = [
                {
                    "name": "change-freeze",
                    "start": format_time(self.world.now - timedelta(hours=1)),
                    "end": format_time(self.world.now + timedelta(hours=6)),
                }
            ]
        production: dict[str, Any] = {
            "tier": "production",
            "namespace": "ml-production",
            "promotesFrom": "staging",
            "config": [
                {"name": "FEATURE_STORE_URL", "value": "https://features.production.example.com"},
                *(
                    [{"name": "EXTRA", "value": self.extra["production"]}]
                    if "production" in self.extra
                    else []
                ),
            ],
            "configRules": production_rules,
            "policy": policy,
        }
        if self.verify_production:
            production["verification"] = {"image": "verify:1", "command": ["verify"]}
        staging_verification: dict[str, Any] = (
            {"verification": {"image": "verify:1", "command": ["verify"]}}
            if self.verify_staging
            else {}
        )
        declared = {
            "staging": environment(
                "staging",
                tier="preproduction",
                namespace="ml-staging",
                config=[
                    {"name": "FEATURE_STORE_URL", "value": "https://features.staging.example.com"},
                    *(
                        [{"name": "EXTRA", "value": self.extra["staging"]}]
                        if "staging" in self.extra
                        else []
                    ),
                ],
                configRules=[{"key": "FEATURE_STORE_URL", "required": True, "type": "url"}],
                **staging_verification,
            ),
            "production": environment("production", **production),
        }
        return {
            name: env.model_copy(
                update={"status": EnvironmentStatus(history=self.world.promotions.get(name, []))}
            )
            for name, env in declared.items()
        }

    def gate(self) -> QualityGate:
        return QualityGate.model_validate(
            {
                "metadata": {"name": "gate", "namespace": "team"},
                "spec": {
                    "task": "binary",
                    "checks": [
                        {"name": "auc", "metric": {"name": "roc_auc", "min": self.gate_min}}
                    ],
                },
            }
        )

    def release(self, status: ModelReleaseStatus | None) -> ModelRelease:
        config = [
            {
                "environment": env,
                "values": [{"name": "FEATURE_STORE_URL", "value": URLS[kind].format(env=env)}],
            }
            for env, kind in sorted(self.overrides.items())
        ]
        return ModelRelease.model_validate(
            {
                "metadata": {"name": "m-1", "namespace": "team", "generation": self.generation},
                "spec": {
                    "model": {"name": "m", "version": "1.0.0"},
                    "image": IMAGE,
                    "training": {
                        "image": "trainer:1",
                        "data": {"train": "t.csv", "evaluation": "e.csv", "target": "y"},
                    },
                    "gate": {"name": "gate"},
                    "promotion": {
                        "environments": ["staging", "production"],
                        "config": config,
                        "approvals": self.approvals,
                    },
                },
                "status": status.wire() if status is not None else None,
            }
        )

    # -- driving the core ----------------------------------------------------

    def settle(self, status: ModelReleaseStatus | None = None, steps: int = 25) -> None:
        """Reconcile until the core asks for nothing more (as a driver does)."""
        current = status if status is not None else self.status
        environments = self.environments()
        for _ in range(steps):
            plan = reconcile(
                self.release(current),
                self.gate(),
                environments,
                self.world.observed(),
                self.world.now,
            )
            for action in plan.actions:
                self.world.act(plan.status, action, environments, self.gate_min)
            current = plan.status
            self.statuses.append(current.model_copy(deep=True))
            self.check(current, environments)
            if not plan.actions:
                break
        self.status = current

    def edit(self) -> None:
        self.generation += 1

    # -- rules ---------------------------------------------------------------

    @rule(env=st.sampled_from(["staging", "production"]), kind=st.sampled_from(sorted(URLS)))
    def edit_override(self, env: str, kind: str) -> None:
        self.overrides[env] = kind
        self.edit()
        self.settle()

    @rule(env=st.sampled_from(["staging", "production"]))
    def drop_override(self, env: str) -> None:
        self.overrides.pop(env, None)
        self.edit()
        self.settle()

    @rule(env=st.sampled_from(["staging", "production"]), value=st.sampled_from(["a", "b", "c"]))
    def edit_environment_config(self, env: str, value: str) -> None:
        self.extra[env] = value
        self.settle()

    @rule()
    def toggle_backtest_rule(self) -> None:
        self.forbid_backtest = not self.forbid_backtest
        self.settle()

    @rule()
    def toggle_approval_policy(self) -> None:
        self.require_approval = not self.require_approval
        self.settle()

    @rule()
    def toggle_freeze(self) -> None:
        self.frozen = not self.frozen
        self.settle()

    @rule(soak=st.sampled_from([None, "30m", "2h"]))
    def set_soak(self, soak: str | None) -> None:
        self.soak = soak
        self.settle()

    @rule()
    def toggle_production_verification(self) -> None:
        self.verify_production = not self.verify_production
        self.settle()

    @rule()
    def toggle_staging_verification(self) -> None:
        self.verify_staging = not self.verify_staging
        self.settle()

    @rule(minimum=st.sampled_from([0.5, 0.8, 0.95]))
    def edit_gate_threshold(self, minimum: float) -> None:
        self.gate_min = minimum
        self.settle()

    @rule(for_the_current_config=st.booleans())
    def approve(self, for_the_current_config: bool) -> None:
        approval: dict[str, Any] = {"environment": "production", "approvedBy": "alice"}
        if for_the_current_config:
            entry = next(
                (
                    e
                    for e in (self.status.environments if self.status else [])
                    if e.name == "production"
                ),
                None,
            )
            if entry is None or entry.config_hash is None:
                return
            approval["configHash"] = entry.config_hash[:12]
        if approval in self.approvals:
            return
        self.approvals.append(approval)
        self.edit()
        self.settle()

    @rule(hours=st.sampled_from([0.25, 1, 3, 8]))
    def time_passes(self, hours: float) -> None:
        self.world.now += timedelta(hours=hours)
        self.settle()

    @rule(outcome=st.sampled_from(["Succeeded", "Failed"]))
    def verifications_will(self, outcome: str) -> None:
        self.world.next_verification = outcome

    @precondition(lambda self: len(self.statuses) >= 2)
    @rule(back=st.integers(min_value=1, max_value=4))
    def driver_restarts_and_replays_an_older_status(self, back: int) -> None:
        """A restart, a lost status write or a stale cache: the next pass
        starts from a status written some steps ago."""
        older = self.statuses[-min(back + 1, len(self.statuses))]
        self.settle(older.model_copy(deep=True))

    # -- what must hold ------------------------------------------------------

    def check(self, status: ModelReleaseStatus, environments: dict[str, Environment]) -> None:
        release = self.release(status)
        ready = find(status.conditions, "Ready")
        assert ready is not None
        assert status.observed_generation == self.generation
        if ready.status == "True":
            assert ready.observed_generation == self.generation
            for kind in gating_conditions(release, environments, status):
                found = find(status.conditions, kind)
                assert found is not None, kind
                assert found.status == "True", (kind, found)
                assert found.observed_generation == self.generation, kind
        stalled = find(status.conditions, "Stalled")
        if stalled is not None and stalled.status == "True":
            assert ready.status == "False"
            assert ready.reason
            assert ready.message
            fix = FIXES.get(ready.reason)
            assert fix is None or fix in ready.message, (ready.reason, ready.message)
        for entry in status.environments:
            if entry.phase in (EnvironmentPhase.BLOCKED, EnvironmentPhase.WAITING):
                assert entry.message, entry
        # Once reached, an environment is never forgotten (it would be
        # deployed again over whatever replaced it).
        by_name = {e.name: e for e in status.environments}
        for name in self.reached:
            entry = by_name.get(name)
            assert entry is not None, name
            assert entry.deployed_at is not None or entry.phase in (
                EnvironmentPhase.SUPERSEDED,
                EnvironmentPhase.ROLLED_BACK,
            ), entry
        self.reached |= {e.name for e in status.environments if e.deployed_at is not None}

    @invariant()
    def every_deploy_passed_the_rules_in_force_when_it_was_made(self) -> None:
        for deploy, environments in self.world.deploys:
            env = environments[deploy.environment]
            assert validate_config(env, deploy.config, environments.values()) == [], deploy

    @invariant()
    def no_revision_is_deployed_twice(self) -> None:
        for name in ("staging", "production"):
            numbers = [d.rollout for d, _ in self.world.deploys if d.environment == name]
            assert numbers == sorted(set(numbers)), (name, numbers)

    @invariant()
    def a_refused_config_never_reaches_a_live_model(self) -> None:
        production = self.world.live.get("production")
        if production is None or self.status is None:
            return
        entry = next(e for e in self.status.environments if e.name == "production")
        if entry.phase == EnvironmentPhase.DEPLOYED:
            # What the release says is deployed is what is live.
            assert production.observation.config_hash == entry.config_hash
        if entry.phase == EnvironmentPhase.BLOCKED:
            assert production.observation.config_hash != entry.config_hash


ReleaseMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
test_release_state_machine = ReleaseMachine.TestCase


def test_a_change_after_a_lost_status_never_reuses_a_rollout_number() -> None:
    """Found by the machine above: a config change is rolled out as rollout 2,
    fails its verification and is put back; the driver then works from an
    older status that never recorded rollout 2. The next change is rollout 3:
    the Environment's history kept what the status lost."""
    machine = ReleaseMachine()
    machine.verifications_will(outcome="Failed")
    machine.edit_environment_config(env="staging", value="b")
    machine.driver_restarts_and_replays_an_older_status(back=4)
    machine.edit_environment_config(env="staging", value="a")
    machine.no_revision_is_deployed_twice()
    rollouts = [d.rollout for d, _ in machine.world.deploys if d.environment == "staging"]
    assert rollouts == [1, 2, 3]
