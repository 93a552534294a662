"""The reconciliation core: from what is declared and observed, the next step.

``reconcile`` is a pure function. It reads a ModelRelease (with the status it
recorded so far), its QualityGate, the Environments and what the backends
observe (training run, deployments), and returns the new status, the actions
to perform and the events to emit. Local mode and the operator both drive it,
so they cannot disagree about what a release should do next.

Safety rules it keeps:
- a deploy is only asked for when the observed deployment differs, so a
  restart or a duplicate event never deploys twice;
- an environment this release reached stays recorded as reached even after a
  later release replaced it there (Superseded), so an old release is never
  re-deployed over a newer one;
- anything not measured or not found blocks (fail closed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from modelgate.api.common import format_time, parse_duration, parse_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    DIGEST_PATTERN,
    Approval,
    ArtifactRecord,
    CheckOutcome,
    EnvironmentPhase,
    EnvironmentProgress,
    GateStatus,
    ModelRelease,
    ModelReleaseStatus,
    Phase,
    Serving,
    TrainingStatus,
)
from modelgate.api.qualitygate import Check, QualityGate, Task
from modelgate.envconfig import Violation, config_hash, merge_config, validate_config
from modelgate.promotion import conditions as cond
from modelgate.promotion.paths import path_problems
from modelgate.trainer import contract

# How long to wait before looking again when waiting on something external.
WAIT_FOR_REFERENCE = timedelta(seconds=30)
WAIT_FOR_ROLLOUT = timedelta(seconds=10)
JOB_NAME_MAX = 63


# -- observations -------------------------------------------------------------


@dataclass(frozen=True)
class TrainingObservation:
    """What the runner sees of the training run named ``job_name``."""

    job_name: str
    state: str  # Running | Succeeded | Failed
    started_at: str | None = None
    completed_at: str | None = None
    message: str | None = None
    artifacts: tuple[ArtifactRecord, ...] = ()
    retries: int = 0  # failed pods the Job retried


@dataclass(frozen=True)
class DeploymentObservation:
    """What is live in one environment right now."""

    environment: str
    release: str  # namespace/name of the ModelRelease live there
    image: str
    config_hash: str
    deployed_at: str
    ready: bool = True
    predictions: ArtifactRecord | None = None
    # GitOps: the commit that put it there, and what the rollout waits for.
    revision: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Observed:
    training: TrainingObservation | None = None
    deployments: dict[str, DeploymentObservation] = field(default_factory=dict)
    # Verification Job name -> its run (same shape as a training run).
    verifications: dict[str, TrainingObservation] = field(default_factory=dict)


# -- actions ------------------------------------------------------------------


@dataclass(frozen=True)
class StartTraining:
    job_name: str
    key: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]


@dataclass(frozen=True)
class EvaluateGate:
    inputs_hash: str
    gate_name: str | None
    task: Task
    positive_label: str
    checks: tuple[Check, ...]
    predictions: ArtifactRecord
    metadata: ArtifactRecord | None
    train_data: str
    evaluation_data: str
    id_column: str | None
    # Environment -> predictions of the release live there (None: nothing live).
    baselines: dict[str, ArtifactRecord | None]


@dataclass(frozen=True)
class Deploy:
    environment: str
    namespace: str
    release: str
    model: str
    image: str
    config: dict[str, str]
    config_hash: str
    predictions: ArtifactRecord | None
    # For the record a GitOps commit keeps (message and trailers).
    model_version: str | None = None
    gate: str | None = None  # e.g. "credit-gate Passed (13 passed, 0 failed, 1 inconclusive)"
    approved_by: str | None = None
    approved_at: str | None = None
    # The container command when it is not the image's own: the reference
    # server runs `python -m modelgate.server` from the operator's image.
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartVerification:
    """Run the environment's post-deployment test against the deployed model."""

    job_name: str
    environment: str
    namespace: str
    release: str
    model: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    timeout: timedelta
    predictions: ArtifactRecord | None
    # Settings of the built-in check (MODELGATE_VERIFY_*), empty for an image's own test.
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Rollback:
    """Put back what was live in ``environment`` before ``release``."""

    environment: str
    namespace: str
    release: str
    model: str


Action = StartTraining | EvaluateGate | Deploy | StartVerification | Rollback


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: ModelReleaseStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: timedelta | None = None


