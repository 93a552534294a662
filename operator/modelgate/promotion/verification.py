"""Step 5: the post-deployment verification, and the rollback when it fails."""

from __future__ import annotations

from modelgate.api.analysis import AnalysisPhase
from modelgate.api.common import format_time, parse_duration
from modelgate.api.environment import SERVED_MODEL_NAME, Environment, ServedPredictions
from modelgate.api.modelrelease import (
    EnvironmentPhase,
    EnvironmentProgress,
    ModelRelease,
)
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import WAIT_FOR_ROLLOUT, Context, min_delay
from modelgate.promotion.keys import VERIFY_COMMAND, release_key, verification_job_name
from modelgate.promotion.plan import (
    Event,
    Observed,
    Rollback,
    StartVerification,
    TrainingObservation,
)


def verify(
    ctx: Context,
    env: Environment,
    digest: str,
    observed: Observed,
    entry: EnvironmentProgress,
    earlier: EnvironmentProgress | None,
    challenger: bool = False,
    job: str | None = None,
) -> tuple[EnvironmentProgress, tuple[str, str, bool] | None]:
    """The rollout is ready: verify it (if configured), roll back on failure.
    With ``challenger``, the release runs beside the live one and gets no
    traffic yet: it is verified there, and a failure removes it (the caller
    does) instead of putting anything back. ``job``: the Job's name when
    not the usual one (a verification asked for again)."""
    release, name = ctx.release, env.name
    spec = env.spec.verification
    if spec is None:
        entry.phase = EnvironmentPhase.DEPLOYED
        if not challenger:
            ctx.plan.events.append(Event("Normal", "Deployed", f"{ctx.image} is live in {name}"))
        return entry, None
    job = job or verification_job_name(release, name, digest, ctx.image)
    entry.verification_job = job
    run = observed.verifications.get(job)
    if run is None or run.state == "Running":
        entry.phase = EnvironmentPhase.VERIFYING
        entry.message = f"verification {job} is running"
        if run is not None and run.retries:
            # Earlier tries exited "could not check" (the Job retries those).
            entry.message += (
                f" (attempt {run.retries + 1} of {spec.attempts}: "
                f"{_tries(run.retries)} could not check)"
            )
        if run is None:
            builtin = spec.served_predictions
            if builtin is not None and not ctx.server_image:
                message = (
                    f"environment {name} asks for the built-in verification, and the operator "
                    "has no image to run it with: set MODELGATE_SERVER_IMAGE (the chart does)"
                )
                entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
                return entry, ("VerificationUnavailable", message, True)
            artifacts = {a.name: a for a in ctx.status.artifacts}
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
                    predictions=artifacts.get("predictions"),
                    metadata=artifacts.get("metadata"),
                    env=_builtin_env(release, builtin) if builtin is not None else (),
                    attempts=spec.attempts,
                    challenger=challenger,
                )
            )
            ctx.plan.events.append(Event("Normal", "VerificationStarted", f"{job} in {name}"))
        else:
            ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, WAIT_FOR_ROLLOUT)
        return entry, None
    if run.state == "Succeeded":
        entry.phase = EnvironmentPhase.DEPLOYED
        entry.message = None
        if earlier is not None and earlier.verification_job == job and earlier.verified_at:
            # Verified as the challenger beside the live release: the same check.
            entry.verified_at = earlier.verified_at
        else:
            entry.verified_at = run.completed_at or format_time(ctx.now)
            ctx.plan.events.append(Event("Normal", "Verified", f"{job} passed in {name}"))
        if not challenger:
            ctx.plan.events.append(Event("Normal", "Deployed", f"{ctx.image} is live in {name}"))
        return entry, None
    if challenger:
        reason = run.message or "the verification Job failed"
        entry.phase = EnvironmentPhase.ROLLED_BACK
        entry.message = (
            f"verification of the challenger failed ({reason}); the live release keeps all "
            "traffic and this release is promoted no further"
        )
        ctx.plan.events.append(Event("Warning", "VerificationFailed", f"{name}: {entry.message}"))
        return entry, ("VerificationFailed", f"{name}: {entry.message}", True)
    entry = _failed(env, entry, run)
    if entry.phase == EnvironmentPhase.ROLLED_BACK:
        ctx.plan.actions.append(rollback_of(ctx, env, entry))
        ctx.plan.events.append(Event("Warning", "RolledBack", f"{name}: {entry.message}"))
    else:
        ctx.plan.events.append(Event("Warning", "VerificationFailed", f"{name}: {entry.message}"))
    return entry, ("VerificationFailed", f"{name}: {entry.message}", True)


