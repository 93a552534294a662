"""Step 4: promotion through the environments in path order, under their policies."""

from __future__ import annotations

import re
from datetime import datetime

from modelgate.api.analysis import AnalysisPhase
from modelgate.api.common import format_time, parse_duration, parse_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    DIGEST_PATTERN,
    Approval,
    EnvironmentPhase,
    EnvironmentProgress,
    EnvironmentRequest,
    ModelRelease,
    Phase,
    Serving,
)
from modelgate.api.rollout import Rollout, RolloutPhase
from modelgate.envconfig import Violation, config_hash, merge_config, validate_config
from modelgate.promotion import conditions as cond
from modelgate.promotion.analysis import analyze, analyzed_condition
from modelgate.promotion.analysis import start as start_analysis
from modelgate.promotion.context import (
    WAIT_FOR_ROLLOUT,
    Context,
    min_delay,
    progressing,
    stalled,
)
from modelgate.promotion.environment_requests import (
    fresh_request,
    ignored,
    promoted_on_request,
    promotion_request,
    reverify_refusal,
    reverifying,
    rolled_back_on_request,
    skipped_soak,
    still_rolling_back,
)
from modelgate.promotion.evaluation import gate_record
from modelgate.promotion.keys import (
    SERVER_COMMAND,
    release_key,
    serves_artifact,
    verification_job_name,
)
from modelgate.promotion.plan import Deploy, DeploymentObservation, Event, Observed
from modelgate.promotion.rollout import (
    judge_beside,
    judged_by,
    remove_challenger,
    size_before_split,
)
from modelgate.promotion.rollout import spec_hash as rollout_spec_hash
from modelgate.promotion.rollout import start as start_judging
from modelgate.promotion.verification import (
    failed_verification,
    rollback_of,
    verified_condition,
    verify,
)
from modelgate.trainer import contract


