"""Kubernetes backends: training Jobs and Direct delivery, over the API.

They implement the same small interfaces as the local backends; every
decision stays in the core. Creating is idempotent (an existing object with
the deterministic name is the one we made) and applying replaces what differs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelgate.api.environment import Environment
from modelgate.api.modelrelease import ModelRelease
from modelgate.backends import manifests
from modelgate.backends.base import ArtifactError, ArtifactStore
from modelgate.backends.evaluation_job import (
    OUTPUTS_LIMIT,
    evaluation_job_name,
    evaluation_payload,
    parse_outputs,
    record_evaluation_outputs,
    record_failed_evaluation,
)
from modelgate.backends.informers import DEPLOYMENTS, JOBS, KubeCache, Resource
from modelgate.backends.outputs import ingest_outputs
from modelgate.backends.s3 import read_uri_bounded
from modelgate.promotion import (
    Deploy,
    DeploymentObservation,
    EvaluateGate,
    Rollback,
    StartTraining,
    StartVerification,
    TrainingObservation,
)
from modelgate.promotion.plan import parse_rollout
from modelgate.settings import OperatorSettings

GROUP, VERSION = "modelgate.dev", "v1alpha1"


class KubeTransientError(RuntimeError):
    """The API server is busy, conflicting or unreachable: try again soon."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


# What the API server's admission says when it cannot resolve an owner's
# kind: right after its CRD is installed, until the server's discovery
# catches up (seconds). blockOwnerDeletion on a Job owned by a ModelRelease
# (OwnerReferencesPermissionEnforcement) meets it on a fresh install.
UNKNOWN_KIND_YET = ("cannot find RESTMapping", "no matches for kind")


