"""The registry client against a real MLflow tracking server: a registered
credit-risk model is resolved by version and by alias, its aliases and tags
are kept in step, its files fetched with one digest; failures are classified."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from modelgate.backends.mlflow import MlflowError, MlflowRegistry, perform_sync
from modelgate.promotion.plan import SyncRegistry
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.support.mlflow_server import MlflowServer, running_mlflow
from tests.support.s3server import free_port
from tests.unit.test_trainer import contract_env

NAME = "credit-risk"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def versions(mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two versions of credit-risk, logged as a team training elsewhere would."""
    trained = tmp_path_factory.mktemp("trained")
    train(contract_env(trained))
    work = tmp_path_factory.mktemp("register")
    return [mlflow.register_sklearn(trained / contract.MODEL_FILE, NAME, work) for _ in range(2)]


def test_a_version_and_an_alias_resolve_to_one_ready_version(
    mlflow: MlflowServer, versions: list[str]
) -> None:
    registry = MlflowRegistry(mlflow.url)
    first = registry.resolve(NAME, versions[0], None)
    assert (first.name, first.version, first.status) == (NAME, versions[0], "READY")
    assert first.run_id
    assert first.source
    registry.set_alias(NAME, "champion", versions[1])
    by_alias = registry.resolve(NAME, None, "champion")
    assert by_alias.version == versions[1]
    assert "champion" in by_alias.aliases


def test_aliases_move_and_tags_are_kept(mlflow: MlflowServer, versions: list[str]) -> None:
    registry = MlflowRegistry(mlflow.url)
    registry.set_alias(NAME, "production", versions[1])
    registry.set_tags(NAME, versions[1], {"modelgate.dev/release": "team/credit-risk-v2"})
    assert registry.by_alias(NAME, "production").version == versions[1]
    assert registry.version(NAME, versions[1]).tags["modelgate.dev/release"] == (
        "team/credit-risk-v2"
    )
    # A rollback moves the alias back.
    registry.set_alias(NAME, "production", versions[0])
    assert registry.by_alias(NAME, "production").version == versions[0]
    registry.delete_alias(NAME, "production")
    registry.delete_alias(NAME, "production")  # already gone: fine
    with pytest.raises(MlflowError, match="alias production not found") as gone:
        registry.by_alias(NAME, "production")
    assert not gone.value.transient


def test_a_versions_files_are_fetched_with_one_digest(
    mlflow: MlflowServer, versions: list[str], tmp_path: Path
) -> None:
    registry = MlflowRegistry(mlflow.url)
    fetched = registry.fetch(NAME, versions[0], tmp_path / "model")
    names = {f.path for f in fetched.files}
    assert {"MLmodel", "model.skops"} <= names
    for entry in fetched.files:
        data = (tmp_path / "model" / entry.path).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry.sha256, entry.size)
    again = registry.fetch(NAME, versions[0], tmp_path / "again")
    assert again.digest == fetched.digest
    assert len(fetched.digest) == 64


def test_what_does_not_exist_is_permanent_and_a_server_that_is_down_transient(
    mlflow: MlflowServer, versions: list[str]
) -> None:
    registry = MlflowRegistry(mlflow.url)
    with pytest.raises(MlflowError, match=r"model nope version 1: MLflow answered 404") as missing:
        registry.resolve("nope", "1", None)
    assert not missing.value.transient
    with pytest.raises(MlflowError, match="exactly one of a version or an alias"):
        registry.resolve(NAME, versions[0], "champion")
    down = MlflowRegistry(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(MlflowError, match="did not answer") as unreachable:
        down.resolve(NAME, versions[0], None)
    assert unreachable.value.transient


def sync(rolled_back: bool, version: str) -> SyncRegistry:
    return SyncRegistry(
        environment="production", tracking_uri="", name=NAME, alias="production",
        version=version, rolled_back=rolled_back, tags=(("modelgate.dev/release", "team/r"),),
    )  # fmt: skip


def test_a_rollback_moves_the_alias_back_or_away_and_never_takes_anothers(
    mlflow: MlflowServer, versions: list[str]
) -> None:
    registry = MlflowRegistry(mlflow.url)
    live = replace(sync(False, versions[1]), tracking_uri=mlflow.url)
    assert perform_sync(live, {}, None) == (
        True, f"alias production names version {versions[1]}", versions[1],
    )  # fmt: skip
    assert registry.version(NAME, versions[1]).tags["modelgate.dev/release"] == "team/r"
    back = replace(live, rolled_back=True, tags=())
    assert perform_sync(back, {}, versions[0]) == (
        True, f"alias production moved back to version {versions[0]}", versions[0],
    )  # fmt: skip
    assert registry.by_alias(NAME, "production").version == versions[0]
    # The alias names another release's version now: a late rollback leaves it.
    assert perform_sync(back, {}, None)[1] == (
        f"alias production names version {versions[0]}, not this one: left so"
    )
    registry.set_alias(NAME, "production", versions[1])
    assert perform_sync(back, {}, None) == (
        True, "alias production removed (no registered version was put back)", None,
    )  # fmt: skip
    with pytest.raises(MlflowError, match="not found"):
        registry.by_alias(NAME, "production")
    down = replace(live, tracking_uri=f"http://127.0.0.1:{free_port()}")
    ok, message, _ = perform_sync(down, {}, None)
    assert not ok
    assert message.startswith("credit-risk@production: MLflow at http://127.0.0.1:")