def promote(ctx: Context, environments: dict[str, Environment], observed: Observed) -> None:
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

    blocker: Blocker | None = None
    reached_before = True
    soaked_until: datetime | None = None
    for name in order:
        env = environments[name]
        merged, digest = configs[name]
        live = observed.deployments.get(name)
        earlier = previous.get(name)
        entry = EnvironmentProgress(name=name, phase=EnvironmentPhase.PENDING, config_hash=digest)
        mine = live is not None and live.release == me
        beside = observed.challengers.get(name)
        ours_beside = beside if beside is not None and beside.release == me else None
        judging = judged_by(env)
        handled = earlier.rollback_request if earlier is not None else None
        asked = fresh_request(release.spec.promotion.rollbacks, name, handled)
        if asked is not None:
            handled = asked.requested_at
            if not mine and ours_beside is None:
                phase = str(earlier.phase) if earlier else "Pending"
                why = f"the release is not live there (phase {phase}): nothing was rolled back"
                ignored(ctx, name, asked, "Rollback", why)
        pushed = promotion_request(release, name)
        waits_until = None if pushed is not None else soaked_until
        reverify_handled = earlier.reverify_request if earlier is not None else None
        again = fresh_request(release.spec.promotion.reverifications, name, reverify_handled)
        if again is not None:
            reverify_handled = again.requested_at
            refusal = reverify_refusal(
                env, earlier, mine and live is not None and live.config_hash == digest
            )
            if refusal is not None or asked is not None:
                ignored(ctx, name, again, "Reverify", refusal or "a rollback was asked too")
                again = None
            else:
                reverifying(ctx, env, again)
        if asked is not None and (mine or ours_beside is not None):
            # Taken out on request: final for this release, as a failed verification.
            entry = rolled_back_on_request(ctx, env, earlier, asked, digest, live_here=mine)
            blocker = blocker or ("RolledBack", f"{name}: {entry.message}", True)
        elif (
            mine
            and earlier is not None
            and earlier.phase == EnvironmentPhase.ROLLED_BACK
            and earlier.rolled_back_by is not None
        ):
            entry = still_rolling_back(ctx, env, earlier)
            blocker = blocker or ("RolledBack", f"{name}: {entry.message}", True)
        elif not mine and earlier is not None and earlier.phase == EnvironmentPhase.ROLLED_BACK:
            # Verification failed here and the previous release was put back:
            # final for this release; never deploy it again.
            entry = earlier.model_copy()
            blocker = blocker or ("RolledBack", earlier.message or f"rolled back in {name}", True)
        elif (
            not mine
            and (earlier is None or earlier.judged is None)
            and (failed := failed_verification(env, earlier, observed)) is not None
        ):
            # Its verification failed and something else is live: rolled back
            # by a call whose status write this (stale or lost) status lacks.
            # The failed Job is the durable record; never deploy it again.
            entry = failed
            blocker = blocker or ("VerificationFailed", f"{name}: {failed.message}", True)
        elif not mine and _reached(earlier):
            # Live here before and replaced since: never deploy again.
            assert earlier is not None
            entry = _superseded(earlier, live)
            if entry.unfinished:
                # Replaced before it was realized here: what this environment
                # should have proven about it never was, so it goes no further.
                blocker = blocker or ("Superseded", f"{name}: {entry.message}", True)
        elif live is not None and mine and live.image == ctx.image and live.config_hash == digest:
            entry = _realized(ctx, env, live, digest, earlier)
            same = earlier is not None and earlier.config_hash == digest
            job = _verification_job(ctx, name, digest, earlier, again)
            if same and earlier is not None and _failed_analysis(earlier):
                # Its analysis failed; the rollback is not live yet (GitOps): ask again.
                entry, failure = _still_failed(ctx, env, earlier)
                blocker = blocker or failure
            elif same and earlier is not None and earlier.phase in _VERIFIED and again is None:
                # Verified before (where configured): final for this config, once
                # its analysis (where configured) has passed.
                entry.phase = EnvironmentPhase.DEPLOYED
                entry.verification_job = earlier.verification_job
                entry.verified_at = earlier.verified_at
                entry.analysis = earlier.analysis
                entry, verdict = analyze(ctx, env, entry, observed)
                blocker = blocker or verdict
            elif not live.ready:
                entry.phase = EnvironmentPhase.DEPLOYING
                entry.message = live.message or "waiting for the rollout to become ready"
            else:
                if earlier is not None and same and earlier.reverify_request:
                    # Verified here before: an analysis under way or decided stands.
                    entry.analysis = earlier.analysis
                entry, verdict = verify(ctx, env, digest, observed, entry, earlier, job=job)
                if verdict is None and entry.phase == EnvironmentPhase.DEPLOYED:
                    if entry.analysis is None:
                        start_analysis(ctx, env, entry)
                    entry, verdict = analyze(ctx, env, entry, observed)
                blocker = blocker or verdict
        elif (
            live is not None
            and not mine
            and judging is not None
            and ours_beside is None
            and (why_not := ctx.rollout_unsupported(env)) is not None
            and blocker is None
            and reached_before
        ):
            entry.phase = EnvironmentPhase.BLOCKED
            entry.message = (
                f"environment {name} judges a new release against the live one "
                f"(policy.rollout strategy {judging.strategy}), and {why_not}: "
                f"{live.release} keeps serving; set the strategy to Replace to promote"
            )
            blocker = ("RolloutUnsupported", entry.message, True)
        elif (
            live is not None
            and not mine
            and judging is not None
            and (
                (blocker is None and reached_before)
                or ours_beside is not None
                or (earlier is not None and earlier.judged is not None)
            )
        ):
            may_deploy = blocker is None and reached_before
            entry, verdict = _beside(
                ctx, env, judging, merged, digest, live, ours_beside, earlier, observed,
                waits_until, may_deploy, pushed,
            )  # fmt: skip
            blocker = blocker or verdict
        elif live is not None and mine:
            may_deploy = blocker is None and reached_before
            entry, verdict = _change(
                ctx, env, merged, digest, live, earlier, observed, soaked_until, may_deploy
            )
            blocker = blocker or verdict
        elif blocker is None and reached_before:
            rollout = earlier.rollout if earlier is not None and earlier.rollout else 1
            entry, blocker = _try_deploy(ctx, env, merged, digest, waits_until, entry, rollout)
            first = earlier is None or earlier.phase != EnvironmentPhase.DEPLOYING
            if pushed is not None and first and entry.phase == EnvironmentPhase.DEPLOYING:
                skipped_soak(ctx, name, pushed, soaked_until)

        if entry.phase not in (EnvironmentPhase.DEPLOYED, EnvironmentPhase.SUPERSEDED) or (
            entry.unfinished
        ):
            reached_before = False
            if entry.phase == EnvironmentPhase.DEPLOYING and blocker is None:
                blocker = ("Deploying", entry.message or f"deploying to {name}", False)
            if entry.phase == EnvironmentPhase.VERIFYING and blocker is None:
                blocker = ("Verifying", entry.message or f"verifying in {name}", False)
            if entry.phase == EnvironmentPhase.JUDGING and blocker is None:
                blocker = ("Judging", entry.message or f"judging in {name}", False)
            if entry.phase == EnvironmentPhase.PENDING and blocker is None:
                blocker = ("Promoting", entry.message or f"promoting to {name}", False)
        else:
            soaked_until = _soak_end(env, entry)
        if ours_beside is not None and entry.phase in _CHALLENGER_GONE:
            # Level-based: the challenger of a release that goes no further
            # here is removed (again, until it is gone).
            ctx.plan.actions.append(
                remove_challenger(ctx, env, entry.message or "promoted no further")
            )
        entry.rollback_request = handled
        entry.reverify_request = reverify_handled
        progress.append(entry)

    ctx.status.environments = progress
    live_here = [
        name
        for name in order
        if (live := observed.deployments.get(name)) is not None and live.release == me
    ]
    ctx.status.live_in = live_here[-1] if live_here else None
    verified_condition(ctx, progress, environments)
    analyzed_condition(ctx, progress)
    if any(p.phase == EnvironmentPhase.ROLLED_BACK for p in progress):
        reason, message, _ = blocker or ("RolledBack", "rolled back", True)
        ctx.status.phase = Phase.ROLLED_BACK
        ctx.condition(cond.DEPLOYED, False, reason, message)
        stalled(ctx, reason, message)
        return
    if blocker is None and reached_before:
        ctx.status.phase = Phase.RELEASED
        ctx.condition(cond.DEPLOYED, True, "Deployed", _deployed_message(progress))
        ctx.condition(cond.READY, True, "Released", f"released to {', '.join(order)}")
        ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.RECONCILING)
        ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.STALLED)
        return
    reason, message, is_stalled = blocker or ("Promoting", "promoting", False)
    ctx.condition(cond.DEPLOYED, False, reason, message)
    if is_stalled:
        ctx.status.phase = Phase.BLOCKED
        stalled(ctx, reason, message)
    else:
        ctx.status.phase = Phase.PROMOTING
        progressing(ctx, reason, message)


