"""A sharded evaluation (``spec.evaluation.parallelism``): the evaluator run
as the pods of an Indexed Job (``MODELGATE_SHARDS`` and the index Kubernetes
sets) and then as the merge step (``MODELGATE_MERGE``) gives the one pod's
gate, value for value; a shard that wrote nothing, a partial that is not one
and a bad index are refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelgate import evaluate
from modelgate.api.modelrelease import ArtifactRecord, Evaluation
from modelgate.api.qualitygate import Check, Task
from modelgate.backends.base import ArtifactIntegrityError
from modelgate.backends.local import LocalArtifactStore
from modelgate.promotion import EvaluateGate
from tests.unit.test_evaluator import env as evaluator_env

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
ROWS = 6_000
CHECKS = [
    {"name": "acc", "metric": {"name": "accuracy", "min": 0.5}},
    {
        "name": "auc-by-region",
        "metric": {"name": "roc_auc", "min": 0.5},
        "slice": {"columns": ["region"], "minSize": 50},
    },
    {"name": "logloss", "metric": {"name": "log_loss", "max": 2.0}},
    {
        "name": "parity",
        "fairness": {
            "metric": "demographic_parity_difference",
            "sensitiveColumn": "gender",
            "max": 0.5,
        },
    },
    {"name": "ages", "data": {"column": "age", "min": 0, "max": 120}},
    {"name": "income-psi", "drift": {"column": "income", "method": "psi", "max": 10}},
    {"name": "age-ks", "drift": {"column": "age", "method": "ks", "max": 1}},
]


def _table(rows: int, seed: int, predictions: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {
        "age": rng.integers(21, 75, rows),
        "income": rng.lognormal(10.6, 0.45, rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
        "gender": rng.choice(["F", "M"], rows),
    }
    if predictions:
        truth = (rng.random(rows) < 0.3).astype(np.int64)
        score = np.clip(0.3 * truth + rng.random(rows) * 0.7, 0.0, 1.0)
        columns.update(y_true=truth, y_pred=(score > 0.5).astype(np.int64), y_score=score)
    return pa.table(columns)


def _parquet(path: Path, table: pa.Table) -> Path:
    # Many row groups: each shard gets some of every input.
    pq.write_table(table, path, row_group_size=400)
    return path


@pytest.fixture
def world(tmp_path: Path) -> tuple[LocalArtifactStore, EvaluateGate]:
    store = LocalArtifactStore(tmp_path / "store")
    scored = _parquet(tmp_path / "predictions.parquet", _table(ROWS, 1, predictions=True))
    training = _parquet(tmp_path / "train.parquet", _table(ROWS, 2, predictions=False))
    evaluation = _parquet(tmp_path / "eval.parquet", _table(ROWS, 3, predictions=False))
    action = EvaluateGate(
        inputs_hash="abc123",
        gate_name="gate",
        task=Task.BINARY,
        positive_label="1",
        checks=tuple(Check.model_validate(c) for c in CHECKS),
        predictions=store.put_file(scored, "predictions"),
        metadata=None,
        train_data=str(training),
        evaluation_data=str(evaluation),
        id_column=None,
        baselines={},
        evaluation=Evaluation(parallelism=4),
    )
    return store, action


def _summary(store: LocalArtifactStore, manifest: dict[str, Any]) -> dict[str, Any]:
    [record] = [a for a in manifest["artifacts"] if a["name"] == "gate-summary"]
    summary: dict[str, Any] = json.loads(store.get_bytes(ArtifactRecord.model_validate(record)))
    return summary


def _rounded(value: Any) -> Any:
    """Floats to 12 significant digits, the rest as is."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _sharded(
    store: LocalArtifactStore, action: EvaluateGate, output: Path, shards: int
) -> dict[str, Any]:
    env = evaluator_env(store, action, output)
    for index in range(shards):
        shard = {**env, evaluate.SHARDS: str(shards), evaluate.COMPLETION_INDEX: str(index)}
        written = evaluate.run(shard, NOW)
        assert written["shard"] == index
        assert (output / "partials" / f"{index}.json").exists()
    return evaluate.run({**env, evaluate.MERGE: str(shards)}, NOW)


