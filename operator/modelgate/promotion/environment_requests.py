"""What people ask of one environment: a rollback (spec.promotion.rollbacks),
a verification again (spec.promotion.reverifications) or a promotion that
does not wait for time (spec.promotion.promotions).

Each environment's entry records the request of each kind it acted on
(rollbackRequest, reverifyRequest), so each is acted on once, across
restarts; a request that finds nothing to act on is recorded too, with an
Event saying why.

Rollback: where the release is live when the request is acted on, the environment goes
back to what the release replaced there (the previous release, or nothing):
the same Rollback action a failed verification takes, and as final. Where it
runs beside the live release as the challenger, the challenger is removed and
the live release keeps all traffic. Anywhere else the request is recorded and
does nothing.

Verification again: where the release is live and verified and the
environment verifies, its verification runs again as a new Job (named for
the request); a failure is handled as the first verification's.
"""

from __future__ import annotations

from datetime import datetime

from modelgate.api.common import format_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    EnvironmentPhase,
    EnvironmentProgress,
    EnvironmentRequest,
    ModelRelease,
)
from modelgate.api.rollout import RolloutPhase, RolloutProgress
from modelgate.promotion.context import Context
from modelgate.promotion.plan import Event
from modelgate.promotion.verification import put_back, rollback_of


def fresh_request(
    requests: list[EnvironmentRequest], environment: str, handled: str | None
) -> EnvironmentRequest | None:
    """The environment's request among ``requests`` if it was not acted on
    yet (``handled``: the requestedAt acted on last)."""
    asked = next((r for r in requests if r.environment == environment), None)
    if asked is None or asked.requested_at == handled:
        return None
    return asked


def rolled_back_on_request(
    ctx: Context,
    env: Environment,
    earlier: EnvironmentProgress | None,
    asked: EnvironmentRequest,
    digest: str,
    live_here: bool,
) -> EnvironmentProgress:
    """The entry of ``env`` once the release is taken out of it; when it is
    live there, the action that puts back what it replaced."""
    entry = (
        earlier.model_copy(deep=True)
        if earlier is not None
        else EnvironmentProgress(name=env.name, phase=EnvironmentPhase.PENDING, config_hash=digest)
    )
    who = asked.asker
    why = f" ({asked.reason})" if asked.reason else ""
    entry.phase = EnvironmentPhase.ROLLED_BACK
    entry.rolled_back_by = who
    entry.unfinished = None
    if live_here:
        # The release goes, not only its latest config change.
        entry.previous_config_hash = None
        entry.message = f"rolled back on request by {who}{why}: {put_back(entry)} was put back"
        ctx.plan.actions.append(rollback_of(ctx, env, entry))
    else:
        entry.message = (
            f"rolled back on request by {who}{why}: the challenger is removed and the live "
            "release keeps all traffic"
        )
        if entry.judged is not None:
            entry.judged = entry.judged.model_copy(
                update={
                    "phase": RolloutPhase.ROLLED_BACK,
                    "message": entry.message,
                    "decided_at": format_time(ctx.now),
                }
            )
    ctx.plan.events.append(Event("Warning", "RolledBack", f"{env.name}: {entry.message}"))
    return entry


def still_rolling_back(
    ctx: Context, env: Environment, earlier: EnvironmentProgress
) -> EnvironmentProgress:
    """Rolled back on request and still live (a GitOps agent has not synced
    the revert yet): the entry stays rolled back and the rollback is asked
    again (it does nothing once done)."""
    entry = earlier.model_copy()
    ctx.plan.actions.append(rollback_of(ctx, env, entry))
    return entry


def ignored(ctx: Context, environment: str, asked: EnvironmentRequest, kind: str, why: str) -> None:
    """Record that a request found nothing to act on: ``kind`` names it (the
    Event's reason is ``<kind>Ignored``)."""
    who = asked.asker
    what = "rollback" if kind == "Rollback" else "verification again"
    ctx.plan.events.append(
        Event("Normal", f"{kind}Ignored", f"{environment}: the {what} asked by {who}: {why}")
    )


def reverify_refusal(
    env: Environment, earlier: EnvironmentProgress | None, live_here: bool
) -> str | None:
    """Why a verification asked for again cannot run in ``env`` now; None when it can."""
    phase = str(earlier.phase) if earlier is not None else "Pending"
    if env.spec.verification is None:
        return f"environment {env.name} does not verify (spec.verification): nothing was run"
    if not live_here:
        return f"the release is not live there (phase {phase}): nothing was run"
    if earlier is None or earlier.phase not in (
        EnvironmentPhase.DEPLOYED,
        EnvironmentPhase.ANALYZING,
    ):
        return f"its verification there has not finished (phase {phase}): nothing more was run"
    return None


def reverifying(ctx: Context, env: Environment, asked: EnvironmentRequest) -> None:
    who = asked.asker
    why = f" ({asked.reason})" if asked.reason else ""
    ctx.plan.events.append(
        Event("Normal", "Reverifying", f"{env.name}: verification again, asked by {who}{why}")
    )


def promotion_request(release: ModelRelease, environment: str) -> EnvironmentRequest | None:
    """The promotion asked for into ``environment``, if any (it stands)."""
    return next(
        (r for r in release.spec.promotion.promotions if r.environment == environment), None
    )


def _asked(asked: EnvironmentRequest) -> str:
    who = asked.asker
    return f"promoted on request by {who}" + (f" ({asked.reason})" if asked.reason else "")


def promoted_on_request(
    ctx: Context, environment: str, asked: EnvironmentRequest, judged: RolloutProgress
) -> None:
    """End the judgement of a verified challenger: it takes over."""
    judged.phase = RolloutPhase.PROMOTED
    judged.message = f"{_asked(asked)} before its judgement ended"
    judged.decided_at = format_time(ctx.now)
    ctx.plan.events.append(Event("Normal", "PromotedOnRequest", f"{environment}: {judged.message}"))


def skipped_soak(
    ctx: Context, environment: str, asked: EnvironmentRequest, soaked_until: datetime | None
) -> None:
    """Say that a deployment went ahead of the soak it would have waited for."""
    if soaked_until is None or ctx.now >= soaked_until:
        return
    ctx.plan.events.append(
        Event(
            "Normal",
            "PromotedOnRequest",
            f"{environment}: {_asked(asked)} before the previous environment's soak ended "
            f"({format_time(soaked_until)})",
        )
    )