# -- keys and names -----------------------------------------------------------


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def gate_training_inputs(release: ModelRelease, gate: QualityGate | None) -> dict[str, str]:
    """Contract variables that come from the gate: the task, the positive label
    and the behaviour tests, which must run where the model is."""
    task = gate.spec.task if gate is not None else release.spec.gate.task
    behavior = [
        {"name": c.name, **c.behavior.wire()}
        for c in effective_checks(release, gate)
        if c.behavior is not None
    ]
    inputs = {
        contract.TASK: str(task),
        contract.POSITIVE_LABEL: gate.spec.positive_label if gate is not None else "1",
    }
    if behavior:
        inputs[contract.BEHAVIOR_TESTS] = json.dumps(behavior, sort_keys=True)
    return inputs


def training_key(release: ModelRelease, gate: QualityGate | None) -> str:
    """Changes exactly when the training inputs change (then it retrains)."""
    return canonical_hash(
        {
            "training": release.spec.training.wire(),
            "model": release.spec.model.wire(),
            "gate": gate_training_inputs(release, gate),
        }
    )[:16]


def training_job_name(release: ModelRelease, key: str) -> str:
    suffix = f"-train-{key[:8]}"
    return release.name[: JOB_NAME_MAX - len(suffix)].rstrip("-") + suffix


def effective_checks(release: ModelRelease, gate: QualityGate | None) -> list[Check]:
    checks = list(gate.spec.checks) if gate is not None else []
    names = {c.name for c in checks}
    checks.extend(c for c in release.spec.gate.checks if c.name not in names)
    return checks


def gate_inputs_hash(
    task: Task, positive_label: str, checks: list[Check], predictions: ArtifactRecord
) -> str:
    return canonical_hash(
        {
            "task": str(task),
            "positiveLabel": positive_label,
            "checks": [c.wire() for c in checks],
            "predictions": predictions.sha256,
        }
    )[:16]


def release_key(release: ModelRelease) -> str:
    return f"{release.namespace}/{release.name}"


# -- the core -----------------------------------------------------------------


@dataclass
class _Context:
    release: ModelRelease
    now: datetime
    previous: ModelReleaseStatus
    status: ModelReleaseStatus
    plan: Plan
    environments: dict[str, Environment]
    # The operator's model server image (reference serving, built-in verification).
    server_image: str | None = None

    @property
    def image(self) -> str:
        """What is promoted: the release's image, or with serving ReferenceServer
        the reference server's (the release's own override first)."""
        spec = self.release.spec
        if spec.image is not None:
            return spec.image
        return self.server_image or ""

    @functools.cached_property
    def serving(self) -> dict[str, str]:
        """The artifact the reference server loads, once training has recorded
        it (asked for only while promoting, when the artifacts are final)."""
        return serving_config(self.release, self.status.artifacts)

    def condition(self, kind: str, ok: bool | None, reason: str, message: str) -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, kind, ok, reason, message, self.release.generation, self.now
        )


def reconcile(
    release: ModelRelease,
    gate: QualityGate | None,
    environments: dict[str, Environment],
    observed: Observed,
    now: datetime,
    training_env: dict[str, str] | None = None,
    server_image: str | None = None,
) -> Plan:
    """Decide the next status and actions for ``release``.

    ``training_env`` holds extra contract variables the driver needs (e.g. the
    output location); the core adds the ones derived from the spec.
    ``server_image`` is the driver's reference model server (serving
    ReferenceServer, built-in verification).
    """
    previous = release.status or ModelReleaseStatus()
    status = previous.model_copy(deep=True)
    status.observed_generation = release.generation
    plan = Plan(status=status)
    ctx = _Context(release, now, previous, status, plan, environments, server_image)

    if _references_missing(ctx, gate, environments):
        return _finish(ctx)
    job_env = {**gate_training_inputs(release, gate), **(training_env or {})}
    if not _train(ctx, gate, observed, job_env):
        return _finish(ctx)
    assert gate is not None or release.spec.gate.name is None
    if not _evaluate(ctx, gate, observed):
        return _finish(ctx)
    _promote(ctx, environments, observed)
    return _finish(ctx)


