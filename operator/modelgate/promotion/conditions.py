"""metav1.Condition bookkeeping: one entry per type, transitions timestamped."""

from __future__ import annotations

from datetime import datetime

from modelgate.api.common import Condition, format_time

# Condition types of a ModelRelease, in display order.
TRAINED = "Trained"
GATE_PASSED = "GatePassed"
CONFIG_VALID = "ConfigValid"
DEPLOYED = "Deployed"
VERIFIED = "Verified"
ANALYZED = "Analyzed"
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


def find(conditions: list[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def set_condition(
    conditions: list[Condition],
    kind: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Return the list with ``kind`` set; the transition time moves only when
    the status changes (API conventions)."""
    text = "Unknown" if status is None else ("True" if status else "False")
    previous = find(conditions, kind)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status == text
        else format_time(now)
    )
    updated = Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message[:32768],
        last_transition_time=since,
        observed_generation=generation,
    )
    result = [c for c in conditions if c.type != kind]
    result.append(updated)
    order = [TRAINED, GATE_PASSED, CONFIG_VALID, DEPLOYED, VERIFIED, READY, RECONCILING, STALLED]
    result.sort(key=lambda c: order.index(c.type) if c.type in order else len(order))
    return result


def remove_condition(conditions: list[Condition], kind: str) -> list[Condition]:
    return [c for c in conditions if c.type != kind]
