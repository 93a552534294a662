"""The import run of a registered model that its own server serves: a real
MLServer (scikit-learn runtime) loads the version registered in a real MLflow
server, saved with cloudpickle as MLServer's runtime takes it, and Modelgate
never unpickles it. What the model takes comes from its signature, what it
does (importance, behaviour, the predictions the gate judges) from the
server's answers over the Open Inference Protocol."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelgate.importer import fetch_for_server, import_model
from modelgate.serving.runtime import MODEL_DIR, ModelServerCommand, running_model_server
from modelgate.trainer import contract
from modelgate.trainer.train import ContractError, train
from tests.support.mlflow_server import MlflowServer, running_mlflow
from tests.support.mlserver import MLSERVER
from tests.unit.test_trainer import DATA, contract_env

BEHAVIOR = [
    {"name": "late", "column": "late_payments", "add": 1, "expect": "increase", "tolerance": 0}
]


def mlserver_command(model: str = "credit-risk") -> ModelServerCommand:
    """MLServer as a release names it: its default model from the environment,
    on the ports and the model file the serving contract gives."""
    return ModelServerCommand(
        command=(str(MLSERVER), "start", "$(MODELGATE_MODEL_DIR)"),
        model_name=model,
        env=(
            ("MLSERVER_HOST", "127.0.0.1"),
            ("MLSERVER_HTTP_PORT", "$(MODELGATE_HTTP_PORT)"),
            ("MLSERVER_GRPC_PORT", "$(MODELGATE_GRPC_PORT)"),
            ("MLSERVER_METRICS_PORT", "$(MODELGATE_METRICS_PORT)"),
            ("MLSERVER_PARALLEL_WORKERS", "0"),
            ("MLSERVER_MODEL_NAME", model),
            ("MLSERVER_MODEL_IMPLEMENTATION", "mlserver_sklearn.SKLearnModel"),
            ("MLSERVER_MODEL_URI", "$(MODELGATE_MODEL_FILE)"),
        ),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("trained")
    train(contract_env(output, **{contract.BEHAVIOR_TESTS: json.dumps(BEHAVIOR)}))
    return output


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def pickled(mlflow: MlflowServer, trained: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """credit-risk logged with cloudpickle and a signature, as a team serving
    it with MLServer would."""
    work = tmp_path_factory.mktemp("register")
    model = trained / contract.MODEL_FILE
    return mlflow.register_sklearn(
        model, "credit-risk", work, pickled=True, signature_from=DATA / "eval.csv"
    )


def import_env(
    mlflow: MlflowServer, version: str, output: Path, server: ModelServerCommand
) -> dict[str, str]:
    env = contract_env(output, **{contract.BEHAVIOR_TESTS: json.dumps(BEHAVIOR)})
    env.update(
        {
            contract.MLFLOW_TRACKING_URI: mlflow.url,
            contract.MLFLOW_MODEL: "credit-risk",
            contract.MLFLOW_VERSION: version,
            contract.MODEL_SERVER: server.wire(),
        }
    )
    return env


def test_the_gate_gets_what_mlserver_answers_for_the_registered_version(
    mlflow: MlflowServer, pickled: str, trained: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    metadata = import_model(import_env(mlflow, pickled, output, mlserver_command()))

    # Never loaded here: the served model is the registered file, as fetched.
    assert metadata["source"]["mlflow"]["version"] == pickled
    served = metadata["servedBy"]
    assert served["modelName"] == "credit-risk"
    assert served["modelFile"] == "model.pkl"
    files = {f["path"]: f["sha256"] for f in metadata["source"]["mlflow"]["files"]}
    assert files["model.pkl"] == served["sha256"]
    assert (output / contract.SERVED_MODEL_FILE).exists()
    assert not (output / contract.MODEL_FILE).exists()

    # Described from the signature and the training labels, as the trainer would.
    reference = json.loads((trained / contract.METADATA_FILE).read_text())
    assert [f["name"] for f in metadata["features"]] == [f["name"] for f in reference["features"]]
    assert metadata["classes"] == reference["classes"] == ["0", "1"]

    # What the server answers is what the model does: the trainer's own
    # predictions (labels equal, scores within 1e-9), importance and behaviour.
    ours = pd.read_parquet(output / contract.PREDICTIONS_FILE)
    theirs = pd.read_parquet(trained / contract.PREDICTIONS_FILE)
    assert len(ours) == len(theirs) == 2000
    assert list(ours["y_pred"]) == list(theirs["y_pred"])
    np.testing.assert_allclose(ours["y_score"], theirs["y_score"], rtol=0, atol=1e-9)
    importance = {i["feature"]: i["mean"] for i in metadata["importance"]}
    expected = {i["feature"]: i["mean"] for i in reference["importance"]}
    assert importance.keys() == expected.keys()
    for feature, value in expected.items():
        assert importance[feature] == pytest.approx(value, abs=1e-9), feature
    assert metadata["behavior"] == reference["behavior"]
    assert metadata["scoring"]["requests"] >= 2  # batches of 1024 rows


def test_a_server_that_exits_says_so_and_writes_nothing(
    mlflow: MlflowServer, pickled: str, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    broken = ModelServerCommand(
        command=("python3", "-c", "import sys; print('no such model runtime'); sys.exit(3)"),
        model_name="credit-risk",
    )
    with pytest.raises(ContractError, match=r"exited with code 3.*no such model runtime"):
        import_model(import_env(mlflow, pickled, output, broken))
    assert not (output / contract.PREDICTIONS_FILE).exists()
    assert not (output / contract.METADATA_FILE).exists()


def test_a_model_without_a_signature_is_refused_naming_the_fix(
    mlflow: MlflowServer, trained: Path, tmp_path: Path
) -> None:
    version = mlflow.register_sklearn(
        trained / contract.MODEL_FILE, "credit-risk-unsigned", tmp_path, pickled=True
    )
    env = import_env(mlflow, version, tmp_path / "out", mlserver_command())
    env[contract.MLFLOW_MODEL] = "credit-risk-unsigned"
    with pytest.raises(ContractError, match=r"no column-based signature.*infer_signature"):
        import_model(env)


def test_in_a_pod_the_fetch_step_lays_the_model_out_for_the_sidecar_the_import_asks(
    mlflow: MlflowServer, pickled: str, trained: Path, tmp_path: Path
) -> None:
    """The import Job's way: an init container fetches the version into the
    model volume under the release's file name, the server (a sidecar, here
    a process) serves it there, and the import run only asks it."""
    output, models = tmp_path / "out", tmp_path / "models"
    server = ModelServerCommand(
        mlserver_command().command, "credit-risk", mlserver_command().env, "model.joblib"
    )
    env = import_env(mlflow, pickled, output, server)
    fetched = fetch_for_server({**env, MODEL_DIR: str(models)})
    assert fetched.model_file == models / "model.joblib"
    assert sorted(p.name for p in models.iterdir()) == ["model.joblib"]
    with running_model_server(server, fetched.model_file, tmp_path / "server.log") as url:
        metadata = import_model({**env, contract.MODEL_SERVER_URL: url, MODEL_DIR: str(models)})
    assert metadata["servedBy"]["modelFile"] == "model.joblib"
    files = {f["path"]: f["sha256"] for f in metadata["source"]["mlflow"]["files"]}
    assert metadata["servedBy"]["sha256"] == files["model.pkl"]
    ours = pd.read_parquet(output / contract.PREDICTIONS_FILE)
    theirs = pd.read_parquet(trained / contract.PREDICTIONS_FILE)
    np.testing.assert_allclose(ours["y_score"], theirs["y_score"], rtol=0, atol=1e-9)


def test_an_import_beside_a_server_without_the_fetch_step_names_it(
    mlflow: MlflowServer, pickled: str, tmp_path: Path
) -> None:
    env = import_env(mlflow, pickled, tmp_path / "out", mlserver_command())
    with pytest.raises(ContractError, match=r"python -m modelgate\.importer fetch"):
        import_model({**env, contract.MODEL_SERVER_URL: "http://127.0.0.1:9"})
    no_server = {k: v for k, v in env.items() if k != contract.MODEL_SERVER}
    with pytest.raises(ContractError, match="MODELGATE_MODEL_SERVER is missing"):
        fetch_for_server({**no_server, MODEL_DIR: str(tmp_path / "models")})
    with pytest.raises(ContractError, match="MODELGATE_MODEL_SERVER_URL needs"):
        import_model({**no_server, contract.MODEL_SERVER_URL: "http://127.0.0.1:9"})
