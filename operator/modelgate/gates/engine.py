"""Evaluate a quality gate on recorded predictions and data. Fail closed.

Inputs are tables (predictions, training data, evaluation data, baseline
predictions per environment) and the training job's metadata (permutation
importance, behaviour results); the output is one :class:`CheckEvaluation` per
check plus the gate outcome. Nothing here touches Kubernetes or the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from modelgate.api.qualitygate import (
    LOWER_IS_BETTER,
    BaselineSpec,
    BehaviorCheck,
    Check,
    ColumnType,
    DataCheck,
    DriftCheck,
    ExplainabilityCheck,
    FairnessCheck,
    FairnessMetric,
    MetricCheck,
    SliceSpec,
    Task,
)
from modelgate.gates import drift as drift_stats
from modelgate.gates.metrics import (
    Encoded,
    FloatArray,
    GroupValues,
    Undefined,
    compute,
    grouped,
    with_classes,
)
from modelgate.gates.outcome import (
    FAILED,
    INCONCLUSIVE,
    ON_MISSING_OUTCOME,
    PASSED,
    CheckEvaluation,
    GateEvaluation,
    SliceEvaluation,
    gate_outcome,
)
from modelgate.gates.table import Table, TableError


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
    # The training job's metadata.json (importance, behavior), if any.
    metadata: Mapping[str, Any] | None = None


def judge(value: float, low: float | None, high: float | None) -> str:
    if not math.isfinite(value):
        return INCONCLUSIVE
    if low is not None and value < low:
        return FAILED
    if high is not None and value > high:
        return FAILED
    return PASSED


def describe_bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    return f"<= {high:g}"


def _no_missing_labels(table: Table, column: str) -> None:
    missing = int(np.sum(table.null_mask(column)))
    if missing:
        raise Undefined(f"{column} has {missing} missing values: every row needs a label")


def encode_predictions(table: Table, task: Task, positive_label: str) -> Encoded:
    """The contract's prediction columns: y_true, y_pred, y_score / y_score_<class>."""
    if task == Task.REGRESSION:
        return Encoded(
            task=str(task),
            y_true_num=table.numeric("y_true"),
            y_pred_num=table.numeric("y_pred"),
        )
    _no_missing_labels(table, "y_true")
    _no_missing_labels(table, "y_pred")
    true_codes, true_names = table.codes("y_true")
    pred_codes, pred_names = table.codes("y_pred")
    classes = tuple(sorted(set(true_names) | set(pred_names)))
    lookup = {name: index for index, name in enumerate(classes)}
    true_map = np.array([lookup[n] for n in true_names], dtype=np.int64)
    pred_map = np.array([lookup[n] for n in pred_names], dtype=np.int64)
    if np.array_equal(true_map, np.arange(len(true_map))):
        true_labels = true_codes  # identity: share the column's codes
    else:
        true_labels = true_map[true_codes]
    if np.array_equal(pred_map, np.arange(len(pred_map))):
        pred_labels = pred_codes
    else:
        pred_labels = pred_map[pred_codes]
    prefix = "y_score_"
    class_scores = None
    if task == Task.MULTICLASS:
        class_scores = {
            c[len(prefix) :]: table.numeric(c) for c in table.columns if c.startswith(prefix)
        }
    score = table.numeric("y_score") if task == Task.BINARY and table.has("y_score") else None
    return with_classes(
        str(task),
        classes,
        true_labels,
        pred_labels,
        positive_label,
        score,
        class_scores or None,
    )


def slice_codes(
    table: Table, columns: list[str]
) -> tuple[np.ndarray[Any, Any], list[tuple[str, ...]]]:
    """Integer codes of the value combinations of ``columns`` and their names."""
    if len(columns) == 1:
        codes, names = table.codes(columns[0])  # already dense
        return codes, [(name,) for name in names]
    combined: np.ndarray[Any, Any] | None = None
    all_names: list[list[str]] = []
    for column in columns:
        codes, names = table.codes(column)
        all_names.append(names)
        combined = codes if combined is None else combined * len(names) + codes
    assert combined is not None
    used, dense = np.unique(combined, return_inverse=True)
    labels: list[tuple[str, ...]] = []
    for value in used:
        parts: list[str] = []
        remainder = int(value)
        for names in reversed(all_names):
            parts.append(names[remainder % len(names)])
            remainder //= len(names)
        labels.append(tuple(reversed(parts)))
    return dense.astype(np.int64), labels