def _references_missing(
    ctx: _Context, gate: QualityGate | None, environments: dict[str, Environment]
) -> bool:
    spec = ctx.release.spec
    missing: list[str] = []
    if spec.gate.name is not None and gate is None:
        missing.append(f"QualityGate {spec.gate.name!r}")
    missing.extend(
        f"Environment {name!r}" for name in spec.promotion.environments if name not in environments
    )
    if missing:
        message = (
            f"{' and '.join(missing)} not found in namespace {ctx.release.namespace}; "
            "create it or fix the reference"
        )
        ctx.status.phase = Phase.PENDING
        ctx.condition(cond.READY, False, "ReferenceNotFound", message)
        ctx.condition(cond.RECONCILING, True, "WaitingForReferences", message)
        ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.STALLED)
        ctx.plan.requeue_after = WAIT_FOR_REFERENCE
        return True
    problems = path_problems(environments, spec.promotion.environments)
    if problems:
        message = "; ".join(problems)
        ctx.status.phase = Phase.BLOCKED
        ctx.condition(cond.READY, False, "PromotionPathInvalid", message)
        ctx.condition(cond.STALLED, True, "PromotionPathInvalid", message)
        return True
    return False


def _train(
    ctx: _Context, gate: QualityGate | None, observed: Observed, extra_env: dict[str, str]
) -> bool:
    """True once training succeeded and its artifacts are recorded."""
    release = ctx.release
    key = training_key(release, gate)
    job_name = training_job_name(release, key)
    run = (
        observed.training if observed.training and observed.training.job_name == job_name else None
    )
    recorded = (
        ctx.status.training if ctx.status.training and ctx.status.training.key == key else None
    )

    if recorded is not None and recorded.state == "Succeeded" and ctx.status.artifacts:
        return True
    if run is None:
        if recorded is not None and recorded.state == "Failed":
            _training_failed(ctx, recorded.message or "the training run failed")
            return False
        if ctx.status.training is not None and ctx.status.training.key != key:
            # The training spec changed: everything downstream is stale.
            ctx.status.artifacts = []
            ctx.status.gate = None
        ctx.status.training = TrainingStatus(
            job_name=job_name, key=key, state="Running", started_at=format_time(ctx.now)
        )
        ctx.status.phase = Phase.TRAINING
        ctx.condition(cond.TRAINED, None, "TrainingStarted", f"training run {job_name} started")
        _progressing(ctx, "Training", f"training run {job_name}")
        ctx.plan.actions.append(_start_training(release, key, job_name, extra_env))
        ctx.plan.events.append(Event("Normal", "TrainingStarted", f"started {job_name}"))
        return False
    ctx.status.training = TrainingStatus(
        job_name=job_name,
        key=key,
        state=run.state,
        started_at=run.started_at or (recorded.started_at if recorded else None),
        completed_at=run.completed_at,
        message=run.message,
        retries=run.retries,
    )
    if run.state == "Running":
        ctx.status.phase = Phase.TRAINING
        ctx.condition(cond.TRAINED, None, "TrainingRunning", f"training run {job_name} is running")
        _progressing(ctx, "Training", f"training run {job_name}")
        ctx.plan.requeue_after = WAIT_FOR_ROLLOUT
        return False
    if run.state == "Failed":
        _training_failed(ctx, run.message or "the training run failed")
        return False
    names = {a.name for a in run.artifacts}
    if "predictions" not in names:
        _training_failed(ctx, "the training run wrote no predictions (see the training contract)")
        return False
    ctx.status.artifacts = list(run.artifacts)
    ctx.condition(
        cond.TRAINED, True, "TrainingSucceeded", f"{job_name} recorded {', '.join(sorted(names))}"
    )
    ctx.plan.events.append(Event("Normal", "TrainingSucceeded", f"{job_name} succeeded"))
    return True


def _training_failed(ctx: _Context, message: str) -> None:
    ctx.status.phase = Phase.FAILED
    ctx.condition(cond.TRAINED, False, "TrainingFailed", message)
    _stalled(ctx, "TrainingFailed", f"training failed: {message}")


def _start_training(
    release: ModelRelease, key: str, job_name: str, extra_env: dict[str, str]
) -> StartTraining:
    training = release.spec.training
    env = {
        contract.TRAIN_DATA: training.data.train,
        contract.EVAL_DATA: training.data.evaluation,
        contract.TARGET: training.data.target,
        contract.PARAMS: json.dumps(training.params, sort_keys=True),
        contract.SEED: str(training.seed),
        contract.RELEASE: release_key(release),
        contract.MODEL_NAME: release.spec.model.name,
        contract.MODEL_VERSION: release.spec.model.version,
    }
    if training.data.id_column:
        env[contract.ID_COLUMN] = training.data.id_column
    env.update(extra_env)
    return StartTraining(
        job_name=job_name,
        key=key,
        image=training.image,
        command=tuple(training.command),
        args=tuple(training.args),
        env=env,
    )


