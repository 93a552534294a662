"""An evaluation as the operator (and local mode) sees it: a Job or process.

What starts an evaluator (its payload and deterministic name) and what
reads its bounded result back into the release status. Nothing here opens
a dataset: the engine (numpy, pyarrow) stays in the evaluator's process,
and the controller imports only this module (see ``backends/evaluation.py``
for the evaluator's side).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from modelgate.api.common import format_time
from modelgate.api.modelrelease import (
    ArtifactRecord,
    CheckResult,
    Evaluation,
    GateStatus,
    ModelRelease,
)
from modelgate.api.qualitygate import Check, Task
from modelgate.backends.base import ArtifactStore
from modelgate.gates.outcome import INCONCLUSIVE, CheckEvaluation, GateEvaluation, gate_outcome
from modelgate.promotion import EvaluateGate
from modelgate.promotion.keys import evaluation_key

SUMMARY_NAME = "gate-summary"
# The operator reads only these bounded files of an evaluation: its outputs
# manifest and the compact summary (every check, no slice tables).
OUTPUTS_LIMIT = 64 * 1024
SUMMARY_LIMIT = 1024 * 1024


def evaluation_payload(action: EvaluateGate) -> dict[str, Any]:
    """The EvaluateGate action as the evaluator reads it (MODELGATE_EVALUATION)."""
    return {
        "inputsHash": action.inputs_hash,
        "gateName": action.gate_name,
        "task": str(action.task),
        "positiveLabel": action.positive_label,
        "checks": [c.wire() for c in action.checks],
        "predictions": action.predictions.wire(),
        "metadata": action.metadata.wire() if action.metadata else None,
        "trainData": action.train_data,
        "evaluationData": action.evaluation_data,
        "idColumn": action.id_column,
        "baselines": {k: (v.wire() if v else None) for k, v in sorted(action.baselines.items())},
        "evaluation": action.evaluation.wire(),
    }


def evaluation_from_payload(payload: Mapping[str, Any]) -> EvaluateGate:
    """Raises ValueError (or pydantic's ValidationError, a ValueError) naming the field."""
    try:
        return EvaluateGate(
            inputs_hash=str(payload["inputsHash"]),
            gate_name=payload.get("gateName"),
            task=Task(payload["task"]),
            positive_label=str(payload["positiveLabel"]),
            checks=tuple(Check.model_validate(c) for c in payload["checks"]),
            predictions=ArtifactRecord.model_validate(payload["predictions"]),
            metadata=(
                ArtifactRecord.model_validate(payload["metadata"])
                if payload.get("metadata")
                else None
            ),
            train_data=str(payload["trainData"]),
            evaluation_data=str(payload["evaluationData"]),
            id_column=payload.get("idColumn"),
            baselines={
                str(k): ArtifactRecord.model_validate(v) if v else None
                for k, v in (payload.get("baselines") or {}).items()
            },
            evaluation=Evaluation.model_validate(payload.get("evaluation") or {}),
        )
    except KeyError as error:
        raise ValueError(f"the evaluation has no {error.args[0]!r}") from error


def evaluation_job_name(release_name: str, action: EvaluateGate, shards: bool = False) -> str:
    """Deterministic per release and evaluation inputs (a changed gate, new
    predictions or another baseline: a new evaluation). A sharded
    evaluation's Indexed Job is ``-evs-``; its merge Job, like a single
    pod's, ``-eval-`` (the Job whose outputs the operator reads)."""
    digest = hashlib.sha256(
        json.dumps(evaluation_payload(action), sort_keys=True).encode()
    ).hexdigest()[:10]
    suffix = f"-{'evs' if shards else 'eval'}-{digest}"
    return release_name[: 63 - len(suffix)].rstrip("-") + suffix


def unmeasurable(action: EvaluateGate, reason: str) -> GateEvaluation:
    checks = [
        CheckEvaluation(
            name=c.name, kind=c.kind, severity=str(c.severity), outcome=INCONCLUSIVE, message=reason
        )
        for c in action.checks
    ]
    return GateEvaluation(outcome=gate_outcome(checks), checks=checks)


def gate_status(action: EvaluateGate, evaluation: GateEvaluation, now: datetime) -> GateStatus:
    """The compact result kept in the release status."""
    counts = evaluation.counts()
    return GateStatus(
        name=action.gate_name,
        inputs_hash=action.inputs_hash,
        outcome=evaluation.outcome,
        evaluated_at=format_time(now),
        passed=counts["Passed"],
        failed=counts["Failed"],
        inconclusive=counts["Inconclusive"],
        checks=[
            CheckResult(
                name=c.name,
                kind=c.kind,
                metric=c.metric,
                severity=c.severity,
                outcome=c.outcome,
                value=c.value,
                min=c.min,
                max=c.max,
                baseline=c.baseline,
                slice=c.slice,
                sample_size=c.sample_size,
                message=c.message[:1024],
            )
            for c in evaluation.checks
        ],
    )


def finite(value: object) -> object:
    """JSON has no NaN or infinity: an unmeasured number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def parse_outputs(data: bytes) -> list[ArtifactRecord]:
    """The evaluator's outputs manifest; ValueError when it is not one."""
    if len(data) > OUTPUTS_LIMIT:
        raise ValueError(f"the outputs manifest is {len(data)} bytes, over {OUTPUTS_LIMIT}")
    loaded = json.loads(data)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("artifacts"), list):
        raise ValueError("the outputs manifest has no artifacts list")
    records = [ArtifactRecord.model_validate(a) for a in loaded["artifacts"]]
    names = {r.name for r in records}
    missing = {"gate-report", "gate-report-html", SUMMARY_NAME} - names
    if missing:
        raise ValueError(f"the outputs manifest lacks {', '.join(sorted(missing))}")
    return records


def record_evaluation_outputs(
    release: ModelRelease,
    action: EvaluateGate,
    records: list[ArtifactRecord],
    store: ArtifactStore,
) -> GateStatus:
    """Put an evaluator's result on the release: the summary (read bounded and
    hash-verified) in ``status.gate``, the reports among the artifacts."""
    summary_record = next(r for r in records if r.name == SUMMARY_NAME)
    if summary_record.size > SUMMARY_LIMIT:
        raise ValueError(f"the gate summary is {summary_record.size} bytes, over {SUMMARY_LIMIT}")
    summary = GateStatus.model_validate(json.loads(store.get_bytes(summary_record)))
    if summary.inputs_hash != action.inputs_hash:
        raise ValueError("the gate summary is of other inputs than the evaluation asked for")
    _record(release, summary, [r for r in records if r.name != SUMMARY_NAME])
    return summary


def record_failed_evaluation(
    release: ModelRelease, action: EvaluateGate, reason: str, now: datetime
) -> GateStatus:
    """An evaluation that could not run (failed, OOM-killed, past its
    deadline, unreadable output): every check Inconclusive with the reason."""
    fix = (
        "; change spec.evaluation (e.g. raise resources.limits.memory or deadline) "
        "to evaluate again, or, once the cause is fixed elsewhere, retry "
        "(kubectl modelgate retry, or a new spec.retry.requestedAt)"
    )
    summary = gate_status(action, unmeasurable(action, f"evaluation failed: {reason}{fix}"), now)
    summary.failed_evaluation = evaluation_key(action.evaluation)
    _record(release, summary, [])
    return summary


def _record(release: ModelRelease, summary: GateStatus, reports: list[ArtifactRecord]) -> None:
    assert release.status is not None
    release.status.gate = summary
    release.status.artifacts = [
        a for a in release.status.artifacts if not a.name.startswith("gate-report")
    ] + reports