def finish_metric(
    metric: MetricCheck, result: CheckEvaluation, value: Callable[[], float], rows: int
) -> None:
    """A plain metric check's result (any engine); ``value`` raises Undefined."""
    result.metric = str(metric.name)
    result.min, result.max, result.sample_size = metric.min, metric.max, rows
    result.value = value()
    result.outcome = judge(result.value, metric.min, metric.max)
    verdict = "meets" if result.outcome == PASSED else "does not meet"
    result.message = (
        f"{metric.name} = {result.value:.4f} on {rows} rows {verdict} "
        f"{describe_bounds(metric.min, metric.max)}"
    )


def _note_bounds(result: CheckEvaluation, values: GroupValues) -> None:
    """A sketched rank metric says how far it can be from the exact value."""
    if values.bounds is not None and np.nanmax(values.bounds, initial=0.0) > 0:
        result.message += f" (each value within {float(np.nanmax(values.bounds)):.2g} of exact)"


def finish_slices(
    spec: SliceSpec,
    metric: MetricCheck,
    values: GroupValues,
    labels: list[tuple[str, ...]],
    result: CheckEvaluation,
) -> None:
    """A slice check's result from the metric of every slice (any engine)."""
    result.metric = str(metric.name)
    result.min, result.max = metric.min, metric.max
    worst: SliceEvaluation | None = None
    for index, parts in enumerate(labels):
        named = dict(zip(spec.columns, parts, strict=True))
        label = ",".join(f"{c}={v}" for c, v in named.items())
        size = int(values.sizes[index])
        if size < spec.min_size:
            if not spec.skip_small:
                result.slices.append(
                    SliceEvaluation(
                        label,
                        INCONCLUSIVE,
                        None,
                        size,
                        f"fewer than {spec.min_size} rows",
                        named,
                    )
                )
            continue
        reason = values.reasons[index]
        if reason is not None:
            evaluation = SliceEvaluation(label, INCONCLUSIVE, None, size, reason, named)
        else:
            number = float(values.values[index])
            evaluation = SliceEvaluation(
                label, judge(number, metric.min, metric.max), number, size, "", named
            )
            if worst is None or _worse(metric, evaluation, worst):
                worst = evaluation
        result.slices.append(evaluation)
    if not result.slices:
        result.message = f"no slice of {spec.columns} has {spec.min_size} or more rows"
        return
    outcomes = {s.outcome for s in result.slices}
    result.outcome = (
        FAILED if FAILED in outcomes else INCONCLUSIVE if INCONCLUSIVE in outcomes else PASSED
    )
    if worst is not None:
        result.value, result.slice = worst.value, worst.slice
        result.slice_values, result.sample_size = worst.values, worst.sample_size
    failing = [s.slice for s in result.slices if s.outcome != PASSED]
    summary = f"not passing: {', '.join(failing[:5])}" if failing else "all pass"
    if worst is not None and worst.value is not None:
        summary += f" (worst {worst.slice} = {worst.value:.4f})"
    result.message = (
        f"{metric.name} per {'/'.join(spec.columns)}: {len(result.slices)} slices, {summary}"
    )
    _note_bounds(result, values)


def _worse(metric: MetricCheck, a: SliceEvaluation, b: SliceEvaluation) -> bool:
    assert a.value is not None
    assert b.value is not None
    if metric.name in LOWER_IS_BETTER:
        return a.value > b.value
    return a.value < b.value


def finish_baseline(
    spec: BaselineSpec,
    metric: MetricCheck,
    candidate: float,
    baseline: float,
    result: CheckEvaluation,
) -> None:
    """A baseline check's result from the two values (any engine)."""
    result.value, result.baseline = candidate, baseline
    # Positive regression means the candidate is worse than the baseline.
    regression = candidate - baseline if metric.name in LOWER_IS_BETTER else baseline - candidate
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


