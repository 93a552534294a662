"""Kubernetes manifests the operator applies, built by plain functions.

Nothing here talks to the API server: each ``build_*`` returns the object as
a dict, so tests can validate it offline (kubernetes-validate) and the
handlers stay thin. Names are deterministic, every object carries the
recommended ``app.kubernetes.io/*`` labels plus ``modelgate.dev/*`` ones, and
pods run under the restricted Pod Security Standard.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from modelgate import API_VERSION, __version__
from modelgate.api.common import format_time, parse_duration
from modelgate.api.environment import VERIFICATION_FAILED_EXIT_CODE
from modelgate.api.modelrelease import ArtifactRecord, Evaluation, ModelRelease
from modelgate.promotion import Deploy, StartTraining, StartVerification
from modelgate.serving import oip_client
from modelgate.serving.runtime import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODEL_DIR,
    MODEL_FILE,
    ModelServerCommand,
)
from modelgate.settings import OperatorSettings
from modelgate.trainer import contract

NAME_MAX = 63
OUTPUT_DIR = "/work/output"
# Where a model server of the release's own finds the model (KServe's place).
MODELS_MOUNT = "/mnt/models"
GRPC_CONTAINER_PORT, METRICS_CONTAINER_PORT = 8081, 8082
RELEASE_LABEL = "modelgate.dev/release"
ENVIRONMENT_LABEL = "modelgate.dev/environment"
MODEL_LABEL = "modelgate.dev/model"
ANNOTATION_PREFIX = "modelgate.dev/"

RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def dns_name(*parts: str, limit: int = NAME_MAX) -> str:
    """A valid, deterministic object name; long names keep a hash suffix."""
    name = "-".join(p.strip("-") for p in parts if p).lower()
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def owner_reference(release: ModelRelease) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelRelease",
        "name": release.name,
        "uid": release.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def common_labels(component: str, instance: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelgate",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "modelgate",
        "app.kubernetes.io/part-of": "modelgate",
        "app.kubernetes.io/version": __version__,
    }


def training_output_uri(settings: OperatorSettings, namespace: str, job_name: str) -> str:
    prefix = settings.s3_prefix.strip("/")
    return f"s3://{settings.s3_bucket}/{prefix}/runs/{namespace}/{job_name}"


def _s3_env(settings: OperatorSettings, optional_secret: bool = False) -> list[dict[str, Any]]:
    """How a pod reaches the artifact store. ``optional_secret``: the pod may
    run with a cloud identity instead of the static keys (model servers)."""
    env: list[dict[str, Any]] = []
    if settings.s3_endpoint:
        env.append({"name": "MODELGATE_S3_ENDPOINT", "value": settings.s3_endpoint})
    if settings.s3_path_style:
        env.append({"name": "MODELGATE_S3_PATH_STYLE", "value": "true"})
    if settings.s3_region:
        env.append({"name": "AWS_REGION", "value": settings.s3_region})
    if settings.s3_secret:
        # Credentials are referenced, never copied into the Job spec.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(
                {
                    "name": key,
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": settings.s3_secret,
                            "key": key,
                            **({"optional": True} if optional_secret else {}),
                        }
                    },
                }
            )
    return env


def sized(
    workload: str, settings: OperatorSettings, given: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, dict[str, str]]:
    """A container's resources: what the release gives, and the operator's
    default for every resource it says nothing about (neither request nor
    limit: a default limit under a given request would be refused)."""
    given = {part: dict(given.get(part) or {}) for part in ("requests", "limits")} if given else {}
    named = {name for quantities in given.values() for name in quantities}
    found: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        defaults = settings.workloads.get(workload, {}).get(part, {})
        merged = {k: v for k, v in defaults.items() if k not in named}
        merged.update(given.get(part, {}))
        if merged:
            found[part] = merged
    return found


def build_training_job(
    release: ModelRelease, action: StartTraining, settings: OperatorSettings
) -> dict[str, Any]:
    """The Job that runs one training attempt of ``release``."""
    training = release.spec.training
    labels = {
        **common_labels("training", release.name),
        RELEASE_LABEL: release.name,
        MODEL_LABEL: release.spec.model.name,
        "modelgate.dev/training-key": action.key,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(action.env.items())]
    env.extend(
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, secret, key in action.secret_env
    )
    env.append({"name": contract.OUTPUT_DIR, "value": OUTPUT_DIR})
    env.append(
        {
            "name": contract.OUTPUT_URI,
            "value": training_output_uri(settings, release.namespace, action.job_name),
        }
    )
    env.extend(_s3_env(settings))
    volumes = ["work", "tmp"]
    container = _container("trainer", action.image, env, action.command, action.args, volumes)
    # The import run of a registered model scores the evaluation data: it is
    # sized and bounded as the gate's evaluation is.
    given = training.resources if training is not None else release.spec.evaluation.resources
    container["resources"] = sized("training", settings, given.wire())
    init_containers: list[dict[str, Any]] = []
    served_by = _served_by(action.env)
    if served_by is not None and release.spec.image:
        init_containers, container = _import_beside_model_server(
            served_by, release.spec.image, container, settings
        )
        volumes.append("models")
    return _job(
        metadata={
            "name": action.job_name,
            "namespace": release.namespace,
            "labels": labels,
            "annotations": {f"{ANNOTATION_PREFIX}training-key": action.key},
            "ownerReferences": [owner_reference(release)],
        },
        container=container,
        volumes=volumes,
        init_containers=init_containers,
        backoff_limit=training.backoff_limit if training is not None else 1,
        deadline_seconds=int(
            parse_duration(
                training.deadline if training is not None else release.spec.evaluation.deadline
            ).total_seconds()
        ),
        settings=settings,
    )


def _served_by(config: dict[str, str]) -> ModelServerCommand | None:
    """A model server of the release's own, as the core named it."""
    text = config.get(contract.MODEL_SERVER)
    return ModelServerCommand.from_wire(text, contract.MODEL_SERVER) if text else None


