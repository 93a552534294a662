"""Local mode with gate.predictionsFrom Server: after training, a scoring run
starts the reference server on the trained model and scores the evaluation
data through the Open Inference Protocol; the gate judges those predictions,
which the deployed server is then verified against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from modelgate.cli import main
from modelgate.trainer import contract
from tests.integration.test_localmode import ENVS, GATE, RELEASE, conditions, items, run_json


def test_the_gate_judges_what_the_reference_server_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load(RELEASE.read_text())
    document["spec"]["gate"]["predictionsFrom"] = "Server"
    document["spec"]["promotion"] = {"environments": ["staging"]}
    data = document["spec"]["training"]["data"]
    for key in ("train", "evaluation"):
        data[key] = str(RELEASE.parent / data[key])
    release = tmp_path / "release.yaml"
    release.write_text(yaml.safe_dump(document))
    state = tmp_path / "state"
    try:
        code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", state)
    finally:
        main(["stop", "--state-dir", str(state)])
    found = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    status = found["status"]
    assert code == 0, conditions(found)["Ready"]
    assert status["phase"] == "Released"
    trained = conditions(found)["Trained"]
    assert (trained["status"], trained["reason"]) == ("True", "ScoredByServer")
    scoring = status["scoring"]
    assert scoring["state"] == "Succeeded"
    assert scoring["jobName"].startswith("credit-risk-1-4-0-score-")
    assert conditions(found)["Verified"]["status"] == "True"
    assert status["gate"]["outcome"] == "Passed"

    # The gate's predictions are the scoring run's, not the trainer's file,
    # and they say what the trained model says.
    predictions = {a["name"]: a for a in status["artifacts"]}["predictions"]
    served_file = state / "runs" / scoring["jobName"] / "output" / contract.PREDICTIONS_FILE
    trained_file = (
        state / "runs" / status["training"]["jobName"] / "output" / contract.PREDICTIONS_FILE
    )
    served = pd.read_parquet(served_file)
    assert predictions["size"] == served_file.stat().st_size
    trainers = pd.read_parquet(trained_file)
    assert len(served) == len(trainers) == 2000
    assert list(served["y_pred"]) == list(trainers["y_pred"])
    np.testing.assert_allclose(served["y_score"], trainers["y_score"], rtol=0, atol=1e-9)