def finish_fairness(
    spec: FairnessCheck,
    labels: list[tuple[str, ...]],
    size: FloatArray,
    selected: FloatArray,
    positives: FloatArray,
    true_pos: FloatArray,
    result: CheckEvaluation,
) -> None:
    """A fairness check's result from per-group counts (any engine)."""
    groups = len(labels)
    result.metric = str(spec.metric)
    result.min, result.max = spec.min, spec.max
    false_pos = selected - true_pos
    negatives = size - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {
            "selection_rate": selected / size,
            "tpr": np.where(positives > 0, true_pos / positives, np.nan),
            "fpr": np.where(negatives > 0, false_pos / negatives, np.nan),
        }
    for index, (group,) in enumerate(labels):
        small = size[index] < spec.min_group_size
        result.slices.append(
            SliceEvaluation(
                f"{spec.sensitive_column}={group}",
                INCONCLUSIVE if small else PASSED,
                float(rates["selection_rate"][index]),
                int(size[index]),
                f"selection_rate={rates['selection_rate'][index]:.4f} "
                f"tpr={rates['tpr'][index]:.4f} fpr={rates['fpr'][index]:.4f}",
                {spec.sensitive_column: group},
            )
        )
    small_groups = [labels[i][0] for i in range(groups) if size[i] < spec.min_group_size]
    if groups < 2 or small_groups:
        result.message = (
            f"need two or more groups of at least {spec.min_group_size} rows in "
            f"{spec.sensitive_column}; too small: {small_groups or [g for (g,) in labels]}"
        )
        return
    result.value = fairness_value(spec.metric, rates)
    result.outcome = judge(result.value, spec.min, spec.max)
    result.message = (
        f"{spec.metric} over {spec.sensitive_column} ({groups} groups) = "
        f"{result.value:.4f}, required {describe_bounds(spec.min, spec.max)}"
    )


