"""Step 3: the quality gate, evaluated once per set of checks and predictions."""

from __future__ import annotations

from modelgate.api.modelrelease import (
    ArtifactRecord,
    CheckOutcome,
    GateStatus,
    Phase,
)
from modelgate.api.qualitygate import QualityGate, Task
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import Context, progressing, stalled
from modelgate.promotion.keys import effective_checks, evaluation_key, gate_inputs_hash
from modelgate.promotion.plan import EvaluateGate, Observed


def evaluate(ctx: Context, gate: QualityGate | None, observed: Observed) -> bool:
    """True once the gate passed for the current checks and predictions."""
    release = ctx.release
    task = gate.spec.task if gate is not None else release.spec.gate.task
    assert task is not None  # the model validator guarantees it
    positive = gate.spec.positive_label if gate is not None else "1"
    checks = effective_checks(release, gate)
    predictions = next(a for a in ctx.status.artifacts if a.name == "predictions")
    attempt = ctx.status.retry.evaluation if ctx.status.retry is not None else 0
    inputs = gate_inputs_hash(Task(task), positive, checks, predictions, attempt)
    result = ctx.status.gate
    retry = (
        result is not None
        and result.failed_evaluation is not None
        and result.failed_evaluation != evaluation_key(release.spec.evaluation)
    )
    if result is None or result.inputs_hash != inputs or retry:
        ctx.status.gate = None
        ctx.status.phase = Phase.EVALUATING
        ctx.condition(cond.GATE_PASSED, None, "Evaluating", "evaluating the quality gate")
        progressing(ctx, "Evaluating", "evaluating the quality gate")
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
                train_data=release.spec.data.train,
                evaluation_data=release.spec.data.evaluation,
                id_column=release.spec.data.id_column,
                baselines=baselines,
                evaluation=release.spec.evaluation,
            )
        )
        return False
    summary = gate_summary(result)
    if result.outcome != CheckOutcome.PASSED:
        ctx.status.phase = Phase.GATE_FAILED
        ctx.condition(cond.GATE_PASSED, False, f"Gate{result.outcome}", summary)
        stalled(ctx, "GateFailed", summary)
        return False
    ctx.condition(cond.GATE_PASSED, True, "GatePassed", summary)
    return True


def gate_record(result: GateStatus | None) -> str:
    if result is None:
        return "no gate"
    return (
        f"{result.name or 'inline'} {result.outcome} ({result.passed} passed, "
        f"{result.failed} failed, {result.inconclusive} inconclusive)"
    )


def gate_summary(result: GateStatus) -> str:
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
