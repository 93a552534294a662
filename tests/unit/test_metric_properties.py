"""Property tests: every gate metric equals its reference implementation to 1e-9.

References are test-only: scikit-learn for model metrics, fairlearn for
fairness, scipy for the KS statistic. Inputs are randomised by hypothesis,
including ties in scores, tiny slices and heavily imbalanced classes; where the
reference has no defined value, the engine must refuse (Undefined/Inconclusive)
rather than invent one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import fairlearn.metrics as fm
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from modelgate.api.qualitygate import Average, Check, MetricName, Task
from modelgate.gates.drift import ks_statistic
from modelgate.gates.engine import GateInputs, evaluate_gate
from modelgate.gates.metrics import Undefined, compute, encode, grouped
from modelgate.gates.table import Table

TOLERANCE = 1e-9
# CI runs 60 examples per property; MODELGATE_PROPERTY_EXAMPLES=1000 for a deep run.
PROPERTY = settings(
    max_examples=int(os.environ.get("MODELGATE_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def binary_data(draw: st.DrawFn, min_rows: int = 2, max_rows: int = 300) -> dict[str, Any]:
    rows = draw(st.integers(min_rows, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    positive_rate = draw(st.sampled_from([0.02, 0.1, 0.5, 0.9]))
    tie_levels = draw(st.sampled_from([0, 2, 5, 20]))  # 0: continuous scores
    groups = draw(st.integers(1, 6))
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < positive_rate).astype(int)
    score = np.clip(0.3 * y + rng.random(rows) * 0.8, 0.0, 1.0)
    if tie_levels:
        score = np.round(score * tie_levels) / tie_levels
    threshold = draw(st.sampled_from([0.3, 0.5, 0.7]))
    pred = (score >= threshold).astype(int)
    group = rng.integers(0, groups, rows)
    return {"y": y, "pred": pred, "score": score, "group": group, "groups": groups}


def reference_or_none(function: Callable[[], float]) -> float | None:
    """The reference value, or None where the reference calls it undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            value = float(function())
        except (ValueError, ZeroDivisionError, Warning):
            return None
    return value if np.isfinite(value) else None


BINARY: dict[MetricName, Callable[[Any, Any, Any], float]] = {
    MetricName.ACCURACY: lambda y, p, s: skm.accuracy_score(y, p),
    MetricName.BALANCED_ACCURACY: lambda y, p, s: skm.balanced_accuracy_score(y, p),
    MetricName.PRECISION: lambda y, p, s: skm.precision_score(y, p, zero_division=np.nan),
    MetricName.RECALL: lambda y, p, s: skm.recall_score(y, p, zero_division=np.nan),
    MetricName.F1: lambda y, p, s: skm.f1_score(y, p, zero_division=np.nan),
    MetricName.ROC_AUC: lambda y, p, s: skm.roc_auc_score(y, s),
    MetricName.PR_AUC: lambda y, p, s: skm.average_precision_score(y, s),
    MetricName.LOG_LOSS: lambda y, p, s: skm.log_loss(y, s, labels=[0, 1]),
    MetricName.BRIER: lambda y, p, s: skm.brier_score_loss(y, s, labels=[0, 1]),
}


def both_classes(y: Any) -> bool:
    return 0 < int(np.sum(y)) < len(y)


@pytest.mark.parametrize("metric", sorted(BINARY))
@PROPERTY
@given(data=binary_data())
def test_binary_metric_equals_sklearn(metric: MetricName, data: dict[str, Any]) -> None:
    y, pred, score = data["y"], data["pred"], data["score"]
    expected = reference_or_none(lambda: BINARY[metric](y, pred, score))
    if metric in (MetricName.BALANCED_ACCURACY, MetricName.ROC_AUC, MetricName.PR_AUC):
        # scikit-learn warns or returns a value for one-class data; a gate
        # cannot judge ranking or per-class recall without both classes.
        expected = expected if both_classes(y) else None
    encoded = encode("binary", y, pred, "1", y_score=score)
    if expected is None:
        with pytest.raises(Undefined):
            compute(metric, encoded)
    else:
        assert compute(metric, encoded) == pytest.approx(expected, abs=TOLERANCE, rel=0)


