"""The outcome of a gate evaluation: one result per check and the gate's verdict.

Plain data, no numpy or pyarrow: the operator records these (a failed
evaluation is every check Inconclusive) without loading the engine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from modelgate.api.modelrelease import CheckOutcome
from modelgate.api.qualitygate import Severity

PASSED, FAILED, INCONCLUSIVE = (
    CheckOutcome.PASSED.value,
    CheckOutcome.FAILED.value,
    CheckOutcome.INCONCLUSIVE.value,
)

# baseline.onMissing policy -> check outcome.
ON_MISSING_OUTCOME = {"Pass": PASSED, "Fail": FAILED, "Inconclusive": INCONCLUSIVE}


@dataclass
class SliceEvaluation:
    slice: str
    outcome: str
    value: float | None
    sample_size: int
    message: str = ""
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class CheckEvaluation:
    """Full result of one check (the status keeps a compact copy)."""

    name: str
    kind: str
    severity: str
    outcome: str
    metric: str | None = None
    value: float | None = None
    min: float | None = None
    max: float | None = None
    baseline: float | None = None
    slice: str | None = None
    slice_values: dict[str, str] | None = None
    sample_size: int | None = None
    message: str = ""
    slices: list[SliceEvaluation] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return self.severity == Severity.BLOCKING and self.outcome != PASSED

    def to_result(self) -> dict[str, Any]:
        """The CLI's JSON contract for one check."""
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "slice": self.slice_values,
            "value": _finite_or_none(self.value),
            "threshold": {"min": self.min, "max": self.max},
            "baselineValue": _finite_or_none(self.baseline),
            "sampleSize": self.sample_size,
            "severity": self.severity,
            "outcome": self.outcome,
            "message": self.message,
            "slices": [
                {
                    "slice": s.values,
                    "value": _finite_or_none(s.value),
                    "sampleSize": s.sample_size,
                    "outcome": s.outcome,
                    "message": s.message,
                }
                for s in self.slices
            ],
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class GateEvaluation:
    outcome: str
    checks: list[CheckEvaluation]

    def counts(self) -> dict[str, int]:
        return {o: sum(c.outcome == o for c in self.checks) for o in (PASSED, FAILED, INCONCLUSIVE)}

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "checks": [asdict(c) for c in self.checks]}

    def to_result(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "checks": [c.to_result() for c in self.checks]}


def gate_outcome(checks: list[CheckEvaluation]) -> str:
    """Failed if a blocking check failed; Inconclusive if one is inconclusive."""
    blocking = [c for c in checks if c.severity == Severity.BLOCKING]
    if any(c.outcome == FAILED for c in blocking):
        return FAILED
    if any(c.outcome == INCONCLUSIVE for c in blocking):
        return INCONCLUSIVE
    return PASSED