def _status_message(error: ApiException) -> str:
    """The Status message the API server sent with a refusal, if any."""
    try:
        body = json.loads(error.body or b"{}")
    except (TypeError, ValueError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


def classify_api_error(error: ApiException, what: str) -> Exception:
    status = int(error.status or 0)
    if status == 409:
        return KubeTransientError(f"{what}: conflict (409), retrying", delay=1.0)
    if status == 0:
        return KubeTransientError(f"{what}: {error.reason}, retrying", delay=10.0)
    if status == 429 or status >= 500:
        return KubeTransientError(f"{what}: API server answered {status}, retrying", delay=10.0)
    message = _status_message(error)
    if status == 403 and any(words in message for words in UNKNOWN_KIND_YET):
        return KubeTransientError(
            f"{what}: the API server does not resolve the owner's kind yet (its CRD was just "
            f"installed and discovery catches up within seconds), retrying: {message}",
            delay=3.0,
        )
    detail = f": {message}" if message else ""
    refused = f"API server refused the request ({status}: {error.reason}){detail}"
    return RuntimeError(f"{what}: {refused}")


class TimedApiClient(client.ApiClient):  # type: ignore[misc]  # untyped package
    """An API client whose every request has a deadline.

    The kubernetes client waits forever by default: one API server that
    accepts a connection and never answers would hold a handler thread (and
    the release's lock) for good. A request without an answer in time, or
    one whose connection breaks, becomes ``ApiException(status=0)``, which
    every call site already classifies as transient.
    """

    def __init__(
        self, configuration: client.Configuration | None = None, timeout: float = 30.0
    ) -> None:
        super().__init__(configuration)
        self.timeout = timeout

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = (min(10.0, self.timeout), self.timeout)
        try:
            return super().request(method, url, *args, **kwargs)
        except urllib3.exceptions.HTTPError as error:
            failure = ApiException(
                status=0,
                reason=f"no answer from the API server ({type(error).__name__}, deadline "
                f"{self.timeout:g} s) for {method} {urllib3.util.parse_url(url).path}",
            )
            failure.body = b""  # the client decodes the body of every ApiException
            raise failure from error


@dataclass
class KubeClients:
    api: client.ApiClient

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


def plain(obj: Any) -> dict[str, Any]:
    """An API model object as the JSON dict the API server sent."""
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = client.ApiClient().sanitize_for_serialization(obj)
    return result


def read_through(
    cache: KubeCache | None,
    resource: Resource,
    namespace: str,
    name: str,
    read: Callable[[str, str], Any],
    what: str,
) -> dict[str, Any] | None:
    """The object from the watch once it has listed, else from the API server
    (``read(name, namespace)``); None when it does not exist."""
    if cache is not None and cache.known(resource, namespace):
        return cache.get(resource, namespace, name)
    try:
        return plain(read(name, namespace))
    except ApiException as error:
        if error.status == 404:
            return None
        raise classify_api_error(error, f"reading {what} {name}") from error


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind and item.get("status") == "True":
            return item  # type: ignore[no-any-return]
    return None


class KubeRunner:
    """Training runs as Jobs; their outputs move into the artifact store."""

    def __init__(
        self, clients: KubeClients, settings: OperatorSettings, store: ArtifactStore, s3: Any
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.store = store
        self.s3 = s3
        # Jobs read from the watch while it runs (set at the operator's start).
        self.cache: KubeCache | None = None

    def _create_job(self, namespace: str, job: dict[str, Any]) -> None:
        created = self.clients.batch.create_namespaced_job(namespace, job)
        if self.cache is not None and created is not None:
            self.cache.remember(JOBS, plain(created))

    def start(self, release: ModelRelease, action: StartTraining) -> None:
        job = manifests.build_training_job(release, action, self.settings)
        try:
            self._create_job(release.namespace, job)
        except ApiException as error:
            if error.status == 409:
                return  # already created: the name is deterministic
            raise classify_api_error(error, f"creating Job {action.job_name}") from error

    def start_verification(self, action: StartVerification) -> None:
        job = manifests.build_verification_job(action, self.settings)
        try:
            self._create_job(action.namespace, job)
        except ApiException as error:
            if error.status == 409:
                return
            raise classify_api_error(error, f"creating Job {action.job_name}") from error

    def evaluate(self, release: ModelRelease, action: EvaluateGate, now: datetime) -> bool:
        """Evaluate the gate in a Job; True once its result is on the release
        (False while the Job runs). The operator reads only the evaluator's
        bounded outputs manifest and summary, never the data."""
        name = evaluation_job_name(release.name, action)
        run = self.observe(release.namespace, name, ingest=False)
        if run is None:
            if not self.settings.server_image:
                reason = (
                    "the operator has no image to run the evaluator with: set "
                    "MODELGATE_SERVER_IMAGE (the chart does)"
                )
                record_failed_evaluation(release, action, reason, now)
                return True
            shards = action.evaluation.parallelism
            if shards > 1:
                state = self._shards(release, action, name, now)
                if state != "Succeeded":
                    return state == "Failed"  # a failed shard's result is recorded
            self._create_evaluation_job(release, action, name, merge=shards if shards > 1 else 0)
            return False
        if run.state == "Running":
            return False
        if run.state == "Failed":
            record_failed_evaluation(release, action, f"Job {name}: {run.message}", now)
            return True
        output = manifests.evaluation_output_uri(self.settings, release.namespace, name)
        try:
            data = read_uri_bounded(self.s3, f"{output}/outputs.json", OUTPUTS_LIMIT)
            records = parse_outputs(data)
            record_evaluation_outputs(release, action, records, self.store)
        except ArtifactError as error:
            if error.transient:
                raise
            record_failed_evaluation(release, action, f"Job {name}: {error}", now)
        except ValueError as error:
            record_failed_evaluation(
                release, action, f"Job {name}: unreadable output: {error}", now
            )
        return True

    def _create_evaluation_job(
        self, release: ModelRelease, action: EvaluateGate, name: str, **step: Any
    ) -> None:
        payload = json.dumps(evaluation_payload(action), sort_keys=True)
        job = manifests.build_evaluation_job(
            release, name, payload, self.settings, action.evaluation, **step
        )
        try:
            self.clients.batch.create_namespaced_job(release.namespace, job)
        except ApiException as error:
            if error.status != 409:  # 409: created before (the name is deterministic)
                raise classify_api_error(error, f"creating Job {name}") from error

    def _shards(
        self, release: ModelRelease, action: EvaluateGate, merge_name: str, now: datetime
    ) -> str:
        """Run the Indexed Job of a sharded evaluation: "Running", "Succeeded"
        once every shard has stored its partial (the merge Job may start), or
        "Failed" when a shard failed (the evaluation is recorded as failed,
        with its reason)."""
        name = evaluation_job_name(release.name, action, shards=True)
        run = self.observe(release.namespace, name, ingest=False)
        if run is None:
            self._create_evaluation_job(
                release,
                action,
                name,
                shards=action.evaluation.parallelism,
                output_job=merge_name,
            )
            return "Running"
        if run.state == "Failed":
            record_failed_evaluation(release, action, f"Job {name}: {run.message}", now)
        return run.state

    def observe(
        self, namespace: str, job_name: str, ingest: bool = True
    ) -> TrainingObservation | None:
        job = self._read_job(namespace, job_name)
        if job is None:
            return None
        status = job.get("status") or {}
        started, finished = status.get("startTime"), status.get("completionTime")
        failed = _condition(job, "Failed")
        failed_pods = int(status.get("failed") or 0)
        if failed is not None:
            reason = failed.get("reason") or "Failed"
            detail = failed.get("message") or ""
            pod = self._pod_failure(namespace, job_name)
            message = "; ".join(p for p in (f"{reason}: {detail}".strip(": "), pod) if p)
            return TrainingObservation(
                job_name,
                "Failed",
                started,
                failed.get("lastTransitionTime"),
                message,
                retries=max(failed_pods - 1, 0),
            )
        if _condition(job, "Complete") is None:
            # Active pods none of which is ready: one may be stuck before it
            # runs (an image it cannot pull, a missing Secret). Only then are
            # the pods read.
            waiting = ""
            if int(status.get("active") or 0) > 0 and int(status.get("ready") or 0) == 0:
                waiting = self._pod_waiting(namespace, job_name)
            return TrainingObservation(
                job_name, "Running", started, message=waiting or None, retries=failed_pods
            )
        if not ingest:
            return TrainingObservation(job_name, "Succeeded", started, finished)
        output = manifests.training_output_uri(self.settings, namespace, job_name)
        artifacts = ingest_outputs(self.store, output)
        return TrainingObservation(
            job_name, "Succeeded", started, finished, None, artifacts, failed_pods
        )

    def _read_job(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        read = self.clients.batch.read_namespaced_job
        return read_through(self.cache, JOBS, namespace, job_name, read, "Job")

    def _job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        """The Job's pods; none when they cannot be read (a detail, not a fault)."""
        try:
            pods = self.clients.core.list_namespaced_pod(
                namespace, label_selector=f"job-name={job_name}"
            )
        except ApiException:
            return []
        return [
            pod
            for pod in plain(pods).get("items", [])
            # Servers that ignore label selectors.
            if (pod.get("metadata", {}).get("labels") or {}).get("job-name") == job_name
        ]

    def _pod_waiting(self, namespace: str, job_name: str) -> str:
        """Why a Job's pod cannot start its containers, when it is stuck."""
        for pod in self._job_pods(namespace, job_name):
            status = pod.get("status") or {}
            for container in [
                *(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or []),
            ]:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in STUCK_REASONS:
                    said = (waiting.get("message") or "").strip()[:500]
                    return (
                        f"pod {pod['metadata']['name']} container {container.get('name')}: "
                        f"{waiting['reason']}" + (f": {said}" if said else "")
                    )
        return ""

    def _pod_failure(self, namespace: str, job_name: str) -> str:
        """The terminated container's reason, e.g. OOMKilled, where available."""
        for pod in self._job_pods(namespace, job_name):
            status = pod.get("status") or {}
            sidecars = {
                c.get("name")
                for c in (pod.get("spec") or {}).get("initContainers") or []
                if c.get("restartPolicy") == "Always"
            }
            # A run's own containers, then the steps before it (a fetch that
            # failed); never a sidecar, which is stopped when the run ends.
            statuses = [
                *(status.get("containerStatuses") or []),
                *(
                    c
                    for c in status.get("initContainerStatuses") or []
                    if c.get("name") not in sidecars
                ),
            ]
            for container in statuses:
                terminated = (container.get("state") or {}).get("terminated") or {}
                if terminated.get("exitCode", 0) != 0:
                    reason = terminated.get("reason") or "Error"
                    code = terminated.get("exitCode")
                    found = f"container {container.get('name')}: {reason} (exit {code})"
                    index = (pod.get("metadata", {}).get("annotations") or {}).get(
                        "batch.kubernetes.io/job-completion-index"
                    )
                    if index is not None:  # an Indexed Job's pod: a sharded evaluation's
                        found = f"shard {index}: {found}"
                    hint = (
                        out_of_memory_hint(pod, str(container.get("name")))
                        if reason == "OOMKilled"
                        else ""
                    )
                    # The last line of its termination message (its log's
                    # tail, FallbackToLogsOnError): what the run said.
                    said = (terminated.get("message") or "").strip().splitlines()
                    return (f"{found}: {said[-1][:500]}" if said else found) + hint
        return ""

    def delete_jobs(self, namespace: str, release: str) -> int:
        """Delete the training Jobs of a release (and their pods)."""
        jobs = plain(
            self.clients.batch.list_namespaced_job(
                namespace, label_selector=f"{manifests.RELEASE_LABEL}={release}"
            )
        )
        deleted = 0
        for job in jobs.get("items", []):
            labels = job.get("metadata", {}).get("labels") or {}
            if labels.get(manifests.RELEASE_LABEL) != release:
                continue
            with contextlib.suppress(ApiException):
                self.clients.batch.delete_namespaced_job(
                    job["metadata"]["name"], namespace, propagation_policy="Background"
                )
                deleted += 1
        return deleted


class KubeDeployer:
    """Direct delivery: a ConfigMap, Deployment and Service per model and environment."""

    def __init__(self, clients: KubeClients, settings: OperatorSettings) -> None:
        self.clients = clients
        self.settings = settings
        # Deployments read from the watch while it runs (set at the operator's start).
        self.cache: KubeCache | None = None

    def _apply(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create or update; the object as the server answered (its status included)."""
        applied = self._write(kind, body)
        if applied is None:
            return None
        found: dict[str, Any] = plain(applied)
        if kind == "deployment" and self.cache is not None:
            self.cache.remember(DEPLOYMENTS, found)
        return found

    def _write(self, kind: str, body: dict[str, Any]) -> Any:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        api: Any = self.clients.apps if kind == "deployment" else self.clients.core
        create = getattr(api, f"create_namespaced_{kind}")
        patch = getattr(api, f"patch_namespaced_{kind}")
        try:
            return create(namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise classify_api_error(error, f"creating {kind} {namespace}/{name}") from error
            try:
                return patch(name, namespace, body)
            except ApiException as patch_error:
                raise classify_api_error(
                    patch_error, f"updating {kind} {namespace}/{name}"
                ) from patch_error

    def _read(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        api: Any = self.clients.apps if kind == "deployment" else self.clients.core
        try:
            return plain(getattr(api, f"read_namespaced_{kind}")(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise classify_api_error(error, f"reading {kind} {namespace}/{name}") from error

    def deploy(self, action: Deploy, now: datetime) -> None:
        name = manifests.serving_name(action.model, action.environment)
        config_name = manifests.build_configmap(action)["metadata"]["name"]
        current = self._read("deployment", name, action.namespace)
        deployment = manifests.build_deployment(action, self.settings, now)
        annotations = deployment["metadata"]["annotations"]
        key, revision_key = manifests.PREVIOUS, manifests.PREVIOUS_REVISION
        if current is not None:
            current_annotations = current.get("metadata", {}).get("annotations") or {}
            if current_annotations.get(f"{manifests.ANNOTATION_PREFIX}release") == action.release:
                # Re-applying our own release: keep what it replaced.
                if key in current_annotations:
                    annotations[key] = current_annotations[key]
                live_hash = current_annotations.get(f"{manifests.ANNOTATION_PREFIX}config-hash")
                if live_hash != action.config_hash:
                    # A config change: keep the config it replaces for its rollback.
                    config = self._read("config_map", config_name, action.namespace) or {}
                    annotations[revision_key] = manifests.snapshot(current, config)
                elif revision_key in current_annotations:
                    annotations[revision_key] = current_annotations[revision_key]
            else:
                config = self._read("config_map", config_name, action.namespace) or {}
                annotations[key] = manifests.snapshot(current, config)
        # Config first, so the new pods start with the new config.
        self._apply("config_map", manifests.build_configmap(action))
        self._apply("deployment", deployment)
        self._apply("service", manifests.build_service(action, self.settings))

    def _observed(self, namespace: str, name: str) -> dict[str, Any] | None:
        read = self.clients.apps.read_namespaced_deployment
        return read_through(self.cache, DEPLOYMENTS, namespace, name, read, "Deployment")

    def rollback(self, action: Rollback, now: datetime) -> str | None:
        """Put back the previous release; returns its name, or None if there was none."""
        name = manifests.serving_name(action.model, action.environment)
        current = self._read("deployment", name, action.namespace)
        if current is None:
            return None
        annotations = current.get("metadata", {}).get("annotations") or {}
        if annotations.get(f"{manifests.ANNOTATION_PREFIX}release") != action.release:
            return annotations.get(f"{manifests.ANNOTATION_PREFIX}release")  # already back
        same_release = False
        previous = manifests.parse_snapshot(annotations.get(manifests.PREVIOUS))
        if action.config_hash is not None:
            live_hash = annotations.get(f"{manifests.ANNOTATION_PREFIX}config-hash")
            if live_hash == action.config_hash:
                return action.release  # the failed change is already undone
            earlier = manifests.parse_snapshot(annotations.get(manifests.PREVIOUS_REVISION))
            earlier_hash = ((earlier or {}).get("annotations") or {}).get(
                f"{manifests.ANNOTATION_PREFIX}config-hash"
            )
            if earlier is not None and earlier_hash == action.config_hash:
                previous, same_release = earlier, True
            # Otherwise (written by an older operator): the previous release.
        apps, core = self.clients.apps, self.clients.core
        if previous is None:
            # Nothing was live before: remove what this release brought.
            removals: list[tuple[Any, str]] = [
                (apps.delete_namespaced_deployment, name),
                (core.delete_namespaced_service, name),
                (core.delete_namespaced_config_map, manifests.dns_name(name, "config")),
            ]
            for delete, object_name in removals:
                with contextlib.suppress(ApiException):
                    delete(object_name, action.namespace)
            if self.cache is not None:
                self.cache.forget(DEPLOYMENTS, action.namespace, name)
            return None
        config = manifests.restored_configmap(current, previous)
        existing = self._read("config_map", config["metadata"]["name"], action.namespace) or {}
        # Replace, not merge: keys the previous config did not have go away.
        config["data"] = {
            **dict.fromkeys((existing.get("data") or {}), None),
            **config["data"],
        }
        try:
            core.patch_namespaced_config_map(config["metadata"]["name"], action.namespace, config)
            restored = apps.patch_namespaced_deployment(
                name, action.namespace, manifests.restore(current, previous, now, same_release)
            )
            if self.cache is not None and restored is not None:
                self.cache.remember(DEPLOYMENTS, plain(restored))
        except ApiException as error:
            raise classify_api_error(error, f"rolling back {action.namespace}/{name}") from error
        return str(previous["annotations"].get(f"{manifests.ANNOTATION_PREFIX}release", ""))

    def observe(
        self, namespace: str, environments: Mapping[str, Environment], model: str
    ) -> dict[str, DeploymentObservation]:
        found: dict[str, DeploymentObservation] = {}
        for name, environment in environments.items():
            deployment_name = manifests.serving_name(model, name)
            deployment = self._observed(environment.spec.namespace, deployment_name)
            if deployment is None:
                continue
            annotations = deployment.get("metadata", {}).get("annotations") or {}
            release = annotations.get(f"{manifests.ANNOTATION_PREFIX}release")
            if not release:
                continue  # not ours
            spec = deployment.get("spec") or {}
            containers = spec.get("template", {}).get("spec", {}).get("containers") or [{}]
            ready = manifests.rollout_pending(deployment) is None
            found[name] = DeploymentObservation(
                environment=name,
                release=release,
                image=containers[0].get("image", ""),
                config_hash=annotations.get(f"{manifests.ANNOTATION_PREFIX}config-hash", ""),
                deployed_at=annotations.get(f"{manifests.ANNOTATION_PREFIX}deployed-at", ""),
                ready=ready,
                rollout=parse_rollout(annotations.get(f"{manifests.ANNOTATION_PREFIX}rollout")),
                predictions=manifests.predictions_from_annotation(
                    annotations.get(f"{manifests.ANNOTATION_PREFIX}predictions")
                ),
            )
        return found


# A pod's container waits for one of these until someone changes something:
# the image (its name, the registry's credentials), a Secret or ConfigMap.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)

# Where a release sizes each container of its Jobs (the others: the chart's
# `workloads` values, MODELGATE_WORKLOAD_RESOURCES).
MEMORY_FIELDS = {
    "trainer": "spec.training.resources.limits.memory (a registered model's import: "
    "spec.evaluation.resources.limits.memory)",
    "evaluator": "spec.evaluation.resources.limits.memory",
}


def out_of_memory_hint(pod: dict[str, Any], container_name: str) -> str:
    """What an OOMKilled container hit and where to raise it."""
    containers = [
        *((pod.get("spec") or {}).get("containers") or []),
        *((pod.get("spec") or {}).get("initContainers") or []),
    ]
    spec: dict[str, Any] = next((c for c in containers if c.get("name") == container_name), {})
    limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    where = MEMORY_FIELDS.get(
        container_name, "the operator's workloads memory limits (chart value workloads)"
    )
    if limit is None:
        return f"; out of memory with no memory limit: the node ran out; set {where}"
    return f"; it reached its memory limit of {limit}: raise {where}"
