"""A retry asked for in spec.retry: the failed step runs again, once per request.

A retry adds one to the failed step's attempt count in status.retry; the
count is part of that step's key (training_key, the scoring key,
gate_inputs_hash), so the step runs again as a new Job under a new name and
the failed one stays with its logs. Everything after the step follows from
its new key as after any change. A status write lost after the count went
up is harmless: the request is still unhandled in the older status, the
count goes up from the same value, and the run it names is the one started.
"""

from __future__ import annotations

from modelgate.api.common import format_time
from modelgate.api.modelrelease import ModelReleaseStatus, RetryStatus, RetryStep
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import Context
from modelgate.promotion.plan import Event

_COUNTERS = {
    RetryStep.TRAINING: "training",
    RetryStep.SCORING: "scoring",
    RetryStep.EVALUATION: "evaluation",
}
_WHAT = {
    RetryStep.TRAINING: "the training (or import) run",
    RetryStep.SCORING: "the scoring run",
    RetryStep.EVALUATION: "the gate's evaluation",
}


def failed_step(status: ModelReleaseStatus) -> RetryStep | None:
    """The step a retry runs again: the one whose condition is False."""
    trained = cond.find(status.conditions, cond.TRAINED)
    if trained is not None and trained.status == "False":
        return RetryStep.SCORING if trained.reason == "ScoringFailed" else RetryStep.TRAINING
    gate = cond.find(status.conditions, cond.GATE_PASSED)
    if gate is not None and gate.status == "False":
        return RetryStep.EVALUATION
    return None


def take_retry(ctx: Context) -> None:
    """Act on spec.retry if it is a request not acted on yet."""
    asked = ctx.release.spec.retry
    record = ctx.status.retry or RetryStatus()
    if asked is None or record.handled == asked.requested_at:
        return
    record = record.model_copy()
    step = failed_step(ctx.previous)
    record.handled, record.handled_at, record.step = (
        asked.requested_at,
        format_time(ctx.now),
        step,
    )
    by = f" by {asked.requested_by}" if asked.requested_by else ""
    why = f" ({asked.reason})" if asked.reason else ""
    if step is None:
        record.message = (
            f"nothing had failed to run again (phase {ctx.previous.phase or 'Pending'}): a retry "
            "runs a failed training, scoring or gate evaluation again"
        )
        ctx.plan.events.append(Event("Normal", "RetryIgnored", f"retry{by}{why}: {record.message}"))
    else:
        counter = _COUNTERS[step]
        attempt = int(getattr(record, counter)) + 1
        setattr(record, counter, attempt)
        record.message = f"{_WHAT[step]} runs again (retry {attempt})"
        ctx.plan.events.append(Event("Normal", "Retrying", f"retry{by}{why}: {record.message}"))
    ctx.status.retry = record
