"""Step 2: the training run, started once per training key, and its artifacts."""

from __future__ import annotations

import json
from datetime import timedelta

from modelgate.api.common import format_time
from modelgate.api.modelrelease import (
    MlflowResolution,
    ModelRelease,
    Phase,
    SourceStatus,
    TrainingStatus,
)
from modelgate.api.qualitygate import QualityGate
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import WAIT_FOR_ROLLOUT, Context, progressing, stalled
from modelgate.promotion.keys import (
    IMPORT_COMMAND,
    model_server_command,
    release_key,
    retried,
    training_job_name,
    training_key,
)
from modelgate.promotion.plan import (
    Event,
    Observed,
    RegistryQuery,
    StartTraining,
    TrainingObservation,
)
from modelgate.trainer import contract

# How a failed run is run again, for the messages that report one.
RETRY_HINT = (
    "; once the cause is fixed, retry it (kubectl modelgate retry, or a new spec.retry.requestedAt)"
)

# A registry that did not answer is asked again after this long.
REGISTRY_RETRY = timedelta(seconds=30)


def training_job(release: ModelRelease, gate: QualityGate | None) -> str:
    """The name of the release's current training (or import) run."""
    source = release.status.source if release.status is not None else None
    resolved = source.mlflow.version if source is not None and source.mlflow else None
    attempt = retried(release, "training")
    return training_job_name(release, training_key(release, gate, resolved, attempt))


def registry_query(release: ModelRelease) -> RegistryQuery | None:
    """The registry lookup a release of a registered model needs before its
    import run: asked until answered, then never again (status.source)."""
    spec = release.spec.mlflow
    resolved = release.status.source if release.status is not None else None
    if spec is None or (resolved is not None and resolved.mlflow is not None):
        return None
    return RegistryQuery(spec.tracking_uri, spec.name, spec.version, spec.alias)


def _resolved_version(ctx: Context, observed: Observed) -> str | None:
    """The registered version the release carries, resolved once; None while
    the registry has not named it (the condition says why)."""
    spec = ctx.release.spec.mlflow
    assert spec is not None
    if ctx.status.source is not None and ctx.status.source.mlflow is not None:
        return ctx.status.source.mlflow.version
    named = f"{spec.name}@{spec.alias}" if spec.alias else f"{spec.name} version {spec.version}"
    answer = observed.registered
    if answer is None or (answer.error is None and answer.version is None):
        message = f"asking the MLflow registry at {spec.tracking_uri} for {named}"
        _waiting_for_registry(ctx, "ResolvingModel", message, WAIT_FOR_ROLLOUT)
        return None
    if answer.error is not None:
        if answer.transient:
            message = f"{named}: {answer.error}; asking again"
            _waiting_for_registry(ctx, "RegistryUnavailable", message, REGISTRY_RETRY)
            return None
        _training_failed(
            ctx,
            f"{named}: {answer.error} (fix the registry, or name another version in a new "
            "release; it is asked again)",
            "ModelUnresolved",
        )
        return None
    version = str(answer.version)
    ctx.status.source = SourceStatus(
        mlflow=MlflowResolution(
            version=version,
            run_id=answer.run_id,
            alias=spec.alias,
            resolved_at=format_time(ctx.now),
        )
    )
    ctx.plan.events.append(
        Event("Normal", "ModelResolved", f"{named} is version {version}: importing it")
    )
    return version


def _waiting_for_registry(ctx: Context, reason: str, message: str, delay: timedelta) -> None:
    ctx.status.phase = Phase.TRAINING
    ctx.condition(cond.TRAINED, None, reason, message)
    progressing(ctx, reason, message)
    ctx.plan.requeue_after = delay


def train(
    ctx: Context, gate: QualityGate | None, observed: Observed, extra_env: dict[str, str]
) -> bool:
    """True once training (or the import of a registered model) succeeded and
    its artifacts are recorded."""
    release = ctx.release
    registered: str | None = None
    if release.spec.mlflow is not None:
        registered = _resolved_version(ctx, observed)
        if registered is None:
            return False
    if release.spec.training is None and not ctx.server_image:
        message = (
            "a model trained elsewhere is imported and scored with the operator's server "
            "image, and there is none: set MODELGATE_SERVER_IMAGE (the chart does)"
        )
        _training_failed(ctx, message, "ImporterUnavailable")
        return False
    attempt = ctx.status.retry.training if ctx.status.retry is not None else 0
    key = training_key(release, gate, registered, attempt)
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
        ctx.plan.actions.append(
            _start_training(release, key, job_name, extra_env)
            if release.spec.training is not None
            else _start_import(ctx, key, job_name, registered, extra_env)
        )
        ctx.plan.events.append(Event("Normal", "TrainingStarted", f"started {job_name}"))
        return False
    ctx.status.training = run_status(key, run, recorded)
    if run.state == "Running":
        ctx.status.phase = Phase.TRAINING
        if run.message:  # a pod that cannot start (say, its image cannot be pulled)
            stuck = (
                f"training run {job_name} cannot start: {run.message}; fix it and the "
                "run goes on (spec.training.deadline ends it otherwise)"
            )
            ctx.condition(cond.TRAINED, None, "TrainingPodWaiting", stuck)
            progressing(ctx, "TrainingPodWaiting", stuck)
        else:
            ctx.condition(
                cond.TRAINED, None, "TrainingRunning", f"training run {job_name} is running"
            )
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


