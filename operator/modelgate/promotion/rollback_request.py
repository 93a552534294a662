"""A rollback asked for in spec.promotion.rollbacks, one environment at a time.

Where the release is live when the request is acted on, the environment goes
back to what the release replaced there (the previous release, or nothing):
the same Rollback action a failed verification takes, and as final. Where it
runs beside the live release as the challenger, the challenger is removed and
the live release keeps all traffic. Anywhere else the request is recorded and
does nothing. The environment's entry records the request it acted on
(rollbackRequest), so each is acted on once, across restarts.
"""

from __future__ import annotations

from modelgate.api.common import format_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    EnvironmentPhase,
    EnvironmentProgress,
    ModelRelease,
    RollbackRequest,
)
from modelgate.api.rollout import RolloutPhase
from modelgate.promotion.context import Context
from modelgate.promotion.plan import Event
from modelgate.promotion.verification import put_back, rollback_of

UNKNOWN = "someone (requestedBy not set)"


def fresh_request(
    release: ModelRelease, environment: str, earlier: EnvironmentProgress | None
) -> RollbackRequest | None:
    """The environment's rollback request if it was not acted on yet."""
    asked = next(
        (r for r in release.spec.promotion.rollbacks if r.environment == environment), None
    )
    handled = earlier.rollback_request if earlier is not None else None
    if asked is None or asked.requested_at == handled:
        return None
    return asked


def rolled_back_on_request(
    ctx: Context,
    env: Environment,
    earlier: EnvironmentProgress | None,
    asked: RollbackRequest,
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
    who = asked.requested_by or UNKNOWN
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


def ignored(ctx: Context, environment: str, asked: RollbackRequest, phase: str) -> None:
    who = asked.requested_by or UNKNOWN
    ctx.plan.events.append(
        Event(
            "Normal",
            "RollbackIgnored",
            f"{environment}: the rollback asked by {who} found the release not live there "
            f"(phase {phase}): nothing was rolled back",
        )
    )
