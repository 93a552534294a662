"""Hostile and malformed input: prediction files, pickles, manifests.

Nothing from an artifact is ever executed by the operator or local mode;
malformed data ends in a clear exit code and message, never a traceback.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelgate.cli import main
from tests.conftest import EXAMPLES

GATE = EXAMPLES / "credit-risk" / "gate.yaml"
SAMPLE = EXAMPLES / "credit-risk"


class Bomb:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "executed"))


def _evaluate(capsys: pytest.CaptureFixture[str], predictions: Path) -> tuple[int, str]:
    code = main(["gate", "evaluate", "--gate", str(GATE), "--predictions", str(predictions)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_pickle_given_as_predictions_is_never_executed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    for name in ("predictions.pkl", "predictions.csv", "predictions.parquet"):
        bomb = tmp_path / name
        bomb.write_bytes(pickle.dumps(Bomb(marker)))
        code, output = _evaluate(capsys, bomb)
        assert code == 2, output
        assert str(bomb) in output
        assert "Traceback" not in output
    assert not marker.exists()


def test_local_mode_never_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Models are loaded only inside training processes (skops with an
    allow-list); the process that gates and promotes must not unpickle."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the gate/promotion process tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    state = tmp_path / "state"
    args = [str(GATE), str(SAMPLE / "environments.yaml"), str(SAMPLE / "release.yaml")]
    assert main(["run", *args, "--state-dir", str(state)]) == 0
    assert "Released" in capsys.readouterr().out


def _predictions(rows: dict[str, Any]) -> pa.Table:
    return pa.table(rows)


HOSTILE: dict[str, dict[str, Any]] = {
    "zero rows": {"y_true": pa.array([], pa.int64()), "y_pred": pa.array([], pa.int64())},
    "NaN and inf scores": {
        "y_true": [0, 1, 1, 0],
        "y_pred": [0, 1, 1, 0],
        "y_score": [0.1, float("nan"), float("inf"), -float("inf")],
    },
    "labels of the wrong type": {"y_true": ["a", "b", "a", "b"], "y_pred": [0.5, 1.5, 2.5, 3.5]},
    "missing y_pred": {"y_true": [0, 1, 0, 1]},
    "a million categories": {
        "y_true": np.arange(1_000_000) % 2,
        "y_pred": np.arange(1_000_000) % 2,
        "region": [f"r{i}" for i in range(1_000_000)],
    },
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_malformed_predictions_end_in_a_clear_outcome(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "predictions.parquet"
    pq.write_table(_predictions(HOSTILE[case]), path)
    code, output = _evaluate(capsys, path)
    # 1: a check failed, 2: input refused (naming it), 3: inconclusive.
    assert code in {1, 2, 3}, output
    assert "Traceback" not in output
    if code == 2:
        assert str(path) in output or "y_pred" in output


def test_ten_million_rows_are_measured_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """10M predictions (a big batch-scoring backtest): the gate measures the
    metrics and the slices over all of them (4 s and 1.4 GB peak here, the
    table's construction included) instead of failing or sampling."""
    rows = 10_000_000
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 2, rows)
    score = np.clip(truth * 0.3 + rng.random(rows) * 0.7, 0.0, 1.0)
    regions = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, 4, rows).astype("int32")),
        pa.array(["north", "south", "east", "west"]),
    )
    genders = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, 2, rows).astype("int32")), pa.array(["F", "M"])
    )
    path = tmp_path / "predictions.parquet"
    pq.write_table(
        pa.table(
            {
                "y_true": truth,
                "y_pred": (score > 0.5).astype(np.int64),
                "y_score": score,
                "region": regions,
                "gender": genders,
            }
        ),
        path,
    )
    del truth, score, regions, genders
    code = main(
        [
            "gate",
            "evaluate",
            "--gate",
            str(GATE),
            "--predictions",
            str(path),
            "--output",
            "json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    # Inconclusive overall: this file carries no training data or behaviour
    # results, so those checks cannot be measured; the rest are.
    assert code == 3
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["auc"]["outcome"] == "Passed"
    assert 0.8 < checks["auc"]["value"] < 1.0
    assert "on 10000000 rows" in checks["auc"]["message"]
    assert checks["recall-by-region"]["outcome"] == "Passed"
    assert "4 slices" in checks["recall-by-region"]["message"]
    # Genders drawn independently of the scores: parity holds.
    assert checks["parity"]["outcome"] == "Passed"
    assert checks["four-fifths"]["outcome"] == "Passed"
