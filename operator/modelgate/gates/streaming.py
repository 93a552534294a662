"""The streaming gate engine: every check from record batches, in bounded memory.

``accumulate`` reads the inputs (all of them, or one shard) batch by batch
into a :class:`Partial` of mergeable statistics; ``merge`` adds one shard's
partial to another's; ``finish`` turns a partial into the checks' results
with the same definitions, messages and order as the in-memory engine
(:mod:`modelgate.gates.engine`, kept as the reference). On data within the
sketches' exact limits every value equals the in-memory engine's to
floating-point rounding; beyond them, rank metrics, KS and quantile edges say
how far they can be from the exact value.

Memory: one batch, the groups (slices, classes, categories), the sketches'
``exact_rows + capacity`` per sketch, one partition of the duplicate
counters; not the number of rows.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from modelgate.api.qualitygate import Check, Task
from modelgate.gates.data_partials import (
    CURRENT,
    REFERENCE,
    DataProfile,
    DriftStats,
    Fingerprint,
    not_comparable,
)
from modelgate.gates.engine import (
    DataFacts,
    Evaluator,
    GateInputs,
    finish_baseline,
    finish_data,
    finish_drift,
    finish_fairness,
    finish_metric,
    finish_slices,
    is_numeric_type,
)
from modelgate.gates.group_metrics import RANK_METRICS, StatsContext, grouped_stats
from modelgate.gates.groups import ColumnNames, Grouping, Position
from modelgate.gates.metrics import GroupValues, Undefined
from modelgate.gates.outcome import (
    INCONCLUSIVE,
    ON_MISSING_OUTCOME,
    CheckEvaluation,
    GateEvaluation,
    gate_outcome,
)
from modelgate.gates.partials import PredictionEncoder, PredictionStats
from modelgate.gates.report import Curves, ReportCharts, calibration_bins, curves_from_counts
from modelgate.gates.source import WHOLE, Shard, Source
from modelgate.gates.table import Table, TableError


@dataclass
class StreamInputs:
    """Everything a gate may look at, as sources read batch by batch; a
    source that could not be fetched is None with the reason in ``errors``."""

    task: Task
    predictions: Source | None
    positive_label: str = "1"
    training: Source | None = None
    evaluation: Source | None = None
    baselines: Mapping[str, Source | None] = field(default_factory=dict)
    # "predictions", "training", "evaluation" or "baseline:<environment>" -> why.
    errors: dict[str, str] = field(default_factory=dict)
    id_column: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass
class BaselinePart:
    encoder: PredictionEncoder
    stats: PredictionStats
    fingerprint: Fingerprint


@dataclass
class Partial:
    """The mergeable statistics of one shard (or of everything)."""

    task: Task
    encoder: PredictionEncoder
    stats: dict[tuple[str, ...], PredictionStats]
    fingerprint: Fingerprint | None
    data: dict[str, DataProfile]
    drift: dict[str, DriftStats]
    baselines: dict[str, BaselinePart]
    calibration: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros((10, 3)))
    errors: dict[str, str] = field(default_factory=dict)
    # Rows read of "training" and "evaluation".
    dataset_rows: dict[str, int] = field(default_factory=lambda: {"training": 0, "evaluation": 0})


def _groupings(checks: list[Check], task: Task, has_score: bool) -> dict[tuple[str, ...], bool]:
    """Each grouping the checks need, and whether it needs score sketches."""
    wanted: dict[tuple[str, ...], bool] = {(): task == Task.BINARY and has_score}
    for check in checks:
        if check.slice is not None and check.metric is not None:
            key = tuple(check.slice.columns)
            wanted[key] = wanted.get(key, False) or check.metric.name in RANK_METRICS
        if check.fairness is not None:
            wanted.setdefault((check.fairness.sensitive_column,), False)
    return wanted


def _data_key(index: int, dataset: str) -> str:
    return f"{index}:{dataset}"


def empty_partial(checks: list[Check], inputs: StreamInputs) -> Partial:
    """A partial with nothing added yet, shaped by the checks and schemas."""
    errors = dict(inputs.errors)
    predictions = inputs.predictions
    has_score = False
    if predictions is not None:
        try:
            has_score = predictions.has("y_score")
        except TableError as error:
            errors["predictions"] = str(error)
    task = inputs.task
    stats = {
        key: PredictionStats(task, Grouping(key), ranks)
        for key, ranks in _groupings(checks, task, has_score).items()
    }
    needs_baseline = any(c.baseline is not None for c in checks)
    sources = {"training": inputs.training, "evaluation": inputs.evaluation}
    types: dict[str, dict[str, Any]] = {}
    for name, source in sources.items():
        if source is None:
            errors.setdefault(name, "not given")
            continue
        try:
            types[name] = {f.name: f.type for f in source.schema()}
        except TableError as error:
            errors[name] = str(error)
    data: dict[str, DataProfile] = {}
    drift: dict[str, DriftStats] = {}
    for index, check in enumerate(checks):
        if check.data is not None:
            for dataset in check.data.datasets:
                if str(dataset) in types:
                    data[_data_key(index, str(dataset))] = DataProfile(
                        check.data, types[str(dataset)]
                    )
        if check.drift is not None and check.drift.column not in drift:
            column = check.drift.column
            absent = [
                f"{name} has no column {column!r} (columns: {', '.join(types[name])})"
                for name in ("training", "evaluation")
                if name in types and column not in types[name]
            ]
            numeric = all(
                name in types and column in types[name] and is_numeric_type(types[name][column])
                for name in ("training", "evaluation")
            )
            drift[column] = DriftStats(column, numeric, missing_from=absent)
    baselines = {
        env: BaselinePart(
            PredictionEncoder(task, inputs.positive_label),
            PredictionStats(task, Grouping(()), ranks=task == Task.BINARY),
            Fingerprint(inputs.id_column),
        )
        for env, source in inputs.baselines.items()
        if source is not None
    }
    return Partial(
        task=task,
        encoder=PredictionEncoder(task, inputs.positive_label),
        stats=stats,
        fingerprint=Fingerprint(inputs.id_column) if needs_baseline else None,
        data=data,
        drift=drift,
        baselines=baselines,
        errors=errors,
    )


def _feed(source: Source, shard: Shard, add: Callable[[Table, Position, int], None]) -> None:
    for at, start, batch in source.positioned_batches(shard):
        add(Table(source.name, pa.Table.from_batches([batch])), at, start)


def accumulate(checks: list[Check], inputs: StreamInputs, shard: Shard = WHOLE) -> Partial:
    """Read this shard of every input into a partial. A source that fails to
    read (not a table, a type that changes, a broken file) is recorded with
    its reason; the checks that need it say so, the others go on."""
    partial = empty_partial(checks, inputs)
    for name, side in (("training", REFERENCE), ("evaluation", CURRENT)):
        source = inputs.training if name == "training" else inputs.evaluation
        if source is None or name in partial.errors:
            continue
        profiles = [p for k, p in partial.data.items() if k.endswith(f":{name}")]
        drifts = [d for d in partial.drift.values() if not d.missing_from]

        def add_data(
            table: Table,
            at: Position,
            start: int,
            profiles: list[DataProfile] = profiles,
            drifts: list[DriftStats] = drifts,
            side: int = side,
            name: str = name,
        ) -> None:
            partial.dataset_rows[name] += table.num_rows
            for profile in profiles:
                profile.add(table)
            for stats in drifts:
                stats.add(side, table)

        try:
            _feed(source, shard, add_data)
        except (TableError, Undefined) as error:
            partial.errors[name] = str(error)
    if inputs.predictions is not None and "predictions" not in partial.errors:
        fingerprint = partial.fingerprint

        def add_predictions(table: Table, at: Position, start: int) -> None:
            batch = partial.encoder.encode(table, at)
            classes = len(partial.encoder.classes.names)
            for stats in partial.stats.values():
                stats.add(batch, classes)
            if batch.score is not None and batch.truth is not None:
                finite = np.isfinite(batch.score)
                partial.calibration += calibration_bins(batch.score[finite], batch.truth[finite])
            if fingerprint is not None:
                fingerprint.add(table, start, count_ids=True)

        try:
            _feed(inputs.predictions, shard, add_predictions)
        except (TableError, Undefined) as error:
            partial.errors["predictions"] = str(error)
    for env, part in partial.baselines.items():
        source = inputs.baselines[env]
        assert source is not None

        def add_baseline(table: Table, at: Position, start: int, part: BaselinePart = part) -> None:
            batch = part.encoder.encode(table, at)
            part.stats.add(batch, len(part.encoder.classes.names))
            part.fingerprint.add(table, start, count_ids=False)

        try:
            _feed(source, shard, add_baseline)
        except (TableError, Undefined) as error:
            partial.errors[f"baseline:{env}"] = str(error)
    return partial


def merge(into: Partial, other: Partial) -> None:
    """Add another shard's partial (the same checks and inputs)."""
    for name, reason in other.errors.items():
        into.errors.setdefault(name, reason)
    class_map = into.encoder.classes.merge(other.encoder.classes)
    for column, count in other.encoder.missing_labels.items():
        into.encoder.missing_labels[column] += count
    into.encoder.has_score = into.encoder.has_score or other.encoder.has_score
    into.encoder.score_columns = into.encoder.score_columns or other.encoder.score_columns
    for key, stats in other.stats.items():
        into.stats[key].merge(stats, class_map)
    into.calibration += other.calibration
    for name, rows in other.dataset_rows.items():
        into.dataset_rows[name] += rows
    if into.fingerprint is not None and other.fingerprint is not None:
        into.fingerprint.merge(other.fingerprint)
    for data_key, profile in other.data.items():
        into.data[data_key].merge(profile)
    for column, drift in other.drift.items():
        into.drift[column].merge(drift)
    for env, part in other.baselines.items():
        mine = into.baselines[env]
        classes = mine.encoder.classes.merge(part.encoder.classes)
        for column, count in part.encoder.missing_labels.items():
            mine.encoder.missing_labels[column] += count
        mine.encoder.has_score = mine.encoder.has_score or part.encoder.has_score
        mine.encoder.score_columns = mine.encoder.score_columns or part.encoder.score_columns
        mine.stats.merge(part.stats, classes)
        mine.fingerprint.merge(part.fingerprint)