def model_server_container(
    served_by: ModelServerCommand, image: str, settings: OperatorSettings
) -> dict[str, Any]:
    """The release's own model server (its image, command and env), told the
    serving contract: the model in /mnt/models, the ports to listen on. Ready
    when the Open Inference Protocol says the model is."""
    contract_env = {
        MODEL_DIR: MODELS_MOUNT,
        MODEL_FILE: f"{MODELS_MOUNT}/{served_by.model_file}",
        HTTP_PORT: str(settings.model_port),
        GRPC_PORT: str(GRPC_CONTAINER_PORT),
        METRICS_PORT: str(METRICS_CONTAINER_PORT),
    }
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        # In order: an entry may name the contract's variables or an earlier one.
        "env": [{"name": k, "value": v} for k, v in contract_env.items()]
        + [{"name": name, "value": value} for name, value in served_by.env],
        "ports": [
            {"name": "http", "containerPort": settings.model_port},
            {"name": "grpc", "containerPort": GRPC_CONTAINER_PORT},
            {"name": "metrics", "containerPort": METRICS_CONTAINER_PORT},
        ],
        # Ready when the protocol says the model is; alive while the server
        # answers at all (a model still loading is not a reason to restart).
        "readinessProbe": {
            "httpGet": {
                "path": f"{oip_client.model_path('', served_by.model_name)}/ready",
                "port": "http",
            },
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": sized("serving", settings),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if served_by.container_command:
        container["command"] = list(served_by.container_command)
    if served_by.container_args:
        container["args"] = list(served_by.container_args)
    return container


def _import_beside_model_server(
    served_by: ModelServerCommand,
    image: str,
    importer: dict[str, Any],
    settings: OperatorSettings,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The import run's pod when a server of the release's own scores: a first
    step fetches and checks the model into /mnt/models, the server runs on it
    as a native sidecar, and the import run asks it over the Open Inference
    Protocol (the operator's image never loads the model)."""
    models = {"name": "models", "mountPath": MODELS_MOUNT}
    fetch = copy.deepcopy(importer)
    fetch.update(name="fetch", args=["fetch"])
    fetch["env"] = [*importer["env"], {"name": MODEL_DIR, "value": MODELS_MOUNT}]
    fetch["volumeMounts"] = [*importer["volumeMounts"], models]
    sidecar = model_server_container(served_by, image, settings)
    sidecar["restartPolicy"] = "Always"
    main = dict(importer)
    main["env"] = [
        *importer["env"],
        {"name": MODEL_DIR, "value": MODELS_MOUNT},
        {"name": contract.MODEL_SERVER_URL, "value": f"http://localhost:{settings.model_port}"},
    ]
    main["volumeMounts"] = [*importer["volumeMounts"], {**models, "readOnly": True}]
    return [fetch, sidecar], main


def _container(
    name: str,
    image: str,
    env: list[dict[str, Any]],
    command: tuple[str, ...],
    args: tuple[str, ...],
    volumes: list[str],
) -> dict[str, Any]:
    """A restricted container; each emptyDir volume ``x`` is mounted at ``/x``."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "env": env,
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": v, "mountPath": f"/{v}"} for v in volumes],
        # A failed run's last log lines become its termination message: the
        # reason the operator puts in the release's status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if command:
        container["command"] = list(command)
    if args:
        container["args"] = list(args)
    return container


def _job(
    metadata: dict[str, Any],
    container: dict[str, Any],
    volumes: list[str],
    backoff_limit: int,
    deadline_seconds: int,
    settings: OperatorSettings,
    init_containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Job running one restricted container to completion (after its init
    containers, beside its native sidecars)."""
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": RESTRICTED_POD,
        "containers": [container],
        "volumes": [{"name": name, "emptyDir": {}} for name in volumes],
    }
    if init_containers:
        pod["initContainers"] = init_containers
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": metadata["labels"]},
                "spec": pod,
            },
        },
    }


