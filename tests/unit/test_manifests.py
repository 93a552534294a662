"""The operator's manifests: valid Kubernetes objects, restricted pods, stable names."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from modelgate.api.modelrelease import ArtifactRecord, Evaluation
from modelgate.backends import challenger_manifests, manifests
from modelgate.promotion import Deploy, StartTraining, StartVerification, keys
from modelgate.promotion.plan import SetTraffic
from modelgate.serving.runtime import ModelServerCommand
from modelgate.settings import OperatorSettings
from modelgate.trainer import contract
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


def verification_job(attempts: int = 1) -> dict[str, Any]:
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
        attempts=attempts,
    )
    return manifests.build_verification_job(action, SETTINGS)


def reference_deploy_action() -> Deploy:
    """Serving ReferenceServer: the operator's image runs the model server."""
    return Deploy(
        environment="production",
        namespace="ml-prod",
        release="team/m-1",
        model="credit-risk",
        image="ghcr.io/modelgate/modelgate@sha256:" + "cd" * 32,
        config={
            "URL": "https://prod.example.com",
            "MODELGATE_MODEL_URI": "s3://b/modelgate/sha256/22/" + "2" * 64,
            "MODELGATE_MODEL_SHA256": "2" * 64,
        },
        config_hash="d" * 64,
        predictions=PREDICTIONS,
        command=("python", "-m", "modelgate.server"),
    )


def evaluation_job() -> dict[str, Any]:
    settings = OperatorSettings(
        s3_endpoint="http://s3.local:9000", s3_path_style=True, server_image="modelgate:1"
    )
    return manifests.build_evaluation_job(release(), "m-1-eval-0123456789", "{}", settings)


def test_the_evaluation_job_runs_the_evaluator_sized_for_data_with_store_access() -> None:
    job = evaluation_job()
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "evaluation"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelRelease"
    assert job["spec"]["backoffLimit"] == 0
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "modelgate:1"
    assert container["command"] == ["python", "-m", "modelgate.evaluate"]
    assert container["resources"]["limits"]["memory"] == "4Gi"
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELGATE_EVALUATION"]["value"] == "{}"
    assert env["MODELGATE_OUTPUT_URI"]["value"] == (
        "s3://modelgate-artifacts/modelgate/evaluations/team/m-1-eval-0123456789"
    )
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "modelgate-s3"


MLSERVER_IMAGE = "docker.io/seldonio/mlserver:1.7.1-sklearn@sha256:" + "5e" * 32
SERVER = {
    "modelName": "credit-risk",
    "modelFile": "model.joblib",
    "command": ["mlserver", "start", "$(MODELGATE_MODEL_DIR)"],
    "env": [{"name": "MLSERVER_MODEL_URI", "value": "$(MODELGATE_MODEL_FILE)"}],
}
SERVER_SETTINGS = OperatorSettings(server_image="ghcr.io/modelgate/modelgate:0.1")


def model_server_release() -> Any:
    built = make_release(
        training=None,
        serving="ModelServer",
        image=MLSERVER_IMAGE,
        server=SERVER,
        mlflow={
            "trackingUri": "http://mlflow.ml:5000",
            "name": "credit-risk",
            "version": "3",
            "data": {"train": "train.csv", "evaluation": "eval.csv", "target": "y"},
        },
    )
    return built.model_copy(update={"metadata": built.metadata.model_copy(update={"uid": "u-2"})})


def model_server_import_job() -> dict[str, Any]:
    release = model_server_release()
    command = keys.model_server_command(release)
    assert command is not None
    action = StartTraining(
        job_name="m-1-train-abcd1234",
        key="abcd1234abcd1234",
        image="ghcr.io/modelgate/modelgate:0.1",
        command=keys.IMPORT_COMMAND,
        args=(),
        env={"MODELGATE_TARGET": "y", contract.MODEL_SERVER: command.wire()},
    )
    return manifests.build_training_job(release, action, SERVER_SETTINGS)