# reason, message, stalled (True: nothing changes until the spec does)
Blocker = tuple[str, str, bool]


_VERIFIED = (EnvironmentPhase.DEPLOYED, EnvironmentPhase.ANALYZING)
_CHALLENGER_GONE = (
    EnvironmentPhase.ROLLED_BACK,
    EnvironmentPhase.FAILED,
    EnvironmentPhase.SUPERSEDED,
)


def _beside(
    ctx: Context,
    env: Environment,
    rollout: Rollout,
    merged: dict[str, str],
    digest: str,
    live: DeploymentObservation,
    challenger: DeploymentObservation | None,
    earlier: EnvironmentProgress | None,
    observed: Observed,
    soaked_until: datetime | None,
    may_deploy: bool,
    pushed: EnvironmentRequest | None = None,
) -> tuple[EnvironmentProgress, Blocker | None]:
    """Another release is live in ``env`` and its policy judges a new one
    against it first: deploy this one beside it as the challenger, verify it
    there, judge it on live traffic, then let it take over or remove it.
    ``pushed``: a promotion asked for, which ends the judgement once the
    challenger is verified."""
    name = env.name
    judged = earlier.judged if earlier is not None else None
    if (
        judged is None
        or judged.champion != live.release
        or (
            judged.spec_hash != rollout_spec_hash(rollout)
            and judged.phase in (RolloutPhase.WAITING, RolloutPhase.RUNNING)
        )
    ):
        judged = start_judging(ctx, env, rollout, live)
    else:
        judged = judged.model_copy(deep=True)
    entry = EnvironmentProgress(
        name=name, phase=EnvironmentPhase.PENDING, config_hash=digest, judged=judged
    )
    if earlier is not None:
        entry.approved_by, entry.approved_at = earlier.approved_by, earlier.approved_at
        entry.verified_at, entry.verification_job = earlier.verified_at, earlier.verification_job
    takes_over = judged.phase == RolloutPhase.PROMOTED
    verdict: Blocker | None = None
    if not takes_over:
        if challenger is None or challenger.image != ctx.image or challenger.config_hash != digest:
            if not may_deploy:
                entry.message = f"waits for the environments before {name}"
                return entry, None
            entry, verdict = _try_deploy(
                ctx, env, merged, digest, soaked_until, entry, 1, challenger=True
            )
            if entry.phase == EnvironmentPhase.DEPLOYING:
                entry.message = (
                    f"deploying {ctx.image} beside {live.release} as the challenger "
                    f"({rollout.strategy}): it gets no traffic until it is verified"
                )
            return entry, verdict
        entry.image = challenger.image
        size_before_split(rollout, judged, observed, name, ctx.now)
        if not challenger.ready:
            entry.phase = EnvironmentPhase.DEPLOYING
            entry.message = challenger.message or "waiting for the challenger to become ready"
            ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, WAIT_FOR_ROLLOUT)
            return entry, None
        if judged.phase == RolloutPhase.WAITING and env.spec.verification is not None:
            entry, verdict = verify(ctx, env, digest, observed, entry, earlier, challenger=True)
            if entry.phase != EnvironmentPhase.DEPLOYED:
                if entry.phase == EnvironmentPhase.ROLLED_BACK:
                    judged.phase = RolloutPhase.ROLLED_BACK
                    judged.message = entry.message
                    judged.decided_at = format_time(ctx.now)
                return entry, verdict
        if pushed is not None and judged.phase in (RolloutPhase.WAITING, RolloutPhase.RUNNING):
            promoted_on_request(ctx, name, pushed, judged)
            takes_over = True
        else:
            entry, verdict, takes_over = judge_beside(
                ctx, env, rollout, entry, challenger, observed
            )
        if not takes_over:
            return entry, verdict
    # The challenger won (or the policy promotes an inconclusive one): it
    # takes all traffic as a replacing deployment, verified and analysed as
    # any deployment is.
    record = f"{judged.strategy} against {judged.champion}: {judged.message or 'it won'}"
    entry, verdict = _try_deploy(ctx, env, merged, digest, None, entry, 1, judged=record)
    if entry.phase == EnvironmentPhase.DEPLOYING:
        entry.message = f"the challenger takes all traffic: {judged.message or 'it won'}"
    return entry, verdict


