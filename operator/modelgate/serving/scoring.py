"""The gate judges what will be served: the evaluation rows scored by a model
server through the Open Inference Protocol, written as the predictions file
the gate evaluates (the training contract's columns).

The data is read in record batches (CSV or Parquet, one file or many) and
sent in requests of ``batch_rows`` rows; the predictions are written as
Parquet in row groups of ``PREDICTIONS_ROW_GROUP`` rows, so memory is a batch
and a row group, whatever the number of rows. What the model takes and
answers (features, task, positive label, class order) is given by the
release (``Served``); an answer of the wrong shape, a refused batch or a
server that never becomes ready stops the scoring with the reason: nothing
is half-written under the final name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelgate.gates.source import source_of
from modelgate.serving import oip_client
from modelgate.serving.served import Served
from modelgate.trainer.contract import PREDICTIONS_ROW_GROUP, label_string

DEFAULT_BATCH_ROWS = 1024


class ScoringError(RuntimeError):
    """The rows could not be scored; the message says which and why."""


@dataclass(frozen=True)
class ScoreSettings:
    url: str
    model_name: str
    data: Path
    target: str
    output: Path
    batch_rows: int = DEFAULT_BATCH_ROWS
    ready_timeout_seconds: float = 120.0
    request_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class ScoreResult:
    rows: int
    requests: int
    seconds: float


def _answer_columns(answers: oip_client.Answers, served: Served) -> dict[str, pa.Array]:
    """y_pred and the scores of one batch, typed as the trainer writes them."""
    if served.task == "regression":
        try:
            numbers = [float(v) for v in answers.predictions]
        except (TypeError, ValueError):
            raise oip_client.AnswerError("'predict' holds a value that is not a number") from None
        return {"y_pred": pa.array(numbers, pa.float64())}
    found = {"y_pred": pa.array([label_string(v) for v in answers.predictions], pa.string())}
    if answers.probabilities is None:
        return found
    if served.task == "binary":
        positive = [p.get(served.positive_label) for p in answers.probabilities]
        if any(p is None for p in positive):
            raise oip_client.AnswerError(
                f"'predict_proba' has no score for the positive label {served.positive_label!r}"
            )
        found["y_score"] = pa.array(positive, pa.float64())
    else:
        for label in served.classes or sorted(answers.probabilities[0]):
            found[f"y_score_{label}"] = pa.array(
                [p.get(label) for p in answers.probabilities], pa.float64()
            )
    return found


def _truths(values: list[Any], served: Served) -> pa.Array:
    if served.task == "regression":
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else label_string(v) for v in values], pa.string())


def _requests(
    batches: Iterator[tuple[Any, int, pa.RecordBatch]], size: int
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows in requests of at most ``size`` (a CSV block may be larger)."""
    for _, first, batch in batches:
        for offset in range(0, batch.num_rows, size):
            yield first + offset, batch.slice(offset, size)


def scored_batches(settings: ScoreSettings, served: Served) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Each batch of evaluation rows with y_true, y_pred and scores added."""
    source = source_of(settings.data, "the evaluation data", settings.batch_rows)
    absent = [c for c in [*served.features, settings.target] if not source.has(c)]
    if absent:
        raise ScoringError(f"the evaluation data has no column {absent[0]!r} (the model takes "
                           f"{served.features}, the target is {settings.target!r})")  # fmt: skip
    infer = f"{oip_client.model_path(settings.url, settings.model_name)}/infer"
    outputs = ["predict"] if served.task == "regression" else ["predict", "predict_proba"]
    for first, batch in _requests(source.positioned_batches(), settings.batch_rows):
        columns = {f: batch.column(f).to_pylist() for f in served.features}
        body = json.dumps(oip_client.infer_body(columns, outputs), allow_nan=False).encode()
        status, answer = oip_client.request(infer, body, settings.request_timeout_seconds)
        rows = f"rows {first}..{first + batch.num_rows - 1}"
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else answer
            row = answer.get("row") if isinstance(answer, dict) else None
            at = f" (row {first + row})" if isinstance(row, int) else ""
            raise ScoringError(f"{rows}: the server answered {status}{at}: {error}")
        try:
            answers = oip_client.read_answers(answer, batch.num_rows, served.classes)
            added = _answer_columns(answers, served)
        except oip_client.AnswerError as error:
            raise ScoringError(f"{rows}: the server's answer: {error}") from None
        truths = _truths(batch.column(settings.target).to_pylist(), served)
        names = [*batch.schema.names, "y_true", *added]
        arrays = [*batch.columns, truths, *added.values()]
        yield pa.RecordBatch.from_arrays(arrays, names=names), first


def score(settings: ScoreSettings, served: Served) -> ScoreResult:
    """Score the evaluation data through the server into ``settings.output``."""
    started = time.perf_counter()
    oip_client.wait_ready(settings.url, settings.model_name, settings.ready_timeout_seconds)
    partial = settings.output.with_name(settings.output.name + ".partial")
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = rows = requests = 0
    try:
        for batch, _ in scored_batches(settings, served):
            requests += 1
            rows += batch.num_rows
            if writer is None:
                writer = pq.ParquetWriter(partial, batch.schema)
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= PREDICTIONS_ROW_GROUP:
                table = pa.Table.from_batches(pending)
                writer.write_table(table.slice(0, PREDICTIONS_ROW_GROUP))
                rest = table.slice(PREDICTIONS_ROW_GROUP)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if writer is None:
            raise ScoringError("the evaluation data has no rows")
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending))
        writer.close()
        writer = None
        partial.replace(settings.output)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return ScoreResult(rows, requests, time.perf_counter() - started)
