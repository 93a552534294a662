"""Model-quality metrics in numpy, matching scikit-learn's definitions.

Every function returns a float or raises :class:`Undefined` when the metric
has no value on these rows (one class only, no predicted positives, ...): the
gate turns that into ``Inconclusive``, never into a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelgate.api.qualitygate import Average, MetricName

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
LabelArray = npt.NDArray[np.str_]


class Undefined(ValueError):
    """The metric has no value on these rows; the message says why."""


@dataclass(frozen=True)
class Predictions:
    """What metrics are computed from (one evaluation set, or one slice of it)."""

    y_true: LabelArray
    y_pred: LabelArray
    positive_label: str = "1"
    # Binary: probability of the positive class. Regression: unused.
    y_score: FloatArray | None = None
    # Multiclass: class label -> probability column.
    class_scores: dict[str, FloatArray] | None = None
    # Regression: numeric targets and predictions.
    y_true_num: FloatArray | None = None
    y_pred_num: FloatArray | None = None

    def __len__(self) -> int:
        return len(self.y_true)

    def subset(self, mask: BoolArray) -> Predictions:
        def pick(array: FloatArray | None) -> FloatArray | None:
            return None if array is None else array[mask]

        scores = (
            None
            if self.class_scores is None
            else {label: column[mask] for label, column in self.class_scores.items()}
        )
        return Predictions(
            y_true=self.y_true[mask],
            y_pred=self.y_pred[mask],
            positive_label=self.positive_label,
            y_score=pick(self.y_score),
            class_scores=scores,
            y_true_num=pick(self.y_true_num),
            y_pred_num=pick(self.y_pred_num),
        )

    @property
    def true_positive(self) -> BoolArray:
        result: BoolArray = self.y_true == self.positive_label
        return result

    @property
    def pred_positive(self) -> BoolArray:
        result: BoolArray = self.y_pred == self.positive_label
        return result


def _ratio(numerator: float, denominator: float, why: str) -> float:
    if denominator == 0:
        raise Undefined(why)
    return numerator / denominator


def _need_rows(p: Predictions) -> None:
    if len(p) == 0:
        raise Undefined("no rows")


def accuracy(p: Predictions) -> float:
    _need_rows(p)
    return float(np.mean(p.y_true == p.y_pred))


def _confusion(p: Predictions) -> tuple[int, int, int, int]:
    t, q = p.true_positive, p.pred_positive
    return (
        int(np.sum(t & q)),
        int(np.sum(~t & q)),
        int(np.sum(t & ~q)),
        int(np.sum(~t & ~q)),
    )


def precision(p: Predictions) -> float:
    tp, fp, _, _ = _confusion(p)
    return _ratio(tp, tp + fp, "no positive predictions: precision is undefined")


def recall(p: Predictions) -> float:
    tp, _, fn, _ = _confusion(p)
    return _ratio(tp, tp + fn, "no positive labels: recall is undefined")


def f1(p: Predictions) -> float:
    tp, fp, fn, _ = _confusion(p)
    return _ratio(2 * tp, 2 * tp + fp + fn, "no positive labels or predictions: f1 is undefined")


def _binary_balanced_accuracy(p: Predictions) -> float:
    tp, fp, fn, tn = _confusion(p)
    tpr = _ratio(tp, tp + fn, "no positive labels: balanced accuracy is undefined")
    tnr = _ratio(tn, tn + fp, "no negative labels: balanced accuracy is undefined")
    return (tpr + tnr) / 2


def _scores(p: Predictions) -> FloatArray:
    if p.y_score is None:
        raise Undefined("the predictions have no y_score column")
    if not np.all(np.isfinite(p.y_score)):
        raise Undefined("y_score has NaN or infinite values")
    return p.y_score


def _both_classes(p: Predictions, metric: str) -> tuple[BoolArray, int, int]:
    t = p.true_positive
    positives = int(np.sum(t))
    negatives = len(t) - positives
    if positives == 0 or negatives == 0:
        raise Undefined(f"only one class present in y_true: {metric} is undefined")
    return t, positives, negatives


def average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, ties sharing their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    starts = ends - counts + 1
    ranks: FloatArray = ((starts + ends) / 2.0)[inverse]
    return ranks


def roc_auc(p: Predictions) -> float:
    scores = _scores(p)
    t, positives, negatives = _both_classes(p, "roc_auc")
    ranks = average_ranks(scores)
    # Mann-Whitney U of the positives, normalised.
    u = float(np.sum(ranks[t])) - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def pr_auc(p: Predictions) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    scores = _scores(p)
    t, positives, _ = _both_classes(p, "pr_auc")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_true = t[order].astype(np.float64)
    # Last index of each distinct score: thresholds fall between distinct values.
    distinct = np.flatnonzero(np.diff(sorted_scores)) if len(scores) > 1 else np.array([], int)
    ends = np.r_[distinct, len(scores) - 1]
    true_pos = np.cumsum(sorted_true)[ends]
    false_pos = (ends + 1) - true_pos
    precision_at = true_pos / (true_pos + false_pos)
    recall_at = true_pos / positives
    return float(np.sum(np.diff(np.r_[0.0, recall_at]) * precision_at))


def log_loss(p: Predictions) -> float:
    _need_rows(p)
    eps = np.finfo(np.float64).eps
    if p.class_scores is not None:
        labels = sorted(p.class_scores)
        matrix = np.column_stack([p.class_scores[label] for label in labels])
        if not np.all(np.isfinite(matrix)):
            raise Undefined("class score columns have NaN or infinite values")
        unknown = set(np.unique(p.y_true)) - set(labels)
        if unknown:
            raise Undefined(f"labels without a y_score_<class> column: {sorted(unknown)}")
        matrix = np.clip(matrix, eps, 1 - eps)
        matrix = matrix / matrix.sum(axis=1, keepdims=True)
        index = np.searchsorted(np.array(labels), p.y_true)
        return float(-np.mean(np.log(matrix[np.arange(len(p)), index])))
    scores = np.clip(_scores(p), eps, 1 - eps)
    t = p.true_positive
    return float(-np.mean(np.where(t, np.log(scores), np.log(1 - scores))))


def brier(p: Predictions) -> float:
    _need_rows(p)
    scores = _scores(p)
    return float(np.mean((scores - p.true_positive.astype(np.float64)) ** 2))


def _per_class(p: Predictions) -> tuple[LabelArray, dict[str, npt.NDArray[np.int64]]]:
    labels = np.unique(np.concatenate([p.y_true, p.y_pred]))
    tp = np.array([np.sum((p.y_true == c) & (p.y_pred == c)) for c in labels], dtype=np.int64)
    fp = np.array([np.sum((p.y_true != c) & (p.y_pred == c)) for c in labels], dtype=np.int64)
    fn = np.array([np.sum((p.y_true == c) & (p.y_pred != c)) for c in labels], dtype=np.int64)
    support = np.array([np.sum(p.y_true == c) for c in labels], dtype=np.int64)
    return labels, {"tp": tp, "fp": fp, "fn": fn, "support": support}


def _safe_divide(
    numerator: npt.NDArray[np.int64], denominator: npt.NDArray[np.int64]
) -> FloatArray:
    # scikit-learn's zero_division=0: a class never predicted scores 0, the
    # pessimistic value, so it can never help a check pass.
    out = np.zeros(len(numerator), dtype=np.float64)
    nonzero = denominator > 0
    out[nonzero] = numerator[nonzero] / denominator[nonzero]
    return out


def multiclass_prf(p: Predictions, which: str, average: Average) -> float:
    _need_rows(p)
    _, c = _per_class(p)
    if average == Average.MICRO:
        # Single-label multiclass: micro precision = recall = f1 = accuracy.
        return accuracy(p)
    if which == "precision":
        per_class = _safe_divide(c["tp"], c["tp"] + c["fp"])
    elif which == "recall":
        per_class = _safe_divide(c["tp"], c["tp"] + c["fn"])
    else:
        per_class = _safe_divide(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
    if average == Average.WEIGHTED:
        # Classes that were predicted but never occur have no weight.
        return float(np.sum(per_class * c["support"]) / np.sum(c["support"]))
    # Macro averages over classes present in y_true or y_pred (as scikit-learn).
    return float(np.mean(per_class))


def multiclass_balanced_accuracy(p: Predictions) -> float:
    _need_rows(p)
    labels = np.unique(p.y_true)
    recalls = [float(np.mean(p.y_pred[p.y_true == c] == c)) for c in labels]
    return float(np.mean(recalls))


def _numeric(p: Predictions) -> tuple[FloatArray, FloatArray]:
    _need_rows(p)
    if p.y_true_num is None or p.y_pred_num is None:
        raise Undefined("regression metrics need numeric y_true and y_pred")
    if not (np.all(np.isfinite(p.y_true_num)) and np.all(np.isfinite(p.y_pred_num))):
        raise Undefined("y_true or y_pred has NaN or infinite values")
    return p.y_true_num, p.y_pred_num


def mae(p: Predictions) -> float:
    y, q = _numeric(p)
    return float(np.mean(np.abs(y - q)))


def rmse(p: Predictions) -> float:
    y, q = _numeric(p)
    return float(np.sqrt(np.mean((y - q) ** 2)))


def r2(p: Predictions) -> float:
    y, q = _numeric(p)
    total = float(np.sum((y - np.mean(y)) ** 2))
    if total == 0:
        raise Undefined("y_true is constant: r2 is undefined")
    return 1.0 - float(np.sum((y - q) ** 2)) / total


def mape(p: Predictions) -> float:
    y, q = _numeric(p)
    eps = np.finfo(np.float64).eps
    return float(np.mean(np.abs(y - q) / np.maximum(np.abs(y), eps)))


BINARY: dict[MetricName, Callable[[Predictions], float]] = {
    MetricName.ACCURACY: accuracy,
    MetricName.BALANCED_ACCURACY: _binary_balanced_accuracy,
    MetricName.PRECISION: precision,
    MetricName.RECALL: recall,
    MetricName.F1: f1,
    MetricName.ROC_AUC: roc_auc,
    MetricName.PR_AUC: pr_auc,
    MetricName.LOG_LOSS: log_loss,
    MetricName.BRIER: brier,
}

REGRESSION: dict[MetricName, Callable[[Predictions], float]] = {
    MetricName.MAE: mae,
    MetricName.RMSE: rmse,
    MetricName.R2: r2,
    MetricName.MAPE: mape,
}


def compute(
    task: str, metric: MetricName, p: Predictions, average: Average = Average.MACRO
) -> float:
    """The value of ``metric`` for ``task`` on these predictions."""
    if task == "binary":
        return BINARY[metric](p)
    if task == "regression":
        return REGRESSION[metric](p)
    if metric == MetricName.ACCURACY:
        return accuracy(p)
    if metric == MetricName.BALANCED_ACCURACY:
        return multiclass_balanced_accuracy(p)
    if metric == MetricName.LOG_LOSS:
        return log_loss(p)
    if metric in (MetricName.PRECISION, MetricName.RECALL, MetricName.F1):
        return multiclass_prf(p, metric.value, average)
    raise Undefined(f"{metric} is not defined for multiclass tasks")
