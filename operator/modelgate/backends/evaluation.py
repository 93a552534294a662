"""Run an EvaluateGate action: fetch verified artifacts, run the engine, report.

Shared by local mode and the operator. The artifacts are read as data
(CSV/Parquet via pyarrow); nothing from an artifact is ever imported or
unpickled here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
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
from modelgate.backends.base import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
)
from modelgate.gates import TableError
from modelgate.gates.engine import INCONCLUSIVE, CheckEvaluation, GateEvaluation, gate_outcome
from modelgate.gates.report import ReportCharts, render_html
from modelgate.gates.source import Shard, Source, source_of
from modelgate.gates.streaming import (
    StreamInputs,
    accumulate,
    evaluate_stream,
    finish,
    merge,
    partial_from_bytes,
    partial_to_bytes,
)
from modelgate.promotion import EvaluateGate
from modelgate.promotion.keys import evaluation_key

ARTIFACT_ERRORS = (ArtifactIntegrityError, ArtifactNotFoundError, TableError, OSError)

# (uri, dataset name) -> a local file or folder with the data (downloaded if remote).
DataFetcher = Callable[[str, str], Path]


def _unmeasurable(action: EvaluateGate, reason: str) -> GateEvaluation:
    checks = [
        CheckEvaluation(
            name=c.name, kind=c.kind, severity=str(c.severity), outcome=INCONCLUSIVE, message=reason
        )
        for c in action.checks
    ]
    return GateEvaluation(outcome=gate_outcome(checks), checks=checks)


@dataclass
class EvaluationRun:
    evaluation: GateEvaluation
    charts: ReportCharts


def stream_inputs(
    action: EvaluateGate, store: ArtifactStore, fetch_data: DataFetcher, scratch: Path
) -> StreamInputs:
    """The action's inputs as sources on local disk (artifacts verified as
    they download); anything that cannot be fetched is recorded with why."""
    errors: dict[str, str] = {}
    predictions = None
    try:
        path = store.get_path(action.predictions, scratch)
        predictions = source_of(path, "predictions")
    except (*ARTIFACT_ERRORS, ArtifactError) as error:
        errors["predictions"] = str(error)
    datasets: dict[str, Source | None] = {}
    for name, uri in (("training", action.train_data), ("evaluation", action.evaluation_data)):
        try:
            datasets[name] = source_of(fetch_data(uri, name), name)
        except (*ARTIFACT_ERRORS, ArtifactError) as error:
            datasets[name] = None
            errors[name] = str(error)
    baselines: dict[str, Source | None] = {}
    for environment, record in action.baselines.items():
        if record is None:
            baselines[environment] = None
            continue
        try:
            path = store.get_path(record, scratch)
            baselines[environment] = source_of(path, f"{environment} baseline")
        except (*ARTIFACT_ERRORS, ArtifactError) as error:
            errors[f"baseline:{environment}"] = str(error)
    return StreamInputs(
        task=action.task,
        predictions=predictions,
        positive_label=action.positive_label,
        training=datasets["training"],
        evaluation=datasets["evaluation"],
        baselines=baselines,
        errors=errors,
        id_column=action.id_column,
        metadata=load_metadata(action, store),
    )


def load_metadata(action: EvaluateGate, store: ArtifactStore) -> dict[str, Any] | None:
    """The training metadata (feature importance), None when unreadable: the
    checks that need it report Inconclusive."""
    if action.metadata is None:
        return None
    try:
        loaded = json.loads(store.get_bytes(action.metadata))
    except (*ARTIFACT_ERRORS, ArtifactError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def evaluate_action(
    action: EvaluateGate, store: ArtifactStore, fetch_data: DataFetcher, scratch: Path
) -> EvaluationRun:
    """Evaluate the gate with the streaming engine; predictions that cannot
    be fetched make every check Inconclusive, other unreadable inputs the
    checks that need them."""
    inputs = stream_inputs(action, store, fetch_data, scratch)
    if inputs.predictions is None:
        reason = f"predictions unreadable: {inputs.errors['predictions']}"
        return EvaluationRun(_unmeasurable(action, reason), ReportCharts())
    evaluation, charts = evaluate_stream(list(action.checks), inputs)
    return EvaluationRun(evaluation, charts)


# A shard's error that makes every check Inconclusive (its reason the value).
UNMEASURABLE = "gate"


def shard_partial(
    action: EvaluateGate,
    store: ArtifactStore,
    fetch_data: DataFetcher,
    scratch: Path,
    shard: Shard,
) -> bytes:
    """One shard's mergeable statistics, in their wire form: what a pod of a
    sharded evaluation stores for the merge step. Inputs that cannot be
    fetched travel in it as errors, so the merge names them per check."""
    inputs = stream_inputs(action, store, fetch_data, scratch)
    partial = accumulate(list(action.checks), inputs, shard)
    if inputs.predictions is None:  # as in one pod: nothing is measured
        partial.errors[UNMEASURABLE] = f"predictions unreadable: {inputs.errors['predictions']}"
    return partial_to_bytes(partial)


def merge_partials(
    action: EvaluateGate, store: ArtifactStore, partials: list[bytes]
) -> EvaluationRun:
    """The gate from every shard's partial (ValueError when one is not a
    partial of these checks); equals one pod's evaluation of all the data."""
    checks = list(action.checks)
    inputs = StreamInputs(
        task=action.task,
        predictions=None,
        positive_label=action.positive_label,
        id_column=action.id_column,
        metadata=load_metadata(action, store),
    )
    if not partials:
        raise ValueError("no shard's partial to merge")
    loaded = [partial_from_bytes(checks, inputs, data) for data in partials]
    merged = loaded[0]
    for other in loaded[1:]:
        merge(merged, other)
    if UNMEASURABLE in merged.errors:
        return EvaluationRun(_unmeasurable(action, merged.errors[UNMEASURABLE]), ReportCharts())
    evaluation, charts = finish(checks, inputs, merged)
    return EvaluationRun(evaluation, charts)