EVALUATION_COMMAND = ("python", "-m", "modelgate.evaluate")
LAYOUT_COMMAND = ("python", "-m", "modelgate.layout")


def evaluation_output_uri(settings: OperatorSettings, namespace: str, job_name: str) -> str:
    prefix = settings.s3_prefix.strip("/")
    return f"s3://{settings.s3_bucket}/{prefix}/evaluations/{namespace}/{job_name}"


def build_evaluation_job(
    release: ModelRelease,
    job_name: str,
    payload: str,
    settings: OperatorSettings,
    evaluation: Evaluation | None = None,
    *,
    shards: int = 0,
    merge: int = 0,
    output_job: str | None = None,
) -> dict[str, Any]:
    """The Job that evaluates the gate of ``release`` (``payload``: the
    evaluation as JSON), with the operator's image, sized by ``evaluation``
    (spec.evaluation). ``shards``: an Indexed Job of that many pods, one
    shard each; ``merge``: the Job that merges that many shards' partials.
    Both steps of a sharded evaluation share the output folder of
    ``output_job`` (the merge Job's name)."""
    evaluation = evaluation or release.spec.evaluation
    output_uri = evaluation_output_uri(settings, release.namespace, output_job or job_name)
    labels = {
        **common_labels("evaluation", release.name),
        RELEASE_LABEL: release.name,
        MODEL_LABEL: release.spec.model.name,
    }
    env = [
        {"name": "MODELGATE_EVALUATION", "value": payload},
        {"name": "MODELGATE_RELEASE", "value": f"{release.namespace}/{release.name}"},
        {"name": "MODELGATE_OUTPUT_URI", "value": output_uri},
        {"name": "MODELGATE_S3_BUCKET", "value": settings.s3_bucket},
        {"name": "MODELGATE_S3_PREFIX", "value": settings.s3_prefix},
        *_s3_env(settings),
    ]
    if shards:
        env.append({"name": "MODELGATE_SHARDS", "value": str(shards)})
    if merge:
        env.append({"name": "MODELGATE_MERGE", "value": str(merge)})
    volumes = ["tmp"]
    container = _container(
        "evaluator", settings.server_image or "", env, EVALUATION_COMMAND, (), volumes
    )
    container["resources"] = sized("evaluation", settings, evaluation.resources.wire())
    job = _job(
        metadata={
            "name": job_name,
            "namespace": release.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(release)],
        },
        container=container,
        volumes=volumes,
        backoff_limit=0,  # deterministic: a second try fails the same way
        deadline_seconds=int(parse_duration(evaluation.deadline).total_seconds()),
        settings=settings,
    )
    if shards:
        # Each index is one shard; Kubernetes gives its pod JOB_COMPLETION_INDEX.
        job["spec"].update(completionMode="Indexed", completions=shards, parallelism=shards)
    return job