@pytest.mark.parametrize(
    "metric", [MetricName.ACCURACY, MetricName.F1, MetricName.ROC_AUC, MetricName.LOG_LOSS]
)
@PROPERTY
@given(data=binary_data(min_rows=1, max_rows=60))
def test_every_slice_equals_sklearn_on_its_rows(metric: MetricName, data: dict[str, Any]) -> None:
    y, pred, score, group = data["y"], data["pred"], data["score"], data["group"]
    encoded = encode("binary", y, pred, "1", y_score=score)
    values = grouped(metric, encoded, group, data["groups"])
    for index in range(data["groups"]):
        mask = group == index
        if not mask.any():
            assert values.reasons[index] == "no rows"
            continue
        expected = reference_or_none(lambda m=mask: BINARY[metric](y[m], pred[m], score[m]))
        if metric == MetricName.ROC_AUC and not both_classes(y[mask]):
            expected = None
        if expected is None:
            assert values.reasons[index] is not None
        else:
            assert values.reasons[index] is None
            assert values.values[index] == pytest.approx(expected, abs=TOLERANCE, rel=0)


@st.composite
def multiclass_data(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(st.integers(2, 200))
    classes = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = np.array([f"c{i}" for i in range(classes)])
    weights = rng.dirichlet(np.ones(classes) * draw(st.sampled_from([0.3, 1.0, 5.0])))
    y = rng.choice(labels, rows, p=weights)
    noise = rng.random((rows, classes))
    proba = noise + (labels[None, :] == y[:, None]) * draw(st.sampled_from([0.0, 0.5, 2.0]))
    proba = proba / proba.sum(axis=1, keepdims=True)
    pred = labels[proba.argmax(axis=1)]
    return {"y": y, "pred": pred, "proba": proba, "labels": labels}


@pytest.mark.parametrize("metric", ["precision", "recall", "f1"])
@pytest.mark.parametrize("average", list(Average))
@PROPERTY
@given(data=multiclass_data())
def test_multiclass_prf_equals_sklearn(metric: str, average: Average, data: dict[str, Any]) -> None:
    reference = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    expected = reference[metric](data["y"], data["pred"], average=str(average), zero_division=0)
    encoded = encode("multiclass", data["y"], data["pred"])
    assert compute(MetricName(metric), encoded, average) == pytest.approx(
        expected, abs=TOLERANCE, rel=0
    )


@PROPERTY
@given(data=multiclass_data())
def test_multiclass_accuracy_balanced_accuracy_log_loss(data: dict[str, Any]) -> None:
    y, pred, proba, labels = data["y"], data["pred"], data["proba"], data["labels"]
    encoded = encode(
        "multiclass", y, pred, class_scores={label: proba[:, i] for i, label in enumerate(labels)}
    )
    assert compute(MetricName.ACCURACY, encoded) == pytest.approx(
        skm.accuracy_score(y, pred), abs=TOLERANCE, rel=0
    )
    balanced = reference_or_none(lambda: skm.balanced_accuracy_score(y, pred))
    if balanced is not None:
        assert compute(MetricName.BALANCED_ACCURACY, encoded) == pytest.approx(
            balanced, abs=TOLERANCE, rel=0
        )
    assert compute(MetricName.LOG_LOSS, encoded) == pytest.approx(
        skm.log_loss(y, proba, labels=labels), abs=TOLERANCE, rel=0
    )


@PROPERTY
@given(
    rows=st.integers(2, 300),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
)
def test_regression_metrics_equal_sklearn(rows: int, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1, rows) * scale
    q = y + rng.normal(0, 0.5, rows) * scale
    encoded = encode("regression", y, q)
    references = {
        MetricName.MAE: skm.mean_absolute_error(y, q),
        MetricName.RMSE: np.sqrt(skm.mean_squared_error(y, q)),
        MetricName.R2: skm.r2_score(y, q),
        MetricName.MAPE: skm.mean_absolute_percentage_error(y, q),
    }
    for metric, expected in references.items():
        assert compute(metric, encoded) == pytest.approx(expected, rel=1e-9, abs=TOLERANCE)


FAIRNESS = {
    "demographic_parity_difference": lambda y, p, g: fm.demographic_parity_difference(
        y, p, sensitive_features=g
    ),
    "demographic_parity_ratio": lambda y, p, g: fm.demographic_parity_ratio(
        y, p, sensitive_features=g
    ),
    "disparate_impact": lambda y, p, g: fm.demographic_parity_ratio(y, p, sensitive_features=g),
    "equalized_odds_difference": lambda y, p, g: fm.equalized_odds_difference(
        y, p, sensitive_features=g
    ),
    "equal_opportunity_difference": lambda y, p, g: fm.equal_opportunity_difference(
        y, p, sensitive_features=g
    ),
}


@pytest.mark.parametrize("metric", sorted(FAIRNESS))
@PROPERTY
@given(data=binary_data(min_rows=20, max_rows=300))
def test_fairness_equals_fairlearn(metric: str, data: dict[str, Any]) -> None:
    y, pred, group = data["y"], data["pred"], data["group"]
    assume(len(np.unique(group)) >= 2)
    names = np.array(["a", "b", "c", "d", "e", "f"])[group]
    expected = reference_or_none(lambda: FAIRNESS[metric](y, pred, names))
    # fairlearn scores the TPR of a group without positive labels (or the FPR
    # of a group without negatives) as 0; the gate calls it undefined and
    # refuses to judge, which is the fail-closed reading.
    groups = np.unique(names)
    no_positives = any(not np.any(y[names == g] == 1) for g in groups)
    no_negatives = any(not np.any(y[names == g] == 0) for g in groups)
    if (metric == "equal_opportunity_difference" and no_positives) or (
        metric == "equalized_odds_difference" and (no_positives or no_negatives)
    ):
        expected = None
    predictions = Table("predictions", pa.table({"y_true": y, "y_pred": pred, "group": names}))
    spec: dict[str, Any] = {"metric": metric, "sensitiveColumn": "group", "minGroupSize": 1}
    if metric.endswith("difference"):
        spec["max"] = 1.0
    check = Check.model_validate({"name": "f", "fairness": spec})
    result = evaluate_gate([check], GateInputs(task=Task.BINARY, predictions=predictions)).checks[0]
    if expected is None:
        assert result.outcome == "Inconclusive"
    else:
        assert result.value is not None, result.message
        assert result.value == pytest.approx(expected, abs=TOLERANCE, rel=0)


@PROPERTY
@given(
    a=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
    b=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
    rounding=st.sampled_from([None, 0]),
)
def test_ks_statistic_equals_scipy(a: list[float], b: list[float], rounding: int | None) -> None:
    left, right = np.array(a), np.array(b)
    if rounding is not None:
        left, right = np.round(left, rounding), np.round(right, rounding)
    # Only the statistic is compared; scipy's p-value code warns on degenerate
    # samples (all equal, one row), which says nothing about the statistic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = stats.ks_2samp(left, right, method="asymp").statistic
    assert ks_statistic(left, right) == pytest.approx(expected, abs=TOLERANCE, rel=0)


@PROPERTY
@given(data=binary_data(min_rows=2, max_rows=50), where=st.integers(0, 49))
def test_nan_scores_are_rejected_with_a_message(data: dict[str, Any], where: int) -> None:
    score = data["score"].copy()
    score[where % len(score)] = np.nan
    encoded = encode("binary", data["y"], data["pred"], "1", y_score=score)
    for metric in (MetricName.ROC_AUC, MetricName.PR_AUC, MetricName.LOG_LOSS, MetricName.BRIER):
        with pytest.raises(Undefined, match="NaN"):
            compute(metric, encoded)
