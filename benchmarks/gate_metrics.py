"""Gate metrics speed and memory: the engine vs scikit-learn vs fairlearn.

    python benchmarks/gate_metrics.py [--rows 1000000] [--big-rows 10000000] [--repeat 3]

One workload, three implementations, in one run: accuracy, precision, recall,
f1, roc_auc and log_loss overall and per slice (10 slices), plus the
demographic parity difference over a sensitive column.

- engine: modelgate's gate engine (``evaluate_gate`` on the same checks a
  QualityGate would declare);
- sklearn loop: scikit-learn metric functions over boolean slice masks;
- MetricFrame: fairlearn's ``MetricFrame`` with the same metrics by slice, and
  ``demographic_parity_difference``.

It prints each time (best of --repeat), the ratios, the engine's peak extra
memory as a multiple of the input arrays (numpy allocations via tracemalloc
plus Arrow's memory pool), a 10M-row engine-only run, and reading the
predictions from CSV and Parquet with pyarrow. Targets: engine >= 3x faster
than the sklearn loop, >= 50x faster than MetricFrame, peak memory < 3x the
input arrays.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fairlearn.metrics import MetricFrame, demographic_parity_difference
from sklearn import metrics as skm

from modelgate.api.qualitygate import Check, Task
from modelgate.gates.engine import GateInputs, evaluate_gate
from modelgate.gates.table import Table, read_table

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
SLICES = 10


def make_data(rows: int, seed: int = 7) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.3).astype(np.int64)
    score = np.clip(0.35 * y + rng.random(rows) * 0.75, 0.0, 1.0)
    return {
        "y_true": y,
        "y_pred": (score >= 0.5).astype(np.int64),
        "y_score": score,
        "segment": rng.integers(0, SLICES, rows).astype(np.int64),
        "gender": rng.integers(0, 2, rows).astype(np.int64),
    }


def gate_checks() -> list[Check]:
    checks = []
    for metric in METRICS:
        bound = {"max": 10.0} if metric == "log_loss" else {"min": 0.0}
        name = metric.replace("_", "-")
        checks.append(Check.model_validate({"name": name, "metric": {"name": metric, **bound}}))
        checks.append(
            Check.model_validate(
                {
                    "name": f"{name}-by-segment",
                    "metric": {"name": metric, **bound},
                    "slice": {"columns": ["segment"], "minSize": 1},
                }
            )
        )
    checks.append(
        Check.model_validate(
            {
                "name": "parity",
                "fairness": {
                    "metric": "demographic_parity_difference",
                    "sensitiveColumn": "gender",
                    "max": 1.0,
                },
            }
        )
    )
    return checks


def run_engine(data: dict[str, np.ndarray[Any, Any]]) -> dict[str, float]:
    table = Table("predictions", pa.table(data))
    result = evaluate_gate(gate_checks(), GateInputs(task=Task.BINARY, predictions=table))
    return {c.name: float(c.value) if c.value is not None else float("nan") for c in result.checks}


def run_sklearn_loop(data: dict[str, np.ndarray[Any, Any]]) -> dict[str, float]:
    functions: dict[str, Callable[[Any, Any, Any], float]] = {
        "accuracy": lambda y, p, s: skm.accuracy_score(y, p),
        "precision": lambda y, p, s: skm.precision_score(y, p),
        "recall": lambda y, p, s: skm.recall_score(y, p),
        "f1": lambda y, p, s: skm.f1_score(y, p),
        "roc_auc": lambda y, p, s: skm.roc_auc_score(y, s),
        "log_loss": lambda y, p, s: skm.log_loss(y, s),
    }
    y, p, s, segment = data["y_true"], data["y_pred"], data["y_score"], data["segment"]
    out: dict[str, float] = {}
    masks = [segment == value for value in range(SLICES)]
    for metric, function in functions.items():
        name = metric.replace("_", "-")
        out[name] = float(function(y, p, s))
        values = [function(y[m], p[m], s[m]) for m in masks]
        out[f"{name}-by-segment"] = float(max(values) if metric == "log_loss" else min(values))
    rates = [float(np.mean(p[data["gender"] == g])) for g in (0, 1)]
    out["parity"] = max(rates) - min(rates)
    return out


def run_metricframe(data: dict[str, np.ndarray[Any, Any]]) -> dict[str, float]:
    y, p, s, segment = data["y_true"], data["y_pred"], data["y_score"], data["segment"]
    label_metrics = {
        "accuracy": skm.accuracy_score,
        "precision": skm.precision_score,
        "recall": skm.recall_score,
        "f1": skm.f1_score,
    }
    score_metrics = {"roc_auc": skm.roc_auc_score, "log_loss": skm.log_loss}
    labels = MetricFrame(metrics=label_metrics, y_true=y, y_pred=p, sensitive_features=segment)
    scores = MetricFrame(metrics=score_metrics, y_true=y, y_pred=s, sensitive_features=segment)
    out: dict[str, float] = {}
    for frame, names in ((labels, label_metrics), (scores, score_metrics)):
        for metric in names:
            name = metric.replace("_", "-")
            out[name] = float(frame.overall[metric])
            by_group = frame.by_group[metric]
            out[f"{name}-by-segment"] = float(
                by_group.max() if metric == "log_loss" else by_group.min()
            )
    out["parity"] = float(demographic_parity_difference(y, p, sensitive_features=data["gender"]))
    return out


def best_time(function: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def engine_peak_memory(data: dict[str, np.ndarray[Any, Any]]) -> int:
    """Peak bytes the engine allocates beyond its inputs (numpy + Arrow)."""
    pool = pa.default_memory_pool()
    gc.collect()
    arrow_before = pool.bytes_allocated()
    tracemalloc.start()
    run_engine(data)
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow_peak = max(pool.max_memory() - arrow_before, 0)
    return int(numpy_peak + arrow_peak)


def agree(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-metricframe", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    data = make_data(args.rows)
    input_bytes = sum(a.nbytes for a in data.values())
    print(f"workload: {args.rows:,} rows, {SLICES} slices, {len(METRICS)} metrics overall and")
    print(f"per slice + demographic parity difference; input arrays {input_bytes / 1e6:.0f} MB")
    engine_s, engine_values = best_time(lambda: run_engine(data), args.repeat)
    sklearn_s, sklearn_values = best_time(lambda: run_sklearn_loop(data), args.repeat)
    print(f"  engine              {engine_s:8.3f} s")
    print(f"  scikit-learn loop   {sklearn_s:8.3f} s   {sklearn_s / engine_s:6.1f}x the engine")
    print(f"  max |engine - sklearn| over all values: {agree(engine_values, sklearn_values):.2e}")
    if not args.skip_metricframe:
        frame_s, frame_values = best_time(lambda: run_metricframe(data), 1)
        print(f"  fairlearn MetricFrame {frame_s:6.3f} s   {frame_s / engine_s:6.1f}x the engine")
        print(f"  max |engine - MetricFrame|: {agree(engine_values, frame_values):.2e}")
    peak = engine_peak_memory(data)
    print(
        f"  engine peak extra memory {peak / 1e6:.0f} MB "
        f"= {peak / input_bytes:.2f}x the input arrays"
    )

    if args.big_rows:
        big = make_data(args.big_rows)
        big_s, _ = best_time(lambda: run_engine(big), 1)
        print(f"engine on {args.big_rows:,} rows: {big_s:.3f} s")
        del big

    with tempfile.TemporaryDirectory() as folder:
        table = pa.table(data)
        csv_path, parquet_path = Path(folder) / "p.csv", Path(folder) / "p.parquet"
        pacsv.write_csv(table, csv_path)
        pq.write_table(table, parquet_path)
        csv_s, _ = best_time(lambda: read_table(csv_path, "p"), args.repeat)
        parquet_s, _ = best_time(lambda: read_table(parquet_path, "p"), args.repeat)
        print(
            f"reading {args.rows:,} predictions: CSV {csv_s:.3f} s "
            f"({csv_path.stat().st_size / 1e6:.0f} MB), Parquet {parquet_s:.3f} s "
            f"({parquet_path.stat().st_size / 1e6:.0f} MB)"
        )


if __name__ == "__main__":
    main()
