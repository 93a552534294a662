"""QualityGate handlers: validated, Ready with a reason; an edit re-judges releases."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from modelgate.api.qualitygate import QualityGate, QualityGateStatus
from modelgate.handlers.common import (
    GATES,
    measured,
    now_utc,
    report_invalid,
    status_patch,
    wake_releases,
)
from modelgate.promotion.conditions import READY, set_condition


@kopf.on.resume(*GATES)
@kopf.on.create(*GATES)
@kopf.on.update(*GATES, field="spec")
def gate_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    with measured("QualityGate"):
        _gate_changed(body, patch)


def _gate_changed(body: kopf.Body, patch: kopf.Patch) -> None:
    try:
        gate = QualityGate.model_validate(dict(body))
    except ValidationError as error:
        report_invalid("QualityGate", body, patch, error)
        return
    old = QualityGateStatus.model_validate(body.get("status") or {})
    status = QualityGateStatus(
        observed_generation=gate.generation,
        check_count=len(gate.spec.checks),
        conditions=set_condition(
            old.conditions,
            READY,
            True,
            "Valid",
            f"{len(gate.spec.checks)} checks are valid",
            gate.generation,
            now_utc(),
        ),
    )
    patch.status.update(status_patch(body.get("status"), status.wire()))


@kopf.on.update(*GATES, field="spec", id="wake-releases")
def gate_edited(namespace: str | None, **_: Any) -> None:
    """Without the watches, every release of the namespace looks again at
    once (with them, their index already woke the releases that name it)."""
    wake_releases(namespace or "default")
