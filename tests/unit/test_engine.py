"""Each check kind of the gate engine, including how it fails closed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from modelgate.api.qualitygate import Check, Task
from modelgate.gates.engine import GateInputs, evaluate_gate
from modelgate.gates.outcome import CheckEvaluation, gate_outcome
from modelgate.gates.table import Table, read_table


def table(name: str = "predictions", **columns: Any) -> Table:
    return Table(name=name, data=pa.table(columns))


def check(**spec: Any) -> Check:
    return Check.model_validate({"name": "c", **spec})


def run(spec: dict[str, Any], predictions: Table, **inputs: Any) -> CheckEvaluation:
    gate_inputs = GateInputs(
        task=inputs.pop("task", Task.BINARY), predictions=predictions, **inputs
    )
    return evaluate_gate([check(**spec)], gate_inputs).checks[0]


def binary_table(rows: int = 400, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.4).astype(int)
    score = np.clip(0.4 * y + rng.random(rows) * 0.7, 0, 1)
    return table(
        y_true=y,
        y_pred=(score > 0.5).astype(int),
        y_score=score,
        region=rng.choice(["north", "south"], rows),
        gender=rng.choice(["F", "M"], rows),
        id=np.arange(rows),
    )


def test_metric_threshold_pass_and_fail() -> None:
    predictions = binary_table()
    passed = run({"metric": {"name": "roc_auc", "min": 0.6}}, predictions)
    assert passed.outcome == "Passed"
    assert passed.sample_size == 400
    assert passed.value is not None
    failed = run({"metric": {"name": "roc_auc", "min": passed.value + 0.01}}, predictions)
    assert failed.outcome == "Failed"
    assert "does not meet >=" in failed.message


def test_missing_score_column_is_inconclusive() -> None:
    predictions = table(y_true=[0, 1, 1, 0], y_pred=[0, 1, 0, 0])
    result = run({"metric": {"name": "roc_auc", "min": 0.5}}, predictions)
    assert result.outcome == "Inconclusive"
    assert "no y_score column" in result.message


def test_missing_prediction_column_is_inconclusive() -> None:
    result = run({"metric": {"name": "accuracy", "min": 0.5}}, table(label=[1, 0]))
    assert result.outcome == "Inconclusive"
    assert "has no column 'y_true'" in result.message


def test_slices_report_every_slice_and_the_worst() -> None:
    predictions = table(
        y_true=[1] * 60 + [1] * 60 + [1] * 5,
        y_pred=[1] * 60 + [1] * 30 + [0] * 30 + [1] * 5,
        region=["north"] * 60 + ["south"] * 60 + ["west"] * 5,
    )
    spec = {
        "metric": {"name": "recall", "min": 0.6},
        "slice": {"columns": ["region"], "minSize": 50},
    }
    result = run(spec, predictions)
    by_slice = {s.slice: s for s in result.slices}
    assert by_slice["region=north"].outcome == "Passed"
    assert by_slice["region=south"].outcome == "Failed"
    assert by_slice["region=south"].value == pytest.approx(0.5)
    assert by_slice["region=west"].outcome == "Inconclusive"
    assert result.outcome == "Failed"
    assert result.slice == "region=south"
    assert result.value == pytest.approx(0.5)


def test_small_slices_can_be_skipped() -> None:
    predictions = table(
        y_true=[1] * 60 + [0] * 5, y_pred=[1] * 60 + [0] * 5, region=["a"] * 60 + ["b"] * 5
    )
    spec = {
        "metric": {"name": "accuracy", "min": 0.6},
        "slice": {"columns": ["region"], "minSize": 50, "skipSmall": True},
    }
    result = run(spec, predictions)
    assert [s.slice for s in result.slices] == ["region=a"]
    assert result.outcome == "Passed"


def test_multi_column_slices() -> None:
    predictions = binary_table()
    spec = {
        "metric": {"name": "accuracy", "min": 0.0},
        "slice": {"columns": ["region", "gender"], "minSize": 10},
    }
    result = run(spec, predictions)
    assert len(result.slices) == 4
    assert "region=north,gender=F" in {s.slice for s in result.slices}


def test_fairness_values_by_hand() -> None:
    # Group A selects 40/100, group B 20/100.
    predictions = table(
        y_true=[1] * 50 + [0] * 50 + [1] * 50 + [0] * 50,
        y_pred=[1] * 30 + [0] * 20 + [1] * 10 + [0] * 40 + [1] * 15 + [0] * 35 + [1] * 5 + [0] * 45,
        group=["A"] * 100 + ["B"] * 100,
    )
    dpd = run(
        {
            "fairness": {
                "metric": "demographic_parity_difference",
                "sensitiveColumn": "group",
                "max": 0.1,
            }
        },
        predictions,
    )
    assert dpd.value == pytest.approx(0.2)
    assert dpd.outcome == "Failed"
    di = run({"fairness": {"metric": "disparate_impact", "sensitiveColumn": "group"}}, predictions)
    assert di.value == pytest.approx(0.5)
    assert di.min == 0.8
    assert di.outcome == "Failed"
    eo = run(
        {
            "fairness": {
                "metric": "equal_opportunity_difference",
                "sensitiveColumn": "group",
                "max": 0.5,
            }
        },
        predictions,
    )
    assert eo.value == pytest.approx(30 / 50 - 15 / 50)
    eod = run(
        {
            "fairness": {
                "metric": "equalized_odds_difference",
                "sensitiveColumn": "group",
                "max": 0.5,
            }
        },
        predictions,
    )
    assert eod.value == pytest.approx(max(30 / 50 - 15 / 50, 10 / 50 - 5 / 50))
    assert eod.outcome == "Passed"


def test_fairness_with_a_tiny_group_is_inconclusive() -> None:
    predictions = table(
        y_true=[1, 0] * 40 + [1], y_pred=[1, 0] * 40 + [1], group=["A"] * 80 + ["B"]
    )
    result = run(
        {
            "fairness": {
                "metric": "demographic_parity_difference",
                "sensitiveColumn": "group",
                "max": 0.1,
            }
        },
        predictions,
    )
    assert result.outcome == "Inconclusive"
    assert "too small: ['B']" in result.message


def test_data_check_catches_negative_age_and_unknown_category() -> None:
    training = table("training", age=[25, 40, -3, 70], region=["north", "south", "mars", None])
    evaluation = table(
        "evaluation", age=[30, None, 50, 130], region=["north", "north", "east", "west"]
    )
    inputs = {"training": training, "evaluation": evaluation}
    age = run(
        {"data": {"column": "age", "min": 0, "max": 120, "maxMissingRate": 0.0}},
        binary_table(),
        **inputs,
    )
    assert age.outcome == "Failed"
    assert "training: age: 1 values below 0 (lowest -3)" in age.message
    assert "evaluation: age missing rate 0.2500 > maxMissingRate 0" in age.message
    assert "evaluation: age: 1 values above 120 (highest 130)" in age.message
    region = run(
        {"data": {"column": "region", "allowed": ["north", "south", "east", "west"]}},
        binary_table(),
        **inputs,
    )
    assert region.outcome == "Failed"
    assert "1 values not allowed: 'mars'" in region.message


def test_data_check_types_rows_and_missing_columns() -> None:
    training = table("training", age=["young", "old"], income=[1.5, 2.5])
    inputs = {"training": training, "evaluation": training}
    assert (
        run({"data": {"column": "age", "type": "integer"}}, binary_table(), **inputs).outcome
        == "Failed"
    )
    assert (
        run({"data": {"column": "income", "type": "number"}}, binary_table(), **inputs).outcome
        == "Passed"
    )
    rows = run({"data": {"minRows": 3}}, binary_table(), **inputs)
    assert rows.outcome == "Failed"
    assert "2 rows, fewer than minRows 3" in rows.message
    assert (
        "column 'nope' is missing"
        in run(
            {"data": {"column": "nope", "maxMissingRate": 0.1}}, binary_table(), **inputs
        ).message
    )


def test_data_check_without_the_data_is_inconclusive() -> None:
    result = run(
        {"data": {"column": "age", "min": 0}}, binary_table(), training=None, evaluation=None
    )
    assert result.outcome == "Inconclusive"


def test_drift_statistics() -> None:
    rng = np.random.default_rng(1)
    reference = table("training", x=rng.normal(0, 1, 5000), c=rng.choice(["a", "b"], 5000))
    same = table("evaluation", x=rng.normal(0, 1, 5000), c=rng.choice(["a", "b"], 5000))
    shifted = table("evaluation", x=rng.normal(1, 1, 5000), c=rng.choice(["a", "b", "z"], 5000))
    for method, limit in (("psi", 0.1), ("ks", 0.1), ("jensen_shannon", 0.05)):
        spec = {"drift": {"column": "x", "method": method, "max": limit}}
        assert run(spec, binary_table(), training=reference, evaluation=same).outcome == "Passed", (
            method
        )
        assert (
            run(spec, binary_table(), training=reference, evaluation=shifted).outcome == "Failed"
        ), method
    categorical = run(
        {"drift": {"column": "c", "method": "psi", "max": 0.2}},
        binary_table(),
        training=reference,
        evaluation=shifted,
    )
    assert categorical.outcome == "Failed"
    assert categorical.value is not None
    assert np.isfinite(categorical.value)


def test_ks_equals_scipy() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 700), rng.normal(0.2, 1.3, 400)
    result = run(
        {"drift": {"column": "x", "method": "ks", "max": 1}},
        binary_table(),
        training=table("t", x=a),
        evaluation=table("e", x=b),
    )
    assert result.value == pytest.approx(stats.ks_2samp(a, b).statistic)


def test_ks_on_categories_is_inconclusive() -> None:
    t = table("t", c=["a", "b"])
    result = run(
        {"drift": {"column": "c", "method": "ks", "max": 0.1}},
        binary_table(),
        training=t,
        evaluation=t,
    )
    assert result.outcome == "Inconclusive"
    assert "numeric" in result.message


BASELINE = {
    "metric": {"name": "accuracy"},
    "baseline": {"environment": "production", "maxDrop": 0.02},
}


def test_baseline_missing_follows_on_missing_policy() -> None:
    predictions = binary_table()
    assert run(BASELINE, predictions, baselines={"production": None}).outcome == "Inconclusive"
    for policy in ("Pass", "Fail"):
        spec = {**BASELINE, "baseline": {**BASELINE["baseline"], "onMissing": policy}}
        assert run(spec, predictions, baselines={}).outcome == (
            "Passed" if policy == "Pass" else "Failed"
        )


def test_baseline_regression_fails_and_improvement_passes() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    good = np.where(rng.random(500) < 0.9, y, 1 - y)
    bad = np.where(rng.random(500) < 0.7, y, 1 - y)
    candidate = table(y_true=y, y_pred=bad)
    live = table(y_true=y, y_pred=good)
    result = run(BASELINE, candidate, baselines={"production": live})
    assert result.outcome == "Failed"
    assert result.baseline is not None
    assert result.baseline > (result.value or 0)
    assert run(BASELINE, live, baselines={"production": candidate}).outcome == "Passed"
    relative = {
        **BASELINE,
        "baseline": {"environment": "production", "maxDrop": 0.5, "relative": True},
    }
    assert run(relative, candidate, baselines={"production": live}).outcome == "Passed"


def test_baseline_on_different_rows_is_inconclusive() -> None:
    candidate = binary_table(seed=1)
    other = binary_table(seed=2)
    assert run(BASELINE, candidate, baselines={"production": other}).outcome == "Inconclusive"
    shorter = table(y_true=[1, 0], y_pred=[1, 0])
    result = run(BASELINE, candidate, baselines={"production": shorter})
    assert "not comparable" in result.message


def test_baseline_matched_by_id_column() -> None:
    candidate = binary_table(seed=1)
    shuffled = Table("baseline", candidate.data.take(np.random.default_rng(0).permutation(400)))
    assert (
        run(BASELINE, candidate, baselines={"production": shuffled}, id_column="id").outcome
        == "Passed"
    )
    partial = Table("baseline", candidate.data.slice(0, 300))
    result = run(BASELINE, candidate, baselines={"production": partial}, id_column="id")
    assert result.outcome == "Inconclusive"
    assert "rows differ" in result.message


def test_unreadable_baseline_is_inconclusive() -> None:
    result = run(
        BASELINE, binary_table(), baselines={}, baseline_errors={"production": "sha mismatch"}
    )
    assert result.outcome == "Inconclusive"
    assert "sha mismatch" in result.message


def test_gate_outcome_rules() -> None:
    def c(outcome: str, severity: str = "blocking") -> CheckEvaluation:
        return CheckEvaluation(name="x", kind="metric", severity=severity, outcome=outcome)

    assert gate_outcome([c("Passed"), c("Failed", "warning")]) == "Passed"
    assert gate_outcome([c("Passed"), c("Inconclusive", "warning")]) == "Passed"
    assert gate_outcome([c("Passed"), c("Inconclusive")]) == "Inconclusive"
    assert gate_outcome([c("Inconclusive"), c("Failed")]) == "Failed"


def test_read_table_csv_parquet_and_garbage(tmp_path: Any) -> None:
    data = pa.table({"y_true": [1, 0], "y_pred": [1.0, 0.0]})
    pq.write_table(data, tmp_path / "p.parquet")
    parquet = read_table((tmp_path / "p.parquet").read_bytes(), "p")
    assert parquet.labels("y_pred").tolist() == ["1", "0"]
    csv = read_table(b"y_true,y_pred\n1,1\n0,0\n", "c")
    assert csv.num_rows == 2
    with pytest.raises(ValueError, match="cannot read bad"):
        read_table(b"a,b\n1,2,3,4\n", "bad")


IMPORTANCE = {
    "importance": [
        {"feature": "income", "mean": 0.11, "std": 0.01},
        {"feature": "region", "mean": 0.05, "std": 0.01},
        {"feature": "age", "mean": 0.01, "std": 0.001},
    ]
}


def test_explainability_top_k_and_bounds() -> None:
    predictions = binary_table()
    top = run(
        {"explainability": {"column": "region", "notInTopK": 2}}, predictions, metadata=IMPORTANCE
    )
    assert top.outcome == "Failed"
    assert "region is #2, inside the top 2" in top.message
    assert (
        run(
            {"explainability": {"column": "age", "notInTopK": 2}}, predictions, metadata=IMPORTANCE
        ).outcome
        == "Passed"
    )
    bounded = run(
        {"explainability": {"column": "income", "max": 0.1}}, predictions, metadata=IMPORTANCE
    )
    assert bounded.outcome == "Failed"
    assert bounded.value == pytest.approx(0.11)


def test_explainability_without_a_record_is_inconclusive() -> None:
    spec = {"explainability": {"column": "age", "notInTopK": 1}}
    assert run(spec, binary_table(), metadata=None).outcome == "Inconclusive"
    missing = run(
        {"explainability": {"column": "zip", "max": 1}}, binary_table(), metadata=IMPORTANCE
    )
    assert missing.outcome == "Inconclusive"
    assert "no importance recorded for 'zip'" in missing.message


def test_behavior_judges_the_recorded_outcome() -> None:
    spec = {"behavior": {"column": "age", "add": 5, "expect": "invariant", "maxFailureRate": 0.01}}
    ok = {"behavior": [{"name": "c", "rows": 1000, "failures": 5, "maxAbsDelta": 0.2}]}
    bad = {"behavior": [{"name": "c", "rows": 1000, "failures": 50, "maxAbsDelta": 0.4}]}
    assert run(spec, binary_table(), metadata=ok).outcome == "Passed"
    failed = run(spec, binary_table(), metadata=bad)
    assert failed.outcome == "Failed"
    assert failed.value == pytest.approx(0.05)
    assert "50 of 1000 rows break 'invariant'" in failed.message


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "recorded no result for behaviour check 'c'"),
        (
            {"behavior": [{"name": "c", "error": "column 'age' is not a model feature"}]},
            "could not run",
        ),
        ({"behavior": [{"name": "c", "rows": 0, "failures": 0}]}, "0 rows"),
    ],
)
def test_behavior_without_a_usable_record_is_inconclusive(metadata: Any, reason: str) -> None:
    spec = {"behavior": {"column": "age", "set": "30", "expect": "invariant"}}
    result = run(spec, binary_table(), metadata=metadata)
    assert result.outcome == "Inconclusive"
    assert reason in result.message


def test_required_columns_types_and_duplicates() -> None:
    training = table("training", id=[1, 2, 2, 3], age=["a", "b", "b", "c"])
    spec = {
        "data": {
            "datasets": ["training"],
            "requiredColumns": [
                {"name": "id", "type": "integer"},
                {"name": "age", "type": "integer"},
                {"name": "zip"},
            ],
            "maxDuplicateRate": 0.0,
        }
    }
    result = run(spec, binary_table(), training=training)
    assert result.outcome == "Failed"
    assert "column 'age' is string, expected integer" in result.message
    assert "required column 'zip' is missing" in result.message
    assert "duplicate rows 0.2500 > maxDuplicateRate 0" in result.message


def test_multiclass_metric_through_the_engine() -> None:
    predictions = table(
        y_true=["a", "b", "c", "a"] * 25,
        y_pred=["a", "b", "b", "a"] * 25,
        y_score_a=[0.8, 0.1, 0.1, 0.7] * 25,
        y_score_b=[0.1, 0.8, 0.6, 0.2] * 25,
        y_score_c=[0.1, 0.1, 0.3, 0.1] * 25,
    )
    accuracy = run({"metric": {"name": "accuracy", "min": 0.7}}, predictions, task=Task.MULTICLASS)
    assert accuracy.value == pytest.approx(0.75)
    f1 = run(
        {"metric": {"name": "f1", "min": 0.1, "average": "weighted"}},
        predictions,
        task=Task.MULTICLASS,
    )
    assert f1.outcome == "Passed"
    loss = run({"metric": {"name": "log_loss", "max": 1.0}}, predictions, task=Task.MULTICLASS)
    assert loss.value == pytest.approx(-(2 * np.log(0.8) + np.log(0.3) + np.log(0.7)) / 4)


def test_missing_labels_are_inconclusive_not_dropped() -> None:
    predictions = table(y_true=pa.array([1, None, 0, 1]), y_pred=[1, 0, 0, 1])
    result = run({"metric": {"name": "accuracy", "min": 0.5}}, predictions)
    assert result.outcome == "Inconclusive"
    assert "y_true has 1 missing values" in result.message
