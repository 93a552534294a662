"""The operator's manifests: valid Kubernetes objects, restricted pods, stable names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends import manifests
from modelgate.promotion import Deploy, StartTraining, StartVerification
from modelgate.settings import OperatorSettings
from tests.unit.test_reconcile import make_release

SETTINGS = OperatorSettings(s3_endpoint="http://s3.local:9000", s3_path_style=True)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
PREDICTIONS = ArtifactRecord(name="predictions", uri="s3://b/k", sha256="1" * 64, size=3)


def release() -> Any:
    built = make_release()
    return built.model_copy(update={"metadata": built.metadata.model_copy(update={"uid": "u-1"})})


def training_job() -> dict[str, Any]:
    action = StartTraining(
        job_name="m-1-train-abcd1234",
        key="abcd1234abcd1234",
        image="trainer:1",
        command=("python", "-m", "modelgate.trainer"),
        args=(),
        env={"MODELGATE_TARGET": "y"},
    )
    return manifests.build_training_job(release(), action, SETTINGS)


def deploy_action() -> Deploy:
    return Deploy(
        environment="production",
        namespace="ml-prod",
        release="team/m-1",
        model="credit-risk",
        image="registry.example.com/m@sha256:" + "ab" * 32,
        config={"URL": "https://prod.example.com"},
        config_hash="c" * 64,
        predictions=PREDICTIONS,
    )


def verification_job() -> dict[str, Any]:
    action = StartVerification(
        job_name="m-1-verify-1234abcd",
        environment="production",
        namespace="ml-prod",
        release="team/m-1",
        model="credit-risk",
        image="verify:1",
        command=("verify",),
        args=(),
        timeout=timedelta(minutes=10),
        predictions=PREDICTIONS,
    )
    return manifests.build_verification_job(action, SETTINGS)


def every_object() -> list[dict[str, Any]]:
    action = deploy_action()
    return [
        training_job(),
        verification_job(),
        manifests.build_deployment(action, SETTINGS, NOW),
        manifests.build_service(action, SETTINGS),
        manifests.build_configmap(action),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    for obj in every_object():
        kubernetes_validate.validate(obj, version, strict=True)


def test_pods_are_restricted() -> None:
    for obj in every_object():
        if obj["kind"] not in ("Job", "Deployment"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}


def test_training_job_contract_and_ownership() -> None:
    job = training_job()
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "name": "m-1",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    assert job["spec"]["backoffLimit"] == 1
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELGATE_OUTPUT_URI"]["value"] == (
        "s3://modelgate-artifacts/modelgate/runs/team/m-1-train-abcd1234"
    )
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "modelgate-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["MODELGATE_S3_PATH_STYLE"]["value"] == "true"


def test_deployment_records_what_is_live_and_selects_its_pods() -> None:
    deployment = manifests.build_deployment(deploy_action(), SETTINGS, NOW)
    annotations = deployment["metadata"]["annotations"]
    assert annotations["modelgate.dev/release"] == "team/m-1"
    assert annotations["modelgate.dev/deployed-at"] == "2026-11-22T12:00:00Z"
    assert (
        manifests.predictions_from_annotation(annotations["modelgate.dev/predictions"])
        == PREDICTIONS
    )
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in selector.items())
    service = manifests.build_service(deploy_action(), SETTINGS)
    assert service["spec"]["selector"] == selector
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"configMapRef": {"name": "credit-risk-production-config"}}]


def test_snapshot_and_restore_round_trip() -> None:
    deployment = manifests.build_deployment(deploy_action(), SETTINGS, NOW)
    config = manifests.build_configmap(deploy_action())
    previous = manifests.parse_snapshot(manifests.snapshot(deployment, config))
    assert previous is not None
    assert previous["image"] == deploy_action().image
    later = NOW + timedelta(hours=1)
    restored = manifests.restore(deployment, previous, later)
    container = restored["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == deploy_action().image
    assert restored["metadata"]["annotations"]["modelgate.dev/previous"] is None
    assert manifests.restored_configmap(deployment, previous)["data"] == {
        "URL": "https://prod.example.com"
    }
    assert manifests.parse_snapshot("not json") is None


def test_long_names_stay_valid_and_deterministic() -> None:
    long = "a" * 60
    name = manifests.dns_name(long, "production", "config")
    assert len(name) <= 63
    assert name == manifests.dns_name(long, "production", "config")
    assert name != manifests.dns_name(long, "staging", "config")