def _verification_job(
    ctx: Context,
    name: str,
    digest: str,
    earlier: EnvironmentProgress | None,
    again: EnvironmentRequest | None,
) -> str:
    """The verification Job of ``digest`` in ``name``: a new one for a
    verification asked for again; the one recorded while it runs or after it
    failed (a verification asked for again is named for its request);
    otherwise the one named for the release, environment, config and image."""
    if again is not None:
        return verification_job_name(ctx.release, name, digest, ctx.image, salt=again.requested_at)
    if (
        earlier is not None
        and earlier.verification_job
        and earlier.config_hash == digest
        and earlier.image == ctx.image
        and earlier.phase
        in (EnvironmentPhase.VERIFYING, EnvironmentPhase.ROLLED_BACK, EnvironmentPhase.FAILED)
    ):
        return earlier.verification_job
    return verification_job_name(ctx.release, name, digest, ctx.image)


def _failed_analysis(earlier: EnvironmentProgress) -> bool:
    return (
        earlier.phase in (EnvironmentPhase.ROLLED_BACK, EnvironmentPhase.FAILED)
        and earlier.analysis is not None
        and earlier.analysis.phase == AnalysisPhase.FAILED
    )


def _still_failed(
    ctx: Context, env: Environment, earlier: EnvironmentProgress
) -> tuple[EnvironmentProgress, Blocker]:
    entry = earlier.model_copy()
    if entry.phase == EnvironmentPhase.ROLLED_BACK:
        ctx.plan.actions.append(rollback_of(ctx, env, entry))
    return entry, ("AnalysisFailed", f"{env.name}: {entry.message}", True)