def verification_env(action: StartVerification, url: str) -> dict[str, str]:
    """What a verification process is told, in a cluster and in local mode."""
    env = {
        "MODELGATE_VERIFY_URL": url,
        "MODELGATE_ENVIRONMENT": action.environment,
        "MODELGATE_RELEASE": action.release,
        "MODELGATE_MODEL_NAME": action.model,
    }
    for name, record in (("PREDICTIONS", action.predictions), ("METADATA", action.metadata)):
        if record is not None:
            env[f"MODELGATE_{name}_URI"] = record.uri
            env[f"MODELGATE_{name}_SHA256"] = record.sha256
    env.update(dict(action.env))  # the built-in check's settings
    return env


def build_verification_job(action: StartVerification, settings: OperatorSettings) -> dict[str, Any]:
    """The post-deployment test, run next to the model it checks."""
    release_namespace, release_name = action.release.split("/", 1)
    labels = {
        **common_labels("verification", release_name),
        RELEASE_LABEL: release_name,
        "modelgate.dev/release-namespace": release_namespace,
        ENVIRONMENT_LABEL: action.environment,
        MODEL_LABEL: action.model,
    }
    # A challenger is verified where it runs, before any caller reaches it.
    name = challenger_name if action.challenger else serving_name
    service = name(action.model, action.environment)
    url = f"http://{service}.{action.namespace}.svc"
    env = [{"name": k, "value": v} for k, v in verification_env(action, url).items()]
    env.extend(_s3_env(settings))
    container = _container("verify", action.image, env, action.command, action.args, ["tmp"])
    container["resources"] = sized("verification", settings)
    job = _job(
        metadata={"name": action.job_name, "namespace": action.namespace, "labels": labels},
        container=container,
        volumes=["tmp"],
        backoff_limit=action.attempts - 1,
        deadline_seconds=int(action.timeout.total_seconds()),
        settings=settings,
    )
    # The Job controller applies the exit-code contract: the model failing
    # the check ends the Job at once; a run that could not check (a server or
    # store it could not reach) is tried again; a pod lost with its node
    # (drained, preempted) does not count as a try.
    job["spec"]["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "verify",
                    "operator": "In",
                    "values": [VERIFICATION_FAILED_EXIT_CODE],
                },
            },
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }
    return job


def serving_name(model: str, environment: str) -> str:
    """One Deployment/Service per model per environment: promotion updates it."""
    return dns_name(model, environment)


def challenger_name(model: str, environment: str) -> str:
    """A judged rollout's challenger beside it (policy.rollout): its own
    Deployment and Service, until it takes over or is removed."""
    return dns_name(serving_name(model, environment), "challenger")


def build_configmap(action: Deploy) -> dict[str, Any]:
    model = action.model
    name = dns_name(serving_name(model, action.environment), "config")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": action.namespace,
            "labels": _serving_labels(action, model),
            "annotations": {f"{ANNOTATION_PREFIX}config-hash": action.config_hash},
        },
        "data": dict(action.config),
    }


def _serving_labels(action: Deploy, model: str) -> dict[str, str]:
    release_namespace, release_name = action.release.split("/", 1)
    return {
        **common_labels("model-server", serving_name(model, action.environment)),
        MODEL_LABEL: model,
        ENVIRONMENT_LABEL: action.environment,
        RELEASE_LABEL: release_name,
        "modelgate.dev/release-namespace": release_namespace,
    }


