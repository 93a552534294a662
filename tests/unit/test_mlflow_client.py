"""What the MLflow registry client decides without a server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelgate.backends.mlflow import (
    FetchedFile,
    FetchedModel,
    MlflowError,
    MlflowRegistry,
    RegisteredVersion,
)


def test_credentials_become_one_authorization_header() -> None:
    assert MlflowRegistry.auth_headers(token="abc\n") == {"Authorization": "Bearer abc"}
    assert MlflowRegistry.auth_headers(username="ml", password="pw") == {
        "Authorization": "Basic bWw6cHc="
    }
    assert MlflowRegistry.auth_headers() == {}


def test_the_digest_names_every_file_whatever_the_listing_order() -> None:
    a, b = FetchedFile("MLmodel", "1" * 64, 10), FetchedFile("model.skops", "2" * 64, 20)
    one, other = FetchedModel(Path("x"), (a, b)), FetchedModel(Path("y"), (b, a))
    expected = f"{'1' * 64}  MLmodel\n{'2' * 64}  model.skops\n"
    assert one.digest == other.digest == hashlib.sha256(expected.encode()).hexdigest()
    changed = FetchedModel(Path("x"), (a, FetchedFile("model.skops", "3" * 64, 20)))
    assert changed.digest != one.digest


def test_an_answer_without_a_model_version_is_refused() -> None:
    with pytest.raises(MlflowError, match="no model_version"):
        RegisteredVersion.from_answer({"registered_model": {}})