def _evaluate(ctx: _Context, gate: QualityGate | None, observed: Observed) -> bool:
    """True once the gate passed for the current checks and predictions."""
    release = ctx.release
    task = gate.spec.task if gate is not None else release.spec.gate.task
    assert task is not None  # the model validator guarantees it
    positive = gate.spec.positive_label if gate is not None else "1"
    checks = effective_checks(release, gate)
    predictions = next(a for a in ctx.status.artifacts if a.name == "predictions")
    inputs = gate_inputs_hash(Task(task), positive, checks, predictions)
    result = ctx.status.gate
    if result is None or result.inputs_hash != inputs:
        ctx.status.gate = None
        ctx.status.phase = Phase.EVALUATING
        ctx.condition(cond.GATE_PASSED, None, "Evaluating", "evaluating the quality gate")
        _progressing(ctx, "Evaluating", "evaluating the quality gate")
        baselines = {
            c.baseline.environment: _live_predictions(observed, c.baseline.environment)
            for c in checks
            if c.baseline is not None
        }
        ctx.plan.actions.append(
            EvaluateGate(
                inputs_hash=inputs,
                gate_name=release.spec.gate.name,
                task=Task(task),
                positive_label=positive,
                checks=tuple(checks),
                predictions=predictions,
                metadata=next((a for a in ctx.status.artifacts if a.name == "metadata"), None),
                train_data=release.spec.training.data.train,
                evaluation_data=release.spec.training.data.evaluation,
                id_column=release.spec.training.data.id_column,
                baselines=baselines,
            )
        )
        return False
    summary = _gate_summary(result)
    if result.outcome != CheckOutcome.PASSED:
        ctx.status.phase = Phase.GATE_FAILED
        ctx.condition(cond.GATE_PASSED, False, f"Gate{result.outcome}", summary)
        _stalled(ctx, "GateFailed", summary)
        return False
    ctx.condition(cond.GATE_PASSED, True, "GatePassed", summary)
    return True


def _gate_record(result: GateStatus | None) -> str:
    if result is None:
        return "no gate"
    return (
        f"{result.name or 'inline'} {result.outcome} ({result.passed} passed, "
        f"{result.failed} failed, {result.inconclusive} inconclusive)"
    )


def _gate_summary(result: GateStatus) -> str:
    blocking = [
        c for c in result.checks if c.outcome != CheckOutcome.PASSED and c.severity == "blocking"
    ]
    warnings = [
        c for c in result.checks if c.outcome != CheckOutcome.PASSED and c.severity != "blocking"
    ]
    head = (
        f"gate {result.outcome}: {result.passed} passed, {result.failed} failed, "
        f"{result.inconclusive} inconclusive"
    )
    parts = [head]
    for severity, checks in (("blocking", blocking), ("warning", warnings)):
        # Checks that share an outcome and a reason (every check when the
        # predictions are unreadable) are named together, the reason once.
        grouped: dict[tuple[str, str], list[str]] = {}
        for check in checks:
            grouped.setdefault((str(check.outcome), check.message), []).append(check.name)
        for (outcome, message), names in grouped.items():
            parts.append(f"{severity} {', '.join(names)} {outcome}: {message}")
    return "; ".join(parts)


def _live_predictions(observed: Observed, environment: str) -> ArtifactRecord | None:
    live = observed.deployments.get(environment)
    return live.predictions if live is not None else None


