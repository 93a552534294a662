"""The gate evaluator at scale: streaming engine vs the in-memory engine vs a
scikit-learn loop, rows/s and peak RSS, side by side.

    python benchmarks/gate_scale.py [--sizes 1e6,1e7,5e7] [--data-dir DIR] [--keep]

The workload (one QualityGate): accuracy, precision, recall, f1, roc_auc and
log_loss overall and per slice (10 slices), the demographic parity difference
over a sensitive column, and PSI drift (training -> evaluation) on 20 feature
columns. Inputs are Parquet: predictions (y_true, y_pred, y_score, segment,
gender) and training and evaluation data (20 float32 features), each with
``rows`` rows, written in 1M-row row groups.

Each run is its own process (peak RSS is the process's high-water mark,
``ru_maxrss``, including the Python interpreter and its libraries):

- streaming: ``evaluate_stream``, what ``python -m modelgate.evaluate`` runs;
- in-memory: ``evaluate_gate`` on whole tables (the engine before issue 16);
- sklearn: pandas + scikit-learn metric functions per slice, numpy quantile
  PSI per feature (run where it fits: up to 10M rows by default).

Targets: streaming peak RSS at the largest size within 1.3x of its peak at
1M rows; streaming throughput at 1M no worse than the in-memory engine's.
"""

# Each child process imports only its own libraries, so its peak RSS is its own.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
SLICES = 10
FEATURES = 20
CHUNK = 1_000_000
IN_MEMORY_LIMIT = 10_000_000