class Evaluator:
    """Evaluates each check kind; one instance per gate evaluation."""

    def __init__(self, inputs: GateInputs) -> None:
        self.inputs = inputs
        self._encoded: Encoded | None = None
        self._slice_cache: dict[tuple[str, ...], tuple[Any, list[tuple[str, ...]]]] = {}

    def slice_codes(self, columns: list[str]) -> tuple[Any, list[tuple[str, ...]]]:
        key = tuple(columns)
        if key not in self._slice_cache:
            self._slice_cache[key] = slice_codes(self.inputs.predictions, columns)
        return self._slice_cache[key]

    @property
    def encoded(self) -> Encoded:
        if self._encoded is None:
            self._encoded = encode_predictions(
                self.inputs.predictions, self.inputs.task, self.inputs.positive_label
            )
        return self._encoded

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
            elif check.explainability is not None:
                self._explainability(check.explainability, result)
            elif check.behavior is not None:
                self._behavior(check, check.behavior, result)
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
        e = self.encoded
        finish_metric(metric, result, lambda: compute(metric.name, e, metric.average), len(e))

    def _slices(self, check: Check, metric: MetricCheck, result: CheckEvaluation) -> None:
        assert check.slice is not None
        codes, labels = self.slice_codes(check.slice.columns)
        values = grouped(metric.name, self.encoded, codes, len(labels), metric.average)
        finish_slices(check.slice, metric, values, labels, result)

    def _baseline(self, check: Check, metric: MetricCheck, result: CheckEvaluation) -> None:
        assert check.baseline is not None
        spec = check.baseline
        result.metric = str(metric.name)
        result.sample_size = self.inputs.predictions.num_rows
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
        reason, baseline_table = self._comparable(baseline_table)
        if reason:
            result.outcome = INCONCLUSIVE
            result.message = f"baseline from {spec.environment} is not comparable: {reason}"
            return
        live = encode_predictions(baseline_table, self.inputs.task, self.inputs.positive_label)
        candidate = compute(metric.name, self.encoded, metric.average)
        baseline = compute(metric.name, live, metric.average)
        finish_baseline(spec, metric, candidate, baseline, result)

    def _comparable(self, baseline: Table) -> tuple[str | None, Table]:
        """Why the baseline cannot be compared row for row (or None), and the
        baseline aligned to the candidate's row order."""
        candidate = self.inputs.predictions
        id_column = self.inputs.id_column
        if id_column is not None:
            if not (candidate.has(id_column) and baseline.has(id_column)):
                missing = f"id column {id_column!r} is missing from one of the prediction files"
                return missing, baseline
            ours = candidate.labels(id_column)
            theirs = baseline.labels(id_column)
            if len(np.unique(ours)) != len(ours):
                return f"id column {id_column!r} has duplicate values", baseline
            if len(ours) != len(theirs) or not np.array_equal(np.sort(ours), np.sort(theirs)):
                return f"the rows differ (matched by {id_column})", baseline
            if not np.array_equal(ours, theirs):
                # Same rows in another order: align the baseline to ours.
                index = np.argsort(theirs)[np.argsort(np.argsort(ours))]
                baseline = Table(baseline.name, baseline.data.take(pa.array(index)))
            if not np.array_equal(baseline.labels("y_true"), candidate.labels("y_true")):
                return "y_true differs for the same ids: not the same evaluation data", baseline
            return None, baseline
        if baseline.num_rows != candidate.num_rows:
            rows = f"{baseline.num_rows} baseline rows vs {candidate.num_rows} candidate rows"
            return rows, baseline
        if not np.array_equal(baseline.labels("y_true"), candidate.labels("y_true")):
            return (
                "y_true differs row by row: not the same evaluation data (set idColumn)",
                baseline,
            )
        return None, baseline

    # -- fairness -------------------------------------------------------------

    def _fairness(self, spec: FairnessCheck, result: CheckEvaluation) -> None:
        e = self.encoded
        codes, labels = self.slice_codes([spec.sensitive_column])
        groups = len(labels)
        result.sample_size = len(e)
        t, q = e.true_positive, e.pred_positive
        size = np.bincount(codes, minlength=groups).astype(np.float64)
        selected = np.asarray(np.bincount(codes, weights=q, minlength=groups), np.float64)
        positives = np.asarray(np.bincount(codes, weights=t, minlength=groups), np.float64)
        true_pos = np.asarray(np.bincount(codes, weights=t & q, minlength=groups), np.float64)
        finish_fairness(spec, labels, size, selected, positives, true_pos, result)

    # -- data -----------------------------------------------------------------

    def _data(self, spec: DataCheck, result: CheckEvaluation) -> None:
        facts: dict[str, DataFacts | str] = {}
        for dataset in spec.datasets:
            table = self.inputs.training if dataset == "training" else self.inputs.evaluation
            facts[dataset] = (
                table_facts(spec, table)
                if table is not None
                else f"the {dataset} data is not available to the gate"
            )
        finish_data(spec, facts, result)

    # -- drift ----------------------------------------------------------------

    def _drift(self, spec: DriftCheck, result: CheckEvaluation) -> None:
        reference, current = self.inputs.training, self.inputs.evaluation
        if reference is None or current is None:
            result.message = "drift needs both the reference (training) and the evaluated data"
            return
        finish_drift(
            spec, lambda: drift_stats.statistic(spec, reference, current), current.num_rows, result
        )

    # -- explainability -------------------------------------------------------

    def _explainability(self, spec: ExplainabilityCheck, result: CheckEvaluation) -> None:
        importance = (self.inputs.metadata or {}).get("importance")
        result.metric = "permutation_importance"
        result.min, result.max = spec.min, spec.max
        if not importance:
            result.message = "the training job recorded no permutation importance"
            return
        ranking = sorted(importance, key=lambda item: -float(item["mean"]))
        names = [str(item["feature"]) for item in ranking]
        if spec.column not in names:
            result.message = f"no importance recorded for {spec.column!r} (features: {names})"
            return
        rank = names.index(spec.column) + 1
        value = float(ranking[rank - 1]["mean"])
        result.value, result.sample_size = value, len(names)
        problems = []
        if spec.not_in_top_k is not None and rank <= spec.not_in_top_k:
            problems.append(f"{spec.column} is #{rank}, inside the top {spec.not_in_top_k}")
        if judge(value, spec.min, spec.max) != PASSED:
            problems.append(f"importance {value:.4f} is not {describe_bounds(spec.min, spec.max)}")
        result.outcome = FAILED if problems else PASSED
        result.message = "; ".join(problems) or (
            f"{spec.column} is #{rank} of {len(names)} with importance {value:.4f}"
        )

    # -- behaviour ------------------------------------------------------------

    def _behavior(self, check: Check, spec: BehaviorCheck, result: CheckEvaluation) -> None:
        recorded = {
            str(item.get("name")): item for item in (self.inputs.metadata or {}).get("behavior", [])
        }
        result.metric = f"{spec.expect}_failure_rate"
        result.max = spec.max_failure_rate
        outcome = recorded.get(check.name)
        if outcome is None:
            result.message = (
                f"the training job recorded no result for behaviour check {check.name!r}; "
                "it must run where the model is (see MODELGATE_BEHAVIOR_TESTS)"
            )
            return
        if outcome.get("error"):
            result.message = f"the behaviour test could not run: {outcome['error']}"
            return
        rows, failures = int(outcome["rows"]), int(outcome["failures"])
        if rows == 0:
            result.message = "the behaviour test ran on 0 rows"
            return
        rate = failures / rows
        result.value, result.sample_size = rate, rows
        result.outcome = judge(rate, None, spec.max_failure_rate)
        perturbation = f"+{spec.add:g}" if spec.add is not None else f"= {spec.set!r}"
        result.message = (
            f"{spec.column} {perturbation}: {failures} of {rows} rows break '{spec.expect}' "
            f"(rate {rate:.4f}, allowed <= {spec.max_failure_rate:g}; "
            f"largest change {float(outcome.get('maxAbsDelta', 0.0)):.4g})"
        )


