"""The reference model server as a process: answers, refusals, metrics, trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from prometheus_client.parser import text_string_to_metric_families
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from modelgate.trainer import contract
from modelgate.trainer.train import train
from modelgate.verify import main as verify_main
from tests.support.model_server import (
    ModelServer,
    call,
    running_model_server,
    server_command,
    sha256,
    start_args,
)
from tests.support.s3server import CREDENTIALS, free_port, running_s3
from tests.unit.test_trainer import DATA, contract_env


def rows(frame: pd.DataFrame, features: list[str]) -> list[dict[str, object]]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[features].to_dict("records")
    ]


def test_served_answers_match_the_offline_predictions(server: ModelServer, trained: Path) -> None:
    offline = pd.read_parquet(trained / contract.PREDICTIONS_FILE)
    status_code, body = server.get("/v1/metadata")
    assert status_code == 200
    features = [f["name"] for f in json.loads(body)["features"]]
    served_labels: list[str] = []
    served_scores: list[float] = []
    for start in range(0, len(offline), 1000):
        status, answer = server.post(
            "/v1/predict", {"instances": rows(offline.iloc[start : start + 1000], features)}
        )
        assert status == 200, answer
        served_labels += answer["predictions"]
        served_scores += answer["scores"]
        assert answer["model"]["sha256"] == sha256(trained / contract.MODEL_FILE)
    assert served_labels == [str(v) for v in offline["y_pred"]]
    assert np.allclose(served_scores, offline["y_score"], rtol=0, atol=1e-6)


def test_the_columnar_form_answers_the_same(server: ModelServer, trained: Path) -> None:
    offline = pd.read_parquet(trained / contract.PREDICTIONS_FILE).head(5)
    features = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"]
    by_rows = server.post("/v1/predict", {"instances": rows(offline, features)})
    by_columns = server.post(
        "/v1/predict", {"inputs": {f: [r[f] for r in rows(offline, features)] for f in features}}
    )
    assert by_rows == by_columns
    assert by_rows[0] == 200


def test_malformed_requests_get_422_naming_the_column(server: ModelServer, trained: Path) -> None:
    good = rows(pd.read_parquet(trained / contract.PREDICTIONS_FILE).head(1), ["age", "income",
        "debt_ratio", "credit_lines", "late_payments", "region"])[0]  # fmt: skip
    cases = {
        "age": {**good, "age": -3},
        "region": {**good, "region": "mars"},
        "zip": {**good, "zip": "1000"},
        "income": {k: v for k, v in good.items() if k != "income"},
    }
    for column, row in cases.items():
        status, answer = server.post("/v1/predict", {"instances": [good, row]})
        assert status == 422, answer
        assert answer["column"] == column
        assert answer["row"] == 1
        assert column in answer["error"]
    status, answer = call(f"{server.url}/v1/predict", b"{not json")
    assert status == 400
    assert "not JSON" in answer["error"]
    code, metrics = server.get("/metrics")
    assert code == 200
    assert 'modelgate_server_errors_total{kind="invalid_input"}' in metrics
    assert 'modelgate_server_requests_total{code="422",endpoint="predict"}' in metrics
    assert "modelgate_server_request_duration_seconds_bucket" in metrics
    assert "modelgate_server_prediction_score_bucket" in metrics
    assert 'modelgate_server_model_info{model="credit-risk"' in metrics


def test_probes(server: ModelServer) -> None:
    assert server.get("/healthz")[0] == 200
    status, body = server.get("/readyz")
    assert status == 200
    assert '"status": "ready"' in body


def test_a_model_that_is_not_the_recorded_one_is_never_parsed(
    trained: Path, tmp_path: Path
) -> None:
    """Bytes whose SHA-256 differs from the release's record: the process
    exits 2 before parsing them (a pickle bomb in their place stays inert)."""
    marker = tmp_path / "pwned"
    bomb = tmp_path / "model.skops"
    bomb.write_bytes(b"\x80\x04cbuiltins\nexec\n(V" + str(marker).encode() + b"\ntR.")
    args = server_command(bomb, trained / contract.METADATA_FILE, free_port())
    args[args.index("--model-sha256") + 1] = sha256(trained / contract.MODEL_FILE)
    log = tmp_path / "server.log"
    with running_model_server(args, log, ready=False) as running:
        assert running.process.wait(timeout=30) == 2
    assert "refusing to load it" in log.read_text()
    assert not marker.exists()


def test_untrusted_types_in_a_model_are_refused(trained: Path, tmp_path: Path) -> None:
    """A model whose recorded hash matches but that carries a function
    outside the trusted list (here os.system) is not loaded."""
    hostile = tmp_path / "model.skops"
    sio.dump(Pipeline([("run", FunctionTransformer(os.system))]), hostile)
    log = tmp_path / "server.log"
    args = server_command(hostile, trained / contract.METADATA_FILE, free_port())
    with running_model_server(args, log, ready=False) as running:
        assert running.process.wait(timeout=30) == 2
    text = log.read_text()
    assert "types outside the trusted list" in text
    assert "system" in text


def test_the_artifact_is_read_from_s3(trained: Path, tmp_path: Path) -> None:
    with running_s3(tmp_path / "moto.log") as s3:
        env = {
            **CREDENTIALS,
            "MODELGATE_S3_ENDPOINT": s3.endpoint,
            "MODELGATE_S3_PATH_STYLE": "true",
        }
        client = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        ).client("s3", endpoint_url=s3.endpoint)
        client.create_bucket(Bucket="models")
        for file in (contract.MODEL_FILE, contract.METADATA_FILE):
            client.put_object(Bucket="models", Key=f"r1/{file}", Body=(trained / file).read_bytes())
        args = server_command(
            "s3://models/r1/model.skops", "s3://models/r1/metadata.json", free_port()
        )
        args[args.index("--model-sha256") + 1] = sha256(trained / contract.MODEL_FILE)
        args[args.index("--metadata-sha256") + 1] = sha256(trained / contract.METADATA_FILE)
        with running_model_server(args, tmp_path / "server.log", env=env) as running:
            status, body = running.get("/readyz")
            assert status == 200
            assert sha256(trained / contract.MODEL_FILE) in body


def test_missing_hashes_are_refused_at_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelgate.server", "--model", str(tmp_path / "m.skops")],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MODELGATE_")},
    )
    assert done.returncode == 2
    assert "missing --model-sha256, --metadata, --metadata-sha256" in done.stderr
    assert "SHA-256 the release recorded" in done.stderr


def verify_env(url: str, trained: Path, **extra: str) -> dict[str, str]:
    predictions = trained / contract.PREDICTIONS_FILE
    metadata = trained / contract.METADATA_FILE
    return {
        "MODELGATE_VERIFY_URL": url,
        "MODELGATE_MODEL_NAME": "credit-risk",
        "MODELGATE_PREDICTIONS_URI": str(predictions),
        "MODELGATE_PREDICTIONS_SHA256": sha256(predictions),
        "MODELGATE_METADATA_URI": str(metadata),
        "MODELGATE_METADATA_SHA256": sha256(metadata),
        "MODELGATE_VERIFY_SAMPLE": "50",
        **extra,
    }


def train_another_model(output: Path) -> Path:
    """A model of the same features that answers differently (a shallow tree)."""
    params = {"estimator": "sklearn.tree.DecisionTreeClassifier", "max_depth": 3,
              "exclude": ["gender"]}  # fmt: skip
    train(contract_env(output, **{contract.PARAMS: json.dumps(params)}))
    return output


def test_verification_passes_for_the_gated_model(
    server: ModelServer, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify_main(verify_env(server.url, trained)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads(lines[0])
    assert (record["rows"], record["mismatches"], record["passed"]) == (50, 0, True)
    assert record["latencyP99Seconds"] > 0
    assert lines[-1].startswith("verified: 0/50 served answers differ")


def test_verification_fails_on_a_swapped_model(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gated predictions are from one model, the server runs another
    (trained with different parameters): skew, exit 1, the first mismatch named."""
    other = train_another_model(tmp_path / "other")
    args = start_args(other / contract.MODEL_FILE, other / contract.METADATA_FILE)
    with running_model_server(args, tmp_path / "server.log") as swapped:
        assert verify_main(verify_env(swapped.url, trained)) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("skew: ")
    assert "served answers differ from the gated predictions" in last
    assert "first: row 0: " in last


