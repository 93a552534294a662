"""Evaluate a quality gate on recorded predictions and data. Fail closed.

Inputs are tables (predictions, training data, evaluation data, baseline
predictions per environment); the output is one :class:`CheckEvaluation` per
check plus the gate outcome. Nothing here touches Kubernetes or the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from modelgate.api.modelrelease import CheckOutcome
from modelgate.api.qualitygate import (
    LOWER_IS_BETTER,
    Check,
    ColumnType,
    DataCheck,
    DriftCheck,
    FairnessCheck,
    FairnessMetric,
    MetricCheck,
    Severity,
    Task,
)
from modelgate.gates import drift as drift_stats
from modelgate.gates.metrics import Predictions, Undefined, compute
from modelgate.gates.table import Table, TableError

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


@dataclass
class CheckEvaluation:
    """Full result of one check (the status keeps a compact copy)."""

    name: str
    kind: str
    severity: str
    outcome: str
    value: float | None = None
    min: float | None = None
    max: float | None = None
    baseline: float | None = None
    slice: str | None = None
    sample_size: int | None = None
    message: str = ""
    slices: list[SliceEvaluation] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return self.severity == Severity.BLOCKING and self.outcome != PASSED


@dataclass
class GateEvaluation:
    outcome: str
    checks: list[CheckEvaluation]

    def counts(self) -> dict[str, int]:
        return {o: sum(c.outcome == o for c in self.checks) for o in (PASSED, FAILED, INCONCLUSIVE)}

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "checks": [asdict(c) for c in self.checks]}


@dataclass
class GateInputs:
    """Everything a gate may look at."""

    task: Task
    predictions: Table
    positive_label: str = "1"
    training: Table | None = None
    evaluation: Table | None = None
    # Environment -> baseline predictions (None: the environment has no live model).
    baselines: Mapping[str, Table | None] = field(default_factory=dict)
    # Environment -> why its baseline predictions could not be read.
    baseline_errors: Mapping[str, str] = field(default_factory=dict)
    id_column: str | None = None


def judge(value: float, low: float | None, high: float | None) -> str:
    if not math.isfinite(value):
        return INCONCLUSIVE
    if low is not None and value < low:
        return FAILED
    if high is not None and value > high:
        return FAILED
    return PASSED


def _describe_bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    return f"<= {high:g}"


def predictions_from(table: Table, task: Task, positive_label: str) -> Predictions:
    """The contract's prediction columns: y_true, y_pred, y_score / y_score_<class>."""
    y_true = table.labels("y_true")
    y_pred = table.labels("y_pred")
    if task == Task.REGRESSION:
        return Predictions(
            y_true=y_true,
            y_pred=y_pred,
            y_true_num=table.numeric("y_true"),
            y_pred_num=table.numeric("y_pred"),
        )
    if task == Task.MULTICLASS:
        prefix = "y_score_"
        scores = {c[len(prefix) :]: table.numeric(c) for c in table.columns if c.startswith(prefix)}
        return Predictions(y_true=y_true, y_pred=y_pred, class_scores=scores or None)
    score = table.numeric("y_score") if table.has("y_score") else None
    return Predictions(y_true=y_true, y_pred=y_pred, positive_label=positive_label, y_score=score)