def model_server_deploy_action() -> Deploy:
    release = model_server_release()
    model = ArtifactRecord(name="model", uri="s3://b/model.served", sha256="2" * 64, size=9)
    return Deploy(
        environment="production",
        namespace="ml-prod",
        release="team/m-1",
        model="credit-risk",
        image=MLSERVER_IMAGE,
        config={"URL": "https://prod.example.com", **keys.serving_config(release, [model])},
        config_hash="e" * 64,
        predictions=PREDICTIONS,
    )


def test_the_import_job_of_a_model_server_runs_it_as_a_sidecar_on_the_fetched_model() -> None:
    pod = model_server_import_job()["spec"]["template"]["spec"]
    fetch, server = pod["initContainers"]
    [importer] = pod["containers"]
    # First the model is fetched and checked into the shared volume ...
    assert (fetch["image"], fetch["command"], fetch["args"]) == (
        "ghcr.io/modelgate/modelgate:0.1",
        ["python", "-m", "modelgate.importer"],
        ["fetch"],
    )
    fetch_env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert fetch_env["MODELGATE_MODEL_DIR"] == "/mnt/models"
    assert {"name": "models", "mountPath": "/mnt/models"} in fetch["volumeMounts"]
    # ... the server runs on it beside the import run (a native sidecar) ...
    assert server["restartPolicy"] == "Always"
    assert (server["image"], server["command"]) == (MLSERVER_IMAGE, SERVER["command"])
    server_env = [(e["name"], e["value"]) for e in server["env"]]
    assert server_env[:2] == [
        ("MODELGATE_MODEL_DIR", "/mnt/models"),
        ("MODELGATE_MODEL_FILE", "/mnt/models/model.joblib"),
    ]
    # the release's own env comes after the contract's, so it may name it
    assert server_env[-1] == ("MLSERVER_MODEL_URI", "$(MODELGATE_MODEL_FILE)")
    assert server["readinessProbe"]["httpGet"] == {
        "path": "/v2/models/credit-risk/ready",
        "port": "http",
    }
    assert {"name": "models", "mountPath": "/mnt/models", "readOnly": True} in server[
        "volumeMounts"
    ]
    # ... and the import run asks it, loading nothing itself.
    env = {e["name"]: e.get("value") for e in importer["env"]}
    assert env["MODELGATE_MODEL_SERVER_URL"] == "http://localhost:8080"
    assert "args" not in importer
    assert {v["name"] for v in pod["volumes"]} == {"work", "tmp", "models"}


def test_a_model_server_deployment_lays_the_checked_model_out_before_serving_it() -> None:
    deployment = manifests.build_deployment(model_server_deploy_action(), SERVER_SETTINGS, NOW)
    pod = deployment["spec"]["template"]["spec"]
    [layout] = pod["initContainers"]
    [server] = pod["containers"]
    assert (layout["image"], layout["command"]) == (
        "ghcr.io/modelgate/modelgate:0.1",
        ["python", "-m", "modelgate.layout"],
    )
    assert {e["name"]: e.get("value") for e in layout["env"]}["MODELGATE_MODEL_FILE"] == (
        "/mnt/models/model.joblib"
    )
    # The layout reads the artifact and its SHA-256 from the environment's ConfigMap.
    assert layout["envFrom"] == server["envFrom"]
    assert (server["name"], server["image"]) == ("model", MLSERVER_IMAGE)
    assert server["ports"][0] == {"name": "http", "containerPort": 8080}
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/models/credit-risk/ready"
    # Alive while the protocol's own health endpoint answers (the reference
    # server's /healthz is not its).
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["resources"] == OperatorSettings().workloads["serving"]
    config = model_server_deploy_action().config
    assert config["MODELGATE_MODEL_SHA256"] == "2" * 64
    assert ModelServerCommand.from_wire(config[contract.MODEL_SERVER], "x").model_file == (
        "model.joblib"
    )


