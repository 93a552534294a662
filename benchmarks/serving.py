"""Serving speed: the reference model server on loopback vs in-process predict.

    python benchmarks/serving.py [--single 1000] [--batches 50] [--repeat 3]

Trains the credit-risk sample's model (the release's RandomForest, 100
trees), starts ``python -m modelgate.server`` on loopback and measures, with
one keep-alive client sending requests one after another:

- single-row requests (``--single`` of them) and 1,000-row batches
  (``--batches`` of them): requests/second, rows/second, p50/p99 latency;
- the same rows through ``model.predict`` + ``predict_proba`` in-process on
  a ready DataFrame (the bare reference: no HTTP, no JSON, no validation);
- in-process with the server's validation and JSON in front
  (``LoadedModel`` on the parsed body), to split the overhead into
  validation and HTTP.

Figures are the best of ``--repeat`` runs; the overhead ratio is served
latency over the bare call.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.support.model_server import running_model_server, sha256, start_args  # noqa: E402

from modelgate.serving.model import LoadedModel  # noqa: E402
from modelgate.trainer import contract  # noqa: E402
from modelgate.trainer.train import train  # noqa: E402

SAMPLE = ROOT / "examples" / "credit-risk"
FEATURES = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"]


def sample_model(folder: Path) -> Path:
    train(
        {
            contract.TRAIN_DATA: str(SAMPLE / "data" / "train.csv"),
            contract.EVAL_DATA: str(SAMPLE / "data" / "eval.csv"),
            contract.TARGET: "default",
            contract.ID_COLUMN: "id",
            contract.PARAMS: json.dumps(
                {
                    "estimator": "sklearn.ensemble.RandomForestClassifier",
                    "n_estimators": 100,
                    "min_samples_leaf": 20,
                    "exclude": ["gender"],
                    "importance_repeats": 0,
                }
            ),
            contract.OUTPUT_DIR: str(folder),
            contract.MODEL_NAME: "credit-risk",
            contract.MODEL_VERSION: "bench",
        }
    )
    return folder


def latencies(call: Callable[[], Any], count: int) -> list[float]:
    found = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        found.append(time.perf_counter() - started)
    return found


def summary(samples: list[float], rows: int) -> dict[str, float]:
    ordered = sorted(samples)
    total = sum(samples)
    return {
        "requests_per_s": len(samples) / total,
        "rows_per_s": len(samples) * rows / total,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["p50_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=1000, help="single-row requests per run")
    parser.add_argument("--batches", type=int, default=50, help="1,000-row requests per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    folder = sample_model(Path(tempfile.mkdtemp(prefix="modelgate-serving-")))
    model_file, metadata_file = folder / contract.MODEL_FILE, folder / contract.METADATA_FILE
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    records = evaluation[FEATURES].to_dict("records")
    batch_rows = (records * (1000 // len(records) + 1))[:1000]
    single_body = json.dumps({"instances": records[:1]}).encode()
    batch_body = json.dumps({"instances": batch_rows}).encode()
    single_frame = pd.DataFrame(records[:1])
    batch_frame = pd.DataFrame(batch_rows)

    loaded = LoadedModel.load(
        str(model_file), sha256(model_file), str(metadata_file), sha256(metadata_file)
    )
    estimator = loaded.estimator

    def bare(frame: pd.DataFrame) -> Callable[[], Any]:
        return lambda: (estimator.predict(frame), estimator.predict_proba(frame))

    def validated(body: bytes) -> Callable[[], Any]:
        return lambda: json.dumps(loaded.predict(loaded.schema.columns(json.loads(body))))

    results: dict[str, dict[str, dict[str, float]]] = {}
    with running_model_server(
        start_args(model_file, metadata_file), folder / "server.log"
    ) as server:
        host, port = server.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)

        def served(body: bytes) -> Callable[[], Any]:
            def post() -> Any:
                connection.request(
                    "POST", "/v1/predict", body, {"Content-Type": "application/json"}
                )
                answer = connection.getresponse()
                payload = answer.read()
                if answer.status != 200:
                    raise RuntimeError(payload.decode())
                return payload

            return post

        for label, rows, count, body, frame in (
            ("single row", 1, args.single, single_body, single_frame),
            ("1,000-row batch", 1000, args.batches, batch_body, batch_frame),
        ):
            for kind, call in (
                ("server (HTTP)", served(body)),
                ("in-process, validated", validated(body)),
                ("in-process, bare predict", bare(frame)),
            ):
                latencies(call, max(3, count // 10))  # warm up
                runs = [summary(latencies(call, count), rows) for _ in range(args.repeat)]
                results.setdefault(label, {})[kind] = best(runs)
        connection.close()

    print(f"model: RandomForestClassifier(100 trees), {len(FEATURES)} features; loopback, 1 client")
    header = f"{'workload':<17}{'path':<27}{'req/s':>9}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    for label, kinds in results.items():
        for kind, figures in kinds.items():
            print(
                f"{label:<17}{kind:<27}{figures['requests_per_s']:>9.1f}"
                f"{figures['rows_per_s']:>11.0f}{figures['p50_ms']:>9.2f}{figures['p99_ms']:>9.2f}"
            )
        bare_p50 = kinds["in-process, bare predict"]["p50_ms"]
        print(
            f"{'':<17}overhead at p50: server {kinds['server (HTTP)']['p50_ms'] / bare_p50:.2f}x, "
            f"validated in-process {kinds['in-process, validated']['p50_ms'] / bare_p50:.2f}x "
            "the bare predict"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