class Evaluator:
    """Evaluates each check kind; one instance per gate evaluation."""

    def __init__(self, inputs: GateInputs) -> None:
        self.inputs = inputs
        self._predictions: Predictions | None = None

    @property
    def predictions(self) -> Predictions:
        if self._predictions is None:
            self._predictions = predictions_from(
                self.inputs.predictions, self.inputs.task, self.inputs.positive_label
            )
        return self._predictions

    def evaluate(self, check: Check) -> CheckEvaluation:
        result = CheckEvaluation(
            name=check.name, kind=check.kind, severity=str(check.severity), outcome=INCONCLUSIVE
        )
        try:
            if check.fairness is not None:
                self._fairness(check.fairness, result)
            elif check.data is not None:
                self._data(check.data, result)
            elif check.drift is not None:
                self._drift(check.drift, result)
            elif check.metric is not None and check.baseline is not None:
                self._baseline(check, check.metric, result)
            elif check.metric is not None and check.slice is not None:
                self._slices(check, check.metric, result)
            elif check.metric is not None:
                self._metric(check.metric, result)
        except (TableError, Undefined) as error:
            # Fail closed: anything the check cannot measure is Inconclusive.
            result.outcome = INCONCLUSIVE
            result.message = str(error)
        return result

    # -- metric ---------------------------------------------------------------

    def _metric(self, metric: MetricCheck, result: CheckEvaluation) -> None:
        p = self.predictions
        result.min, result.max, result.sample_size = metric.min, metric.max, len(p)
        result.value = compute(self.inputs.task, metric.name, p, metric.average)
        result.outcome = judge(result.value, metric.min, metric.max)
        verdict = "meets" if result.outcome == PASSED else "does not meet"
        result.message = (
            f"{metric.name} = {result.value:.4f} on {len(p)} rows {verdict} "
            f"{_describe_bounds(metric.min, metric.max)}"
        )

    def _slices(self, check: Check, metric: MetricCheck, result: CheckEvaluation) -> None:
        assert check.slice is not None
        spec = check.slice
        table, p = self.inputs.predictions, self.predictions
        keys = [table.labels(column) for column in spec.columns]
        combined = (
            keys[0] if len(keys) == 1 else np.array(["|".join(v) for v in zip(*keys, strict=True)])
        )
        result.min, result.max = metric.min, metric.max
        worst: SliceEvaluation | None = None
        for value in np.unique(combined):
            mask = combined == value
            label = ",".join(
                f"{c}={v}" for c, v in zip(spec.columns, str(value).split("|"), strict=True)
            )
            size = int(mask.sum())
            if size < spec.min_size:
                if not spec.skip_small:
                    result.slices.append(
                        SliceEvaluation(
                            label, INCONCLUSIVE, None, size, f"fewer than {spec.min_size} rows"
                        )
                    )
                continue
            try:
                number = compute(self.inputs.task, metric.name, p.subset(mask), metric.average)
                outcome, message = judge(number, metric.min, metric.max), ""
            except Undefined as error:
                number, outcome, message = None, INCONCLUSIVE, str(error)
            evaluation = SliceEvaluation(label, outcome, number, size, message)
            result.slices.append(evaluation)
            if number is not None and (worst is None or self._worse(metric, evaluation, worst)):
                worst = evaluation
        outcomes = {s.outcome for s in result.slices}
        if not result.slices:
            result.outcome = INCONCLUSIVE
            result.message = f"no slice of {spec.columns} has {spec.min_size} or more rows"
            return
        result.outcome = (
            FAILED if FAILED in outcomes else INCONCLUSIVE if INCONCLUSIVE in outcomes else PASSED
        )
        if worst is not None:
            result.value, result.slice, result.sample_size = (
                worst.value,
                worst.slice,
                worst.sample_size,
            )
        failing = [s.slice for s in result.slices if s.outcome != PASSED]
        result.message = (
            f"{metric.name} per {'/'.join(spec.columns)}: {len(result.slices)} slices, "
            + (f"not passing: {', '.join(failing[:5])}" if failing else "all pass")
            + (
                f" (worst {worst.slice} = {worst.value:.4f})"
                if worst and worst.value is not None
                else ""
            )
        )

    @staticmethod
    def _worse(metric: MetricCheck, a: SliceEvaluation, b: SliceEvaluation) -> bool:
        assert a.value is not None
        assert b.value is not None
        if metric.name in LOWER_IS_BETTER:
            return a.value > b.value
        return a.value < b.value

    def _baseline(self, check: Check, metric: MetricCheck, result: CheckEvaluation) -> None:
        assert check.baseline is not None
        spec = check.baseline
        result.sample_size = len(self.predictions)
        if spec.environment in self.inputs.baseline_errors:
            result.outcome = INCONCLUSIVE
            result.message = (
                f"baseline from {spec.environment} is unreadable: "
                f"{self.inputs.baseline_errors[spec.environment]}"
            )
            return
        baseline_table = self.inputs.baselines.get(spec.environment)
        if baseline_table is None:
            result.outcome = ON_MISSING_OUTCOME[str(spec.on_missing)]
            result.message = (
                f"no model is live in {spec.environment} to compare with; "
                f"onMissing={spec.on_missing}"
            )
            return
        reason = self._comparable(baseline_table)
        if reason:
            result.outcome = INCONCLUSIVE
            result.message = f"baseline from {spec.environment} is not comparable: {reason}"
            return
        baseline_p = predictions_from(baseline_table, self.inputs.task, self.inputs.positive_label)
        candidate = compute(self.inputs.task, metric.name, self.predictions, metric.average)
        baseline = compute(self.inputs.task, metric.name, baseline_p, metric.average)
        result.value, result.baseline = candidate, baseline
        # Positive regression means the candidate is worse than the baseline.
        regression = (
            candidate - baseline if metric.name in LOWER_IS_BETTER else baseline - candidate
        )
        allowed = spec.max_drop * abs(baseline) if spec.relative else spec.max_drop
        if metric.name in LOWER_IS_BETTER:
            result.max = baseline + allowed
        else:
            result.min = baseline - allowed
        result.outcome = FAILED if regression > allowed + 1e-12 else PASSED
        if metric.min is not None or metric.max is not None:
            absolute = judge(candidate, metric.min, metric.max)
            if absolute != PASSED:
                result.outcome = absolute
        result.message = (
            f"{metric.name} = {candidate:.4f} vs {baseline:.4f} live in {spec.environment}: "
            f"regression {regression:+.4f}, allowed {allowed:.4f}"
        )

    def _comparable(self, baseline: Table) -> str | None:
        """Why the baseline cannot be compared row for row, or None."""
        candidate = self.inputs.predictions
        id_column = self.inputs.id_column
        if id_column is not None:
            if not (candidate.has(id_column) and baseline.has(id_column)):
                return f"id column {id_column!r} is missing from one of the prediction files"
            ours = candidate.labels(id_column)
            theirs = baseline.labels(id_column)
            if len(set(ours)) != len(ours) or set(ours) != set(theirs) or len(ours) != len(theirs):
                return f"the rows differ (matched by {id_column})"
            return None
        if baseline.num_rows != candidate.num_rows:
            return f"{baseline.num_rows} baseline rows vs {candidate.num_rows} candidate rows"
        if not np.array_equal(baseline.labels("y_true"), candidate.labels("y_true")):
            return "y_true differs row by row: not the same evaluation data (set idColumn)"
        return None

    # -- fairness -------------------------------------------------------------

    def _fairness(self, spec: FairnessCheck, result: CheckEvaluation) -> None:
        table, p = self.inputs.predictions, self.predictions
        groups = table.labels(spec.sensitive_column)
        result.min, result.max, result.sample_size = spec.min, spec.max, len(p)
        t, q = p.true_positive, p.pred_positive
        rates: dict[str, dict[str, float]] = {}
        for group in np.unique(groups):
            mask = groups == group
            size = int(mask.sum())
            entry = {"size": float(size), "selection_rate": float(np.mean(q[mask]))}
            positives, negatives = mask & t, mask & ~t
            entry["tpr"] = float(np.mean(q[positives])) if positives.any() else math.nan
            entry["fpr"] = float(np.mean(q[negatives])) if negatives.any() else math.nan
            rates[str(group)] = entry
            result.slices.append(
                SliceEvaluation(
                    f"{spec.sensitive_column}={group}",
                    PASSED if size >= spec.min_group_size else INCONCLUSIVE,
                    entry["selection_rate"],
                    size,
                    f"tpr={entry['tpr']:.4f} fpr={entry['fpr']:.4f}",
                )
            )
        small = [g for g, r in rates.items() if r["size"] < spec.min_group_size]
        if len(rates) < 2 or small:
            result.message = (
                f"need two or more groups of at least {spec.min_group_size} rows in "
                f"{spec.sensitive_column}; too small: {small or list(rates)}"
            )
            return
        result.value = _fairness_value(spec.metric, rates)
        result.outcome = judge(result.value, spec.min, spec.max)
        result.message = (
            f"{spec.metric} over {spec.sensitive_column} ({len(rates)} groups) = "
            f"{result.value:.4f}, required {_describe_bounds(spec.min, spec.max)}"
        )

    # -- data -----------------------------------------------------------------

    def _data(self, spec: DataCheck, result: CheckEvaluation) -> None:
        problems: list[str] = []
        measured: list[float] = []
        for dataset in spec.datasets:
            table = self.inputs.training if dataset == "training" else self.inputs.evaluation
            if table is None:
                result.outcome = INCONCLUSIVE
                result.message = f"the {dataset} data is not available to the gate"
                return
            problems.extend(f"{dataset}: {p}" for p in _data_problems(spec, table, measured))
            result.sample_size = (result.sample_size or 0) + table.num_rows
        result.min, result.max = spec.min, spec.max
        result.value = max(measured) if measured else None
        result.outcome = FAILED if problems else PASSED
        target = spec.column or "rows"
        result.message = "; ".join(problems) if problems else f"{target}: all expectations hold"

    # -- drift ----------------------------------------------------------------

    def _drift(self, spec: DriftCheck, result: CheckEvaluation) -> None:
        reference, current = self.inputs.training, self.inputs.evaluation
        if reference is None or current is None:
            result.message = "drift needs both the training and the evaluation data"
            return
        result.max, result.sample_size = spec.max, current.num_rows
        result.value = drift_stats.statistic(spec, reference, current)
        result.outcome = judge(result.value, None, spec.max)
        result.message = (
            f"{spec.method} of {spec.column} (training -> evaluation) = {result.value:.4f}, "
            f"allowed <= {spec.max:g}"
        )