def _promote(ctx: _Context, environments: dict[str, Environment], observed: Observed) -> None:
    release = ctx.release
    me = release_key(release)
    order = release.spec.promotion.environments
    previous = {p.name: p for p in ctx.previous.environments}
    progress: list[EnvironmentProgress] = []
    all_violations: list[Violation] = []
    configs: dict[str, tuple[dict[str, str], str]] = {}
    serving = ctx.serving
    for name in order:
        env = environments[name]
        merged = merge_config(env, release.overrides_for(name))
        # The artifact is part of what is deployed (and of its hash), not of
        # the config the rules judge: the operator writes those keys.
        configs[name] = (merged, config_hash({**merged, **serving}))
        all_violations.extend(validate_config(env, merged, environments.values()))

    if all_violations:
        ctx.condition(
            cond.CONFIG_VALID,
            False,
            "ConfigRuleViolated",
            "; ".join(v.describe() for v in all_violations),
        )
    else:
        ctx.condition(cond.CONFIG_VALID, True, "ConfigValid", "merged config passes every rule")

    blocker: tuple[str, str, bool] | None = None  # reason, message, stalled
    reached_before = True
    soaked_until: datetime | None = None
    for name in order:
        env = environments[name]
        merged, digest = configs[name]
        live = observed.deployments.get(name)
        earlier = previous.get(name)
        entry = EnvironmentProgress(name=name, phase=EnvironmentPhase.PENDING, config_hash=digest)
        mine = live is not None and live.release == me and live.image == ctx.image
        if earlier is not None and earlier.phase == EnvironmentPhase.ROLLED_BACK:
            # Verification failed here and the previous release was put back:
            # final for this release; never deploy it again.
            entry = earlier.model_copy()
            blocker = blocker or ("RolledBack", earlier.message or f"rolled back in {name}", True)
        elif earlier is not None and earlier.phase in (
            EnvironmentPhase.DEPLOYED,
            EnvironmentPhase.SUPERSEDED,
        ):
            # Reached before: never deploy again, even if replaced since.
            entry = earlier.model_copy()
            entry.phase = EnvironmentPhase.DEPLOYED if mine else EnvironmentPhase.SUPERSEDED
            if not mine:
                entry.message = f"replaced by {live.release if live else 'nothing'} since"
        elif not mine and (failed := _failed_verification(env, earlier, observed)) is not None:
            # Its verification failed and something else is live: rolled back
            # by a call whose status write this (stale or lost) status lacks.
            # The failed Job is the durable record; never deploy it again.
            entry = failed
            blocker = blocker or ("VerificationFailed", f"{name}: {failed.message}", True)
        elif mine and live is not None and live.config_hash == digest:
            entry.image, entry.deployed_at = live.image, live.deployed_at
            entry.revision = live.revision
            entry.approved_by = (earlier.approved_by if earlier is not None else None) or (
                _approver(release, name) if env.spec.policy.require_approval else None
            )
            entry.approved_at = (earlier.approved_at if earlier is not None else None) or (
                _approved_at(release, name) if env.spec.policy.require_approval else None
            )
            if not live.ready:
                entry.phase = EnvironmentPhase.DEPLOYING
                entry.message = live.message or "waiting for the rollout to become ready"
            else:
                entry, verdict = _verify(ctx, env, digest, observed, entry, earlier)
                blocker = blocker or verdict
        elif blocker is None and reached_before:
            entry, blocker = _try_deploy(ctx, env, merged, digest, soaked_until, entry)

        if entry.phase not in (EnvironmentPhase.DEPLOYED, EnvironmentPhase.SUPERSEDED):
            reached_before = False
            if entry.phase == EnvironmentPhase.DEPLOYING and blocker is None:
                blocker = ("Deploying", entry.message or f"deploying to {name}", False)
            if entry.phase == EnvironmentPhase.VERIFYING and blocker is None:
                blocker = ("Verifying", entry.message or f"verifying in {name}", False)
        else:
            soaked_until = _soak_end(env, entry)
        progress.append(entry)

    ctx.status.environments = progress
    reached = [p.name for p in progress if p.phase == EnvironmentPhase.DEPLOYED]
    ctx.status.live_in = reached[-1] if reached else None
    _verified_condition(ctx, progress, environments)
    if any(p.phase == EnvironmentPhase.ROLLED_BACK for p in progress):
        reason, message, _ = blocker or ("RolledBack", "rolled back", True)
        ctx.status.phase = Phase.ROLLED_BACK
        ctx.condition(cond.DEPLOYED, False, reason, message)
        _stalled(ctx, reason, message)
        return
    if blocker is None and reached_before:
        ctx.status.phase = Phase.RELEASED
        ctx.condition(cond.DEPLOYED, True, "Deployed", f"live in {', '.join(order)}")
        ctx.condition(cond.READY, True, "Released", f"released to {', '.join(order)}")
        ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.RECONCILING)
        ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.STALLED)
        return
    reason, message, stalled = blocker or ("Promoting", "promoting", False)
    ctx.condition(cond.DEPLOYED, False, reason, message)
    if stalled:
        ctx.status.phase = Phase.BLOCKED
        _stalled(ctx, reason, message)
    else:
        ctx.status.phase = Phase.PROMOTING
        _progressing(ctx, reason, message)