def deployment_annotations(action: Deploy, now: datetime) -> dict[str, str]:
    """What is live, recorded on the Deployment itself (read back by observe)."""
    predictions = action.predictions.wire() if action.predictions else None
    return {
        f"{ANNOTATION_PREFIX}release": action.release,
        f"{ANNOTATION_PREFIX}config-hash": action.config_hash,
        f"{ANNOTATION_PREFIX}deployed-at": format_time(now),
        f"{ANNOTATION_PREFIX}predictions": json.dumps(predictions, sort_keys=True),
        f"{ANNOTATION_PREFIX}rollout": str(action.rollout),
    }


def build_deployment(action: Deploy, settings: OperatorSettings, now: datetime) -> dict[str, Any]:
    model = action.model
    name = serving_name(model, action.environment)
    labels = _serving_labels(action, model)
    selector = {"app.kubernetes.io/instance": name, MODEL_LABEL: model}
    container: dict[str, Any] = {
        "name": "model",
        "image": action.image,
        "ports": [{"name": "http", "containerPort": settings.model_port}],
        "envFrom": [{"configMapRef": {"name": dns_name(name, "config")}}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
        },
        "resources": sized("serving", settings),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "tmp", "emptyDir": {}}]
    init_containers: list[dict[str, Any]] = []
    served_by = _served_by(action.config)
    # Where the model's /metrics is: a server of the release's own on the
    # contract's metrics port, the reference server on its http port; an
    # image of the release's own may have none.
    metrics_port: int | None = None
    if served_by is not None:
        # A server of the release's own: a first step (the operator's image)
        # lays the hash-checked model out in /mnt/models, the server loads it.
        container = {
            **model_server_container(served_by, action.image, settings),
            "name": "model",
            "envFrom": container["envFrom"],
        }
        layout_env = [
            {"name": MODEL_FILE, "value": f"{MODELS_MOUNT}/{served_by.model_file}"},
            *_s3_env(settings, optional_secret=True),
        ]
        layout = _container(
            "layout", settings.server_image or "", layout_env, LAYOUT_COMMAND, (), ["tmp"]
        )
        layout["envFrom"] = container["envFrom"]
        layout["resources"] = sized("layout", settings)
        layout["volumeMounts"].append({"name": "models", "mountPath": MODELS_MOUNT})
        init_containers.append(layout)
        volumes.append({"name": "models", "emptyDir": {}})
        metrics_port = METRICS_CONTAINER_PORT
    elif action.command:
        # The reference server: the operator's image, told where the
        # artifact is (ConfigMap) and how to reach the store.
        container["command"] = list(action.command)
        container["env"] = [
            {"name": "MODELGATE_SERVER_PORT", "value": str(settings.model_port)},
            {"name": "MODELGATE_ENVIRONMENT", "value": action.environment},
            *_s3_env(settings, optional_secret=True),
        ]
        container["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
        }
        metrics_port = settings.model_port
    annotations = {
        # A config change rolls the pods even when the image is the same.
        f"{ANNOTATION_PREFIX}config-hash": action.config_hash,
    }
    if metrics_port is not None:
        # For a Prometheus that follows the common pod annotations.
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(metrics_port),
                "prometheus.io/path": "/metrics",
            }
        )
    pod: dict[str, Any] = {
        **({"initContainers": init_containers} if init_containers else {}),
        "containers": [container],
        "volumes": volumes,
    }
    metadata = {"name": name, "namespace": action.namespace, "labels": labels,
                "annotations": deployment_annotations(action, now)}  # fmt: skip
    return serving_deployment(metadata, selector, annotations, pod)


