"""Metrics per group from merged partial statistics.

The same definitions, the same reasons for an undefined value and the same
order of those reasons as :mod:`modelgate.gates.metrics` (the in-memory
engine, kept as the reference the streaming engine is tested against).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelgate.api.qualitygate import Average, MetricName, Task
from modelgate.gates.metrics import GroupValues, Undefined, _divide, from_class_counts
from modelgate.gates.partials import FloatArray, PredictionStats
from modelgate.gates.sketch import average_precision, roc_auc

RANK_METRICS = (MetricName.ROC_AUC, MetricName.PR_AUC)


class _Reasons:
    def __init__(self, sizes: FloatArray) -> None:
        self.sizes = sizes
        self.reasons: list[str | None] = ["no rows" if s == 0 else None for s in sizes]

    def where(self, mask: npt.NDArray[np.bool_], reason: str) -> None:
        for index in np.flatnonzero(mask):
            if self.reasons[index] is None:
                self.reasons[index] = reason

    def result(self, values: FloatArray, bounds: FloatArray | None = None) -> GroupValues:
        values = np.array(values, dtype=np.float64)
        for index, reason in enumerate(self.reasons):
            if reason is not None:
                values[index] = np.nan
        return GroupValues(values, self.sizes.astype(np.int64), self.reasons, bounds)


def grouped_stats(
    metric: MetricName,
    stats: PredictionStats,
    context: StatsContext,
    average: Average = Average.MACRO,
) -> GroupValues:
    """``metric`` for every group of ``stats`` (in the grouping's code order)."""
    sizes = stats.arrays["sizes"] if stats.arrays else np.zeros(stats.grouping.count)
    r = _Reasons(sizes)
    if stats.task == Task.BINARY:
        values, bounds = _binary(metric, stats, context, r)
        return r.result(values, bounds)
    if stats.task == Task.MULTICLASS:
        return r.result(_multiclass(metric, stats, context, r, average))
    return r.result(_regression(metric, stats, r))


class StatsContext:
    """What the whole predictions file says, beyond one grouping's counts."""

    def __init__(self, positive: int, has_score: bool, has_class_scores: bool) -> None:
        self.positive = positive
        self.has_score = has_score
        self.has_class_scores = has_class_scores


def _binary(
    metric: MetricName, stats: PredictionStats, context: StatsContext, r: _Reasons
) -> tuple[FloatArray, FloatArray | None]:
    a, p = stats.arrays, context.positive
    sizes = r.sizes
    groups = len(sizes)
    if p >= 0:
        tp, true, pred = a["class_tp"][:, p], a["class_true"][:, p], a["class_pred"][:, p]
    else:
        tp = true = pred = np.zeros(groups)
    if metric in (*RANK_METRICS, MetricName.LOG_LOSS, MetricName.BRIER):
        if not context.has_score:
            raise Undefined("the predictions have no y_score column")
        r.where(a["bad"] > 0, "y_score has NaN or infinite values")
    if metric in RANK_METRICS:
        negatives = sizes - true
        r.where(
            (true == 0) | (negatives == 0),
            f"only one class present in y_true: {metric} is undefined",
        )
        values, bounds = np.full(groups, np.nan), np.zeros(groups)
        for index, reason in enumerate(r.reasons):
            if reason is None:
                rank = roc_auc if metric == MetricName.ROC_AUC else average_precision
                values[index], bounds[index] = rank(stats.sketches[index])
        return values, bounds
    n = np.maximum(sizes, 1)
    if metric == MetricName.LOG_LOSS:
        return a["loss"] / n, None
    if metric == MetricName.BRIER:
        return a["brier"] / n, None
    if metric == MetricName.ACCURACY:
        return a["class_tp"].sum(axis=1) / n, None
    if p < 0:
        r.where(np.ones(groups, bool), "the positive label never occurs")
    fp, fn = pred - tp, true - tp
    tn = sizes - tp - fp - fn
    if metric == MetricName.PRECISION:
        r.where(tp + fp == 0, "no positive predictions: precision is undefined")
        return _divide(tp, tp + fp), None
    if metric == MetricName.RECALL:
        r.where(tp + fn == 0, "no positive labels: recall is undefined")
        return _divide(tp, tp + fn), None
    if metric == MetricName.F1:
        r.where(2 * tp + fp + fn == 0, "no positive labels or predictions: f1 is undefined")
        return _divide(2 * tp, 2 * tp + fp + fn), None
    if metric == MetricName.BALANCED_ACCURACY:
        r.where(tp + fn == 0, "no positive labels: balanced accuracy is undefined")
        r.where(tn + fp == 0, "no negative labels: balanced accuracy is undefined")
        return (_divide(tp, tp + fn) + _divide(tn, tn + fp)) / 2, None
    raise Undefined(f"{metric} is not defined for binary tasks")


def _multiclass(
    metric: MetricName,
    stats: PredictionStats,
    context: StatsContext,
    r: _Reasons,
    average: Average,
) -> FloatArray:
    a = stats.arrays
    n = np.maximum(r.sizes, 1)
    if metric == MetricName.ACCURACY or (
        average == Average.MICRO
        and metric in (MetricName.PRECISION, MetricName.RECALL, MetricName.F1)
    ):
        result: FloatArray = a["class_tp"].sum(axis=1) / n
        return result
    if metric == MetricName.LOG_LOSS:
        if not context.has_class_scores:
            raise Undefined("log_loss needs y_score_<class> probability columns")
        r.where(a["bad"] > 0, "a label has no y_score_<class> column, or a score is NaN")
        r.where(a["off"] > 0, "class probabilities of a row do not sum to 1")
        loss: FloatArray = a["loss"] / n
        return loss
    return from_class_counts(metric, a["class_tp"], a["class_true"], a["class_pred"], average)


def _regression(metric: MetricName, stats: PredictionStats, r: _Reasons) -> FloatArray:
    a = stats.arrays
    r.where(a["bad"] > 0, "y_true or y_pred has NaN or inf")
    n = np.maximum(r.sizes, 1).astype(np.float64)
    if metric == MetricName.MAE:
        mae: FloatArray = a["abs_error"] / n
        return mae
    if metric == MetricName.RMSE:
        rmse: FloatArray = np.sqrt(a["sq_error"] / n)
        return rmse
    if metric == MetricName.MAPE:
        mape: FloatArray = a["pct_error"] / n
        return mape
    if metric == MetricName.R2:
        total = a["m2_y"]
        r.where(total == 0, "y_true is constant: r2 is undefined")
        r2: FloatArray = 1.0 - _divide(a["sq_error"], total)
        return r2
    raise Undefined(f"{metric} is not defined for regression tasks")