# A sticky split: through the router, behind a Gateway's HTTPRoute.
ROUTED_SPLIT = SetTraffic(
    environment="production", namespace="ml-prod", model="credit-risk", champion="team/m-1",
    challenger="team/m-2", weight=50, sticky_header="x-user-id",
    gateway=("public", "ml-prod", None), hostnames=("credit.example.com",),
)  # fmt: skip


def every_object() -> list[dict[str, Any]]:
    action = deploy_action()
    return [
        training_job(),
        model_server_import_job(),
        manifests.build_deployment(model_server_deploy_action(), SERVER_SETTINGS, NOW),
        verification_job(),
        evaluation_job(),
        manifests.build_deployment(action, SETTINGS, NOW),
        manifests.build_deployment(reference_deploy_action(), SETTINGS, NOW),
        manifests.build_service(action, SETTINGS),
        manifests.build_configmap(action),
        *challenger_manifests.build_challenger(
            replace(action, challenger=True, release="team/m-2"), SETTINGS, NOW
        ),
        *challenger_manifests.build_router(ROUTED_SPLIT, SERVER_SETTINGS),
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
        for container in pod["containers"] + pod.get("initContainers", []):
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


def test_the_reference_server_deployment_runs_the_server_with_store_access() -> None:
    settings = OperatorSettings(
        s3_endpoint="http://s3.local:9000", s3_path_style=True, s3_secret="modelgate-s3"
    )
    deployment = manifests.build_deployment(reference_deploy_action(), settings, NOW)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "modelgate.server"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELGATE_SERVER_PORT"]["value"] == str(settings.model_port)
    assert env["MODELGATE_S3_ENDPOINT"]["value"] == "http://s3.local:9000"
    # Keys by reference, optional: a pod identity may stand in for them.
    key = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "modelgate-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # An image-served model keeps its image's own command and environment.
    [plain] = manifests.build_deployment(deploy_action(), settings, NOW)["spec"]["template"][
        "spec"
    ]["containers"]
    assert "command" not in plain
    assert "env" not in plain


def test_a_verification_that_could_not_check_is_tried_again_and_a_failed_model_is_final() -> None:
    assert verification_job(attempts=1)["spec"]["backoffLimit"] == 0
    spec = verification_job(attempts=3)["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # the policy needs it
    final, lost = spec["podFailurePolicy"]["rules"]
    assert final == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "verify", "operator": "In", "values": [1]},
    }
    assert lost == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }


def test_the_built_in_verification_job_carries_its_settings() -> None:
    action = StartVerification(
        job_name="m-1-verify-1234abcd",
        environment="production",
        namespace="ml-prod",
        release="team/m-1",
        model="credit-risk",
        image="ghcr.io/modelgate/modelgate@sha256:" + "cd" * 32,
        command=("python", "-m", "modelgate.verify"),
        args=(),
        timeout=timedelta(minutes=10),
        predictions=PREDICTIONS,
        env=(("MODELGATE_VERIFY_SAMPLE", "50"),),
    )
    job = manifests.build_verification_job(action, SETTINGS)
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELGATE_VERIFY_SAMPLE"] == "50"
    assert env["MODELGATE_PREDICTIONS_SHA256"] == PREDICTIONS.sha256
    assert env["MODELGATE_VERIFY_URL"] == "http://credit-risk-production.ml-prod.svc"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def _deployment(generation: int, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "generation": generation},
        "spec": {"replicas": 1},
        "status": status,
    }


def test_a_rollout_is_complete_only_when_no_old_pod_serves() -> None:
    # Found on the real Deployment controller: mid-rollout the old pod is
    # still available, and a verification then judged the old model.
    mid = _deployment(2, observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1)
    assert manifests.rollout_pending(mid) == "Deployment m: 1 old replicas pending termination"
    unseen = _deployment(
        3, observedGeneration=2, replicas=1, updatedReplicas=1, availableReplicas=1
    )
    assert manifests.rollout_pending(unseen) == "Deployment m: rollout not observed yet"
    starting = _deployment(2, observedGeneration=2, replicas=1, updatedReplicas=1)
    assert manifests.rollout_pending(starting) == "Deployment m: 0 of 1 replicas available"
    done = _deployment(2, observedGeneration=2, replicas=1, updatedReplicas=1, availableReplicas=1)
    assert manifests.rollout_pending(done) is None


