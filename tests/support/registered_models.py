"""credit-risk registered in a real MLflow server as a team serving it with
MLServer's scikit-learn runtime would: trained elsewhere, logged with
cloudpickle and a signature."""

from __future__ import annotations

import pytest

from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.support.mlflow_server import MlflowServer
from tests.unit.test_trainer import DATA, contract_env


def register_credit_risk(
    mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory, versions: int
) -> list[str]:
    """Train credit-risk once and register it ``versions`` times: the versions."""
    trained = tmp_path_factory.mktemp("trained")
    train(contract_env(trained))
    work = tmp_path_factory.mktemp("register")
    return [
        mlflow.register_sklearn(
            trained / contract.MODEL_FILE, "credit-risk", work, pickled=True,
            signature_from=DATA / "eval.csv",
        )
        for _ in range(versions)
    ]  # fmt: skip