# -- finishing ---------------------------------------------------------------------


def _context(encoder: PredictionEncoder) -> StatsContext:
    positive = encoder.classes.index.get(encoder.positive_label, -1)
    return StatsContext(positive, encoder.has_score, bool(encoder.score_columns))


def _labels_complete(encoder: PredictionEncoder) -> None:
    if encoder.task == Task.REGRESSION:
        return
    for column in ("y_true", "y_pred"):
        missing = encoder.missing_labels[column]
        if missing:
            raise Undefined(f"{column} has {missing} missing values: every row needs a label")


def _reordered(values: GroupValues, order: np.ndarray[Any, Any]) -> GroupValues:
    return GroupValues(
        values.values[order],
        values.sizes[order],
        [values.reasons[i] for i in order],
        None if values.bounds is None else values.bounds[order],
    )


class _Finisher:
    def __init__(self, checks: list[Check], inputs: StreamInputs, partial: Partial) -> None:
        self.checks, self.inputs, self.partial = checks, inputs, partial
        self.overall = partial.stats[()]
        self.rows = int(self.overall.arrays["sizes"][0]) if self.overall.arrays else 0

    def evaluate(self, check: Check) -> CheckEvaluation:
        result = CheckEvaluation(
            name=check.name, kind=check.kind, severity=str(check.severity), outcome=INCONCLUSIVE
        )
        try:
            if check.data is not None:
                self._data(check, result)
            elif check.drift is not None:
                self._drift(check, result)
            elif check.explainability is not None or check.behavior is not None:
                # Metadata only: the in-memory engine's code, on no table.
                holder = GateInputs(
                    task=self.inputs.task,
                    predictions=Table("none", pa.table({})),
                    metadata=self.inputs.metadata,
                )
                return Evaluator(holder).evaluate(check)
            else:
                self._predictions(check, result)
        except (TableError, Undefined) as error:
            result.outcome = INCONCLUSIVE
            result.message = str(error)
        return result

    def _predictions(self, check: Check, result: CheckEvaluation) -> None:
        errors = self.partial.errors
        if "predictions" in errors:
            raise TableError(f"predictions unreadable: {errors['predictions']}")
        encoder = self.partial.encoder
        context = _context(encoder)
        if check.fairness is not None:
            spec = check.fairness
            _labels_complete(encoder)
            stats = self.partial.stats[(spec.sensitive_column,)]
            order, labels = stats.grouping.ordered()
            result.sample_size = self.rows
            a, p = stats.arrays, context.positive
            groups = len(labels)
            if not a:
                zeros = np.zeros(groups)
                size = selected = positives = true_pos = zeros
            else:
                size = a["sizes"][order]
                if p >= 0:
                    selected = a["class_pred"][order, p].astype(np.float64)
                    positives = a["class_true"][order, p].astype(np.float64)
                    true_pos = a["class_tp"][order, p].astype(np.float64)
                else:
                    selected = positives = true_pos = np.zeros(groups)
            finish_fairness(spec, labels, size, selected, positives, true_pos, result)
            return
        metric = check.metric
        assert metric is not None
        if check.baseline is not None:
            self._baseline(check, result)
            return
        if check.slice is not None:
            _labels_complete(encoder)
            stats = self.partial.stats[tuple(check.slice.columns)]
            order, labels = stats.grouping.ordered()
            values = grouped_stats(metric.name, stats, context, metric.average)
            finish_slices(check.slice, metric, _reordered(values, order), labels, result)
            return

        def value() -> float:
            _labels_complete(encoder)
            if self.rows == 0:
                raise Undefined("no rows")
            return grouped_stats(metric.name, self.overall, context, metric.average).single()

        finish_metric(metric, result, value, self.rows)
        self._bound_note(result, self.overall, context, metric)

    def _bound_note(
        self, result: CheckEvaluation, stats: PredictionStats, context: StatsContext, metric: Any
    ) -> None:
        if metric.name in RANK_METRICS and stats.sketches and not stats.sketches[0].exact:
            values = grouped_stats(metric.name, stats, context, metric.average)
            if values.bounds is not None and values.bounds[0] > 0:
                result.message += f" (within {float(values.bounds[0]):.2g} of exact)"

    def _baseline(self, check: Check, result: CheckEvaluation) -> None:
        assert check.baseline is not None
        assert check.metric is not None
        spec, metric = check.baseline, check.metric
        result.metric = str(metric.name)
        result.sample_size = self.rows
        env = spec.environment
        reason = self.partial.errors.get(f"baseline:{env}")
        if reason is not None:
            result.message = f"baseline from {env} is unreadable: {reason}"
            return
        part = self.partial.baselines.get(env)
        if part is None:
            result.outcome = ON_MISSING_OUTCOME[str(spec.on_missing)]
            result.message = (
                f"no model is live in {env} to compare with; onMissing={spec.on_missing}"
            )
            return
        encoder = self.partial.encoder
        _labels_complete(encoder)
        assert self.partial.fingerprint is not None
        why = not_comparable(self.partial.fingerprint, part.fingerprint)
        if why:
            result.message = f"baseline from {env} is not comparable: {why}"
            return
        _labels_complete(part.encoder)
        if self.rows == 0:
            raise Undefined("no rows")
        candidate = grouped_stats(
            metric.name, self.overall, _context(encoder), metric.average
        ).single()
        baseline = grouped_stats(
            metric.name, part.stats, _context(part.encoder), metric.average
        ).single()
        finish_baseline(spec, metric, candidate, baseline, result)

    def _data(self, check: Check, result: CheckEvaluation) -> None:
        assert check.data is not None
        index = self.checks.index(check)
        facts: dict[str, DataFacts | str] = {}
        for dataset in check.data.datasets:
            name = str(dataset)
            profile = self.partial.data.get(_data_key(index, name))
            if profile is None or name in self.partial.errors:
                why = self.partial.errors.get(name, "not given")
                facts[name] = f"the {name} data is not available to the gate: {why}"
            else:
                facts[name] = profile.facts()
        finish_data(check.data, facts, result)

    def _drift(self, check: Check, result: CheckEvaluation) -> None:
        spec = check.drift
        assert spec is not None
        for name in ("training", "evaluation"):
            if name in self.partial.errors:
                why = self.partial.errors[name]
                result.message = (
                    "drift needs both the reference (training) and the evaluated data: "
                    f"the {name} data is not available ({why})"
                )
                return
        stats = self.partial.drift[spec.column]
        bound: list[float] = []

        def value() -> float:
            statistic, error = stats.statistic(spec)
            bound.append(error)
            return statistic

        finish_drift(spec, value, self.partial.dataset_rows["evaluation"], result)
        if bound and bound[0] > 0:
            result.message += f" (quantile edges within {bound[0]:.2g} of their exact rank)"

    def charts(self) -> ReportCharts:
        charts = ReportCharts(importance=list((self.inputs.metadata or {}).get("importance") or []))
        charts.curves = self._curves()
        for check in self.checks:
            spec = check.drift
            if spec is None or spec.column not in self.partial.drift:
                continue
            if {"training", "evaluation"} & set(self.partial.errors):
                continue
            stats = self.partial.drift[spec.column]
            try:
                ref, cur, _ = stats.proportions(spec.bins)
            except (TableError, Undefined):
                continue
            charts.drift[check.name] = (ref, cur, stats.bin_labels(spec.bins))
        return charts

    def _curves(self) -> Curves | None:
        stats = self.overall
        if (
            self.inputs.task != Task.BINARY
            or not stats.sketches
            or "predictions" in self.partial.errors
        ):
            return None
        if not stats.arrays or stats.arrays["bad"][0] > 0:
            return None
        _, _, counts = stats.sketches[0].entries()
        pos, neg = counts[::-1, 0], counts[::-1, 1]
        if pos.sum() == 0 or neg.sum() == 0:
            return None
        return curves_from_counts(np.cumsum(pos), np.cumsum(neg), self.partial.calibration)


