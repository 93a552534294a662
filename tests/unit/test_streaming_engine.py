"""The streaming engine against the in-memory engine (the reference), against
scikit-learn and scipy beyond its exact limits, across shards, and on bad
input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import average_precision_score, roc_auc_score

from modelgate.api.qualitygate import Check, Task
from modelgate.gates.drift import bin_labels
from modelgate.gates.engine import GateInputs, evaluate_gate
from modelgate.gates.outcome import GateEvaluation
from modelgate.gates.report import table_charts
from modelgate.gates.sketch import (
    ValueSketch,
    average_precision,
    ks_statistic,
    quantiles,
    roc_auc,
)
from modelgate.gates.source import Shard, Source
from modelgate.gates.streaming import (
    StreamInputs,
    accumulate,
    evaluate_stream,
    finish,
    merge,
    partial_from_bytes,
    partial_to_bytes,
)
from modelgate.gates.table import read_table

ROWS = 6000


def checks_of(*specs: dict[str, Any]) -> list[Check]:
    return [Check.model_validate(s) for s in specs]


def metric_checks(names: list[str], slice_columns: list[str] | None = None) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for name in names:
        spec: dict[str, Any] = {
            "name": name.replace("_", "-"),
            "metric": {"name": name, "min": 0.1},
        }
        specs.append(spec)
        if slice_columns:
            specs.append(
                {
                    "name": "slice-" + name.replace("_", "-"),
                    "metric": {"name": name, "min": 0.5},
                    "slice": {"columns": slice_columns, "minSize": 20},
                }
            )
    return specs


DATA_CHECKS: list[dict[str, Any]] = [
    {
        "name": "fair",
        "fairness": {
            "sensitiveColumn": "region",
            "metric": "demographic_parity_difference",
            "max": 0.1,
        },
    },
    {"name": "psi", "drift": {"column": "income", "method": "psi", "max": 0.2}},
    {"name": "js", "drift": {"column": "segment", "method": "jensen_shannon", "max": 0.2}},
    {"name": "ks", "drift": {"column": "age", "method": "ks", "max": 0.2}},
    {
        "name": "ranges",
        "data": {
            "datasets": ["training", "evaluation"],
            "column": "age",
            "min": 20,
            "max": 70,
            "maxMissingRate": 0.01,
            "maxDuplicateRate": 0.0,
            "requiredColumns": [{"name": "income", "type": "number"}],
        },
    },
    {
        "name": "allowed",
        "data": {"datasets": ["evaluation"], "column": "segment", "allowed": ["a"]},
    },
]


def features(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, Any]:
    age = rng.integers(18, 80, n).astype(np.float64)
    age[rng.random(n) < 0.005] = np.nan
    return {
        "region": rng.choice(["north", "south", "east", "west"], n),
        "tier": rng.integers(1, 4, n),
        "age": age,
        "income": rng.lognormal(10 + shift, 1.0, n),
        "segment": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
    }


def binary_table(rng: np.random.Generator, n: int = ROWS) -> pa.Table:
    y = rng.integers(0, 2, n)
    score = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(3)  # ties, as real scores have
    return pa.table(
        {"y_true": y, "y_pred": (score > 0.5).astype(int), "y_score": score, **features(rng, n)}
    )


def multiclass_table(rng: np.random.Generator, n: int = ROWS) -> pa.Table:
    classes = np.array(["cat", "dog", "eel"])
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    probability = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    columns = {f"y_score_{c}": probability[:, i] for i, c in enumerate(classes)}
    return pa.table(
        {
            "y_true": classes[y],
            "y_pred": classes[probability.argmax(axis=1)],
            **columns,
            **features(rng, n),
        }
    )


def regression_table(rng: np.random.Generator, n: int = ROWS) -> pa.Table:
    y = rng.normal(100.0, 15.0, n)
    return pa.table({"y_true": y, "y_pred": y + rng.normal(0, 5.0, n), **features(rng, n)})


def write(table: pa.Table, path: Path, row_group: int = 1000) -> Path:
    pq.write_table(table, path, row_group_size=row_group)
    return path


def reference(
    checks: list[Check], task: Task, predictions: Path, training: Path, **extra: Any
) -> GateEvaluation:
    return evaluate_gate(
        checks,
        GateInputs(
            task=task,
            predictions=read_table(predictions, "predictions"),
            training=read_table(training, "training"),
            evaluation=read_table(predictions, "evaluation"),
            **extra,
        ),
    )


def streamed(
    checks: list[Check],
    task: Task,
    predictions: Path,
    training: Path,
    batch_rows: int,
    **extra: Any,
) -> StreamInputs:
    return StreamInputs(
        task=task,
        predictions=Source("predictions", [predictions], batch_rows),
        training=Source("training", [training], batch_rows),
        evaluation=Source("evaluation", [predictions], batch_rows),
        **extra,
    )


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if not (math.isfinite(a) and math.isfinite(b)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return abs(a - b) <= 1e-12 * max(1.0, abs(a))


def assert_same(expected: GateEvaluation, got: GateEvaluation) -> None:
    assert got.outcome == expected.outcome
    for want, have in zip(expected.checks, got.checks, strict=True):
        assert (have.name, have.outcome, have.message) == (want.name, want.outcome, want.message)
        assert close(want.value, have.value), (want.name, want.value, have.value)
        assert close(want.baseline, have.baseline), want.name
        assert have.sample_size == want.sample_size, want.name
        assert [s.slice for s in have.slices] == [s.slice for s in want.slices], want.name
        for a, b in zip(want.slices, have.slices, strict=True):
            assert (a.outcome, a.sample_size, a.message) == (b.outcome, b.sample_size, b.message)
            assert close(a.value, b.value), (want.name, a.slice, a.value, b.value)


CASES = {
    Task.BINARY: (
        binary_table,
        [
            "accuracy",
            "precision",
            "recall",
            "f1",
            "balanced_accuracy",
            "roc_auc",
            "pr_auc",
            "log_loss",
            "brier",
        ],
    ),
    Task.MULTICLASS: (
        multiclass_table,
        ["accuracy", "precision", "recall", "f1", "balanced_accuracy", "log_loss"],
    ),
    Task.REGRESSION: (regression_table, ["mae", "rmse", "mape", "r2"]),
}


@pytest.mark.parametrize("task", list(CASES))
@pytest.mark.parametrize("batch_rows", [1 << 17, 257])
def test_every_check_equals_the_in_memory_engine(
    task: Task, batch_rows: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    make, metrics = CASES[task]
    predictions = write(make(rng), tmp_path / "predictions.parquet")
    training = write(pa.table(features(rng, 4000, shift=0.1)), tmp_path / "training.parquet")
    data_checks = [c for c in DATA_CHECKS if task != Task.REGRESSION or "fairness" not in c]
    checks = checks_of(
        *metric_checks(metrics, ["region"]),
        *metric_checks(metrics[:1], ["region", "tier"]),
        *data_checks,
    )
    expected = reference(checks, task, predictions, training)
    got, _ = evaluate_stream(checks, streamed(checks, task, predictions, training, batch_rows))
    assert_same(expected, got)
    assert {c.outcome for c in got.checks} >= {"Passed", "Failed"}  # not all one outcome


def test_baselines_compare_as_in_memory_by_row_and_by_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    candidate = binary_table(rng).append_column("id", pa.array(np.arange(ROWS)))
    live = candidate.set_column(
        candidate.schema.get_field_index("y_score"),
        "y_score",
        pa.array(np.clip(np.asarray(candidate["y_score"]) + rng.normal(0, 0.2, ROWS), 0, 1)),
    )
    shuffled = live.take(pa.array(rng.permutation(ROWS)))
    other_labels = live.set_column(0, "y_true", pa.array(1 - np.asarray(live["y_true"])))
    duplicated = candidate.set_column(
        candidate.schema.get_field_index("id"), "id", pa.array(np.arange(ROWS) // 2)
    )
    files = {
        name: write(table, tmp_path / f"{name}.parquet")
        for name, table in {
            "candidate": candidate,
            "live": live,
            "shuffled": shuffled,
            "other": other_labels,
            "duplicated": duplicated,
            "short": live.slice(0, ROWS - 10),
        }.items()
    }
    training = write(pa.table(features(rng, 1000)), tmp_path / "training.parquet")
    check = {
        "metric": {"name": "roc_auc"},
        "baseline": {"environment": "production", "maxDrop": 0.01},
    }
    checks = checks_of({"name": "auc-vs-live", **check})
    outcomes = set()
    for id_column in (None, "id"):
        for baseline in ("live", "shuffled", "other", "short"):
            for predictions in ("candidate", "duplicated"):
                baseline_table = read_table(files[baseline], "production baseline")
                expected = reference(
                    checks,
                    Task.BINARY,
                    files[predictions],
                    training,
                    baselines={"production": baseline_table},
                    id_column=id_column,
                )
                got, _ = evaluate_stream(
                    checks,
                    streamed(
                        checks,
                        Task.BINARY,
                        files[predictions],
                        training,
                        999,
                        baselines={"production": Source("baseline", [files[baseline]], 999)},
                        id_column=id_column,
                    ),
                )
                assert_same(expected, got)
                outcomes.add(got.checks[0].message.split(" live in ")[0].split(": ")[-1])
    assert len(outcomes) > 3  # compared, and refused for several different reasons


@pytest.mark.parametrize("wire", [False, True])
def test_four_shards_merge_to_the_single_pass_result(tmp_path: Path, wire: bool) -> None:
    rng = np.random.default_rng(11)
    # Two files, many row groups: shards get row groups from both.
    first, second = binary_table(rng, 3000), binary_table(rng, 3000)
    paths = [write(first, tmp_path / "a.parquet", 400), write(second, tmp_path / "b.parquet", 700)]
    training = write(pa.table(features(rng, 2000)), tmp_path / "training.parquet", 300)
    checks = checks_of(
        *metric_checks(["accuracy", "roc_auc", "pr_auc", "log_loss"], ["region"]),
        *DATA_CHECKS,
        {
            "name": "vs-live",
            "metric": {"name": "roc_auc"},
            "baseline": {"environment": "production", "maxDrop": 0.5},
        },
    )
    inputs = StreamInputs(
        task=Task.BINARY,
        predictions=Source("predictions", paths, 500),
        training=Source("training", [training], 500),
        evaluation=Source("evaluation", paths, 500),
        baselines={"production": Source("baseline", paths, 500)},
    )
    single, _ = evaluate_stream(checks, inputs)
    parts = [accumulate(checks, inputs, Shard(i, 4)) for i in range(4)]
    if wire:  # as the Indexed Job's pods hand them to the merge step
        parts = [partial_from_bytes(checks, inputs, partial_to_bytes(p)) for p in parts]
    merged = parts[0]
    for part in parts[1:]:
        merge(merged, part)
    sharded, _ = finish(checks, inputs, merged)
    assert_same(single, sharded)
    assert sharded.checks[-1].outcome == "Passed"  # the baseline was compared
    # And the single pass over two files equals the in-memory engine on both.
    both = tmp_path / "both.parquet"
    write(pa.concat_tables([first, second]), both)
    baseline = read_table(both, "production baseline")
    assert_same(
        reference(checks, Task.BINARY, both, training, baselines={"production": baseline}),
        single,
    )


def test_an_empty_shard_adds_nothing_and_no_rows_never_passes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = write(binary_table(rng, 500), tmp_path / "p.parquet", 1000)  # one row group
    checks = checks_of(*metric_checks(["accuracy"], ["region"]))
    inputs = StreamInputs(task=Task.BINARY, predictions=Source("predictions", [path]))
    empty = accumulate(checks, inputs, Shard(3, 4))
    alone, _ = finish(checks, inputs, empty)
    assert alone.outcome == "Inconclusive"
    assert alone.checks[0].message == "no rows"
    assert "no slice" in alone.checks[1].message
    whole = accumulate(checks, inputs, Shard(0, 4))
    merge(whole, empty)
    assert_same(evaluate_stream(checks, inputs)[0], finish(checks, inputs, whole)[0])


# -- beyond the exact limits ----------------------------------------------------------


def sketch_of(
    values: np.ndarray, columns: np.ndarray | int, exact_rows: int, capacity: int, width: int = 2
) -> ValueSketch:
    sketch = ValueSketch(width, exact_rows=exact_rows, capacity=capacity)
    columns = np.broadcast_to(np.asarray(columns, np.int8), len(values))
    for start in range(0, len(values), 25_000):
        part = slice(start, start + 25_000)
        sketch.add(values[part], columns[part])
    return sketch


def test_sketched_rank_metrics_match_scikit_learn_within_their_bounds() -> None:
    rng = np.random.default_rng(1)
    n = 400_000
    truth = rng.random(n) < 0.3
    score = rng.normal(truth * 0.8, 1.0)
    sketch = sketch_of(score, (~truth).astype(np.int8), exact_rows=50_000, capacity=1 << 15)
    assert not sketch.exact  # really compacted
    assert len(sketch.entries()[0]) <= 1 << 15
    auc, auc_bound = roc_auc(sketch)
    exact_auc = roc_auc_score(truth, score)
    assert abs(auc - exact_auc) <= 1e-6
    assert abs(auc - exact_auc) <= auc_bound
    ap, ap_bound = average_precision(sketch)
    exact_ap = average_precision_score(truth, score)
    assert abs(ap - exact_ap) <= 1e-5
    assert abs(ap - exact_ap) <= ap_bound


def test_sketched_ks_and_quantiles_match_scipy_and_numpy_within_their_bounds() -> None:
    rng = np.random.default_rng(2)
    reference_values, current_values = rng.normal(0, 1, 300_000), rng.normal(0.05, 1.1, 200_000)
    reference_sketch = sketch_of(reference_values, 0, 40_000, 1 << 14, width=1)
    current_sketch = sketch_of(current_values, 0, 40_000, 1 << 14, width=1)
    assert not reference_sketch.exact
    assert not current_sketch.exact
    gap, bound = ks_statistic(reference_sketch, current_sketch)
    exact = ks_2samp(reference_values, current_values).statistic
    assert abs(gap - exact) <= bound
    assert abs(gap - exact) <= 1e-3
    q = np.linspace(0, 1, 11)[1:-1]
    edges, rank_error = quantiles(reference_sketch, q)
    ranks = np.searchsorted(np.sort(reference_values), edges) / len(reference_values)
    assert np.all(np.abs(ranks - q) <= rank_error + 1e-5)
    assert 0 < rank_error < 1e-3


@pytest.mark.parametrize("folded", [False, True])
def test_exact_sketches_give_numpy_quantiles_bit_for_bit(folded: bool) -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=10_001).round(2)  # ties
    sketch = ValueSketch(1)
    sketch.add(values[:5000])
    sketch.add(values[5000:])
    if folded:
        sketch.entries()  # as after a merge: sorted points, no raw rows
        assert sketch.raw() is None
    q = np.linspace(0, 1, 21)[1:-1]
    edges, error = quantiles(sketch, q)
    assert error == 0.0
    assert np.array_equal(edges, np.quantile(values, q))


# -- bad input ------------------------------------------------------------------------


def test_a_column_whose_type_changes_between_files_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    table = binary_table(rng, 300)
    first = write(table, tmp_path / "a.parquet")
    changed = table.set_column(
        table.schema.get_field_index("region"), "region", pa.array(np.arange(300))
    )
    second = write(changed, tmp_path / "b.parquet")
    checks = checks_of(*metric_checks(["accuracy"], ["region"]), DATA_CHECKS[-1])
    inputs = StreamInputs(
        task=Task.BINARY,
        predictions=Source("predictions", [first, second]),
        evaluation=Source("evaluation", [first]),
    )
    result, _ = evaluate_stream(checks, inputs)
    for check in result.checks[:2]:
        assert check.outcome == "Inconclusive"
        assert "column 'region' is string in the first rows but int64 in b.parquet" in check.message
    assert result.checks[2].outcome == "Failed"  # the data check read its own data


def test_a_csv_column_whose_type_changes_in_a_later_block_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    rows = [f"{i % 2},{i % 2},{i}" for i in range(800_000)] + ["1,1,not-a-number"]
    path.write_text("y_true,y_pred,x\n" + "\n".join(rows) + "\n")
    checks = checks_of(*metric_checks(["accuracy"]))
    result, _ = evaluate_stream(
        checks, StreamInputs(task=Task.BINARY, predictions=Source("predictions", [path]))
    )
    assert result.checks[0].outcome == "Inconclusive"
    assert "p.csv" in result.checks[0].message
    assert "not-a-number" in result.checks[0].message
    assert "written with one type" in result.checks[0].message


def test_a_file_that_is_not_a_table_is_inconclusive_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1 this is no parquet file")
    checks = checks_of(*metric_checks(["accuracy"]))
    result, _ = evaluate_stream(
        checks, StreamInputs(task=Task.BINARY, predictions=Source("predictions", [path]))
    )
    assert result.outcome == "Inconclusive"
    assert "cannot read predictions (p.parquet)" in result.checks[0].message


def test_a_corrupt_partial_is_refused_with_the_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    path = write(binary_table(rng, 300), tmp_path / "p.parquet")
    checks = checks_of(*metric_checks(["accuracy"]))
    inputs = StreamInputs(task=Task.BINARY, predictions=Source("predictions", [path]))
    good = partial_to_bytes(accumulate(checks, inputs))
    with pytest.raises(ValueError, match="not a partial"):
        partial_from_bytes(checks, inputs, good[: len(good) // 2])
    regression = StreamInputs(task=Task.REGRESSION, predictions=None)
    with pytest.raises(ValueError, match="another version or task"):
        partial_from_bytes(checks, regression, good)


def test_drift_bins_are_named_by_what_they_hold_alike_in_both_engines(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    predictions = write(binary_table(rng), tmp_path / "predictions.parquet")
    training = write(pa.table(features(rng, 4000, shift=0.1)), tmp_path / "training.parquet")
    checks = checks_of(*[c for c in DATA_CHECKS if "drift" in c])
    in_memory = table_charts(
        checks,
        GateInputs(
            task=Task.BINARY,
            predictions=read_table(predictions, "predictions"),
            training=read_table(training, "training"),
            evaluation=read_table(predictions, "evaluation"),
        ),
    )
    _, streamed_charts = evaluate_stream(
        checks, streamed(checks, Task.BINARY, predictions, training, 1 << 17)
    )
    for name in ("psi", "js", "ks"):
        assert in_memory.drift[name][2] == streamed_charts.drift[name][2], name
    income = in_memory.drift["psi"][2]
    assert len(income) == 10
    assert income[0].startswith("< ")
    assert income[-1].startswith(">= ")
    assert all(label.startswith("[") and label.endswith(")") for label in income[1:-1])
    assert in_memory.drift["js"][2] == ["a", "b", "c"]


def test_a_bin_label_reads_as_a_person_writes_the_number() -> None:
    edges = np.array([1.5, 2000.0, 31640.2])
    assert bin_labels(edges) == ["< 1.5", "[1.5, 2,000)", "[2,000, 31,640)", ">= 31,640"]
    assert bin_labels(np.array([])) == ["all values"]
