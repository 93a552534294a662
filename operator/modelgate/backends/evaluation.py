"""Run an EvaluateGate action: fetch verified artifacts, run the engine, report.

The evaluator's side, run in an evaluation Job or local process (the
controller starts and reads those through ``backends/evaluation_job.py``).
The artifacts are read as data (CSV/Parquet via pyarrow); nothing from an
artifact is ever imported or unpickled here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from modelgate.api.common import format_time
from modelgate.api.modelrelease import (
    ArtifactRecord,
)
from modelgate.backends.base import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
)
from modelgate.backends.evaluation_job import SUMMARY_NAME, finite, gate_status, unmeasurable
from modelgate.gates.outcome import GateEvaluation
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
from modelgate.gates.table import TableError
from modelgate.promotion import EvaluateGate

ARTIFACT_ERRORS = (ArtifactIntegrityError, ArtifactNotFoundError, TableError, OSError)

# (uri, dataset name) -> a local file or folder with the data (downloaded if remote).
DataFetcher = Callable[[str, str], Path]


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
        return EvaluationRun(unmeasurable(action, reason), ReportCharts())
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
        return EvaluationRun(unmeasurable(action, merged.errors[UNMEASURABLE]), ReportCharts())
    evaluation, charts = finish(checks, inputs, merged)
    return EvaluationRun(evaluation, charts)


def report_html(release: str, action: EvaluateGate, run: EvaluationRun) -> bytes:
    """The human-readable report page, stored next to the JSON report."""
    title = f"Quality gate {action.gate_name or 'inline'} for {release}"
    subtitle = f"predictions sha256 {action.predictions.sha256}"
    return render_html(run.evaluation, action.checks, run.charts, title, subtitle).encode()


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
