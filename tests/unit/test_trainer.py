"""The reference trainer honours the training contract."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import skops.io as sio

from modelgate.gates.source import Shard, source_of
from modelgate.trainer import contract
from modelgate.trainer.train import ContractError, train, write_predictions
from tests.conftest import EXAMPLES, ROOT

DATA = EXAMPLES / "credit-risk" / "data"


def contract_env(output: Path, **extra: str) -> dict[str, str]:
    env = {
        contract.TRAIN_DATA: str(DATA / "train.csv"),
        contract.EVAL_DATA: str(DATA / "eval.csv"),
        contract.TARGET: "default",
        contract.ID_COLUMN: "id",
        contract.TASK: "binary",
        contract.PARAMS: json.dumps(
            {
                "estimator": "sklearn.linear_model.LogisticRegression",
                "max_iter": 500,
                "exclude": ["gender"],
            }
        ),
        contract.OUTPUT_DIR: str(output),
        contract.MODEL_NAME: "credit-risk",
        contract.MODEL_VERSION: "1.0.0",
    }
    env.update(extra)
    return env


def test_outputs_follow_the_contract(tmp_path: Path) -> None:
    metadata = train(contract_env(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(contract.OUTPUTS.values())
    predictions = pd.read_parquet(tmp_path / contract.PREDICTIONS_FILE)
    evaluation = pd.read_csv(DATA / "eval.csv")
    assert len(predictions) == len(evaluation)
    assert {"y_true", "y_pred", "y_score", *evaluation.columns} <= set(predictions.columns)
    assert predictions["y_score"].between(0, 1).all()
    assert set(predictions["y_pred"].astype(str)) <= {"0", "1"}
    assert (predictions["id"] == evaluation["id"]).all()
    written = json.loads((tmp_path / contract.METADATA_FILE).read_text())
    assert written == metadata
    expected = hashlib.sha256((DATA / "train.csv").read_bytes()).hexdigest()
    assert metadata["data"]["train"]["sha256"] == expected
    assert metadata["data"]["evaluation"]["rows"] == len(evaluation)
    assert metadata["versions"]["scikit-learn"]
    assert "gender" not in [f["name"] for f in metadata["features"]]
    train_frame = pd.read_csv(DATA / "train.csv")
    [region] = [f for f in metadata["features"] if f["name"] == "region"]
    shares = train_frame["region"].value_counts(normalize=True)
    assert region == {
        "name": "region",
        "type": "string",
        "nullable": False,
        "categories": ["east", "north", "south", "west"],
        "categoriesComplete": True,
        # What the model server's live drift compares with: training shares,
        # most frequent first, and none left for "other".
        "reference": {
            "categories": list(shares.index),
            "shares": [*shares.to_list(), pytest.approx(0.0, abs=1e-12)],
        },
    }
    # Numeric ranges as seen in training: the model server refuses values
    # outside them (a negative age); deciles for the live drift.
    [age] = [f for f in metadata["features"] if f["name"] == "age"]
    reference = age.pop("reference")
    assert age == {
        "name": "age",
        "type": "number",
        "nullable": False,
        "min": float(train_frame["age"].min()),
        "max": float(train_frame["age"].max()),
    }
    assert reference["edges"] == sorted(set(reference["edges"]))
    assert len(reference["shares"]) == len(reference["edges"]) + 1
    assert sum(reference["shares"]) == pytest.approx(1.0)
    assert max(reference["shares"]) < 0.2  # deciles, roughly a tenth each
    score = metadata["scoreReference"]
    assert len(score["shares"]) == len(score["edges"]) + 1


def test_model_loads_with_skops_and_an_explicit_trust_list(tmp_path: Path) -> None:
    train(contract_env(tmp_path))
    path = tmp_path / contract.MODEL_FILE
    untrusted = sio.get_untrusted_types(file=path)
    assert all(t.startswith(("sklearn.", "numpy.")) for t in untrusted), untrusted
    model = sio.load(path, trusted=untrusted)
    frame = pd.read_csv(DATA / "eval.csv").head(5)
    assert len(model.predict(frame)) == 5


def test_model_file_is_not_a_pickle(tmp_path: Path) -> None:
    train(contract_env(tmp_path))
    assert (tmp_path / contract.MODEL_FILE).read_bytes()[:2] == b"PK"  # a zip, not a pickle


def test_predictions_are_row_groups_that_shards_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard of a sharded evaluation reads its own row groups of the
    predictions: together every row once, in the file's order."""
    monkeypatch.setattr(contract, "PREDICTIONS_ROW_GROUP", 300)
    train(contract_env(tmp_path))
    path = tmp_path / contract.PREDICTIONS_FILE
    evaluation = pd.read_csv(DATA / "eval.csv")
    assert pq.ParquetFile(path).num_row_groups == -(-len(evaluation) // 300)
    source = source_of(path, "predictions")
    rows: dict[int, list[int]] = {}
    for index in range(4):
        for _, first, batch in source.positioned_batches(Shard(index, 4)):
            rows.setdefault(index, []).extend(range(first, first + batch.num_rows))
    assert all(len(mine) >= 300 for mine in rows.values())  # no shard is left idle
    assert sorted(r for mine in rows.values() for r in mine) == list(range(len(evaluation)))
    assert pq.read_table(path).column("id").to_pylist() == evaluation["id"].tolist()


def test_a_column_of_mixed_python_types_is_written_as_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"code": [1, "A7", None], "score": [0.5, 0.25, 1.0]})
    write_predictions(frame, tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column("code").to_pylist() == ["1", "A7", None]
    assert table.column("score").to_pylist() == [0.5, 0.25, 1.0]


def test_regression_task(tmp_path: Path) -> None:
    env = contract_env(
        tmp_path,
        **{
            contract.TASK: "regression",
            contract.TARGET: "income",
            contract.PARAMS: json.dumps({"estimator": "sklearn.linear_model.Ridge"}),
        },
    )
    train(env)
    predictions = pd.read_parquet(tmp_path / contract.PREDICTIONS_FILE)
    assert "y_score" not in predictions.columns
    assert predictions["y_pred"].dtype.kind == "f"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({contract.PARAMS: json.dumps({"estimator": "os.system"})}, "is not allowed"),
        ({contract.PARAMS: json.dumps({"estimator": "sklearn.nope.Model"})}, "does not exist"),
        ({contract.PARAMS: "{not json"}, "is not valid JSON"),
        (
            {
                contract.PARAMS: json.dumps(
                    {"estimator": "sklearn.linear_model.LogisticRegression", "bogus": 1}
                )
            },
            "params do not fit LogisticRegression",
        ),
        ({contract.TARGET: "nope"}, "no target column 'nope'"),
        ({contract.TASK: "ranking"}, "MODELGATE_TASK='ranking'"),
        ({contract.TRAIN_DATA: "/nonexistent.csv"}, "does not exist"),
        ({contract.TARGET: ""}, "missing environment variables: MODELGATE_TARGET"),
    ],
)
def test_contract_violations_are_clear(
    tmp_path: Path, override: dict[str, str], message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        train(contract_env(tmp_path, **override))


def test_module_entry_point_exit_codes(tmp_path: Path) -> None:
    env = {**contract_env(tmp_path), "PYTHONPATH": str(ROOT / "operator")}
    ok = subprocess.run(
        [sys.executable, "-m", "modelgate.trainer"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "trained sklearn.linear_model" in ok.stdout
    env[contract.TARGET] = "nope"
    bad = subprocess.run(
        [sys.executable, "-m", "modelgate.trainer"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "no target column 'nope'" in bad.stderr


def test_importance_and_behavior_are_recorded(tmp_path: Path) -> None:
    tests = [
        {
            "name": "late",
            "column": "late_payments",
            "add": 1,
            "expect": "increase",
            "tolerance": 0.05,
        },
        {
            "name": "region",
            "column": "region",
            "set": "north",
            "expect": "invariant",
            "tolerance": 0.5,
        },
        {"name": "bad", "column": "gender", "add": 1, "expect": "invariant"},
        {"name": "text", "column": "region", "add": 1, "expect": "invariant"},
    ]
    metadata = train(contract_env(tmp_path, MODELGATE_BEHAVIOR_TESTS=json.dumps(tests)))
    importance = {item["feature"]: item for item in metadata["importance"]}
    assert set(importance) == {f["name"] for f in metadata["features"]}
    assert importance["late_payments"]["mean"] > importance["credit_lines"]["mean"]
    behavior = {item["name"]: item for item in metadata["behavior"]}
    assert behavior["late"]["rows"] == 2000
    assert behavior["late"]["failures"] == 0
    assert behavior["late"]["meanDelta"] > 0
    assert behavior["region"]["failures"] == 0
    assert behavior["bad"]["error"] == "column 'gender' is not a model feature"
    assert "cannot add a number to text column 'region'" in behavior["text"]["error"]


def test_importance_can_be_turned_off(tmp_path: Path) -> None:
    params = json.dumps(
        {"estimator": "sklearn.linear_model.LogisticRegression", "importance_repeats": 0}
    )
    assert train(contract_env(tmp_path, MODELGATE_PARAMS=params))["importance"] == []


@pytest.mark.parametrize(
    ("value", "label"),
    [(1.0, "1"), (0.0, "0"), (2.5, "2.5"), (3, "3"), ("yes", "yes"), (True, "True")],
)
def test_labels_are_written_one_way_for_predictions_and_serving(value: object, label: str) -> None:
    """The trainer's predictions, the server's answers and the verifier
    compare labels as strings: 1.0 and 1 must both be "1"."""
    assert contract.label_string(value) == label
    assert contract.label_strings(np.asarray([value])) == [label]