def _deployed_message(progress: list[EnvironmentProgress]) -> str:
    live = [p.name for p in progress if p.phase == EnvironmentPhase.DEPLOYED]
    replaced = [p.name for p in progress if p.phase == EnvironmentPhase.SUPERSEDED]
    message = f"live in {', '.join(live)}" if live else "live nowhere"
    if replaced:
        message += f"; replaced since in {', '.join(replaced)} (config changes no longer go there)"
    return message


# What a first rollout still lacked, by the phase it was replaced in.
_UNFINISHED = {
    EnvironmentPhase.DEPLOYING: "its rollout was ready",
    EnvironmentPhase.VERIFYING: "its verification finished",
    EnvironmentPhase.ANALYZING: "its analysis finished",
}


def _superseded(
    earlier: EnvironmentProgress, live: DeploymentObservation | None
) -> EnvironmentProgress:
    """The entry of an environment where this release went live and another
    one (or nothing) has replaced it since."""
    entry = earlier.model_copy()
    entry.phase = EnvironmentPhase.SUPERSEDED
    by = live.release if live else "nothing"
    if earlier.unfinished:
        return entry  # its message names what replaced it, then
    step = _UNFINISHED.get(earlier.phase)
    if step is None or (earlier.rollout or 1) > 1:
        # Realized here (a later config change may have been under way).
        entry.message = f"replaced by {by} since"
        return entry
    entry.unfinished = True
    entry.message = (
        f"replaced by {by} before {step}: this release is promoted no further; "
        "create a new release of this model to promote it again"
    )
    return entry


def _reached(earlier: EnvironmentProgress | None) -> bool:
    """This release went live in the environment at some point."""
    return earlier is not None and (
        earlier.phase in (EnvironmentPhase.DEPLOYED, EnvironmentPhase.SUPERSEDED)
        or earlier.deployed_at is not None
    )


def _live_entry(name: str, digest: str, live: DeploymentObservation) -> EnvironmentProgress:
    """An entry wanting ``digest``, describing what is live."""
    return EnvironmentProgress(
        name=name,
        phase=EnvironmentPhase.PENDING,
        config_hash=digest,
        image=live.image,
        deployed_at=live.deployed_at,
        revision=live.revision,
    )


def _realized(
    ctx: Context,
    env: Environment,
    live: DeploymentObservation,
    digest: str,
    earlier: EnvironmentProgress | None,
) -> EnvironmentProgress:
    """The entry of an environment running this release's desired image and config."""
    release, name = ctx.release, env.name
    same = earlier is not None and earlier.config_hash == digest
    entry = _live_entry(name, digest, live)
    recorded = earlier.rollout if earlier is not None and earlier.rollout else 0
    if live.rollout is not None:
        entry.rollout = max(live.rollout, recorded)
    elif recorded:
        # A rollout whose status write was lost is still one more than the last.
        entry.rollout = recorded if same else recorded + 1
    else:
        entry.rollout = 1
    entry.previous_config_hash = earlier.previous_config_hash if same and earlier else None
    entry.judged = earlier.judged if earlier is not None else None
    first = entry.rollout == 1
    approval = _approval(release, name, digest, first) if env.spec.policy.require_approval else None
    entry.approved_by = (earlier.approved_by if same and earlier else None) or (
        approval.approved_by if approval else None
    )
    entry.approved_at = (earlier.approved_at if same and earlier else None) or (
        approval.approved_at if approval else None
    )
    return entry