def write_inputs(rows: int, folder: Path, seed: int = 7) -> None:
    """Generate the three Parquet files chunk by chunk (bounded memory)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            y = (rng.random(n) < 0.3).astype(np.int64)
            score = np.clip(0.35 * y + rng.random(n) * 0.75, 0.0, 1.0)
            tables = {
                "predictions": pa.table(
                    {
                        "y_true": y,
                        "y_pred": (score >= 0.5).astype(np.int64),
                        "y_score": score,
                        "segment": rng.integers(0, SLICES, n).astype(np.int64),
                        "gender": rng.integers(0, 2, n).astype(np.int64),
                    }
                ),
                "training": pa.table(
                    {f"f{i:02d}": rng.normal(0, 1, n).astype(np.float32) for i in range(FEATURES)}
                ),
                "evaluation": pa.table(
                    {
                        f"f{i:02d}": rng.normal(0.02 * i, 1, n).astype(np.float32)
                        for i in range(FEATURES)
                    }
                ),
            }
            for name, table in tables.items():
                if name not in writers:
                    writers[name] = pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
                writers[name].write_table(table, row_group_size=CHUNK)
    finally:
        for writer in writers.values():
            writer.close()


def gate_checks() -> list[Any]:
    from modelgate.api.qualitygate import Check

    specs: list[dict[str, Any]] = []
    for metric in METRICS:
        name = metric.replace("_", "-")
        bound = {"max": 1.0} if metric == "log_loss" else {"min": 0.1}
        specs.append({"name": name, "metric": {"name": metric, **bound}})
        specs.append(
            {
                "name": f"{name}-by-segment",
                "metric": {"name": metric, **bound},
                "slice": {"columns": ["segment"], "minSize": 100},
            }
        )
    specs.append(
        {
            "name": "parity",
            "fairness": {
                "sensitiveColumn": "gender",
                "metric": "demographic_parity_difference",
                "max": 0.1,
            },
        }
    )
    for i in range(FEATURES):
        specs.append(
            {"name": f"psi-f{i:02d}", "drift": {"column": f"f{i:02d}", "method": "psi", "max": 0.2}}
        )
    return [Check.model_validate(s) for s in specs]


# -- the three implementations (each run in a child process) ---------------------


def run_streaming(folder: Path) -> list[Any]:
    from modelgate.api.qualitygate import Task
    from modelgate.gates.source import Source
    from modelgate.gates.streaming import StreamInputs, evaluate_stream

    inputs = StreamInputs(
        task=Task.BINARY,
        predictions=Source("predictions", [folder / "predictions.parquet"]),
        training=Source("training", [folder / "training.parquet"]),
        evaluation=Source("evaluation", [folder / "evaluation.parquet"]),
    )
    result, _ = evaluate_stream(gate_checks(), inputs)
    return [c.value for c in result.checks]


def run_in_memory(folder: Path) -> list[Any]:
    from modelgate.api.qualitygate import Task
    from modelgate.gates.engine import GateInputs, evaluate_gate
    from modelgate.gates.table import read_table

    inputs = GateInputs(
        task=Task.BINARY,
        predictions=read_table(folder / "predictions.parquet", "predictions"),
        training=read_table(folder / "training.parquet", "training"),
        evaluation=read_table(folder / "evaluation.parquet", "evaluation"),
    )
    result = evaluate_gate(gate_checks(), inputs)
    return [c.value for c in result.checks]


def run_sklearn(folder: Path) -> list[Any]:
    import pandas as pd
    from sklearn import metrics as skm

    frame = pd.read_parquet(folder / "predictions.parquet")
    functions = {
        "accuracy": lambda f: skm.accuracy_score(f.y_true, f.y_pred),
        "precision": lambda f: skm.precision_score(f.y_true, f.y_pred),
        "recall": lambda f: skm.recall_score(f.y_true, f.y_pred),
        "f1": lambda f: skm.f1_score(f.y_true, f.y_pred),
        "roc_auc": lambda f: skm.roc_auc_score(f.y_true, f.y_score),
        "log_loss": lambda f: skm.log_loss(f.y_true, f.y_score),
    }
    values: list[Any] = []
    for function in functions.values():
        values.append(function(frame))
        values.append(min(function(part) for _, part in frame.groupby("segment")))
    selection = frame.groupby("gender").y_pred.mean()
    values.append(float(selection.max() - selection.min()))
    training = pd.read_parquet(folder / "training.parquet")
    evaluation = pd.read_parquet(folder / "evaluation.parquet")
    for column in training.columns:
        ref, cur = training[column].to_numpy(np.float64), evaluation[column].to_numpy(np.float64)
        inner = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
        r = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1)
        c = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1)
        r, c = np.maximum(r / r.sum(), 1e-4), np.maximum(c / c.sum(), 1e-4)
        r, c = r / r.sum(), c / c.sum()
        values.append(float(np.sum((c - r) * np.log(c / r))))
    return values


RUNNERS = {"streaming": run_streaming, "in-memory": run_in_memory, "sklearn": run_sklearn}


def child(which: str, folder: Path) -> None:
    start = time.perf_counter()
    values = RUNNERS[which](folder)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "values": values}))


def measure(which: str, folder: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, "--data-dir", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,5e7")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--child", choices=list(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--in-memory-limit", type=float, default=IN_MEMORY_LIMIT)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data_dir)
        return
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="modelgate-gate-scale-"))
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print(f"{len(gate_checks())} checks; Parquet inputs under {root}")
    header = f"{'rows':>12} {'implementation':>14} {'seconds':>9} {'rows/s':>12} {'peak RSS':>10}"
    print(header)
    peaks: dict[int, float] = {}
    speeds: dict[tuple[int, str], float] = {}
    try:
        for rows in sizes:
            folder = root / f"rows-{rows}"
            if not (folder / "evaluation.parquet").exists():
                write_inputs(rows, folder)
            reference_values: list[Any] | None = None
            for which in RUNNERS:
                if which != "streaming" and rows > args.in_memory_limit:
                    print(f"{rows:>12,} {which:>14} {'(does not fit: not run)':>44}")
                    continue
                result = measure(which, folder)
                if "error" in result:
                    print(f"{rows:>12,} {which:>14} failed: {result['error']}")
                    continue
                seconds, peak = result["seconds"], result["peak_mb"]
                speeds[(rows, which)] = rows / seconds
                if which == "streaming":
                    peaks[rows] = peak
                    reference_values = result["values"]
                elif which == "in-memory" and reference_values is not None:
                    worst = max(
                        abs(a - b) / max(1.0, abs(a))
                        for a, b in zip(result["values"], reference_values, strict=True)
                        if a is not None and b is not None
                    )
                    print(f"{'':>12} {'':>14} (streaming equals it to {worst:.1e})")
                print(
                    f"{rows:>12,} {which:>14} {seconds:>9.2f} {rows / seconds:>12,.0f} "
                    f"{peak:>8.0f}MB"
                )
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    smallest, largest = min(peaks), max(peaks)
    print()
    print(
        f"streaming peak RSS at {largest:,} rows / at {smallest:,} rows: "
        f"{peaks[largest] / peaks[smallest]:.2f}x (target <= 1.3x)"
    )
    for rows in sorted(peaks):
        if (rows, "in-memory") in speeds:
            ratio = speeds[(rows, "streaming")] / speeds[(rows, "in-memory")]
            print(f"streaming / in-memory throughput at {rows:,} rows: {ratio:.2f}x (target >= 1)")
        if (rows, "sklearn") in speeds:
            ratio = speeds[(rows, "streaming")] / speeds[(rows, "sklearn")]
            print(f"streaming / sklearn loop throughput at {rows:,} rows: {ratio:.2f}x")


if __name__ == "__main__":
    main()
