"""credit-risk registered in a real MLflow server as a team serving it with
MLServer's scikit-learn runtime would: trained elsewhere, logged with
cloudpickle and a signature; and the release a team writes for it."""

from __future__ import annotations

from typing import Any

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


def s3_data(bucket: str) -> dict[str, str]:
    """The sample's data as it lies in ``bucket``: the release's mlflow.data."""
    return {
        "train": f"s3://{bucket}/data/train.csv",
        "evaluation": f"s3://{bucket}/data/eval.csv",
        "target": "default",
        "idColumn": "id",
    }


def mlserver_release(
    tracking_uri: str, suffix: str, version: str, *, image: str, data: dict[str, str]
) -> dict[str, Any]:
    """Release ``credit-risk-<suffix>`` of registered ``version``, as a team
    writes it for MLServer's scikit-learn runtime in a cluster: the image's
    defaults (listening on all addresses) and the serving contract's ports
    and model file; ``data`` is its mlflow.data."""
    return {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": f"credit-risk-{suffix}"},
        "spec": {
            "model": {"name": "credit-risk", "version": f"4.0.{version}"},
            "serving": "ModelServer",
            "image": image,
            "server": {
                "command": ["mlserver", "start", "$(MODELGATE_MODEL_DIR)"],
                "env": [
                    {"name": "MLSERVER_HTTP_PORT", "value": "$(MODELGATE_HTTP_PORT)"},
                    {"name": "MLSERVER_GRPC_PORT", "value": "$(MODELGATE_GRPC_PORT)"},
                    {"name": "MLSERVER_METRICS_PORT", "value": "$(MODELGATE_METRICS_PORT)"},
                    {"name": "MLSERVER_PARALLEL_WORKERS", "value": "0"},
                    {"name": "MLSERVER_MODEL_NAME", "value": "credit-risk"},
                    {
                        "name": "MLSERVER_MODEL_IMPLEMENTATION",
                        "value": "mlserver_sklearn.SKLearnModel",
                    },
                    {"name": "MLSERVER_MODEL_URI", "value": "$(MODELGATE_MODEL_FILE)"},
                ],
            },
            "mlflow": {
                "trackingUri": tracking_uri,
                "name": "credit-risk",
                "version": version,
                "aliases": {"production": "champion"},
                "data": data,
            },
            "gate": {"name": "credit-gate"},
            "promotion": {"environments": ["staging", "production"]},
        },
    }