def _change(
    ctx: Context,
    env: Environment,
    merged: dict[str, str],
    digest: str,
    live: DeploymentObservation,
    earlier: EnvironmentProgress | None,
    observed: Observed,
    soaked_until: datetime | None,
    may_deploy: bool,
) -> tuple[EnvironmentProgress, Blocker | None]:
    """This release runs in ``env`` with another config (an override or the
    Environment's config changed) or image (the operator's server image): roll
    it out as the next rollout, under the same policy as a first deployment.
    Until it is deployed the entry describes what is live."""
    name = env.name
    asked = (
        earlier is not None
        and earlier.phase == EnvironmentPhase.DEPLOYING
        and earlier.config_hash == digest
        and earlier.rollout is not None
    )
    recorded = earlier.rollout if earlier is not None and earlier.rollout else 0
    # Never a number used before: the highest of what is live (a rollback
    # puts an older one back), what this status recorded and what the
    # Environment's history kept (a status write may have been lost since).
    used = max(live.rollout or 1, recorded, _highest_rollout(env, ctx.release.name))
    next_rollout = recorded if asked else used + 1
    entry = _live_entry(name, digest, live)
    entry.rollout, entry.previous_config_hash = used, live.config_hash
    if earlier is not None:
        entry.approved_by, entry.approved_at = earlier.approved_by, earlier.approved_at
        entry.verified_at = earlier.verified_at
        entry.judged = earlier.judged
    change = f"config {live.config_hash[:12]} -> {digest[:12]}"
    if live.image != ctx.image:
        change = f"image {live.image} -> {ctx.image}, {change}"
    job = verification_job_name(ctx.release, name, digest, ctx.image)
    run = observed.verifications.get(job)
    if run is not None and run.state == "Failed":
        # This change was deployed, failed its verification and was put back.
        entry.verification_job = job
        entry.phase = EnvironmentPhase.ROLLED_BACK
        entry.message = (
            f"the change ({change}) failed verification "
            f"({run.message or 'the verification Job failed'}) and config "
            f"{live.config_hash[:12]} was put back; change the config again to retry"
        )
        return entry, ("ConfigChangeRolledBack", f"{name}: {entry.message}", True)
    if not may_deploy:
        entry.message = f"a change ({change}) waits for the environments before {name}"
        return entry, None
    entry, verdict = _try_deploy(ctx, env, merged, digest, soaked_until, entry, next_rollout)
    if entry.phase == EnvironmentPhase.BLOCKED and verdict is not None:
        reason, message, is_stalled = verdict
        keeps = f"; {name} keeps running config {live.config_hash[:12]}"
        entry.message = (entry.message or "") + keeps
        verdict = (reason, message + keeps, is_stalled)
    elif entry.phase == EnvironmentPhase.DEPLOYING:
        entry.message = f"rolling out a change ({change}) as rollout {entry.rollout}"
        ctx.plan.events.append(Event("Normal", "ConfigChange", f"{name}: {entry.message}"))
    return entry, verdict


def _highest_rollout(env: Environment, release: str) -> int:
    """The highest rollout of ``release`` the Environment's history records."""
    history = env.status.history if env.status is not None else []
    return max((p.rollout or 0 for p in history if p.release == release), default=0)


def _soak_end(env: Environment, entry: EnvironmentProgress) -> datetime | None:
    if env.spec.policy.soak is None or entry.deployed_at is None:
        return None
    since = parse_time(entry.deployed_at)
    return since + parse_duration(env.spec.policy.soak)


