"""Step 1: the gate and environments a release names exist and form a valid path."""

from __future__ import annotations

from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    Phase,
)
from modelgate.api.qualitygate import QualityGate
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import WAIT_FOR_REFERENCE, Context
from modelgate.promotion.paths import path_problems


def references_missing(
    ctx: Context, gate: QualityGate | None, environments: dict[str, Environment]
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
