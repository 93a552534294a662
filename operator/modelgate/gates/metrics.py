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
from typing import Any

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
    # Derived arrays shared by every metric and slice (e.g. the score order).
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

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
    # How far each value can be from the exact one (sketched rank metrics).
    bounds: FloatArray | None = None

    def single(self) -> float:
        """The value of a one-group computation, or raise Undefined."""
        if self.reasons[0] is not None:
            raise Undefined(self.reasons[0])
        return float(self.values[0])


class _Groups:
    """Per-group accumulation. ``codes`` None means one group of every row,
    the overall value, which then costs no per-row group array at all."""

    def __init__(self, codes: IntArray | None, groups: int, rows: int) -> None:
        self.codes = codes
        self.groups = groups
        if codes is None:
            self.sizes = np.array([rows], dtype=np.int64)
        else:
            self.sizes = np.bincount(codes, minlength=groups).astype(np.int64)
        self.reasons: list[str | None] = ["no rows" if size == 0 else None for size in self.sizes]

    def count(self, mask: BoolArray) -> FloatArray:
        """Rows where ``mask`` holds, per group (integer bincount, no float copy)."""
        if self.codes is None:
            return np.array([np.count_nonzero(mask)], dtype=np.float64)
        counts = np.bincount(self.codes[mask], minlength=self.groups)
        return np.asarray(counts, dtype=np.float64)

    def sum(self, weights: FloatArray) -> FloatArray:
        if self.codes is None:
            return np.array([np.sum(weights)], dtype=np.float64)
        sums = np.bincount(self.codes, weights=weights, minlength=self.groups)
        return np.asarray(sums, dtype=np.float64)

    def mean(self, weights: FloatArray) -> FloatArray:
        return self.sum(weights) / np.maximum(self.sizes, 1)

    def per_row(self, values: FloatArray) -> FloatArray | np.float64:
        """A per-group value spread back onto the rows."""
        if self.codes is None:
            return np.float64(values[0])
        result: FloatArray = values[self.codes]
        return result

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
    tp = g.count(t & q)
    fp = g.count(~t & q)
    fn = g.count(t & ~q)
    tn = g.sizes - tp - fp - fn
    return tp, fp, fn, tn


def _checked_scores(e: Encoded, g: _Groups) -> FloatArray:
    if e.score is None:
        raise Undefined("the predictions have no y_score column")
    bad = g.count(~np.isfinite(e.score))
    g.undefined_where(bad > 0, "y_score has NaN or infinite values")
    return e.score


def _both_classes(e: Encoded, g: _Groups, metric: str) -> tuple[FloatArray, FloatArray]:
    positives = g.count(e.true_positive)
    negatives = g.sizes - positives
    g.undefined_where(
        (positives == 0) | (negatives == 0),
        f"only one class present in y_true: {metric} is undefined",
    )
    return positives, negatives


@dataclass
class _ScoreSorted:
    """Rows sorted by score once per evaluation, shared by every score metric."""

    order: IntArray
    scores: FloatArray
    truth: BoolArray


def _score_sorted(e: Encoded, g: _Groups) -> _ScoreSorted:
    scores = _checked_scores(e, g)
    cached: _ScoreSorted | None = e.cache.get("score_sorted")
    if cached is None:
        safe = scores if np.all(np.isfinite(scores)) else np.nan_to_num(scores)
        order = np.argsort(safe, kind="quicksort")
        if len(order) < np.iinfo(np.int32).max:
            order = order.astype(np.int32)  # half the memory of the cached order
        cached = _ScoreSorted(order, safe[order], e.true_positive[order])
        e.cache["score_sorted"] = cached
    return cached


def sorted_within_groups(
    e: Encoded, g: _Groups, descending: bool = False
) -> tuple[FloatArray, BoolArray, IntArray | None]:
    """Scores, labels and group codes sorted by group, then by score.

    The global score sort is shared; grouping is a stable radix sort of the
    small group codes, whose permutation increases inside each group, so the
    gathers below stream through memory instead of jumping (this is what
    keeps 10M rows near-linear).
    """
    ranked = _score_sorted(e, g)
    scores, truth = ranked.scores, ranked.truth
    if descending:
        scores, truth = scores[::-1], truth[::-1]
    if g.codes is None:
        return scores, truth, None
    codes = g.codes[ranked.order[::-1] if descending else ranked.order]
    key_type = np.int16 if g.groups < np.iinfo(np.int16).max else np.int64
    permutation = np.argsort(codes.astype(key_type), kind="stable")
    return scores[permutation], truth[permutation], codes[permutation]