def test_the_evaluation_job_is_sized_and_timed_by_spec_evaluation() -> None:
    settings = OperatorSettings(server_image="modelgate:1")
    sized = Evaluation.model_validate(
        {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}, "deadline": "3h"}
    )
    job = manifests.build_evaluation_job(release(), "m-1-eval-0", "{}", settings, sized)
    [container] = job["spec"]["template"]["spec"]["containers"]
    # What the release sizes is its own; the operator's defaults fill the
    # rest (memory: named by the release, so no default limit under it).
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "1Gi"},
        "limits": {"ephemeral-storage": "8Gi"},
    }
    assert job["spec"]["activeDeadlineSeconds"] == 3 * 3600
    default = manifests.build_evaluation_job(release(), "m-1-eval-0", "{}", settings)
    [container] = default["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "4Gi", "ephemeral-storage": "8Gi"},
    }
    assert default["spec"]["activeDeadlineSeconds"] == 3600


def test_a_sharded_evaluation_is_an_indexed_job_and_a_merge_job_sharing_one_output() -> None:
    settings = OperatorSettings(server_image="modelgate:1", s3_bucket="b")
    sharded = Evaluation(parallelism=3)
    shards = manifests.build_evaluation_job(
        release(), "m-1-evs-0", "{}", settings, sharded, shards=3, output_job="m-1-eval-0"
    )
    merge = manifests.build_evaluation_job(
        release(), "m-1-eval-0", "{}", settings, sharded, merge=3
    )
    for job in (shards, merge):
        for version in VERSIONS:
            kubernetes_validate.validate(job, version, strict=True)
    spec = shards["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert "completionMode" not in merge["spec"]

    def env(job: dict[str, Any]) -> dict[str, str]:
        [container] = job["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e["value"] for e in container["env"] if "value" in e}

    assert env(shards)["MODELGATE_SHARDS"] == "3"
    assert "MODELGATE_MERGE" not in env(shards)
    assert env(merge)["MODELGATE_MERGE"] == "3"
    assert env(shards)["MODELGATE_OUTPUT_URI"] == env(merge)["MODELGATE_OUTPUT_URI"]
    assert env(merge)["MODELGATE_OUTPUT_URI"].endswith("/evaluations/team/m-1-eval-0")


@pytest.mark.parametrize(
    ("evaluation", "field"),
    [
        ({"deadline": "soon"}, "deadline"),
        ({"resources": {"limits": "4Gi"}}, "limits"),
        ({"parallelism": 0}, "parallelism"),
        ({"parallelism": 65}, "parallelism"),
        ({"shards": 4}, "shards"),  # unknown: refused, not ignored
    ],
)
def test_a_bad_spec_evaluation_names_the_field(evaluation: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Evaluation.model_validate(evaluation)


def test_model_server_pods_say_where_prometheus_finds_their_metrics() -> None:
    reference = manifests.build_deployment(reference_deploy_action(), SETTINGS, NOW)
    own = manifests.build_deployment(model_server_deploy_action(), SERVER_SETTINGS, NOW)
    for deployment, port in ((reference, SETTINGS.model_port), (own, 8082)):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(port)
        ports = {
            p["containerPort"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert port in ports


def test_an_image_of_the_releases_own_is_not_said_to_serve_metrics() -> None:
    plain = manifests.build_deployment(deploy_action(), SETTINGS, NOW)
    annotations = plain["spec"]["template"]["metadata"]["annotations"]
    assert not any(key.startswith("prometheus.io/") for key in annotations)
    assert "modelgate.dev/config-hash" in annotations