SERVER_COMMAND = ("python", "-m", "modelgate.server")
VERIFY_COMMAND = ("python", "-m", "modelgate.verify")


def serves_artifact(config: Mapping[str, str]) -> bool:
    """A deployed config that names a complete artifact for the reference server."""
    return all(key in config for key in contract.SERVER_INPUTS)


def serving_config(release: ModelRelease, artifacts: list[ArtifactRecord]) -> dict[str, str]:
    """What the reference server is told to load (empty for serving Image)."""
    if release.spec.serving != Serving.REFERENCE_SERVER:
        return {}
    found = {a.name: a for a in artifacts}
    config: dict[str, str] = {}
    for name, uri_key, sha_key in (
        ("model", contract.SERVER_MODEL_URI, contract.SERVER_MODEL_SHA256),
        ("metadata", contract.SERVER_METADATA_URI, contract.SERVER_METADATA_SHA256),
    ):
        if name in found:
            config[uri_key], config[sha_key] = found[name].uri, found[name].sha256
    return config


def verification_job_name(release: ModelRelease, environment: str, digest: str) -> str:
    """Deterministic per release, environment and config (a new config re-verifies)."""
    key = canonical_hash([release_key(release), release.spec.image, environment, digest])[:8]
    suffix = f"-verify-{key}"
    return release.name[: JOB_NAME_MAX - len(suffix)].rstrip("-") + suffix


def _verify(
    ctx: _Context,
    env: Environment,
    digest: str,
    observed: Observed,
    entry: EnvironmentProgress,
    earlier: EnvironmentProgress | None,
) -> tuple[EnvironmentProgress, tuple[str, str, bool] | None]:
    """The rollout is ready: verify it (if configured), roll back on failure."""
    release, name = ctx.release, env.name
    spec = env.spec.verification
    if spec is None:
        entry.phase = EnvironmentPhase.DEPLOYED
        ctx.plan.events.append(Event("Normal", "Deployed", f"{ctx.image} is live in {name}"))
        return entry, None
    job = verification_job_name(release, name, digest)
    entry.verification_job = job
    run = observed.verifications.get(job)
    if run is None or run.state == "Running":
        entry.phase = EnvironmentPhase.VERIFYING
        entry.message = f"verification {job} is running"
        if run is None:
            builtin = spec.served_predictions
            if builtin is not None and not ctx.server_image:
                message = (
                    f"environment {name} asks for the built-in verification, and the operator "
                    "has no image to run it with: set MODELGATE_SERVER_IMAGE (the chart does)"
                )
                entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
                return entry, ("VerificationUnavailable", message, True)
            ctx.plan.actions.append(
                StartVerification(
                    job_name=job,
                    environment=name,
                    namespace=env.spec.namespace,
                    release=release_key(release),
                    model=release.spec.model.name,
                    image=spec.image or ctx.server_image or "",
                    command=VERIFY_COMMAND if builtin is not None else tuple(spec.command),
                    args=tuple(spec.args),
                    timeout=parse_duration(spec.timeout),
                    predictions=next(
                        (a for a in ctx.status.artifacts if a.name == "predictions"), None
                    ),
                    env=tuple(sorted(builtin.env().items())) if builtin is not None else (),
                )
            )
            ctx.plan.events.append(Event("Normal", "VerificationStarted", f"{job} in {name}"))
        else:
            ctx.plan.requeue_after = _min_delay(ctx.plan.requeue_after, WAIT_FOR_ROLLOUT)
        return entry, None
    if run.state == "Succeeded":
        entry.phase = EnvironmentPhase.DEPLOYED
        entry.verified_at = run.completed_at or format_time(ctx.now)
        entry.message = None
        ctx.plan.events.append(Event("Normal", "Verified", f"{job} passed in {name}"))
        ctx.plan.events.append(Event("Normal", "Deployed", f"{ctx.image} is live in {name}"))
        return entry, None
    entry = _failed(env, entry, run)
    if entry.phase == EnvironmentPhase.ROLLED_BACK:
        ctx.plan.actions.append(
            Rollback(
                environment=name,
                namespace=env.spec.namespace,
                release=release_key(release),
                model=release.spec.model.name,
            )
        )
        ctx.plan.events.append(Event("Warning", "RolledBack", f"{name}: {entry.message}"))
    else:
        ctx.plan.events.append(Event("Warning", "VerificationFailed", f"{name}: {entry.message}"))
    return entry, ("VerificationFailed", f"{name}: {entry.message}", True)