def finish_data(
    spec: DataCheck, facts: Mapping[str, DataFacts | str], result: CheckEvaluation
) -> None:
    """A data check's result from each dataset's facts, or why it has none."""
    problems: list[str] = []
    measured: list[float] = []
    for dataset in spec.datasets:
        known = facts[dataset]
        if isinstance(known, str):
            result.outcome = INCONCLUSIVE
            result.message = known
            return
        problems.extend(f"{dataset}: {p}" for p in data_problems(spec, known, measured))
        result.sample_size = (result.sample_size or 0) + known.rows
    result.min, result.max = spec.min, spec.max
    result.value = max(measured) if measured else None
    result.outcome = FAILED if problems else PASSED
    target = spec.column or "table"
    result.message = "; ".join(problems) if problems else f"{target}: all expectations hold"


def finish_drift(
    spec: DriftCheck, value: Callable[[], float], rows: int, result: CheckEvaluation
) -> None:
    """A drift check's result (any engine); ``value`` raises Undefined."""
    result.metric = str(spec.method)
    result.max, result.sample_size = spec.max, rows
    result.value = value()
    result.outcome = judge(result.value, None, spec.max)
    result.message = (
        f"{spec.method} of {spec.column} (training -> evaluation) = {result.value:.4f}, "
        f"allowed <= {spec.max:g}"
    )


def fairness_value(metric: FairnessMetric, rates: Mapping[str, np.ndarray[Any, Any]]) -> float:
    def spread(key: str) -> float:
        values = rates[key]
        if np.any(np.isnan(values)):
            raise Undefined(f"a group has no rows to compute {key} on")
        return float(np.max(values) - np.min(values))

    if metric == FairnessMetric.DEMOGRAPHIC_PARITY_DIFFERENCE:
        return spread("selection_rate")
    if metric == FairnessMetric.EQUAL_OPPORTUNITY_DIFFERENCE:
        return spread("tpr")
    if metric == FairnessMetric.EQUALIZED_ODDS_DIFFERENCE:
        return max(spread("tpr"), spread("fpr"))
    # Ratios (demographic parity ratio, disparate impact): lowest over highest
    # selection rate, so the four-fifths rule reads min: 0.8.
    selection = rates["selection_rate"]
    if np.max(selection) == 0:
        raise Undefined("no group has positive predictions: the ratio is undefined")
    return float(np.min(selection) / np.max(selection))


UNKNOWN_VALUES_KEPT = 10_000


@dataclass
class DataFacts:
    """What a data check needs to know of one table, from either engine."""

    rows: int
    types: dict[str, pa.DataType]
    duplicate_rate: float | None = None
    missing: int = 0
    # Non-missing values of a numeric spec.column: how many, range, outliers.
    values: int = 0
    low: float = math.nan
    high: float = math.nan
    below: int = 0
    above: int = 0
    # Values of spec.column outside spec.allowed (at most UNKNOWN_VALUES_KEPT kept).
    unknown: set[str] = field(default_factory=set)
    unknown_overflow: bool = False