def test_a_slow_model_fails_the_latency_limit(
    server: ModelServer, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = verify_env(server.url, trained, MODELGATE_VERIFY_MAX_LATENCY="1ms")
    assert verify_main(env) == 1
    assert "(limit 1 ms)" in capsys.readouterr().out


def test_verification_that_cannot_run_says_why(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = verify_env(f"http://127.0.0.1:{free_port()}", trained)
    env["MODELGATE_PREDICTIONS_SHA256"] = "0" * 64
    assert verify_main(env) == 2
    assert "refusing to load it" in capsys.readouterr().err


def _samples(metrics: str, name: str) -> dict[str, float]:
    """``labels -> value`` of one metric family in an exposition."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name:
                found[",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))] = sample.value
    return found


def test_live_metrics_show_what_the_model_is_asked_and_answers(
    trained: Path, tmp_path: Path
) -> None:
    """Rows, positive rate, scores, values outside training and the drift of
    each feature and of the scores, labelled by model, version and
    environment: evaluation rows drift little, the riskiest rows much."""
    args = start_args(
        trained / contract.MODEL_FILE,
        trained / contract.METADATA_FILE,
        "--environment",
        "staging",
        "--drift-window",
        "400",
    )
    features = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"]
    offline = pd.read_parquet(trained / contract.PREDICTIONS_FILE)
    with running_model_server(args, tmp_path / "server.log") as server:
        status, _ = server.post("/v1/predict", {"instances": rows(offline.head(400), features)})
        assert status == 200
        _, metrics = server.get("/metrics")
        who = "environment=staging,model=credit-risk,version=1.0.0"
        assert _samples(metrics, "modelgate_live_rows_total") == {who: 400.0}
        positives = int((offline.head(400)["y_pred"].astype(str) == "1").sum())
        assert _samples(metrics, "modelgate_live_positive_total") == {who: float(positives)}
        calm = _samples(metrics, "modelgate_live_score_psi")[who]
        feature_psi = _samples(metrics, "modelgate_live_feature_psi")
        assert set(feature_psi) == {f"column={c},{who}" for c in features}
        assert max(feature_psi.values()) < 0.1  # evaluation rows look like training
        assert _samples(metrics, "modelgate_live_window_rows") == {who: 400.0}
        # Shifted traffic: only the riskiest rows, and ages just past training's oldest.
        risky = offline.sort_values("y_score").tail(100)
        shifted = rows(risky, features)
        oldest = float(pd.read_csv(DATA / "train.csv")["age"].max())
        for row in shifted[:10]:
            row["age"] = oldest + 1  # outside the range, inside the tolerance: scored
        for _ in range(4):
            assert server.post("/v1/predict", {"instances": shifted})[0] == 200
        refused = {**shifted[0], "region": "mars"}
        assert server.post("/v1/predict", {"instances": [refused]})[0] == 422
        _, metrics = server.get("/metrics")
        assert _samples(metrics, "modelgate_live_score_psi")[who] > max(1.0, 10 * calm)
        outside = _samples(metrics, "modelgate_live_outside_training_total")
        training = pd.read_csv(DATA / "train.csv")
        sent = pd.DataFrame(shifted)
        expected = {
            f"column={c},environment=staging,kind=range,model=credit-risk,version=1.0.0": 4.0 * n
            for c in ("age", "income", "debt_ratio", "credit_lines", "late_payments")
            if (n := int((~sent[c].between(training[c].min(), training[c].max())).sum()))
        }
        expected[
            "column=region,environment=staging,kind=category,model=credit-risk,version=1.0.0"
        ] = 1.0
        assert outside == expected
        assert (
            expected["column=age,environment=staging,kind=range,model=credit-risk,version=1.0.0"]
            == 40.0
        )
        assert _samples(metrics, "modelgate_live_window_rows") == {who: 400.0}


def test_hostile_bodies_get_400_naming_the_problem(server: ModelServer, trained: Path) -> None:
    """A body nested past what a JSON parser can read, and NaN or Infinity
    (not JSON numbers; a missing value is null), are refused as such; the
    server keeps serving."""
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = call(f"{server.url}/v1/predict", deep)
    assert status == 400
    assert "nests arrays or objects too deeply" in answer["error"]
    good = rows(pd.read_parquet(trained / contract.PREDICTIONS_FILE).head(1), ["age", "income",
        "debt_ratio", "credit_lines", "late_payments", "region"])[0]  # fmt: skip
    for constant in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps({"instances": [good]}).replace(str(good["age"]), constant, 1)
        status, answer = call(f"{server.url}/v1/predict", text.encode())
        assert status == 400, answer
        assert answer["error"].startswith(f"{constant} is not a JSON number")
        assert "send null for a missing value" in answer["error"]
    status, _ = server.post("/v1/predict", {"instances": [good]})
    assert status == 200


def _tensors(frame: pd.DataFrame, features: list[str]) -> list[dict[str, object]]:
    """One Open Inference Protocol input per column, as MLServer's pandas codec sends them."""
    tensors: list[dict[str, object]] = []
    for column in features:
        values = [v.item() if hasattr(v, "item") else v for v in frame[column]]
        text = frame[column].dtype == object
        tensors.append(
            {
                "name": column,
                "shape": [len(values), 1],
                "datatype": "BYTES" if text else "FP64",
                "data": values,
            }
        )
    return tensors


FEATURES = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"]


def test_the_open_inference_protocol_answers_as_v1_does(server: ModelServer, trained: Path) -> None:
    assert server.get("/v2/health/live")[0] == 200
    assert server.get("/v2/health/ready")[0] == 200
    status, body = server.get("/v2")
    assert status == 200
    assert json.loads(body)["name"] == "modelgate"
    status, body = server.get("/v2/models/credit-risk")
    assert status == 200
    described = json.loads(body)
    assert described["versions"] == ["1.0.0"]
    assert [(i["name"], i["datatype"]) for i in described["inputs"]] == [
        ("age", "FP64"), ("income", "FP64"), ("debt_ratio", "FP64"), ("credit_lines", "FP64"),
        ("late_payments", "FP64"), ("region", "BYTES"),
    ]  # fmt: skip
    assert [o["name"] for o in described["outputs"]] == ["predict", "predict_proba"]
    assert server.get("/v2/models/credit-risk/ready")[0] == 200
    offline = pd.read_parquet(trained / contract.PREDICTIONS_FILE).head(7)
    status, answer = server.post(
        "/v2/models/credit-risk/versions/1.0.0/infer",
        {"id": "r-1", "inputs": _tensors(offline, FEATURES)},
    )
    assert status == 200, answer
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        "credit-risk",
        "1.0.0",
        "r-1",
    )
    predict, proba = answer["outputs"]
    assert predict["name"] == "predict"
    assert predict["shape"] == [7]
    assert predict["data"] == offline["y_pred"].astype(str).tolist()
    assert proba["shape"] == [7, 2]
    classes = proba["parameters"]["classes"]
    positive = [proba["data"][2 * row + classes.index("1")] for row in range(7)]
    assert positive == pytest.approx(offline["y_score"].tolist(), abs=1e-12)
    status, answer = server.post(
        "/v2/models/credit-risk/infer",
        {"inputs": _tensors(offline, FEATURES), "outputs": [{"name": "predict"}]},
    )
    assert status == 200
    assert [o["name"] for o in answer["outputs"]] == ["predict"]


def test_open_inference_protocol_requests_that_do_not_fit_say_why(
    server: ModelServer, trained: Path
) -> None:
    offline = pd.read_parquet(trained / contract.PREDICTIONS_FILE).head(3)
    good = _tensors(offline, FEATURES)
    status, answer = server.post("/v2/models/other/infer", {"inputs": good})
    assert status == 404
    assert "this server serves credit-risk version 1.0.0" in answer["error"]
    status, answer = server.post("/v2/models/credit-risk/versions/9/infer", {"inputs": good})
    assert status == 404
    short = [{**good[0], "shape": [4, 1]}, *good[1:]]
    wide = [{**good[0], "shape": [1, 3]}, *good[1:]]
    typed = [{**good[0], "datatype": "FLOAT"}, *good[1:]]
    cases = {
        "shape [4, 1] holds 4 values, data has 3": {"inputs": short},
        "a column is [N] or [N, 1]": {"inputs": wide},
        "datatype 'FLOAT' is not one of": {"inputs": typed},
        "output 'explain' is not one of": {"inputs": good, "outputs": [{"name": "explain"}]},
        '"inputs" must be a non-empty array': {"inputs": []},
    }
    for message, body in cases.items():
        status, answer = server.post("/v2/models/credit-risk/infer", body)
        assert status == 400, (message, answer)
        assert message in answer["error"]
    unknown = [*good, {**good[0], "name": "zip"}]
    status, answer = server.post("/v2/models/credit-risk/infer", {"inputs": unknown})
    assert status == 400  # the protocol's status for a request the model cannot take
    assert answer["column"] == "zip"
