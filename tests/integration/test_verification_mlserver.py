"""Post-deployment verification through the Open Inference Protocol against a
real MLServer: a server that is not the reference one is verified the same
way, and one that serves a different model than the gated one is skew."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgate.trainer import contract
from modelgate.verify import main as verify_main
from tests.integration.test_model_server import train_another_model, verify_env
from tests.support.mlserver import running_mlserver, sklearn_model_dir


def test_mlserver_serving_the_gated_model_is_verified(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = sklearn_model_dir(trained / contract.MODEL_FILE, tmp_path / "model", "credit-risk", "1")
    with running_mlserver(model, tmp_path) as mlserver:
        assert verify_main(verify_env(mlserver.url, trained)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads(lines[0])
    # Labels equal and every score (MLServer's predict_proba, in the class
    # order the release's metadata records) within 1e-6 of the gated one.
    assert (record["rows"], record["mismatches"], record["passed"]) == (50, 0, True)
    assert record["model"]["name"] == "credit-risk"
    assert lines[-1].startswith("verified: 0/50 served answers differ")


def test_mlserver_serving_another_model_is_skew(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = train_another_model(tmp_path / "other")
    model = sklearn_model_dir(other / contract.MODEL_FILE, tmp_path / "model", "credit-risk", "1")
    with running_mlserver(model, tmp_path) as mlserver:
        assert verify_main(verify_env(mlserver.url, trained)) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("skew: ")
    assert "first: row 0: " in last


def test_a_model_name_the_server_does_not_serve_says_so(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = sklearn_model_dir(trained / contract.MODEL_FILE, tmp_path / "model", "scorer", "1")
    with running_mlserver(model, tmp_path) as mlserver:
        env = verify_env(mlserver.url, trained, MODELGATE_VERIFY_READY_TIMEOUT="2s")
        assert verify_main(env) == 2
    error = capsys.readouterr().err
    assert "model 'credit-risk' at http://127.0.0.1:" in error
    assert "was not ready within 2 s" in error