def _tries(count: int) -> str:
    return "the first" if count == 1 else f"the first {count}"


def _builtin_env(release: ModelRelease, builtin: ServedPredictions) -> tuple[tuple[str, str], ...]:
    """The built-in verification's settings; the model's name as its own server
    serves it, unless the Environment names one."""
    env = builtin.env()
    if release.spec.server is not None and builtin.model_name is None:
        env[SERVED_MODEL_NAME] = release.spec.served_model_name
    return tuple(sorted(env.items()))


def _failed(
    env: Environment, entry: EnvironmentProgress, run: TrainingObservation
) -> EnvironmentProgress:
    """``entry`` after its verification ``run`` failed: rolled back, or failed
    in place when the environment turns autoRollback off."""
    reason = run.message or "the verification Job failed"
    if run.retries:
        reason = f"{reason} (after {run.retries + 1} attempts)"
    if env.spec.policy.auto_rollback:
        entry.phase = EnvironmentPhase.ROLLED_BACK
        entry.message = f"verification failed ({reason}); {put_back(entry)} was put back"
    else:
        entry.phase = EnvironmentPhase.FAILED
        entry.message = f"verification failed ({reason}); autoRollback is off"
    return entry


MAX_REASON = 2000


def put_back(entry: EnvironmentProgress) -> str:
    """What a rollback of ``entry`` restores, for its message."""
    if entry.previous_config_hash:
        return f"this release's config {entry.previous_config_hash[:12]}"
    return "the previous release"


def rollback_of(ctx: Context, env: Environment, entry: EnvironmentProgress) -> Rollback:
    """Put back what ``entry`` replaced in ``env``: the previous release, or
    this release's previous config when a config change failed."""
    return Rollback(
        environment=env.name,
        namespace=env.spec.namespace,
        release=release_key(ctx.release),
        model=ctx.release.spec.model.name,
        config_hash=entry.previous_config_hash,
        reason=(entry.message or "")[:MAX_REASON] or None,
    )


def failed_verification(
    env: Environment, earlier: EnvironmentProgress | None, observed: Observed
) -> EnvironmentProgress | None:
    """The progress of an environment whose recorded verification Job failed."""
    if earlier is None or not earlier.verification_job:
        return None
    run = observed.verifications.get(earlier.verification_job)
    if run is None or run.state != "Failed":
        return None
    return _failed(env, earlier.model_copy(), run)


def verified_condition(
    ctx: Context, progress: list[EnvironmentProgress], environments: dict[str, Environment]
) -> None:
    failed = [
        p
        for p in progress
        if p.phase in (EnvironmentPhase.ROLLED_BACK, EnvironmentPhase.FAILED)
        # Verified, then rolled back by its analysis: Analyzed says so.
        and not (p.analysis is not None and p.analysis.phase == AnalysisPhase.FAILED)
        # Rolled back on request: no verification failed.
        and p.rolled_back_by is None
    ]
    verifying = [p.name for p in progress if p.phase == EnvironmentPhase.VERIFYING]
    checked = [
        p.name
        for p in progress
        if p.verified_at and environments[p.name].spec.verification is not None
    ]
    unfinished = [p for p in progress if p.unfinished]
    if failed:
        message = "; ".join(f"{p.name}: {p.message}" for p in failed if p.message)
        ctx.condition(cond.VERIFIED, False, "VerificationFailed", message)
    elif unfinished:
        message = "; ".join(f"{p.name}: {p.message}" for p in unfinished if p.message)
        ctx.condition(cond.VERIFIED, False, "Superseded", message)
    elif verifying:
        ctx.condition(cond.VERIFIED, None, "Verifying", f"verifying in {', '.join(verifying)}")
    elif checked:
        ctx.condition(cond.VERIFIED, True, "Verified", f"verified in {', '.join(checked)}")