def _failed(
    env: Environment, entry: EnvironmentProgress, run: TrainingObservation
) -> EnvironmentProgress:
    """``entry`` after its verification ``run`` failed: rolled back, or failed
    in place when the environment turns autoRollback off."""
    reason = run.message or "the verification Job failed"
    if env.spec.policy.auto_rollback:
        entry.phase = EnvironmentPhase.ROLLED_BACK
        entry.message = f"verification failed ({reason}); the previous release was put back"
    else:
        entry.phase = EnvironmentPhase.FAILED
        entry.message = f"verification failed ({reason}); autoRollback is off"
    return entry


def _failed_verification(
    env: Environment, earlier: EnvironmentProgress | None, observed: Observed
) -> EnvironmentProgress | None:
    """The progress of an environment whose recorded verification Job failed."""
    if earlier is None or not earlier.verification_job:
        return None
    run = observed.verifications.get(earlier.verification_job)
    if run is None or run.state != "Failed":
        return None
    return _failed(env, earlier.model_copy(), run)


def _verified_condition(
    ctx: _Context, progress: list[EnvironmentProgress], environments: dict[str, Environment]
) -> None:
    failed = [
        p for p in progress if p.phase in (EnvironmentPhase.ROLLED_BACK, EnvironmentPhase.FAILED)
    ]
    verifying = [p.name for p in progress if p.phase == EnvironmentPhase.VERIFYING]
    checked = [
        p.name
        for p in progress
        if p.verified_at and environments[p.name].spec.verification is not None
    ]
    if failed:
        message = "; ".join(f"{p.name}: {p.message}" for p in failed if p.message)
        ctx.condition(cond.VERIFIED, False, "VerificationFailed", message)
    elif verifying:
        ctx.condition(cond.VERIFIED, None, "Verifying", f"verifying in {', '.join(verifying)}")
    elif checked:
        ctx.condition(cond.VERIFIED, True, "Verified", f"verified in {', '.join(checked)}")


def _soak_end(env: Environment, entry: EnvironmentProgress) -> datetime | None:
    if env.spec.policy.soak is None or entry.deployed_at is None:
        return None
    since = parse_time(entry.deployed_at)
    return since + parse_duration(env.spec.policy.soak)