def table_facts(spec: DataCheck, table: Table) -> DataFacts:
    """The in-memory engine's facts: the whole table at once."""
    facts = DataFacts(table.num_rows, {c: table.column(c).type for c in table.columns})
    if spec.max_duplicate_rate is not None and table.num_rows:
        facts.duplicate_rate = duplicate_rate(table)
    if spec.column is None or not table.has(spec.column):
        return facts
    missing = table.null_mask(spec.column)
    facts.missing = int(missing.sum())
    if (spec.min is not None or spec.max is not None) and table.is_numeric(spec.column):
        values = table.numeric(spec.column)[~missing]
        facts.values = int(values.size)
        if values.size:
            facts.low, facts.high = float(values.min()), float(values.max())
            if spec.min is not None:
                facts.below = int(np.sum(values < spec.min))
            if spec.max is not None:
                facts.above = int(np.sum(values > spec.max))
    if spec.allowed is not None:
        codes, names = table.codes(spec.column)
        present = {names[c] for c in np.unique(codes[~missing])}
        facts.unknown = present - set(spec.allowed)
    return facts


def is_numeric_type(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def data_problems(spec: DataCheck, facts: DataFacts, measured: list[float]) -> list[str]:
    problems: list[str] = []
    rows = facts.rows
    if spec.min_rows is not None and rows < spec.min_rows:
        problems.append(f"{rows} rows, fewer than minRows {spec.min_rows}")
    if spec.max_rows is not None and rows > spec.max_rows:
        problems.append(f"{rows} rows, more than maxRows {spec.max_rows}")
    for required in spec.required_columns or []:
        if required.name not in facts.types:
            problems.append(f"required column {required.name!r} is missing")
        elif required.type is not None and not type_matches(
            facts.types[required.name], required.type
        ):
            problems.append(
                f"column {required.name!r} is {facts.types[required.name]}, "
                f"expected {required.type}"
            )
    if spec.max_duplicate_rate is not None and rows and facts.duplicate_rate is not None:
        rate = facts.duplicate_rate
        if rate > spec.max_duplicate_rate:
            problems.append(
                f"duplicate rows {rate:.4f} > maxDuplicateRate {spec.max_duplicate_rate:g}"
            )
    if spec.column is None:
        return problems
    if spec.column not in facts.types:
        return [*problems, f"column {spec.column!r} is missing"]
    kind = facts.types[spec.column]
    if spec.max_missing_rate is not None:
        rate = facts.missing / rows if rows else 0.0
        if rate > spec.max_missing_rate:
            problems.append(
                f"{spec.column} missing rate {rate:.4f} > maxMissingRate {spec.max_missing_rate:g}"
            )
    if spec.type is not None and not type_matches(kind, ColumnType(spec.type)):
        problems.append(f"{spec.column} is {kind}, expected {spec.type}")
    if spec.min is not None or spec.max is not None:
        if not is_numeric_type(kind):
            problems.append(f"{spec.column} is not numeric, cannot check min/max")
        elif facts.values:
            low, high = facts.low, facts.high
            measured.append(high)
            if spec.min is not None and low < spec.min:
                problems.append(
                    f"{spec.column}: {facts.below} values below {spec.min:g} (lowest {low:g})"
                )
            if spec.max is not None and high > spec.max:
                problems.append(
                    f"{spec.column}: {facts.above} values above {spec.max:g} (highest {high:g})"
                )
    if spec.allowed is not None and facts.unknown:
        unknown = sorted(facts.unknown)
        shown = ", ".join(repr(u) for u in unknown[:5])
        count = f"{len(unknown)}{'+' if facts.unknown_overflow else ''}"
        problems.append(f"{spec.column}: {count} values not allowed: {shown}")
    return problems


def duplicate_rate(table: Table) -> float:
    """Fraction of rows that repeat an earlier row exactly (all columns)."""
    if table.num_rows == 0:
        return 0.0
    if not table.columns:
        return 0.0
    key = np.column_stack([table.codes(column)[0] for column in table.columns])
    unique_rows = len(np.unique(key, axis=0))
    return (table.num_rows - unique_rows) / table.num_rows


def type_matches(kind: pa.DataType, expected: ColumnType) -> bool:
    if expected == ColumnType.INTEGER:
        return bool(pa.types.is_integer(kind))
    if expected == ColumnType.NUMBER:
        return is_numeric_type(kind)
    if expected == ColumnType.BOOLEAN:
        return bool(pa.types.is_boolean(kind))
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def has_type(table: Table, column: str, expected: ColumnType) -> bool:
    return type_matches(table.column(column).type, expected)


def evaluate_gate(checks: list[Check], inputs: GateInputs) -> GateEvaluation:
    evaluator = Evaluator(inputs)
    results = [evaluator.evaluate(check) for check in checks]
    return GateEvaluation(outcome=gate_outcome(results), checks=results)
