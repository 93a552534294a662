"""How a model server of the release's own is told what to serve: Kubernetes'
``$(VAR)`` expansion and the command's wire form, bad forms refused by name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelgate.backends.local import LocalServers
from modelgate.serving.runtime import (
    ModelServerCommand,
    expand,
    server_environment,
)
from modelgate.trainer import contract


def test_expansion_is_kubernetes_own() -> None:
    env = {"PORT": "8080", "DIR": "/mnt/models"}
    assert expand("$(DIR)/model.pkl", env) == "/mnt/models/model.pkl"
    assert expand("--port=$(PORT)", env) == "--port=8080"
    assert expand("$(UNKNOWN)", env) == "$(UNKNOWN)"  # left as written
    assert expand("$$(PORT)", env) == "$(PORT)"  # escaped
    assert expand("cost: $5", env) == "cost: $5"


def test_the_server_is_told_the_contract_then_its_own_values_in_order(tmp_path: Path) -> None:
    spec = ModelServerCommand(
        command=("server",),
        model_name="m",
        env=(("A", "$(MODELGATE_HTTP_PORT)"), ("B", "$(A)-$(MODELGATE_MODEL_FILE)")),
    )
    env = server_environment(spec, tmp_path / "model.pkl", (1, 2, 3))
    assert env["MODELGATE_MODEL_DIR"] == str(tmp_path)
    assert (env["MODELGATE_HTTP_PORT"], env["MODELGATE_GRPC_PORT"]) == ("1", "2")
    assert env["MODELGATE_METRICS_PORT"] == "3"
    assert env["A"] == "1"
    assert env["B"] == f"1-{tmp_path / 'model.pkl'}"


def test_the_wire_form_round_trips() -> None:
    spec = ModelServerCommand(
        ("mlserver", "start", "."),
        "credit-risk",
        (("K", "v"),),
        "model.joblib",
        ("mlserver",),
        ("start", "/mnt/models"),
    )
    assert ModelServerCommand.from_wire(spec.wire(), "X") == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "X is not JSON"),
        ("[]", "X must be a JSON object"),
        ('{"command": "s", "modelName": "m"}', "X.command must be a list of non-empty"),
        ('{"command": [""], "modelName": "m"}', "X.command must be a list of non-empty"),
        ('{"containerArgs": [1], "modelName": "m"}', "X.containerArgs must be a list"),
        ('{"modelName": "m", "modelFile": "a/b.pkl"}', "X.modelFile must be a file name"),
        ('{"command": ["s"]}', "X.modelName must name the model"),
        ('{"command": ["s"], "modelName": "m", "env": [{"name": "A"}]}', r"X.env\[0\]"),
        ('{"command": ["s"], "modelName": "m", "env": {"A": "1"}}', r"X.env\[0\]"),
    ],
)
def test_a_bad_wire_form_names_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelServerCommand.from_wire(text, "X")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("/nonexistent/model-server", "start"), "/nonexistent/model-server"),
        ((), "spec.server.local.command"),
    ],
)
def test_a_local_server_that_cannot_start_is_recorded_as_failed_saying_why(
    tmp_path: Path, command: tuple[str, ...], message: str
) -> None:
    """Local mode, as a pod that cannot start: nothing crashes, the record
    (which the rollout waits on) says why."""
    model = tmp_path / "model.pkl"
    model.write_bytes(b"not loaded here")
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"servedBy": {"modelFile": "model.pkl"}}))
    config = {
        contract.SERVER_MODEL_URI: str(model),
        contract.SERVER_MODEL_SHA256: hashlib.sha256(model.read_bytes()).hexdigest(),
        contract.SERVER_METADATA_URI: str(metadata),
        contract.SERVER_METADATA_SHA256: hashlib.sha256(metadata.read_bytes()).hexdigest(),
        contract.MODEL_SERVER: ModelServerCommand(command, "m").wire(),
    }
    servers = LocalServers(tmp_path / "state")
    record = servers.start("default", "staging", config)
    assert record["state"] == "failed"
    assert "the model server cannot start" in record["message"]
    assert message in record["message"]
    assert servers.url("default", "staging") is None
