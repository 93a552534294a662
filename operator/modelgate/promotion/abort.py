"""An aborted release (spec.abort): promoted no further, its challengers removed.

A state, not an event: while spec.abort is set every reconcile stops here,
and removing it goes on from where the release stopped. Where the release
is live it stays (a rollback takes it out); Jobs already running run to
their end and are read when it goes on.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelgate.api.environment import Environment
from modelgate.api.modelrelease import EnvironmentPhase, Phase
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import Context, stalled
from modelgate.promotion.keys import release_key
from modelgate.promotion.plan import Observed
from modelgate.promotion.rollout import removals_for_deleted

# Where an aborted release still serves traffic of its own.
_LIVE = (
    EnvironmentPhase.DEPLOYING,
    EnvironmentPhase.VERIFYING,
    EnvironmentPhase.ANALYZING,
    EnvironmentPhase.DEPLOYED,
)


def aborted(ctx: Context, environments: Mapping[str, Environment], observed: Observed) -> bool:
    """True (the release stops here) while spec.abort is set."""
    asked = ctx.release.spec.abort
    if asked is None:
        return False
    who = asked.asker
    why = f" ({asked.reason})" if asked.reason else ""
    message = f"aborted by {who} at {asked.requested_at}{why}: promoted no further"
    key = release_key(ctx.release)
    path = {n: e for n, e in environments.items() if n in ctx.release.spec.promotion.environments}
    ctx.plan.actions.extend(
        removals_for_deleted(
            key, ctx.release.spec.model.name, path, observed.challengers, f"{key}: {message}"
        )
    )
    for entry in ctx.status.environments:
        if entry.phase == EnvironmentPhase.JUDGING or (
            entry.judged is not None and entry.phase == EnvironmentPhase.DEPLOYING
        ):
            entry.phase = EnvironmentPhase.BLOCKED
            entry.message = (
                f"{message}; its challenger is removed and the live release keeps all traffic"
            )
    live = [e.name for e in ctx.status.environments if e.phase in _LIVE]
    if live:
        message += f"; it stays live in {', '.join(live)} (kubectl modelgate rollback takes it out)"
    message += "; remove spec.abort (kubectl modelgate retry) to go on"
    ctx.status.phase = Phase.ABORTED
    ctx.condition(cond.DEPLOYED, False, "Aborted", message)
    stalled(ctx, "Aborted", message)
    return True
