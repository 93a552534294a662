"""The evaluation rows scored by a real model server through the Open
Inference Protocol: the reference server and MLServer serving the gated
pipeline both write the predictions the trainer wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from modelgate.score import main as score_main
from modelgate.serving.scoring import ScoreSettings, ScoringError, score
from modelgate.serving.served import Served
from modelgate.trainer import contract
from tests.support.mlserver import MLServer, running_mlserver, sklearn_model_dir
from tests.support.model_server import ModelServer, sha256
from tests.unit.test_trainer import DATA


@pytest.fixture(scope="module")
def served(trained: Path) -> Served:
    return Served.from_metadata(json.loads((trained / contract.METADATA_FILE).read_text()))


@pytest.fixture(scope="module")
def reference(server: ModelServer) -> ModelServer:
    return server


@pytest.fixture(scope="module")
def mlserver(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    work = tmp_path_factory.mktemp("mlserver")
    model = sklearn_model_dir(trained / contract.MODEL_FILE, work / "model", "credit-risk", "1")
    with running_mlserver(model, work) as server:
        yield server


def settings(url: str, output: Path, **extra: object) -> ScoreSettings:
    values: dict[str, object] = {
        "url": url,
        "model_name": "credit-risk",
        "data": DATA / "eval.csv",
        "target": "default",
        "output": output,
        "batch_rows": 97,
        **extra,
    }
    return ScoreSettings(**values)  # type: ignore[arg-type]


def assert_same_predictions(scored: Path, trained: Path) -> None:
    ours = pd.read_parquet(scored)
    gated = pd.read_parquet(trained / contract.PREDICTIONS_FILE)
    assert list(ours.columns) == list(gated.columns)
    assert len(ours) == len(gated)
    assert ours["y_true"].tolist() == gated["y_true"].tolist()
    assert ours["y_pred"].tolist() == gated["y_pred"].tolist()
    assert np.allclose(ours["y_score"], gated["y_score"], rtol=0, atol=1e-9)
    pd.testing.assert_frame_equal(
        ours.drop(columns=["y_true", "y_pred", "y_score"]),
        gated.drop(columns=["y_true", "y_pred", "y_score"]),
        check_dtype=False,
    )


@pytest.mark.parametrize("kind", ["reference", "mlserver"])
def test_a_server_scores_the_evaluation_rows_as_the_trainer_did(
    kind: str, trained: Path, served: Served, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    running = request.getfixturevalue(kind)
    output = tmp_path / contract.PREDICTIONS_FILE
    result = score(settings(running.url, output), served)
    rows = len(pd.read_csv(DATA / "eval.csv"))
    assert result.rows == rows
    assert result.requests == -(-rows // 97)  # batches of 97 rows
    assert_same_predictions(output, trained)
    assert pq.ParquetFile(output).metadata.num_row_groups == -(
        -rows // contract.PREDICTIONS_ROW_GROUP
    )


def test_data_without_a_feature_the_model_takes_is_refused_and_nothing_written(
    reference: ModelServer, served: Served, tmp_path: Path
) -> None:
    data = tmp_path / "eval.csv"
    pd.read_csv(DATA / "eval.csv").drop(columns=["income"]).to_csv(data, index=False)
    output = tmp_path / contract.PREDICTIONS_FILE
    with pytest.raises(ScoringError, match="has no column 'income'"):
        score(settings(reference.url, output, data=data), served)
    assert list(tmp_path.iterdir()) == [data]


def test_rows_the_server_refuses_stop_the_scoring_naming_them(
    reference: ModelServer, served: Served, tmp_path: Path
) -> None:
    data = tmp_path / "eval.csv"
    frame = pd.read_csv(DATA / "eval.csv")
    frame.loc[150, "region"] = "atlantis"  # a category training never saw: 400
    frame.to_csv(data, index=False)
    with pytest.raises(
        ScoringError, match=r"rows 97\.\.193: the server answered 400 \(row 150\)"
    ) as refused:
        score(settings(reference.url, tmp_path / "out.parquet", data=data), served)
    assert "atlantis" in str(refused.value)
    assert not (tmp_path / "out.parquet").exists()


def test_a_model_the_server_does_not_serve_is_said_so(
    mlserver: MLServer, served: Served, tmp_path: Path
) -> None:
    wrong = settings(mlserver.url, tmp_path / "out.parquet", model_name="other",
                     ready_timeout_seconds=1.0)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"model 'other' at .* was not ready within 1 s"):
        score(wrong, served)


def test_the_scoring_step_as_a_process_writes_the_predictions_file(
    mlserver: MLServer, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metadata = trained / contract.METADATA_FILE
    env = {
        "MODELGATE_SCORE_URL": mlserver.url,
        "MODELGATE_MODEL_NAME": "credit-risk",
        "MODELGATE_EVAL_DATA": str(DATA / "eval.csv"),
        "MODELGATE_TARGET": "default",
        "MODELGATE_METADATA_URI": str(metadata),
        "MODELGATE_METADATA_SHA256": sha256(metadata),
        "MODELGATE_OUTPUT_DIR": str(tmp_path / "out"),
    }
    assert score_main(env) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["rows"] == len(pd.read_csv(DATA / "eval.csv"))
    assert_same_predictions(tmp_path / "out" / contract.PREDICTIONS_FILE, trained)
    assert score_main({**env, "MODELGATE_METADATA_SHA256": "0" * 64}) == 2
    assert "refusing to load it" in capsys.readouterr().err
    del env["MODELGATE_TARGET"]
    assert score_main(env) == 2
    assert "missing environment variables: MODELGATE_TARGET" in capsys.readouterr().err