def _fairness_value(metric: FairnessMetric, rates: dict[str, dict[str, float]]) -> float:
    def spread(key: str) -> float:
        values = [r[key] for r in rates.values()]
        if any(math.isnan(v) for v in values):
            raise Undefined(f"a group has no rows to compute {key} on")
        return max(values) - min(values)

    if metric == FairnessMetric.DEMOGRAPHIC_PARITY_DIFFERENCE:
        return spread("selection_rate")
    if metric == FairnessMetric.EQUAL_OPPORTUNITY_DIFFERENCE:
        return spread("tpr")
    if metric == FairnessMetric.EQUALIZED_ODDS_DIFFERENCE:
        return max(spread("tpr"), spread("fpr"))
    # Ratios (demographic parity ratio, disparate impact): lowest over highest
    # selection rate, so the four-fifths rule reads min: 0.8.
    selection = [r["selection_rate"] for r in rates.values()]
    if max(selection) == 0:
        raise Undefined("no group has positive predictions: the ratio is undefined")
    return min(selection) / max(selection)


def _data_problems(spec: DataCheck, table: Table, measured: list[float]) -> list[str]:
    problems: list[str] = []
    rows = table.num_rows
    if spec.min_rows is not None and rows < spec.min_rows:
        problems.append(f"{rows} rows, fewer than minRows {spec.min_rows}")
    if spec.max_rows is not None and rows > spec.max_rows:
        problems.append(f"{rows} rows, more than maxRows {spec.max_rows}")
    if spec.column is None:
        return problems
    if not table.has(spec.column):
        return [*problems, f"column {spec.column!r} is missing"]
    missing = table.null_mask(spec.column)
    if spec.max_missing_rate is not None:
        rate = float(missing.mean()) if rows else 0.0
        if rate > spec.max_missing_rate:
            problems.append(
                f"{spec.column} missing rate {rate:.4f} > maxMissingRate {spec.max_missing_rate:g}"
            )
    if spec.type is not None and not _has_type(table, spec.column, ColumnType(spec.type)):
        problems.append(f"{spec.column} is {table.column(spec.column).type}, expected {spec.type}")
    if spec.min is not None or spec.max is not None:
        if not table.is_numeric(spec.column):
            problems.append(f"{spec.column} is not numeric, cannot check min/max")
        else:
            values = table.numeric(spec.column)[~missing]
            if values.size:
                low, high = float(values.min()), float(values.max())
                measured.append(high)
                if spec.min is not None and low < spec.min:
                    count = int(np.sum(values < spec.min))
                    problems.append(
                        f"{spec.column}: {count} values below {spec.min:g} (lowest {low:g})"
                    )
                if spec.max is not None and high > spec.max:
                    count = int(np.sum(values > spec.max))
                    problems.append(
                        f"{spec.column}: {count} values above {spec.max:g} (highest {high:g})"
                    )
    if spec.allowed is not None:
        present = table.labels(spec.column)[~missing]
        unknown = sorted(set(np.unique(present).tolist()) - set(spec.allowed))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            problems.append(f"{spec.column}: {len(unknown)} values not allowed: {shown}")
    return problems


def _has_type(table: Table, column: str, expected: ColumnType) -> bool:
    kind = table.column(column).type
    if expected == ColumnType.INTEGER:
        return bool(pa.types.is_integer(kind))
    if expected == ColumnType.NUMBER:
        return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))
    if expected == ColumnType.BOOLEAN:
        return bool(pa.types.is_boolean(kind))
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def gate_outcome(checks: list[CheckEvaluation]) -> str:
    """Failed if a blocking check failed; Inconclusive if one is inconclusive."""
    blocking = [c for c in checks if c.severity == Severity.BLOCKING]
    if any(c.outcome == FAILED for c in blocking):
        return FAILED
    if any(c.outcome == INCONCLUSIVE for c in blocking):
        return INCONCLUSIVE
    return PASSED


def evaluate_gate(checks: list[Check], inputs: GateInputs) -> GateEvaluation:
    evaluator = Evaluator(inputs)
    results = [evaluator.evaluate(check) for check in checks]
    return GateEvaluation(outcome=gate_outcome(results), checks=results)
