"""Model-quality metrics per group, vectorised, matching scikit-learn.

Every metric is computed for all groups (slices) at once from integer group
codes: counts come from ``np.bincount``, rank metrics from one ``lexsort``.
The overall value is the same computation with a single group, so slices and
the whole set can never disagree about a definition.

A group where a metric has no value (one class only, no predicted positives,
NaN scores, ...) gets NaN and a reason; the gate turns that into
``Inconclusive``, never into a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modelgate.api.qualitygate import Average, MetricName

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

PROBABILITY_SUM_TOLERANCE = 1e-6


class Undefined(ValueError):
    """The metric has no value on these rows; the message says why."""


@dataclass(frozen=True)
class Encoded:
    """Predictions encoded once: labels as integer codes into ``classes``.

    Classification: ``y_true``/``y_pred`` are codes; binary tasks carry the
    positive-class score, multiclass tasks one probability column per class
    (``class_scores[:, k]`` belongs to ``classes[k]``; NaN where missing).
    Regression: ``y_true_num``/``y_pred_num``.
    """

    task: str
    classes: tuple[str, ...] = ()
    y_true: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    y_pred: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    positive: int = -1
    score: FloatArray | None = None
    class_scores: FloatArray | None = None
    y_true_num: FloatArray | None = None
    y_pred_num: FloatArray | None = None

    def __len__(self) -> int:
        if self.task == "regression" and self.y_true_num is not None:
            return len(self.y_true_num)
        return len(self.y_true)

    @property
    def true_positive(self) -> BoolArray:
        result: BoolArray = self.y_true == self.positive
        return result

    @property
    def pred_positive(self) -> BoolArray:
        result: BoolArray = self.y_pred == self.positive
        return result


def encode_labels(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike
) -> tuple[tuple[str, ...], IntArray, IntArray]:
    """Shared sorted class names and the codes of both label arrays."""
    true_text = np.asarray(y_true).astype(str)
    pred_text = np.asarray(y_pred).astype(str)
    classes, inverse = np.unique(np.concatenate([true_text, pred_text]), return_inverse=True)
    n = len(true_text)
    return (
        tuple(str(c) for c in classes),
        inverse[:n].astype(np.int64),
        inverse[n:].astype(np.int64),
    )


def encode(
    task: str,
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    positive_label: str = "1",
    y_score: npt.ArrayLike | None = None,
    class_scores: Mapping[str, npt.ArrayLike] | None = None,
) -> Encoded:
    """Encode plain arrays (labels as anything printable)."""
    if task == "regression":
        return Encoded(
            task=task,
            y_true_num=np.asarray(y_true, dtype=np.float64),
            y_pred_num=np.asarray(y_pred, dtype=np.float64),
        )
    classes, true_codes, pred_codes = encode_labels(y_true, y_pred)
    return with_classes(
        task, classes, true_codes, pred_codes, positive_label, y_score, class_scores
    )


def with_classes(
    task: str,
    classes: tuple[str, ...],
    true_codes: IntArray,
    pred_codes: IntArray,
    positive_label: str,
    y_score: npt.ArrayLike | None,
    class_scores: Mapping[str, npt.ArrayLike] | None,
) -> Encoded:
    positive = classes.index(positive_label) if positive_label in classes else -1
    matrix = None
    if class_scores:
        extra = sorted(set(class_scores) - set(classes))
        names = classes + tuple(extra)
        matrix = np.full((len(true_codes), len(names)), np.nan)
        for index, name in enumerate(names):
            if name in class_scores:
                matrix[:, index] = np.asarray(class_scores[name], dtype=np.float64)
        classes = names
    return Encoded(
        task=task,
        classes=classes,
        y_true=true_codes,
        y_pred=pred_codes,
        positive=positive,
        score=None if y_score is None else np.asarray(y_score, dtype=np.float64),
        class_scores=matrix,
    )


@dataclass
class GroupValues:
    """One metric for every group: value (NaN when undefined) and why."""

    values: FloatArray
    sizes: IntArray
    reasons: list[str | None]

    def single(self) -> float:
        """The value of a one-group computation, or raise Undefined."""
        if self.reasons[0] is not None:
            raise Undefined(self.reasons[0])
        return float(self.values[0])


def _counts(codes: IntArray, groups: int, mask: BoolArray | None = None) -> FloatArray:
    if mask is None:
        return np.asarray(np.bincount(codes, minlength=groups), dtype=np.float64)
    weights = mask.astype(np.float64)
    return np.asarray(np.bincount(codes, weights=weights, minlength=groups), dtype=np.float64)


def _sums(codes: IntArray, groups: int, weights: FloatArray) -> FloatArray:
    return np.asarray(np.bincount(codes, weights=weights, minlength=groups), dtype=np.float64)


class _Groups:
    """Values and reasons under construction; the first reason wins."""

    def __init__(self, codes: IntArray, groups: int) -> None:
        self.codes = codes
        self.groups = groups
        self.sizes = np.bincount(codes, minlength=groups).astype(np.int64)
        self.reasons: list[str | None] = ["no rows" if size == 0 else None for size in self.sizes]

    def undefined_where(self, mask: npt.NDArray[np.bool_], reason: str) -> None:
        for index in np.flatnonzero(mask):
            if self.reasons[index] is None:
                self.reasons[index] = reason

    def result(self, values: FloatArray) -> GroupValues:
        values = np.array(values, dtype=np.float64)
        for index, reason in enumerate(self.reasons):
            if reason is not None:
                values[index] = np.nan
        return GroupValues(values=values, sizes=self.sizes, reasons=self.reasons)


def _divide(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    out = np.full(len(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# -- binary -------------------------------------------------------------------


def _binary_confusion(e: Encoded, g: _Groups) -> tuple[FloatArray, ...]:
    if e.positive < 0:
        g.undefined_where(np.ones(g.groups, bool), "the positive label never occurs")
    t, q = e.true_positive, e.pred_positive
    tp = _counts(g.codes, g.groups, t & q)
    fp = _counts(g.codes, g.groups, ~t & q)
    fn = _counts(g.codes, g.groups, t & ~q)
    tn = _counts(g.codes, g.groups, ~t & ~q)
    return tp, fp, fn, tn


def _checked_scores(e: Encoded, g: _Groups) -> FloatArray:
    if e.score is None:
        raise Undefined("the predictions have no y_score column")
    bad = _counts(g.codes, g.groups, ~np.isfinite(e.score))
    g.undefined_where(bad > 0, "y_score has NaN or infinite values")
    return e.score


def _both_classes(e: Encoded, g: _Groups, metric: str) -> tuple[FloatArray, FloatArray]:
    positives = _counts(g.codes, g.groups, e.true_positive)
    negatives = g.sizes - positives
    g.undefined_where(
        (positives == 0) | (negatives == 0),
        f"only one class present in y_true: {metric} is undefined",
    )
    return positives, negatives


def _average_ranks_by_group(codes: IntArray, scores: FloatArray) -> tuple[IntArray, FloatArray]:
    """Sort order (by group, then score) and 1-based in-group ranks, ties averaged."""
    order = np.lexsort((scores, codes))
    sorted_codes, sorted_scores = codes[order], scores[order]
    n = len(order)
    if n == 0:
        return order, np.zeros(0)
    new_group = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    new_tie = new_group | np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    positions = np.arange(n)
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0))
    tie_starts = np.flatnonzero(new_tie)
    tie_ends = np.r_[tie_starts[1:], n] - 1
    tie_id = np.cumsum(new_tie) - 1
    in_group_start = tie_starts - group_start[tie_starts]
    in_group_end = tie_ends - group_start[tie_starts]
    tie_rank = (in_group_start + in_group_end) / 2.0 + 1.0
    ranks: FloatArray = tie_rank[tie_id]
    return order, ranks


def binary_roc_auc(e: Encoded, g: _Groups) -> FloatArray:
    scores = _checked_scores(e, g)
    positives, negatives = _both_classes(e, g, "roc_auc")
    order, ranks = _average_ranks_by_group(g.codes, np.nan_to_num(scores))
    positive_rank_sum = _sums(g.codes[order], g.groups, ranks * e.true_positive[order])
    u = positive_rank_sum - positives * (positives + 1) / 2.0
    return _divide(u, positives * negatives)


def binary_pr_auc(e: Encoded, g: _Groups) -> FloatArray:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    scores = _checked_scores(e, g)
    positives, _ = _both_classes(e, g, "pr_auc")
    order = np.lexsort((-np.nan_to_num(scores), g.codes))
    sorted_codes, sorted_scores = g.codes[order], scores[order]
    truth = e.true_positive[order].astype(np.float64)
    n = len(order)
    if n == 0:
        return np.full(g.groups, np.nan)
    new_group = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    positions = np.arange(n)
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0))
    cumulative = np.cumsum(truth)
    before_group = np.where(group_start > 0, cumulative[np.maximum(group_start - 1, 0)], 0.0)
    true_pos = cumulative - before_group
    seen = positions - group_start + 1
    # Thresholds fall between distinct scores: keep the last row of each run.
    run_end = np.r_[
        (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_scores[1:] != sorted_scores[:-1]), True
    ]
    ends = np.flatnonzero(run_end)
    group = sorted_codes[ends]
    precision = true_pos[ends] / seen[ends]
    recall = _divide(true_pos[ends], positives[group])
    previous = np.r_[0.0, recall[:-1]]
    previous[np.r_[True, group[1:] != group[:-1]]] = 0.0
    return _sums(group, g.groups, np.nan_to_num((recall - previous) * precision))


def binary_log_loss(e: Encoded, g: _Groups) -> FloatArray:
    scores = _checked_scores(e, g)
    eps = np.finfo(np.float64).eps
    clipped = np.clip(np.nan_to_num(scores), eps, 1 - eps)
    loss = -np.where(e.true_positive, np.log(clipped), np.log1p(-clipped))
    return _sums(g.codes, g.groups, loss) / np.maximum(g.sizes, 1)


def binary_brier(e: Encoded, g: _Groups) -> FloatArray:
    scores = _checked_scores(e, g)
    error = (np.nan_to_num(scores) - e.true_positive) ** 2
    return _sums(g.codes, g.groups, error) / np.maximum(g.sizes, 1)


def _binary(metric: MetricName, e: Encoded, g: _Groups) -> FloatArray:
    if metric == MetricName.ROC_AUC:
        return binary_roc_auc(e, g)
    if metric == MetricName.PR_AUC:
        return binary_pr_auc(e, g)
    if metric == MetricName.LOG_LOSS:
        return binary_log_loss(e, g)
    if metric == MetricName.BRIER:
        return binary_brier(e, g)
    if metric == MetricName.ACCURACY:
        return _counts(g.codes, g.groups, e.y_true == e.y_pred) / np.maximum(g.sizes, 1)
    tp, fp, fn, tn = _binary_confusion(e, g)
    if metric == MetricName.PRECISION:
        g.undefined_where(tp + fp == 0, "no positive predictions: precision is undefined")
        return _divide(tp, tp + fp)
    if metric == MetricName.RECALL:
        g.undefined_where(tp + fn == 0, "no positive labels: recall is undefined")
        return _divide(tp, tp + fn)
    if metric == MetricName.F1:
        g.undefined_where(
            2 * tp + fp + fn == 0, "no positive labels or predictions: f1 is undefined"
        )
        return _divide(2 * tp, 2 * tp + fp + fn)
    if metric == MetricName.BALANCED_ACCURACY:
        g.undefined_where(tp + fn == 0, "no positive labels: balanced accuracy is undefined")
        g.undefined_where(tn + fp == 0, "no negative labels: balanced accuracy is undefined")
        return (_divide(tp, tp + fn) + _divide(tn, tn + fp)) / 2
    raise Undefined(f"{metric} is not defined for binary tasks")


# -- multiclass ---------------------------------------------------------------


def _class_counts(e: Encoded, g: _Groups) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per group and class: true positives, true counts, predicted counts."""
    k = len(e.classes)
    shape = (g.groups, k)
    tp = _counts(g.codes * k + e.y_true, g.groups * k, e.y_true == e.y_pred).reshape(shape)
    true = np.bincount(g.codes * k + e.y_true, minlength=g.groups * k).reshape(shape)
    pred = np.bincount(g.codes * k + e.y_pred, minlength=g.groups * k).reshape(shape)
    return tp, true.astype(np.float64), pred.astype(np.float64)