def _try_deploy(
    ctx: Context,
    env: Environment,
    merged: dict[str, str],
    digest: str,
    soaked_until: datetime | None,
    entry: EnvironmentProgress,
    rollout: int,
    challenger: bool = False,
    judged: str | None = None,
) -> tuple[EnvironmentProgress, Blocker | None]:
    """Deploy ``rollout`` to ``env`` if nothing stops it; otherwise say what
    does. With ``challenger``, beside the live release, with no traffic."""
    release = ctx.release
    name = env.name
    violations = validate_config(env, merged, ctx.environments.values())
    if violations:
        message = "; ".join(v.describe() for v in violations)
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        ctx.plan.events.append(Event("Warning", "ConfigRuleViolated", message))
        return entry, ("ConfigRuleViolated", f"promotion to {name} blocked: {message}", True)
    reference = release.spec.serving == Serving.REFERENCE_SERVER
    own_server = release.spec.server if release.spec.serving == Serving.MODEL_SERVER else None
    serving = ctx.serving
    if reference and not ctx.image:
        message = (
            f"serving ReferenceServer needs a server image and the operator has none: set "
            f"MODELGATE_SERVER_IMAGE (the chart does) or spec.image; nothing deployed to {name}"
        )
        entry.phase, entry.message = EnvironmentPhase.BLOCKED, message
        return entry, ("ServerImageMissing", message, True)
    if (reference or own_server) and not serves_artifact(serving):
        message = (
            f"serving {release.spec.serving} needs the run's model and metadata artifacts "
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
        ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, wait)
        return entry, ("Soaking", message, False)
    for window in env.spec.policy.freeze_windows:
        until = window.holds(ctx.now)
        if until is not None:
            message = (
                f"promotions to {name} are frozen by window {window.name!r} until "
                f"{format_time(until)} (UTC); wait, or remove the window from the Environment"
            )
            entry.phase, entry.message = EnvironmentPhase.WAITING, message
            ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, until - ctx.now)
            return entry, ("FreezeWindow", message, False)
    if env.spec.policy.require_approval:
        approval = _approval(release, name, digest, first=rollout == 1)
        if approval is None:
            wanted = f"{{environment: {name}, approvedBy: <you>}}"
            what = "approval"
            if rollout > 1:
                wanted = f"{{environment: {name}, configHash: {digest[:12]}, approvedBy: <you>}}"
                what = f"approval of each config change (this one: {digest[:12]})"
            message = (
                f"environment {name} requires {what}: add {wanted} to "
                "spec.promotion.approvals (with the admission webhook, approvedBy is filled "
                "in from your identity)"
            )
            entry.phase, entry.message = EnvironmentPhase.WAITING, message
            return entry, ("AwaitingApproval", message, False)
        entry.approved_by = approval.approved_by
        entry.approved_at = approval.approved_at
    entry.phase, entry.image, entry.rollout = EnvironmentPhase.DEPLOYING, image, rollout
    entry.message = f"deploying {image}" + (
        f" serving model sha256 {serving[contract.SERVER_MODEL_SHA256][:12]}"
        if reference or own_server
        else ""
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
            gate=gate_record(ctx.status.gate),
            approved_by=entry.approved_by,
            approved_at=entry.approved_at,
            command=SERVER_COMMAND
            if reference
            else tuple(own_server.command)
            if own_server is not None
            else (),
            rollout=rollout,
            challenger=challenger,
            judged=judged[:2000] if judged else None,
        )
    )
    what = "the challenger" if challenger else "deploying"
    ctx.plan.events.append(Event("Normal", "Deploying", f"{what} to {name}"))
    return entry, None


def _from_registry(image: str, prefix: str) -> bool:
    """``image`` lives under ``prefix`` (a registry host, optionally with a path),
    matched on whole path segments."""
    prefix = prefix.rstrip("/")
    return image == prefix or image.startswith(prefix + "/")


def _approval(release: ModelRelease, environment: str, digest: str, first: bool) -> Approval | None:
    """The first approval for ``environment`` that names who approved and fits
    this deployment: one naming this config, or (first deployment only) one
    naming no config."""
    for approval in release.spec.promotion.approvals:
        if approval.environment != environment or not approval.approved_by:
            continue
        if approval.config_hash is None:
            if first:
                return approval
        elif digest.startswith(approval.config_hash):
            return approval
    return None