def finish(
    checks: list[Check], inputs: StreamInputs, partial: Partial
) -> tuple[GateEvaluation, ReportCharts]:
    """The gate's result and the report's charts from a (merged) partial."""
    finisher = _Finisher(checks, inputs, partial)
    results = [finisher.evaluate(check) for check in checks]
    return GateEvaluation(outcome=gate_outcome(results), checks=results), finisher.charts()


def evaluate_stream(
    checks: list[Check], inputs: StreamInputs
) -> tuple[GateEvaluation, ReportCharts]:
    """Everything in this process: one shard of all rows."""
    return finish(checks, inputs, accumulate(checks, inputs))


# -- the wire form of a partial (a shard's result, read by the merge step) ----------

WIRE_VERSION = 1


def _encoder_wire(encoder: PredictionEncoder) -> dict[str, Any]:
    return {
        "classes": encoder.classes.wire(),
        "missingLabels": encoder.missing_labels,
        "hasScore": encoder.has_score,
        "scoreColumns": encoder.score_columns,
    }


def _encoder_load(encoder: PredictionEncoder, data: dict[str, Any]) -> None:
    encoder.classes = ColumnNames.from_wire(data["classes"])
    encoder.missing_labels = {str(k): int(v) for k, v in data["missingLabels"].items()}
    encoder.has_score = bool(data["hasScore"])
    encoder.score_columns = [str(c) for c in data["scoreColumns"]]