def report_html(release: str, action: EvaluateGate, run: EvaluationRun) -> bytes:
    """The human-readable report page, stored next to the JSON report."""
    title = f"Quality gate {action.gate_name or 'inline'} for {release}"
    subtitle = f"predictions sha256 {action.predictions.sha256}"
    return render_html(run.evaluation, action.checks, run.charts, title, subtitle).encode()


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


def report_json(
    release: str, action: EvaluateGate, evaluation: GateEvaluation, now: datetime
) -> bytes:
    """The full machine-readable report (every slice), stored as an artifact."""
    report = {
        "kind": "GateReport",
        "release": release,
        "gate": action.gate_name,
        "task": str(action.task),
        "inputsHash": action.inputs_hash,
        "predictionsSha256": action.predictions.sha256,
        "evaluatedAt": format_time(now),
        "outcome": evaluation.outcome,
        "checks": [asdict(c) for c in evaluation.checks],
    }
    return json.dumps(finite(report), indent=2, sort_keys=True, allow_nan=False).encode()


def finite(value: object) -> object:
    """JSON has no NaN or infinity: an unmeasured number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# -- the evaluation as a Job or process ----------------------------------------------

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


def evaluate_and_store(
    release: str,
    action: EvaluateGate,
    store: ArtifactStore,
    fetch_data: DataFetcher,
    scratch: Path,
    now: datetime,
) -> list[ArtifactRecord]:
    """What the evaluator does: evaluate, store the reports and the summary
    (content-addressed), return their records."""
    return store_results(
        release, action, evaluate_action(action, store, fetch_data, scratch), store, now
    )


def store_results(
    release: str, action: EvaluateGate, run: EvaluationRun, store: ArtifactStore, now: datetime
) -> list[ArtifactRecord]:
    """Store an evaluation's reports and summary (content-addressed)."""
    summary = gate_status(action, run.evaluation, now)
    return [
        store.put_bytes(report_json(release, action, run.evaluation, now), "gate-report"),
        store.put_bytes(report_html(release, action, run), "gate-report-html"),
        store.put_bytes(json.dumps(summary.wire(), sort_keys=True).encode(), SUMMARY_NAME),
    ]


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
        "to evaluate again"
    )
    summary = gate_status(action, _unmeasurable(action, f"evaluation failed: {reason}{fix}"), now)
    summary.failed_evaluation = evaluation_key(action.evaluation)
    _record(release, summary, [])
    return summary


def _record(release: ModelRelease, summary: GateStatus, reports: list[ArtifactRecord]) -> None:
    assert release.status is not None
    release.status.gate = summary
    release.status.artifacts = [
        a for a in release.status.artifacts if not a.name.startswith("gate-report")
    ] + reports