def serving_deployment(
    metadata: dict[str, Any],
    selector: dict[str, str],
    pod_annotations: dict[str, str],
    pod: dict[str, Any],
) -> dict[str, Any]:
    """A Deployment of one restricted pod that answers requests (a model
    server, a judged rollout's router), its pods labelled as it is."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**metadata["labels"], **selector},
                    "annotations": pod_annotations,
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": RESTRICTED_POD,
                    **pod,
                },
            },
        },
    }


def rollout_pending(deployment: dict[str, Any]) -> str | None:
    """Why the Deployment's rollout is not complete, or None once it is: the
    current generation observed, every replica updated and available, and no
    pod of an older ReplicaSet left. Availability alone is not enough: during
    a rolling update the old pods stay available until the new ones are, and
    a verification run then would judge the old model."""
    metadata, spec = deployment.get("metadata", {}), deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name")
    wanted = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < int(metadata.get("generation", 0)):
        return f"Deployment {name}: rollout not observed yet"
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return f"Deployment {name}: {updated} of {wanted} replicas updated"
    if int(status.get("replicas") or 0) > updated:
        old = int(status.get("replicas") or 0) - updated
        return f"Deployment {name}: {old} old replicas pending termination"
    if available < wanted:
        return f"Deployment {name}: {available} of {wanted} replicas available"
    return None


def build_service(action: Deploy, settings: OperatorSettings) -> dict[str, Any]:
    model = action.model
    name = serving_name(model, action.environment)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": action.namespace,
            "labels": _serving_labels(action, model),
        },
        "spec": {
            "selector": {"app.kubernetes.io/instance": name, MODEL_LABEL: model},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def predictions_from_annotation(value: str | None) -> ArtifactRecord | None:
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return ArtifactRecord.model_validate(data) if isinstance(data, dict) else None


# What was live before this release (a rollback puts it back), and this
# release's config before its latest change (a failed change puts it back).
PREVIOUS = f"{ANNOTATION_PREFIX}previous"
PREVIOUS_REVISION = f"{ANNOTATION_PREFIX}previous-revision"


def snapshot(deployment: dict[str, Any], config_map: dict[str, Any]) -> str:
    """What was live before a deploy, kept on the new Deployment for rollback."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    return json.dumps(
        {
            "image": (containers or [{}])[0].get("image"),
            "annotations": {
                k: v
                for k, v in annotations.items()
                if k.startswith(ANNOTATION_PREFIX) and k not in (PREVIOUS, PREVIOUS_REVISION)
            },
            "config": config_map.get("data") or {},
        },
        sort_keys=True,
    )


def parse_snapshot(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("image") else None


def restore(
    current: dict[str, Any], previous: dict[str, Any], now: datetime, same_release: bool = False
) -> dict[str, Any]:
    """A patch body putting ``previous`` back on the ``current`` Deployment.
    ``same_release``: ``previous`` is this release's earlier config (a config
    change failed), and the release it replaced stays recorded."""
    metadata = current["metadata"]
    template = current.get("spec", {}).get("template", {})
    containers = json.loads(json.dumps(template.get("spec", {}).get("containers") or []))
    if containers:
        containers[0]["image"] = previous["image"]
    annotations: dict[str, Any] = dict(previous.get("annotations") or {})
    annotations[f"{ANNOTATION_PREFIX}deployed-at"] = format_time(now)
    annotations[f"{ANNOTATION_PREFIX}rolled-back-from"] = (metadata.get("annotations") or {}).get(
        f"{ANNOTATION_PREFIX}release", ""
    )
    if same_release:
        annotations[PREVIOUS] = (metadata.get("annotations") or {}).get(PREVIOUS)
    else:
        annotations[PREVIOUS] = None  # one level: no ping-pong
    annotations[PREVIOUS_REVISION] = None
    config_hash = annotations.get(f"{ANNOTATION_PREFIX}config-hash", "")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "annotations": annotations,
        },
        "spec": {
            "template": {
                "metadata": {"annotations": {f"{ANNOTATION_PREFIX}config-hash": config_hash}},
                "spec": {"containers": containers},
            }
        },
    }


def restored_configmap(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """A patch body giving the ConfigMap back the previous release's config."""
    name = current["metadata"]["name"]
    config = dict(previous.get("config") or {})
    config_hash = (previous.get("annotations") or {}).get(f"{ANNOTATION_PREFIX}config-hash", "")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": dns_name(name, "config"),
            "namespace": current["metadata"]["namespace"],
            "annotations": {f"{ANNOTATION_PREFIX}config-hash": config_hash},
        },
        "data": config,
    }
