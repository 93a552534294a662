"""Step 2b, with gate.predictionsFrom Server: the gate judges what will be
served. After training, a scoring run (the import run, taking the trained
model as a stored file) starts the reference server on it and scores the
evaluation data through the Open Inference Protocol; its predictions
replace the training run's before the gate is evaluated. The model and
the training run's metadata stay as they were."""

from __future__ import annotations

from modelgate.api.common import format_time
from modelgate.api.modelrelease import (
    ArtifactFormat,
    ArtifactRecord,
    ModelRelease,
    Phase,
    TrainingStatus,
)
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import WAIT_FOR_ROLLOUT, Context, progressing, stalled
from modelgate.promotion.keys import IMPORT_COMMAND, canonical_hash, retried, scoring_job_name
from modelgate.promotion.plan import Event, Observed, StartTraining
from modelgate.promotion.training import RETRY_HINT, data_env, run_status
from modelgate.trainer import contract


def _model(release: ModelRelease) -> ArtifactRecord | None:
    artifacts = release.status.artifacts if release.status is not None else []
    return next((a for a in artifacts if a.name == "model"), None)


def _key(release: ModelRelease, model: ArtifactRecord, attempt: int) -> str:
    """Changes exactly when what is scored changes (the model or the data),
    or when a retry asks for another ``attempt``."""
    wanted: dict[str, object] = {"model": model.sha256, "data": release.spec.data.wire()}
    if attempt:
        wanted["attempt"] = attempt
    return canonical_hash(wanted)[:16]


def scoring_job(release: ModelRelease) -> str | None:
    """The scoring run the release needs, by name, once training recorded its
    model; None when the release asks for none."""
    model = _model(release)
    if not release.spec.scored_by_server or model is None:
        return None
    return scoring_job_name(release, _key(release, model, retried(release, "scoring")))


def _failed(ctx: Context, reason: str, message: str) -> bool:
    ctx.status.phase = Phase.FAILED
    ctx.condition(cond.TRAINED, False, reason, message)
    stalled(ctx, reason, f"scoring by the server failed: {message}{RETRY_HINT}")
    return False


def score(ctx: Context, observed: Observed, extra_env: dict[str, str]) -> bool:
    """True once the gate's predictions are the server's (or the release asks
    for the trainer's)."""
    release = ctx.release
    if not release.spec.scored_by_server:
        return True
    model = _model(release.model_copy(update={"status": ctx.status}))
    if model is None:
        return _failed(
            ctx,
            "ArtifactMissing",
            "gate.predictionsFrom Server scores the training run's model and the run "
            f"recorded {sorted(a.name for a in ctx.status.artifacts)}; see the training contract",
        )
    key = _key(release, model, ctx.status.retry.scoring if ctx.status.retry is not None else 0)
    job_name = scoring_job_name(release, key)
    recorded = ctx.status.scoring if ctx.status.scoring and ctx.status.scoring.key == key else None
    if recorded is not None and recorded.state == "Succeeded":
        return True
    if recorded is not None and recorded.state == "Failed":
        return _failed(ctx, "ScoringFailed", recorded.message or f"{job_name} failed")
    run = observed.scoring if observed.scoring and observed.scoring.job_name == job_name else None
    if run is None:
        if not ctx.server_image:
            return _failed(
                ctx,
                "ImporterUnavailable",
                "the server scores with the operator's server image, and there is none: set "
                "MODELGATE_SERVER_IMAGE (the chart does)",
            )
        ctx.status.scoring = TrainingStatus(
            job_name=job_name, key=key, state="Running", started_at=format_time(ctx.now)
        )
        ctx.plan.actions.append(
            StartTraining(
                job_name=job_name,
                key=key,
                image=ctx.server_image,
                command=IMPORT_COMMAND,
                args=(),
                env={
                    **data_env(release),
                    contract.ARTIFACT_URI: model.uri,
                    contract.ARTIFACT_SHA256: model.sha256,
                    contract.ARTIFACT_FORMAT: str(ArtifactFormat.SKOPS),
                    **extra_env,
                },
            )
        )
        ctx.plan.events.append(Event("Normal", "ScoringStarted", f"started {job_name}"))
        return _scoring(ctx, job_name)
    ctx.status.scoring = run_status(key, run, recorded)
    if run.state == "Running":
        ctx.plan.requeue_after = WAIT_FOR_ROLLOUT
        return _scoring(ctx, job_name)
    if run.state == "Failed":
        return _failed(ctx, "ScoringFailed", run.message or f"{job_name} failed")
    predictions = next((a for a in run.artifacts if a.name == "predictions"), None)
    if predictions is None:
        return _failed(ctx, "ScoringFailed", f"{job_name} wrote no predictions")
    ctx.status.artifacts = [
        predictions if a.name == "predictions" else a for a in ctx.status.artifacts
    ]
    if not any(a.name == "predictions" for a in ctx.status.artifacts):
        ctx.status.artifacts.append(predictions)
    training = ctx.status.training.job_name if ctx.status.training else "the training run"
    ctx.condition(
        cond.TRAINED,
        True,
        "ScoredByServer",
        f"{training} recorded the model; {job_name} scored the evaluation data through the "
        "reference server (the gate judges its predictions)",
    )
    ctx.plan.events.append(Event("Normal", "ScoringSucceeded", f"{job_name} succeeded"))
    return True


def _scoring(ctx: Context, job_name: str) -> bool:
    message = f"the reference server scores the evaluation data in {job_name}"
    ctx.status.phase = Phase.TRAINING
    ctx.condition(cond.TRAINED, None, "Scoring", message)
    progressing(ctx, "Scoring", message)
    return False