@pytest.mark.parametrize("shards", [1, 4, 7])
def test_n_shards_give_the_one_pod_gate(
    world: tuple[LocalArtifactStore, EvaluateGate], tmp_path: Path, shards: int
) -> None:
    store, action = world
    single = _summary(store, evaluate.run(evaluator_env(store, action, tmp_path / "single"), NOW))
    sharded = _summary(store, _sharded(store, action, tmp_path / "sharded", shards))
    assert single["outcome"] == "Passed", single
    sizes = {c["name"]: c["sampleSize"] for c in single["checks"]}
    assert sizes["acc"] == sizes["logloss"] == ROWS
    # Value for value: counts are exact, and below the sketches' exact
    # limits every rank, quantile and KS figure is too; a float sum added in
    # another order may differ in its last bits (1e-12 is the engine's bound).
    assert _rounded(sharded) == _rounded(single)


def test_a_shard_of_no_rows_adds_nothing(
    world: tuple[LocalArtifactStore, EvaluateGate], tmp_path: Path
) -> None:
    store, action = world
    # 15 row groups per file and 20 shards: five shards read nothing.
    single = _summary(store, evaluate.run(evaluator_env(store, action, tmp_path / "single"), NOW))
    sharded = _summary(store, _sharded(store, action, tmp_path / "sharded", 20))
    assert _rounded(sharded) == _rounded(single)


def test_the_merge_names_a_shard_that_wrote_no_partial(
    world: tuple[LocalArtifactStore, EvaluateGate], tmp_path: Path
) -> None:
    store, action = world
    output = tmp_path / "out"
    env = evaluator_env(store, action, output)
    evaluate.run({**env, evaluate.SHARDS: "2", evaluate.COMPLETION_INDEX: "0"}, NOW)
    with pytest.raises(evaluate.EvaluatorError, match=r"cannot read .*partials/1\.json"):
        evaluate.run({**env, evaluate.MERGE: "2"}, NOW)
    assert not (output / evaluate.OUTPUTS_FILE).exists()


def test_a_tampered_partial_is_refused_by_its_hash(
    world: tuple[LocalArtifactStore, EvaluateGate], tmp_path: Path
) -> None:
    store, action = world
    output = tmp_path / "out"
    env = evaluator_env(store, action, output)
    written = evaluate.run({**env, evaluate.SHARDS: "1", evaluate.COMPLETION_INDEX: "0"}, NOW)
    path = Path(written["artifacts"][0]["uri"].removeprefix("file://"))
    path.chmod(0o644)
    path.write_bytes(b"not a partial")
    with pytest.raises(ArtifactIntegrityError):
        evaluate.run({**env, evaluate.MERGE: "1"}, NOW)


def test_a_record_that_names_no_partial_is_refused(
    world: tuple[LocalArtifactStore, EvaluateGate], tmp_path: Path
) -> None:
    store, action = world
    output = tmp_path / "out"
    (output / "partials").mkdir(parents=True)
    report = store.put_bytes(b"{}", "gate-report")
    manifest = {"artifacts": [report.wire()]}
    (output / "partials" / "0.json").write_text(json.dumps(manifest))
    with pytest.raises(evaluate.EvaluatorError, match="shard 0's record is a gate-report"):
        evaluate.run({**evaluator_env(store, action, output), evaluate.MERGE: "1"}, NOW)
    # A stored artifact that is not a partial, named as one, is refused too.
    garbage = store.put_bytes(b"garbage", evaluate.PARTIAL_NAME)
    (output / "partials" / "0.json").write_text(json.dumps({"artifacts": [garbage.wire()]}))
    with pytest.raises(evaluate.EvaluatorError, match="cannot merge the shards: not a partial"):
        evaluate.run({**evaluator_env(store, action, output), evaluate.MERGE: "1"}, NOW)


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({evaluate.SHARDS: "4"}, "JOB_COMPLETION_INDEX must be this pod's index from 0 to 3"),
        ({evaluate.SHARDS: "4", evaluate.COMPLETION_INDEX: "4"}, "from 0 to 3 (an Indexed Job"),
        ({evaluate.SHARDS: "0", evaluate.COMPLETION_INDEX: "0"}, "MODELGATE_SHARDS must be"),
        ({evaluate.MERGE: "lots"}, "MODELGATE_MERGE must be a number of shards from 1 to 64"),
        ({evaluate.SHARDS: "2", evaluate.MERGE: "2"}, "not both"),
    ],
)
def test_a_misconfigured_shard_exits_2_saying_what_is_wrong(
    world: tuple[LocalArtifactStore, EvaluateGate],
    tmp_path: Path,
    settings: dict[str, str],
    said: str,
) -> None:
    store, action = world
    done = subprocess.run(
        [sys.executable, "-m", "modelgate.evaluate"],
        env={"PATH": "/usr/bin:/bin", **evaluator_env(store, action, tmp_path / "out"), **settings},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert said in done.stderr
    assert not (tmp_path / "out").exists()
