"""A release names exactly one source of its model: training here, or a model
registered in MLflow. The pydantic validators (local mode, the webhook) and
the CRD's CEL rules (the API server) refuse the same documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from modelgate.api.modelrelease import (
    ARTIFACT_IS_SERVED_AS_IMPORTED,
    FEATURES_FOR_ITS_OWN_SERVER,
    MODEL_SERVER_SERVES_REGISTERED,
    NO_TRAINER_PREDICTIONS_WITHOUT_TRAINING,
    ONE_SOURCE,
    ONE_VERSION_OR_ALIAS,
    PICKLE_NEEDS_ITS_OWN_SERVER,
    REGISTERED_IS_REFERENCE_SERVED,
    SERVER_FOR_MODEL_SERVER,
    SERVER_PREDICTIONS_NEED_THE_REFERENCE_SERVER,
    TOKEN_OR_BASIC,
    ModelReleaseSpec,
)
from tests.unit.test_crd_cel import schema_of, violations

DATA = {"train": "t.csv", "evaluation": "e.csv", "target": "y"}
REGISTERED: dict[str, Any] = {
    "model": {"name": "credit-risk", "version": "2.0.0"},
    "serving": "ReferenceServer",
    "mlflow": {
        "trackingUri": "http://mlflow.mlops.svc:5000",
        "name": "credit-risk",
        "alias": "candidate",
        "data": DATA,
    },
    "gate": {"name": "credit-gate"},
    "promotion": {"environments": ["staging"]},
}


def refusals(spec: dict[str, Any]) -> tuple[list[str], str]:
    """The CEL messages and the pydantic error for one spec."""
    cel = violations(schema_of("ModelRelease"), {"spec": spec})
    try:
        ModelReleaseSpec.model_validate(spec)
    except ValidationError as error:
        return cel, str(error)
    return cel, ""


def test_a_registered_model_is_a_valid_source() -> None:
    assert refusals(REGISTERED) == ([], "")
    spec = ModelReleaseSpec.model_validate(REGISTERED)
    assert spec.data.evaluation == "e.csv"
    assert spec.training is None


SERVER = {
    "modelName": "credit-risk",
    "env": [{"name": "MLSERVER_MODEL_URI", "value": "$(MODELGATE_MODEL_FILE)"}],
    "local": {"command": ["mlserver", "start", "$(MODELGATE_MODEL_DIR)"]},
}
SERVED_BY_ITS_OWN: dict[str, Any] = {
    **REGISTERED,
    "serving": "ModelServer",
    "image": "docker.io/seldonio/mlserver:1.7.1-sklearn",
    "server": SERVER,
}


def test_a_registered_model_served_by_a_server_of_its_own_is_valid() -> None:
    assert refusals(SERVED_BY_ITS_OWN) == ([], "")
    spec = ModelReleaseSpec.model_validate(SERVED_BY_ITS_OWN)
    assert spec.served_model_name == "credit-risk"
    assert spec.server is not None
    assert spec.server.local is not None


STORED: dict[str, Any] = {
    **{k: v for k, v in REGISTERED.items() if k != "mlflow"},
    "artifact": {"uri": "s3://models/credit-risk/model.skops", "sha256": "ab" * 32, "data": DATA},
}


def test_a_stored_model_file_is_a_valid_source() -> None:
    assert refusals(STORED) == ([], "")
    spec = ModelReleaseSpec.model_validate(STORED)
    assert spec.artifact is not None
    assert (spec.artifact.format, spec.data.target) == ("Skops", "y")
    pickled = {
        **STORED,
        "serving": "ModelServer",
        "image": "mlserver:1",
        "server": SERVER,
        "artifact": {**STORED["artifact"], "format": "Pickle", "features": ["age", "income"]},
    }
    assert refusals(pickled) == ([], "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(mlflow=REGISTERED["mlflow"]), ONE_SOURCE[1]),
        (lambda s: s.update(serving="Image", image="registry.example.com/m:1"),
         ARTIFACT_IS_SERVED_AS_IMPORTED[1]),
        (lambda s: s["artifact"].update(format="Pickle"), PICKLE_NEEDS_ITS_OWN_SERVER[1]),
        (lambda s: s.update(serving="ModelServer", image="mlserver:1", server=SERVER),
         FEATURES_FOR_ITS_OWN_SERVER[1]),
    ],
)  # fmt: skip
def test_a_bad_stored_source_is_refused_by_both(change: Any, message: str) -> None:
    spec = copy.deepcopy(STORED)
    change(spec)
    cel, error = refusals(spec)
    assert message in cel
    assert message in error


@pytest.mark.parametrize("sha256", ["AB" * 32, "ab" * 31, "sha256:" + "ab" * 32])
def test_an_artifact_digest_is_64_lower_case_hex_digits(sha256: str) -> None:
    spec = copy.deepcopy(STORED)
    spec["artifact"]["sha256"] = sha256
    with pytest.raises(ValidationError, match=r"artifact\.sha256"):
        ModelReleaseSpec.model_validate(spec)


def with_change(change: Any) -> dict[str, Any]:
    spec = copy.deepcopy(REGISTERED)
    change(spec)
    return spec


TRAINING = {"image": "trainer:1", "data": DATA}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(training=TRAINING), ONE_SOURCE[1]),
        (lambda s: s.pop("mlflow"), ONE_SOURCE[1]),
        (lambda s: s["mlflow"].update(version="3"), ONE_VERSION_OR_ALIAS[1]),
        (lambda s: s["mlflow"].pop("alias"), ONE_VERSION_OR_ALIAS[1]),
        (lambda s: s.update(serving="Image", image="registry.example.com/m:1"),
         REGISTERED_IS_REFERENCE_SERVED[1]),
        (lambda s: s.update(serving="ModelServer", image="mlserver:1"), SERVER_FOR_MODEL_SERVER[1]),
        (lambda s: s.update(server=SERVER), SERVER_FOR_MODEL_SERVER[1]),
        (lambda s: (s.pop("mlflow"), s.update(training=TRAINING, serving="ModelServer",
                                               image="mlserver:1", server=SERVER)),
         MODEL_SERVER_SERVES_REGISTERED[1]),
        (lambda s: s["mlflow"].update(credentialsSecret={"name": "mlflow", "tokenKey": "token",
                                                         "usernameKey": "user"}),
         TOKEN_OR_BASIC[1]),
        (lambda s: s["mlflow"].update(credentialsSecret={"name": "mlflow", "usernameKey": "user"}),
         TOKEN_OR_BASIC[1]),
    ],
)  # fmt: skip
def test_a_bad_source_is_refused_by_both(change: Any, message: str) -> None:
    cel, error = refusals(with_change(change))
    assert message in cel
    assert message in error


def test_credentials_by_token_or_by_user_and_password() -> None:
    for secret in (
        {"name": "mlflow", "tokenKey": "token"},
        {"name": "mlflow", "usernameKey": "user", "passwordKey": "password"},
    ):
        assert refusals(
            with_change(lambda s, c=secret: s["mlflow"].update(credentialsSecret=c))
        ) == (
            [],
            "",
        )


def test_the_registered_source_cannot_change() -> None:
    new = with_change(lambda s: s["mlflow"].update(alias="champion"))
    found = violations(schema_of("ModelRelease"), {"spec": new}, {"spec": REGISTERED})
    assert [v for v in found if v.startswith("spec.mlflow is immutable")], found
    # From a registered model to training is another release too.
    trained = with_change(lambda s: (s.pop("mlflow"), s.update(training=TRAINING)))
    found = violations(schema_of("ModelRelease"), {"spec": trained}, {"spec": REGISTERED})
    assert any(v.startswith("spec.mlflow is immutable") for v in found)
    assert any(v.startswith("spec.training is immutable") for v in found)
    # Nor does the server whose answers the gate judged.
    other = copy.deepcopy(SERVED_BY_ITS_OWN)
    other["server"] = {**SERVER, "modelName": "another"}
    found = violations(schema_of("ModelRelease"), {"spec": other}, {"spec": SERVED_BY_ITS_OWN})
    assert any(v.startswith("spec.server is immutable") for v in found), found


TRAINED: dict[str, Any] = {
    **{k: v for k, v in REGISTERED.items() if k != "mlflow"},
    "training": TRAINING,
    "gate": {"name": "credit-gate", "predictionsFrom": "Server"},
}


def test_a_trained_model_may_be_scored_by_the_reference_server() -> None:
    assert refusals(TRAINED) == ([], "")
    assert ModelReleaseSpec.model_validate(TRAINED).scored_by_server
    by_trainer = {**TRAINED, "gate": {"name": "credit-gate", "predictionsFrom": "Trainer"}}
    assert refusals(by_trainer) == ([], "")
    assert not ModelReleaseSpec.model_validate(by_trainer).scored_by_server
    # A registered model is scored by its server anyway; saying so is fine.
    registered = {**REGISTERED, "gate": {"name": "credit-gate", "predictionsFrom": "Server"}}
    assert refusals(registered) == ([], "")
    assert not ModelReleaseSpec.model_validate(registered).scored_by_server


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({**TRAINED, "serving": "Image", "image": "registry.example.com/m:1"},
         SERVER_PREDICTIONS_NEED_THE_REFERENCE_SERVER[1]),
        ({**REGISTERED, "gate": {"name": "credit-gate", "predictionsFrom": "Trainer"}},
         NO_TRAINER_PREDICTIONS_WITHOUT_TRAINING[1]),
    ],
)  # fmt: skip
def test_predictions_from_a_source_that_has_none_are_refused_by_both(
    spec: dict[str, Any], message: str
) -> None:
    cel, error = refusals(spec)
    assert message in cel
    assert message in error
