"""Local mode releases a model file that was trained elsewhere and stored:
taken by its URI once its SHA-256 matches, imported (described, scored by
the server that will serve it) and released like a trained model; a file
whose digest differs is refused and nothing is deployed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgate.cli import main
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.integration.test_localmode import (
    ENVS,
    GATE,
    SAMPLE_DATA,
    conditions,
    items,
    run_json,
)
from tests.unit.test_trainer import contract_env


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """credit-risk trained elsewhere (the reference trainer, on the sample
    data); its skops file is what a team would have stored."""
    trained = tmp_path_factory.mktemp("trained")
    train(contract_env(trained))
    return trained / contract.MODEL_FILE


def release_file(folder: Path, artifact: dict[str, Any]) -> Path:
    document = {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": "credit-risk-stored"},
        "spec": {
            "model": {"name": "credit-risk", "version": "4.0.0"},
            "serving": "ReferenceServer",
            "artifact": {
                **artifact,
                "data": dict(SAMPLE_DATA),
            },
            "gate": {"name": "credit-gate"},
            "promotion": {"environments": ["staging"]},
        },
    }
    path = folder / "release.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_stored_model_file_is_imported_gated_and_released(
    stored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    # A relative path is relative to the manifest, as data paths are.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.skops").write_bytes(stored.read_bytes())
    release = release_file(tmp_path, {"uri": "models/model.skops", "sha256": digest})
    state = tmp_path / "state"
    try:
        code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", state)
        found = items(listing, "ModelRelease")["credit-risk-stored"]
        status = found["status"]
        assert code == 0, conditions(found)["Ready"]
        assert status["phase"] == "Released"
        states = {c: v["status"] for c, v in conditions(found).items()}
        assert states.items() >= {
            "Trained": "True", "GatePassed": "True", "Verified": "True", "Ready": "True",
        }.items()  # fmt: skip
        artifacts = {a["name"]: a for a in status["artifacts"]}
        assert artifacts["model"]["sha256"] == digest  # the stored file, as it is
        metadata = json.loads(
            Path(artifacts["metadata"]["uri"].removeprefix("file://")).read_text()
        )
        assert metadata["source"]["artifact"] == {
            "uri": str(tmp_path / "models" / "model.skops"),
            "sha256": digest,
            "format": "Skops",
            "size": stored.stat().st_size,
        }
        assert metadata["classes"] == ["0", "1"]
        assert "source" not in status  # nothing resolved: the spec names the file
    finally:
        main(["stop", "--state-dir", str(state)])


def test_a_file_whose_digest_differs_is_refused_and_nothing_deployed(
    stored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = release_file(tmp_path, {"uri": str(stored), "sha256": "0" * 64})
    code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", tmp_path / "state")
    found = items(listing, "ModelRelease")["credit-risk-stored"]
    assert code == 1
    trained = conditions(found)["Trained"]
    assert trained["status"] == "False"
    assert f"the artifact {stored} has SHA-256 " in trained["message"]
    assert f"the release recorded {'0' * 64}" in trained["message"]
    assert not found["status"].get("environments")
    assert not found["status"].get("gate")