def _training_failed(ctx: Context, message: str, reason: str = "TrainingFailed") -> None:
    ctx.status.phase = Phase.FAILED
    ctx.condition(cond.TRAINED, False, reason, message)
    what = "training" if ctx.release.spec.training is not None else "the import of the model"
    stalled(ctx, reason, f"{what} failed: {message}{RETRY_HINT}")


def run_status(
    key: str, run: TrainingObservation, recorded: TrainingStatus | None
) -> TrainingStatus:
    """What status records of a run (training, import or scoring) as observed."""
    return TrainingStatus(
        job_name=run.job_name,
        key=key,
        state=run.state,
        started_at=run.started_at or (recorded.started_at if recorded else None),
        completed_at=run.completed_at,
        message=run.message,
        retries=run.retries,
    )


def data_env(release: ModelRelease) -> dict[str, str]:
    data = release.spec.data
    env = {
        contract.TRAIN_DATA: data.train,
        contract.EVAL_DATA: data.evaluation,
        contract.TARGET: data.target,
        contract.RELEASE: release_key(release),
        contract.MODEL_NAME: release.spec.model.name,
        contract.MODEL_VERSION: release.spec.model.version,
    }
    if data.id_column:
        env[contract.ID_COLUMN] = data.id_column
    return env


def _start_import(
    ctx: Context, key: str, job_name: str, version: str | None, extra_env: dict[str, str]
) -> StartTraining:
    """The import run: fetch the registered version (or the stored file),
    score the evaluation data with the server that will serve it, write the
    training contract's outputs (the operator's server image; it never runs
    in the operator)."""
    env = {**data_env(ctx.release), **_source_env(ctx.release, version), **extra_env}
    spec = ctx.release.spec.mlflow
    served_by = model_server_command(ctx.release)
    if served_by is not None:
        env[contract.MODEL_SERVER] = served_by.wire()
    secret = spec.credentials_secret if spec is not None else None
    secret_env: tuple[tuple[str, str, str], ...] = ()
    if secret is not None and secret.token_key is not None:
        secret_env = ((contract.MLFLOW_TOKEN, secret.name, secret.token_key),)
    elif secret is not None and secret.username_key and secret.password_key:
        secret_env = (
            (contract.MLFLOW_USERNAME, secret.name, secret.username_key),
            (contract.MLFLOW_PASSWORD, secret.name, secret.password_key),
        )
    return StartTraining(
        job_name=job_name,
        key=key,
        image=ctx.server_image or "",
        command=IMPORT_COMMAND,
        args=(),
        env=env,
        secret_env=secret_env,
    )


def _source_env(release: ModelRelease, version: str | None) -> dict[str, str]:
    """Where the import run takes the model from."""
    if release.spec.mlflow is not None:
        assert version is not None  # resolved before the run starts
        return {
            contract.MLFLOW_TRACKING_URI: release.spec.mlflow.tracking_uri,
            contract.MLFLOW_MODEL: release.spec.mlflow.name,
            contract.MLFLOW_VERSION: version,
        }
    artifact = release.spec.artifact
    assert artifact is not None  # the one source left
    env = {
        contract.ARTIFACT_URI: artifact.uri,
        contract.ARTIFACT_SHA256: artifact.sha256,
        contract.ARTIFACT_FORMAT: str(artifact.format),
    }
    if artifact.features:
        env[contract.FEATURES] = json.dumps(artifact.features)
    return env


def _start_training(
    release: ModelRelease, key: str, job_name: str, extra_env: dict[str, str]
) -> StartTraining:
    training = release.spec.training
    assert training is not None
    env = {
        **data_env(release),
        contract.PARAMS: json.dumps(training.params, sort_keys=True),
        contract.SEED: str(training.seed),
        **extra_env,
    }
    return StartTraining(
        job_name=job_name,
        key=key,
        image=training.image,
        command=tuple(training.command),
        args=tuple(training.args),
        env=env,
    )
