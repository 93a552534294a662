"""The operator's memory does not depend on the data: a release whose gate is
evaluated on 5 million rows leaves the operator process (``python -m
modelgate operator``) within 20 MB of where a 10 thousand row release left it.
The training and evaluation Jobs are run by the played controllers, in this
test's process; the operator only watches, creates Jobs and reads the
evaluator's bounded summary."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from kubernetes import client

from modelgate.backends.s3 import S3Settings, make_client
from tests.support.cluster import (
    api_client,
    create,
    get,
    operator_command,
    operator_environment,
    start_controllers,
    wait_for,
)
from tests.support.emulator import running_emulator
from tests.support.s3server import free_port, running_s3

NAMESPACE = "team"
BUCKET = "memory-artifacts"
SMALL, LARGE = 10_000, 5_000_000
ALLOWED_GROWTH_MB = 20.0


def data(rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.6, 0.45, rows)
    late = rng.poisson(0.6, rows)
    default = (rng.random(rows) < 0.1 + 0.1 * (late > 1)).astype(np.int64)
    table = pa.table(
        {
            "age": rng.integers(21, 75, rows),
            "income": income,
            "late_payments": late,
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "gender": rng.choice(["F", "M"], rows),
            "default": default,
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=1_000_000)
    return buffer.getvalue()


def release(name: str, rows: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "version": "1.0.0"},
            "serving": "ReferenceServer",
            "training": {
                "image": "ghcr.io/modelgate/modelgate:0.1.0",
                "command": ["python", "-m", "modelgate.trainer"],
                # A model that costs nothing to fit: this test is about the gate.
                "params": {
                    "estimator": "sklearn.dummy.DummyClassifier",
                    "strategy": "stratified",
                    "exclude": ["gender"],
                    "importance_repeats": 0,
                },
                "data": {
                    "train": f"s3://{BUCKET}/data/{rows}/train.parquet",
                    "evaluation": f"s3://{BUCKET}/data/{rows}/eval.parquet",
                    "target": "default",
                },
            },
            "gate": {
                "task": "binary",
                "checks": [
                    {"name": "auc", "metric": {"name": "roc_auc", "min": 0.4}},
                    {
                        "name": "recall-by-region",
                        "metric": {"name": "recall", "min": 0.0},
                        "slice": {"columns": ["region"], "minSize": 50},
                    },
                    {
                        "name": "parity",
                        "fairness": {
                            "metric": "demographic_parity_difference",
                            "sensitiveColumn": "gender",
                            "max": 0.5,
                        },
                    },
                    {"name": "ages", "data": {"column": "age", "min": 0, "max": 120}},
                    {
                        "name": "income-drift",
                        "drift": {"column": "income", "method": "psi", "max": 10},
                    },
                    {"name": "age-drift", "drift": {"column": "age", "method": "ks", "max": 1}},
                ],
            },
            "promotion": {"environments": ["scratch"]},
        },
    }


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_the_operator_memory_is_flat_in_data_size(tmp_path: Path) -> None:
    with (
        running_s3(tmp_path / "moto.log") as s3,
        running_emulator() as emulator,
        operator_environment(emulator, s3, BUCKET),
    ):
        store = make_client(S3Settings(bucket=BUCKET, endpoint_url=s3.endpoint, path_style=True))
        store.create_bucket(Bucket=BUCKET)
        for rows in (SMALL, LARGE):
            for name, seed in (("train", 1), ("eval", 2)):
                body = data(rows, seed + rows)
                store.put_object(Bucket=BUCKET, Key=f"data/{rows}/{name}.parquet", Body=body)
        api = api_client(emulator)
        environment = {
            "apiVersion": "modelgate.dev/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": "scratch"},
            "spec": {"tier": "preproduction", "namespace": "ml-scratch"},
        }
        create(api, environment, NAMESPACE)
        controllers = start_controllers(api, s3)
        log = (tmp_path / "operator.log").open("w")
        env = {**os.environ, "MODELGATE_RESYNC_SECONDS": "1"}
        operator = subprocess.Popen(
            operator_command(f"--metrics-port={free_port()}"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def evaluated(name: str) -> bool:
            status = get(api, "ModelRelease", NAMESPACE, name).get("status") or {}
            gate = status.get("gate") or {}
            return bool(gate.get("outcome")) and status.get("phase") != "Evaluating"

        def operator_log() -> str:
            statuses = {
                r["metadata"]["name"]: r.get("status")
                for r in client.CustomObjectsApi(api).list_namespaced_custom_object(
                    "modelgate.dev", "v1alpha1", NAMESPACE, "modelreleases"
                )["items"]
            }
            return f"{statuses}; {controllers.errors}; {operator_log_tail()}"

        def operator_log_tail() -> str:
            return (tmp_path / "operator.log").read_text()[-1500:]

        try:
            peaks: dict[int, float] = {}
            for rows in (SMALL, LARGE):
                name = f"memory-{rows}"
                create(api, release(name, rows), NAMESPACE)
                wait_for(lambda name=name: evaluated(name), 600, f"{name} evaluated", operator_log)
                time.sleep(2)  # a few resyncs after the result, as in steady state
                peaks[rows] = peak_rss_mb(operator.pid)
                gate = get(api, "ModelRelease", NAMESPACE, name)["status"]["gate"]
                sizes = {c["name"]: c.get("sampleSize") for c in gate["checks"]}
                assert sizes["auc"] == rows, gate  # really evaluated on every row
            assert controllers.errors == []
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
            controllers.stop()
    growth = peaks[LARGE] - peaks[SMALL]
    print(
        f"operator peak RSS: {peaks[SMALL]:.1f} MB ({SMALL} rows), {peaks[LARGE]:.1f} MB ({LARGE})"
    )
    assert growth <= ALLOWED_GROWTH_MB, peaks