def _run_starts(codes: IntArray | None, scores: FloatArray) -> BoolArray:
    """Where a new (group, score) run starts in group-then-score order."""
    starts = np.empty(len(scores), dtype=bool)
    if len(scores):
        starts[0] = True
        np.not_equal(scores[1:], scores[:-1], out=starts[1:])
        if codes is not None:
            starts[1:] |= codes[1:] != codes[:-1]
    return starts


def _group_offsets(g: _Groups, codes: IntArray | None, positions: IntArray) -> IntArray:
    """Index of the first row of each position's group (in sorted order)."""
    if codes is None:
        return np.zeros(len(positions), dtype=np.int64)
    offsets = np.cumsum(g.sizes) - g.sizes
    result: IntArray = offsets[codes[positions]]
    return result


def binary_roc_auc(e: Encoded, g: _Groups) -> FloatArray:
    _checked_scores(e, g)  # a NaN score is the first reason to give
    positives, negatives = _both_classes(e, g, "roc_auc")
    scores, truth, codes = sorted_within_groups(e, g)
    n = len(scores)
    if n == 0:
        return np.full(g.groups, np.nan)
    tie_starts = np.flatnonzero(_run_starts(codes, scores))
    # 1-based rank inside the group, ties sharing their average rank; built in
    # place because this runs on every row of the largest tables.
    rank = np.diff(tie_starts, append=n).astype(np.float64)
    rank += 1.0
    rank /= 2.0
    rank += tie_starts
    rank -= _group_offsets(g, codes, tie_starts)
    rank *= np.add.reduceat(truth, tie_starts, dtype=np.int64)  # positives per tie
    tie_group = codes[tie_starts] if codes is not None else None
    rank_sum = _Groups(tie_group, g.groups, len(tie_starts)).sum(rank)
    u = rank_sum - positives * (positives + 1) / 2.0
    return _divide(u, positives * negatives)


def binary_pr_auc(e: Encoded, g: _Groups) -> FloatArray:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    _checked_scores(e, g)
    positives, _ = _both_classes(e, g, "pr_auc")
    scores, truth, codes = sorted_within_groups(e, g, descending=True)
    n = len(scores)
    if n == 0:
        return np.full(g.groups, np.nan)
    # Thresholds fall between distinct scores: keep the last row of each run.
    starts = np.flatnonzero(_run_starts(codes, scores))
    ends = np.append(starts[1:], n) - 1
    cumulative = np.cumsum(truth, dtype=np.int64)
    group_start = _group_offsets(g, codes, ends)
    before = np.where(group_start > 0, cumulative[np.maximum(group_start - 1, 0)], 0)
    true_pos = (cumulative[ends] - before).astype(np.float64)
    seen = (ends - group_start + 1).astype(np.float64)
    group = codes[ends] if codes is not None else np.zeros(len(ends), dtype=np.int64)
    precision = true_pos / seen
    recall = _divide(true_pos, positives[group])
    previous = np.r_[0.0, recall[:-1]]
    previous[np.r_[True, group[1:] != group[:-1]]] = 0.0
    contribution = np.nan_to_num((recall - previous) * precision)
    return np.asarray(np.bincount(group, weights=contribution, minlength=g.groups))


def binary_log_loss(e: Encoded, g: _Groups) -> FloatArray:
    scores = _checked_scores(e, g)
    eps = np.finfo(np.float64).eps
    probability_of_truth = np.where(e.true_positive, scores, 1.0 - scores)
    loss = -np.log(np.clip(np.nan_to_num(probability_of_truth), eps, 1 - eps))
    return g.mean(loss)