def _zero_divide(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    # scikit-learn's zero_division=0: a class never predicted scores 0, the
    # pessimistic value, so it can never help a check pass.
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _multiclass(metric: MetricName, e: Encoded, g: _Groups, average: Average) -> FloatArray:
    if metric == MetricName.ACCURACY or (
        average == Average.MICRO
        and metric in (MetricName.PRECISION, MetricName.RECALL, MetricName.F1)
    ):
        # Single-label multiclass: micro precision = recall = f1 = accuracy.
        return _counts(g.codes, g.groups, e.y_true == e.y_pred) / np.maximum(g.sizes, 1)
    if metric == MetricName.LOG_LOSS:
        return _multiclass_log_loss(e, g)
    tp, true, pred = _class_counts(e, g)
    if metric == MetricName.BALANCED_ACCURACY:
        recall = _zero_divide(tp, true)
        present = true > 0
        return _divide((recall * present).sum(axis=1), present.sum(axis=1).astype(np.float64))
    if metric == MetricName.PRECISION:
        per_class = _zero_divide(tp, pred)
    elif metric == MetricName.RECALL:
        per_class = _zero_divide(tp, true)
    elif metric == MetricName.F1:
        per_class = _zero_divide(2 * tp, true + pred)
    else:
        raise Undefined(f"{metric} is not defined for multiclass tasks")
    if average == Average.WEIGHTED:
        return _divide((per_class * true).sum(axis=1), true.sum(axis=1))
    # Macro: mean over the classes present in y_true or y_pred of that group.
    present = (true + pred) > 0
    return _divide((per_class * present).sum(axis=1), present.sum(axis=1).astype(np.float64))


def _multiclass_log_loss(e: Encoded, g: _Groups) -> FloatArray:
    matrix = e.class_scores
    if matrix is None:
        raise Undefined("log_loss needs y_score_<class> probability columns")
    rows = np.arange(len(e.y_true))
    chosen = matrix[rows, e.y_true]
    missing = ~np.isfinite(chosen)
    g.undefined_where(
        _counts(g.codes, g.groups, missing) > 0,
        "a label has no y_score_<class> column, or a score is NaN",
    )
    finite_rows = np.all(np.isfinite(np.nan_to_num(matrix, nan=0.0)), axis=1)
    row_sums = np.nansum(matrix, axis=1)
    off = ~finite_rows | (np.abs(row_sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
    g.undefined_where(
        _counts(g.codes, g.groups, off) > 0, "class probabilities of a row do not sum to 1"
    )
    eps = np.finfo(np.float64).eps
    loss = -np.log(np.clip(np.nan_to_num(chosen, nan=0.5), eps, 1 - eps))
    return _sums(g.codes, g.groups, loss) / np.maximum(g.sizes, 1)


# -- regression ---------------------------------------------------------------


def _regression(metric: MetricName, e: Encoded, g: _Groups) -> FloatArray:
    if e.y_true_num is None or e.y_pred_num is None:
        raise Undefined("regression metrics need numeric y_true and y_pred")
    y, q = e.y_true_num, e.y_pred_num
    bad = ~(np.isfinite(y) & np.isfinite(q))
    g.undefined_where(_counts(g.codes, g.groups, bad) > 0, "y_true or y_pred has NaN or inf")
    y, q = np.nan_to_num(y), np.nan_to_num(q)
    n = np.maximum(g.sizes, 1).astype(np.float64)
    error = y - q
    if metric == MetricName.MAE:
        return _sums(g.codes, g.groups, np.abs(error)) / n
    if metric == MetricName.RMSE:
        return np.sqrt(_sums(g.codes, g.groups, error**2) / n)
    if metric == MetricName.MAPE:
        eps = np.finfo(np.float64).eps
        return _sums(g.codes, g.groups, np.abs(error) / np.maximum(np.abs(y), eps)) / n
    if metric == MetricName.R2:
        mean = _sums(g.codes, g.groups, y) / n
        total = _sums(g.codes, g.groups, (y - mean[g.codes]) ** 2)
        g.undefined_where(total == 0, "y_true is constant: r2 is undefined")
        return 1.0 - _divide(_sums(g.codes, g.groups, error**2), total)
    raise Undefined(f"{metric} is not defined for regression tasks")


# -- entry points -------------------------------------------------------------


def grouped(
    metric: MetricName,
    e: Encoded,
    codes: IntArray,
    groups: int,
    average: Average = Average.MACRO,
) -> GroupValues:
    """``metric`` for every group ``0..groups-1`` of ``codes``."""
    g = _Groups(np.asarray(codes, dtype=np.int64), groups)
    if e.task == "binary":
        values = _binary(metric, e, g)
    elif e.task == "multiclass":
        values = _multiclass(metric, e, g, average)
    else:
        values = _regression(metric, e, g)
    return g.result(values)


def compute(metric: MetricName, e: Encoded, average: Average = Average.MACRO) -> float:
    """``metric`` over all rows, or raise Undefined with the reason."""
    if len(e) == 0:
        raise Undefined("no rows")
    return grouped(metric, e, np.zeros(len(e), np.int64), 1, average).single()


def average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, ties sharing their average rank (one group)."""
    order, ranks = _average_ranks_by_group(np.zeros(len(values), np.int64), values)
    out = np.empty(len(values))
    out[order] = ranks
    return out


def group_codes(*columns: npt.ArrayLike) -> tuple[IntArray, list[tuple[str, ...]]]:
    """Integer codes for the value combinations of one or more columns."""
    combined: IntArray | None = None
    names: list[npt.NDArray[np.str_]] = []
    for column in columns:
        values, inverse = np.unique(np.asarray(column).astype(str), return_inverse=True)
        names.append(values)
        inverse = inverse.astype(np.int64)
        combined = inverse if combined is None else combined * len(values) + inverse
    assert combined is not None
    used, codes = np.unique(combined, return_inverse=True)
    labels: list[tuple[str, ...]] = []
    for value in used:
        parts: list[str] = []
        remainder = int(value)
        for values in reversed(names):
            parts.append(str(values[remainder % len(values)]))
            remainder //= len(values)
        labels.append(tuple(reversed(parts)))
    return codes.astype(np.int64), labels
