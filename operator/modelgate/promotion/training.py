"""Step 2: the training run, started once per training key, and its artifacts."""

from __future__ import annotations

import json

from modelgate.api.common import format_time
from modelgate.api.modelrelease import (
    ModelRelease,
    Phase,
    TrainingStatus,
)
from modelgate.api.qualitygate import QualityGate
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import WAIT_FOR_ROLLOUT, Context, progressing, stalled
from modelgate.promotion.keys import release_key, training_job_name, training_key
from modelgate.promotion.plan import Event, Observed, StartTraining
from modelgate.trainer import contract


def train(
    ctx: Context, gate: QualityGate | None, observed: Observed, extra_env: dict[str, str]
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
        # Still true for this generation (spec edits elsewhere bump it).
        done = cond.find(ctx.status.conditions, cond.TRAINED)
        if done is not None and done.status == "True":
            ctx.condition(cond.TRAINED, True, done.reason, done.message)
        else:
            listed = ", ".join(sorted(a.name for a in ctx.status.artifacts))
            ctx.condition(cond.TRAINED, True, "TrainingSucceeded", f"{job_name} recorded {listed}")
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
        progressing(ctx, "Training", f"training run {job_name}")
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
        progressing(ctx, "Training", f"training run {job_name}")
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


def _training_failed(ctx: Context, message: str) -> None:
    ctx.status.phase = Phase.FAILED
    ctx.condition(cond.TRAINED, False, "TrainingFailed", message)
    stalled(ctx, "TrainingFailed", f"training failed: {message}")


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