def partial_to_bytes(partial: Partial) -> bytes:
    """A partial as one ``.npz`` (arrays, and its JSON under ``meta``; no pickles)."""
    arrays: dict[str, Any] = {"calibration": partial.calibration}
    meta: dict[str, Any] = {
        "version": WIRE_VERSION,
        "task": str(partial.task),
        "encoder": _encoder_wire(partial.encoder),
        "errors": partial.errors,
        "datasetRows": partial.dataset_rows,
        "stats": {},
        "data": {},
        "drift": {},
        "baselines": {},
    }
    for index, (key, stats) in enumerate(partial.stats.items()):
        part_arrays, part_meta = stats.to_wire(f"stats{index}")
        arrays.update(part_arrays)
        meta["stats"][str(index)] = {"key": list(key), **part_meta}
    if partial.fingerprint is not None:
        part_arrays, meta["fingerprint"] = partial.fingerprint.wire()
        arrays.update({f"fingerprint.{k}": v for k, v in part_arrays.items()})
    for index, (data_key, profile) in enumerate(partial.data.items()):
        part_arrays, part_meta = profile.wire()
        arrays.update({f"data{index}.{k}": v for k, v in part_arrays.items()})
        meta["data"][data_key] = {"index": index, **part_meta}
    for index, (column, drift) in enumerate(partial.drift.items()):
        part_arrays, part_meta = drift.wire(f"drift{index}")
        arrays.update(part_arrays)
        meta["drift"][column] = {"index": index, **part_meta}
    for index, (env, part) in enumerate(partial.baselines.items()):
        stats_arrays, stats_meta = part.stats.to_wire(f"baseline{index}")
        print_arrays, print_meta = part.fingerprint.wire()
        arrays.update(stats_arrays)
        arrays.update({f"baseline{index}.fingerprint.{k}": v for k, v in print_arrays.items()})
        meta["baselines"][env] = {
            "index": index,
            "encoder": _encoder_wire(part.encoder),
            "stats": stats_meta,
            "fingerprint": print_meta,
        }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _prefixed(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def partial_from_bytes(checks: list[Check], inputs: StreamInputs, data: bytes) -> Partial:
    """A shard's partial, shaped by the same checks; ValueError when it is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            arrays = {name: loaded[name] for name in loaded.files}
        meta = json.loads(arrays.pop("meta").tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"not a partial: {error}") from error
    if meta.get("version") != WIRE_VERSION or meta.get("task") != str(inputs.task):
        raise ValueError("a partial of another version or task")
    partial = empty_partial(checks, StreamInputs(task=inputs.task, predictions=None))
    partial.errors = {str(k): str(v) for k, v in meta["errors"].items()}
    partial.dataset_rows = {str(k): int(v) for k, v in meta["datasetRows"].items()}
    partial.calibration = np.asarray(arrays["calibration"], dtype=np.float64)
    _encoder_load(partial.encoder, meta["encoder"])
    partial.stats = {}
    for index, stats_meta in meta["stats"].items():
        key = tuple(str(c) for c in stats_meta["key"])
        partial.stats[key] = PredictionStats.from_wire(
            inputs.task, arrays, stats_meta, f"stats{index}"
        )
    if "fingerprint" in meta:
        partial.fingerprint = Fingerprint(inputs.id_column)
        partial.fingerprint.load(
            {
                k.removeprefix("fingerprint."): v
                for k, v in arrays.items()
                if k.startswith("fingerprint.")
            },
            meta["fingerprint"],
        )
    partial.data = {}
    by_key = {
        _data_key(i, str(dataset)): check.data
        for i, check in enumerate(checks)
        if check.data is not None
        for dataset in check.data.datasets
    }
    for key, profile_meta in meta["data"].items():
        spec = by_key.get(key)
        if spec is None:
            raise ValueError(f"a partial of other checks (data check {key})")
        prefix = f"data{profile_meta['index']}."
        profile = DataProfile(spec, {})
        profile.load(_prefixed(arrays, prefix), profile_meta)
        partial.data[key] = profile
    partial.drift = {}
    for column, drift_meta in meta["drift"].items():
        drift = DriftStats(
            str(column), bool(drift_meta["numeric"]), missing_from=list(drift_meta["missingFrom"])
        )
        drift.load(arrays, drift_meta, f"drift{drift_meta['index']}")
        partial.drift[str(column)] = drift
    partial.baselines = {}
    for env, part_meta in meta["baselines"].items():
        index = part_meta["index"]
        encoder = PredictionEncoder(inputs.task, inputs.positive_label)
        _encoder_load(encoder, part_meta["encoder"])
        fingerprint = Fingerprint(inputs.id_column)
        prefix = f"baseline{index}.fingerprint."
        fingerprint.load(_prefixed(arrays, prefix), part_meta["fingerprint"])
        stats = PredictionStats.from_wire(
            inputs.task, arrays, part_meta["stats"], f"baseline{index}"
        )
        partial.baselines[str(env)] = BaselinePart(encoder, stats, fingerprint)
    return partial
