"""The serving pod's first step: the release's model file, checked against its
SHA-256, laid out where the model server looks (never parsed here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelgate.layout import LayoutError, lay_out, main
from modelgate.serving.runtime import MODEL_FILE
from modelgate.trainer import contract


def _env(artifact: Path, sha256: str, target: Path) -> dict[str, str]:
    return {
        contract.SERVER_MODEL_URI: f"file://{artifact}",
        contract.SERVER_MODEL_SHA256: sha256,
        MODEL_FILE: str(target),
    }


def test_the_checked_file_is_laid_out_whole_under_the_contract_name(tmp_path: Path) -> None:
    artifact = tmp_path / "store" / "model.served"
    artifact.parent.mkdir()
    artifact.write_bytes(b"\x80\x04pickled bytes nobody here unpickles")
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    target = tmp_path / "models" / "model.pkl"
    assert lay_out(_env(artifact, digest, target)) == target
    assert target.read_bytes() == artifact.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pkl"]  # no partial left


def test_a_file_that_is_not_the_recorded_one_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = tmp_path / "model.served"
    artifact.write_bytes(b"swapped")
    target = tmp_path / "models" / "model.pkl"
    with pytest.raises(LayoutError, match="the release recorded " + "a" * 64):
        lay_out(_env(artifact, "a" * 64, target))
    assert not target.exists()
    for name, value in _env(artifact, "a" * 64, target).items():
        monkeypatch.setenv(name, value)
    assert main() == 2
    assert "refusing to load it" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "missing environment variables: MODELGATE_MODEL_URI, MODELGATE_MODEL_SHA256"),
        (
            {
                contract.SERVER_MODEL_URI: "file:///nonexistent/model.served",
                contract.SERVER_MODEL_SHA256: "a" * 64,
                MODEL_FILE: "/tmp/m/model.pkl",
            },
            "the model file:///nonexistent/model.served cannot be read",
        ),
    ],
)
def test_what_is_missing_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        lay_out(env)
