"""The numpy metrics equal scikit-learn's on random and edge-case data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from modelgate.api.qualitygate import Average, MetricName
from modelgate.gates.metrics import Encoded, Undefined, average_ranks, compute, encode

SEEDS = range(8)


def binary_case(seed: int, rows: int = 500, ties: bool = False) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.35).astype(int)
    score = np.clip(0.35 * y + rng.random(rows) * 0.8, 0, 1)
    if ties:
        score = np.round(score, 1)
    pred = (score >= 0.5).astype(int)
    return y, pred, score


def as_predictions(y: Any, pred: Any, score: Any) -> Encoded:
    return encode("binary", y, pred, "1", y_score=score)


BINARY_REFERENCE: dict[MetricName, Callable[..., float]] = {
    MetricName.ACCURACY: lambda y, p, s: skm.accuracy_score(y, p),
    MetricName.BALANCED_ACCURACY: lambda y, p, s: skm.balanced_accuracy_score(y, p),
    MetricName.PRECISION: lambda y, p, s: skm.precision_score(y, p),
    MetricName.RECALL: lambda y, p, s: skm.recall_score(y, p),
    MetricName.F1: lambda y, p, s: skm.f1_score(y, p),
    MetricName.ROC_AUC: lambda y, p, s: skm.roc_auc_score(y, s),
    MetricName.PR_AUC: lambda y, p, s: skm.average_precision_score(y, s),
    MetricName.LOG_LOSS: lambda y, p, s: skm.log_loss(y, s),
    MetricName.BRIER: lambda y, p, s: skm.brier_score_loss(y, s),
}


@pytest.mark.parametrize("metric", sorted(BINARY_REFERENCE))
@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_match_sklearn(metric: MetricName, ties: bool) -> None:
    for seed in SEEDS:
        y, pred, score = binary_case(seed, ties=ties)
        ours = compute(metric, as_predictions(y, pred, score))
        assert ours == pytest.approx(BINARY_REFERENCE[metric](y, pred, score), abs=1e-12), seed


def test_pr_auc_with_all_scores_tied() -> None:
    y = np.array([0, 1, 1, 0, 1])
    score = np.full(5, 0.5)
    ours = compute(MetricName.PR_AUC, as_predictions(y, y, score))
    assert ours == pytest.approx(skm.average_precision_score(y, score))


@pytest.mark.parametrize("metric", ["precision", "recall", "f1"])
@pytest.mark.parametrize("average", list(Average))
def test_multiclass_prf_matches_sklearn(metric: str, average: Average) -> None:
    reference = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        y = rng.choice(["a", "b", "c"], 300)
        pred = np.where(rng.random(300) < 0.6, y, rng.choice(["a", "b", "c", "d"], 300))
        p = encode("multiclass", y, pred)
        expected = reference[metric](y, pred, average=str(average), zero_division=0)
        assert compute(MetricName(metric), p, average) == pytest.approx(expected)


def test_multiclass_accuracy_balanced_accuracy_and_log_loss() -> None:
    rng = np.random.default_rng(3)
    labels = np.array(["a", "b", "c"])
    y = rng.choice(labels, 400)
    raw = rng.random((400, 3)) + (labels[None, :] == y[:, None]) * 0.8
    proba = raw / raw.sum(axis=1, keepdims=True)
    pred = labels[proba.argmax(axis=1)]
    p = encode(
        "multiclass", y, pred, class_scores={label: proba[:, i] for i, label in enumerate(labels)}
    )
    assert compute(MetricName.ACCURACY, p) == pytest.approx(skm.accuracy_score(y, pred))
    assert compute(MetricName.BALANCED_ACCURACY, p) == pytest.approx(
        skm.balanced_accuracy_score(y, pred)
    )
    assert compute(MetricName.LOG_LOSS, p) == pytest.approx(skm.log_loss(y, proba, labels=labels))


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(100, 20, 300)
    q = y + rng.normal(0, 5, 300)
    p = encode("regression", y, q)
    assert compute(MetricName.MAE, p) == pytest.approx(skm.mean_absolute_error(y, q))
    assert compute(MetricName.RMSE, p) == pytest.approx(np.sqrt(skm.mean_squared_error(y, q)))
    assert compute(MetricName.R2, p) == pytest.approx(skm.r2_score(y, q))
    assert compute(MetricName.MAPE, p) == pytest.approx(skm.mean_absolute_percentage_error(y, q))


@pytest.mark.parametrize(
    ("metric", "y", "pred", "why"),
    [
        (MetricName.ROC_AUC, [1, 1, 1], [1, 0, 1], "only one class present"),
        (MetricName.PRECISION, [1, 0, 1], [0, 0, 0], "no positive predictions"),
        (MetricName.RECALL, [0, 0, 0], [1, 0, 0], "no positive labels"),
        (MetricName.ACCURACY, [], [], "no rows"),
    ],
)
def test_undefined_metrics_raise_instead_of_guessing(
    metric: MetricName, y: list[int], pred: list[int], why: str
) -> None:
    p = as_predictions(np.array(y, dtype=int), np.array(pred, dtype=int), np.full(len(y), 0.5))
    with pytest.raises(Undefined, match=why):
        compute(metric, p)


def test_nan_scores_are_undefined_not_silently_ranked() -> None:
    y, pred, score = binary_case(1, rows=20)
    score[3] = np.nan
    with pytest.raises(Undefined, match="NaN"):
        compute(MetricName.ROC_AUC, as_predictions(y, pred, score))


def test_constant_target_r2_is_undefined() -> None:
    y = np.ones(5)
    with pytest.raises(Undefined, match="constant"):
        compute(MetricName.R2, encode("regression", y, y))


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([0.1, 0.5, 0.5, 0.9])).tolist() == [1.0, 2.5, 2.5, 4.0]