def _try_deploy(
    ctx: _Context,
    env: Environment,
    merged: dict[str, str],
    digest: str,
    soaked_until: datetime | None,
    entry: EnvironmentProgress,
) -> tuple[EnvironmentProgress, tuple[str, str, bool] | None]:
    """Deploy to ``env`` if nothing stops it; otherwise say what does."""
    release = ctx.release
    name = env.name
    violations = validate_config(env, merged, ctx.environments.values())
    if violations:
        message = "; ".join(v.describe() for v in violations)
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        ctx.plan.events.append(Event("Warning", "ConfigRuleViolated", message))
        return entry, ("ConfigRuleViolated", f"promotion to {name} blocked: {message}", True)
    reference = release.spec.serving == Serving.REFERENCE_SERVER
    serving = ctx.serving
    if reference and not ctx.image:
        message = (
            f"serving ReferenceServer needs a server image and the operator has none: set "
            f"MODELGATE_SERVER_IMAGE (the chart does) or spec.image; nothing deployed to {name}"
        )
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        return entry, ("ServerImageMissing", message, True)
    if reference and not serves_artifact(serving):
        message = (
            "serving ReferenceServer needs the training run's model and metadata artifacts "
            f"and the run recorded {sorted(a.name for a in ctx.status.artifacts)}; "
            "see the training contract"
        )
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        return entry, ("ArtifactMissing", message, True)
    image = ctx.image
    if env.spec.requires_digest and not re.search(DIGEST_PATTERN, image):
        message = (
            f"environment {name} requires an image pinned by digest, got {image!r}; "
            "use image@sha256:<digest>"
        )
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        return entry, ("ImageNotPinned", message, True)
    allowed = env.spec.policy.allowed_registries
    if allowed and not any(_from_registry(image, prefix) for prefix in allowed):
        message = (
            f"environment {name} only takes images from {', '.join(allowed)}; "
            f"{image!r} is not from one of them: push it there or change "
            "policy.allowedRegistries"
        )
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        return entry, ("ImageNotAllowed", message, True)
    if soaked_until is not None and ctx.now < soaked_until:
        wait = soaked_until - ctx.now
        message = f"soaking in the previous environment until {format_time(soaked_until)}"
        entry.phase, entry.message = EnvironmentPhase.WAITING, message
        ctx.plan.requeue_after = _min_delay(ctx.plan.requeue_after, wait)
        return entry, ("Soaking", message, False)
    for window in env.spec.policy.freeze_windows:
        until = window.holds(ctx.now)
        if until is not None:
            message = (
                f"promotions to {name} are frozen by window {window.name!r} until "
                f"{format_time(until)} (UTC); wait, or remove the window from the Environment"
            )
            entry.phase, entry.message = EnvironmentPhase.WAITING, message
            ctx.plan.requeue_after = _min_delay(ctx.plan.requeue_after, until - ctx.now)
            return entry, ("FreezeWindow", message, False)
    if env.spec.policy.require_approval:
        approver = _approver(release, name)
        if approver is None:
            message = (
                f"environment {name} requires approval: add "
                f"{{environment: {name}, approvedBy: <you>}} to spec.promotion.approvals "
                "(with the admission webhook, approvedBy is filled in from your identity)"
            )
            entry.phase, entry.message = EnvironmentPhase.WAITING, message
            return entry, ("AwaitingApproval", message, False)
        entry.approved_by = approver
        entry.approved_at = _approved_at(release, name)
    entry.phase, entry.image = EnvironmentPhase.DEPLOYING, image
    entry.message = f"deploying {image}" + (
        f" serving model sha256 {serving[contract.SERVER_MODEL_SHA256][:12]}" if reference else ""
    )
    predictions = next((a for a in ctx.status.artifacts if a.name == "predictions"), None)
    ctx.plan.actions.append(
        Deploy(
            environment=name,
            namespace=env.spec.namespace,
            release=release_key(release),
            model=release.spec.model.name,
            image=image,
            config={**merged, **serving},
            config_hash=digest,
            predictions=predictions,
            model_version=release.spec.model.version,
            gate=_gate_record(ctx.status.gate),
            approved_by=entry.approved_by,
            approved_at=entry.approved_at,
            command=SERVER_COMMAND if reference else (),
        )
    )
    ctx.plan.events.append(Event("Normal", "Deploying", f"deploying to {name}"))
    return entry, None


def _from_registry(image: str, prefix: str) -> bool:
    """``image`` lives under ``prefix`` (a registry host, optionally with a path),
    matched on whole path segments."""
    prefix = prefix.rstrip("/")
    return image == prefix or image.startswith(prefix + "/")


def _approval(release: ModelRelease, environment: str) -> Approval | None:
    """The first approval for ``environment`` that names who approved."""
    for approval in release.spec.promotion.approvals:
        if approval.environment == environment and approval.approved_by:
            return approval
    return None


def _approved_at(release: ModelRelease, environment: str) -> str | None:
    approval = _approval(release, environment)
    return approval.approved_at if approval is not None else None


def _approver(release: ModelRelease, environment: str) -> str | None:
    approval = _approval(release, environment)
    return approval.approved_by if approval is not None else None


def _min_delay(current: timedelta | None, new: timedelta) -> timedelta:
    return new if current is None else min(current, new)


def _progressing(ctx: _Context, reason: str, message: str) -> None:
    ctx.condition(cond.READY, False, reason, message)
    ctx.condition(cond.RECONCILING, True, reason, message)
    ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.STALLED)


def _stalled(ctx: _Context, reason: str, message: str) -> None:
    ctx.condition(cond.READY, False, reason, message)
    ctx.condition(cond.STALLED, True, reason, message)
    ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.RECONCILING)


def _finish(ctx: _Context) -> Plan:
    if ctx.previous.phase != ctx.status.phase and ctx.status.phase is not None:
        kind = "Warning" if ctx.status.phase in _BAD_PHASES else "Normal"
        ready = cond.find(ctx.status.conditions, cond.READY)
        ctx.plan.events.append(
            Event(
                kind, f"Phase{ctx.status.phase}", ready.message if ready else str(ctx.status.phase)
            )
        )
    return ctx.plan


_BAD_PHASES = {Phase.GATE_FAILED, Phase.BLOCKED, Phase.FAILED, Phase.ROLLED_BACK}