def binary_brier(e: Encoded, g: _Groups) -> FloatArray:
    scores = _checked_scores(e, g)
    return g.mean((np.nan_to_num(scores) - e.true_positive) ** 2)


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
        return g.count(e.y_true == e.y_pred) / np.maximum(g.sizes, 1)
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
    true_key = e.y_true if g.codes is None else g.codes * k + e.y_true
    pred_key = e.y_pred if g.codes is None else g.codes * k + e.y_pred
    correct = e.y_true == e.y_pred
    tp = np.bincount(true_key[correct], minlength=g.groups * k).reshape(shape)
    true = np.bincount(true_key, minlength=g.groups * k).reshape(shape)
    pred = np.bincount(pred_key, minlength=g.groups * k).reshape(shape)
    return tp.astype(np.float64), true.astype(np.float64), pred.astype(np.float64)


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
        return g.count(e.y_true == e.y_pred) / np.maximum(g.sizes, 1)
    if metric == MetricName.LOG_LOSS:
        return _multiclass_log_loss(e, g)
    tp, true, pred = _class_counts(e, g)
    return from_class_counts(metric, tp, true, pred, average)


def from_class_counts(
    metric: MetricName, tp: FloatArray, true: FloatArray, pred: FloatArray, average: Average
) -> FloatArray:
    """A multiclass count metric per group from ``(groups, classes)`` counts:
    true positives, true labels and predicted labels (either engine)."""
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
        g.count(missing) > 0,
        "a label has no y_score_<class> column, or a score is NaN",
    )
    finite_rows = np.all(np.isfinite(np.nan_to_num(matrix, nan=0.0)), axis=1)
    row_sums = np.nansum(matrix, axis=1)
    off = ~finite_rows | (np.abs(row_sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
    g.undefined_where(g.count(off) > 0, "class probabilities of a row do not sum to 1")
    eps = np.finfo(np.float64).eps
    loss = -np.log(np.clip(np.nan_to_num(chosen, nan=0.5), eps, 1 - eps))
    return g.mean(loss)


# -- regression ---------------------------------------------------------------


def _regression(metric: MetricName, e: Encoded, g: _Groups) -> FloatArray:
    if e.y_true_num is None or e.y_pred_num is None:
        raise Undefined("regression metrics need numeric y_true and y_pred")
    y, q = e.y_true_num, e.y_pred_num
    bad = ~(np.isfinite(y) & np.isfinite(q))
    g.undefined_where(g.count(bad) > 0, "y_true or y_pred has NaN or inf")
    y, q = np.nan_to_num(y), np.nan_to_num(q)
    n = np.maximum(g.sizes, 1).astype(np.float64)
    error = y - q
    if metric == MetricName.MAE:
        return g.sum(np.abs(error)) / n
    if metric == MetricName.RMSE:
        return np.sqrt(g.sum(error**2) / n)
    if metric == MetricName.MAPE:
        eps = np.finfo(np.float64).eps
        return g.sum(np.abs(error) / np.maximum(np.abs(y), eps)) / n
    if metric == MetricName.R2:
        mean = g.sum(y) / n
        total = g.sum((y - g.per_row(mean)) ** 2)
        g.undefined_where(total == 0, "y_true is constant: r2 is undefined")
        return 1.0 - _divide(g.sum(error**2), total)
    raise Undefined(f"{metric} is not defined for regression tasks")


# -- entry points -------------------------------------------------------------


def grouped(
    metric: MetricName,
    e: Encoded,
    codes: IntArray | None,
    groups: int,
    average: Average = Average.MACRO,
) -> GroupValues:
    """``metric`` for every group ``0..groups-1`` of ``codes`` (None: all rows)."""
    g = _Groups(None if codes is None else np.asarray(codes, dtype=np.int64), groups, len(e))
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
    return grouped(metric, e, None, 1, average).single()


def average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, ties sharing their average rank (one group)."""
    order = np.argsort(values, kind="quicksort")
    starts = np.flatnonzero(_run_starts(None, values[order]))
    lengths = np.diff(np.append(starts, len(values)))
    out = np.empty(len(values))
    out[order] = np.repeat(starts + (lengths + 1) / 2.0, lengths)
    return out
