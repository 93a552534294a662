"""The operator releases a model file that was trained elsewhere and stored
in the artifact store, on the real control plane: the import Job (run by the
test node) reads it from S3, refuses it unless its SHA-256 matches, and
scores it through the reference server for the gate."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from modelgate.backends.s3 import S3Settings, make_client
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.realcluster.conftest import BUCKET, Team, conditions
from tests.support.s3server import S3Server
from tests.unit.test_trainer import contract_env


def stored_release(team: Team, name: str, sha256: str) -> dict:
    document = team.release_document(name=name)
    spec = document["spec"]
    training = spec.pop("training")
    spec["model"]["version"] = "4.0.0"
    spec["artifact"] = {
        "uri": f"s3://{BUCKET}/models/credit-risk/model.skops",
        "sha256": sha256,
        "data": training["data"],
    }
    spec["promotion"] = {"environments": ["staging"]}
    return document


def test_the_operator_releases_a_stored_model_file_and_refuses_another_digest(
    new_team: Callable[..., Team], s3: S3Server, tmp_path: Path
) -> None:
    trained = tmp_path / "trained"
    train(contract_env(trained))
    model = (trained / contract.MODEL_FILE).read_bytes()
    store = make_client(S3Settings(bucket=BUCKET, endpoint_url=s3.endpoint, path_style=True))
    store.put_object(Bucket=BUCKET, Key="models/credit-risk/model.skops", Body=model)
    digest = hashlib.sha256(model).hexdigest()

    team = new_team()
    team.create(stored_release(team, "credit-risk-stored", digest))
    team.create(stored_release(team, "credit-risk-tampered", "0" * 64))
    release = team.wait_phase("credit-risk-stored", "Released", timeout=300)
    found = conditions(release)
    assert found["GatePassed"]["status"] == "True"
    assert found["Verified"]["status"] == "True"
    artifacts = {a["name"]: a for a in release["status"]["artifacts"]}
    assert artifacts["model"]["sha256"] == digest  # the stored file, as it is
    assert release["status"]["training"]["jobName"].startswith("credit-risk-stored-train-")

    refused = team.wait_phase("credit-risk-tampered", "Failed", timeout=300)
    trained_condition = conditions(refused)["Trained"]
    assert trained_condition["status"] == "False"
    assert f"the release recorded {'0' * 64}" in trained_condition["message"]
    assert not refused["status"].get("environments")
