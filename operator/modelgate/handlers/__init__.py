"""kopf handlers: parse -> call the core -> apply actions -> patch status.

Run with ``python -m modelgate`` or ``kopf run -m modelgate.handlers``.
Decisions live in :mod:`modelgate.promotion` (the same core local mode
drives); this module only translates between Kubernetes and that core.

Settings chosen deliberately (see :func:`configure`):
- progress and diff-base are kept in ``modelgate.dev/*`` annotations, not in
  ``status.kopf`` (structural schemas would prune undeclared status fields);
- the only finalizer is on ModelReleases, to delete their training Jobs;
- watches are ended by the server every 5 minutes and re-listed, so a lost
  event is recovered within that time, and every release is also re-checked
  on a timer (``MODELGATE_RESYNC_SECONDS``) because reconciliation is
  level-based;
- peering (unless ``--standalone``) makes sure two replicas never both act;
- one reconciliation per release at a time in this process (a lock), and
  the core never repeats a side effect that it can already observe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelgate import __version__
from modelgate.api.common import format_time
from modelgate.api.environment import Environment, EnvironmentStatus, Promotion
from modelgate.api.loader import format_validation_error
from modelgate.api.modelrelease import ModelRelease, ModelReleaseStatus
from modelgate.api.qualitygate import QualityGate, QualityGateStatus
from modelgate.backends.base import ArtifactError
from modelgate.backends.delivery import KubeDelivery
from modelgate.backends.evaluation import record_gate_evaluation
from modelgate.backends.gitops import GitError
from modelgate.backends.kube import (
    GROUP,
    VERSION,
    KubeClients,
    KubeRunner,
    KubeTransientError,
    TimedApiClient,
    classify_api_error,
)
from modelgate.backends.s3 import S3ArtifactStore, S3Settings, make_client, read_uri
from modelgate.gates import Table, TableError, read_table
from modelgate.metrics import Metrics
from modelgate.promotion import (
    Action,
    Deploy,
    EvaluateGate,
    Observed,
    Plan,
    Rollback,
    StartTraining,
    StartVerification,
    TrainingObservation,
    reconcile,
)
from modelgate.promotion.conditions import READY, STALLED, set_condition
from modelgate.promotion.paths import graph_problems
from modelgate.promotion.reconcile import release_key, training_job_name, training_key
from modelgate.settings import OperatorSettings, priority_by_age

RELEASES = (GROUP, VERSION, "modelreleases")
GATES = (GROUP, VERSION, "qualitygates")
ENVIRONMENTS = (GROUP, VERSION, "environments")
RESYNC_SECONDS = float(os.environ.get("MODELGATE_RESYNC_SECONDS", "15"))
# Follow-up steps taken in one handler call when an action can be observed at
# once (a gate result, a created Job): fewer round trips, same decisions.
STEPS_PER_CALL = 5
# Releases at rest (nothing to do until something changes) are re-checked this
# many times less often than moving ones; a spec change still acts at once.
AT_REST_FACTOR = 10
AT_REST_PHASES = {"Released", "GateFailed", "Failed", "Blocked", "RolledBack"}

logger = logging.getLogger("modelgate.handlers")
USER_AGENT = "modelgate-operator"


def api_client() -> kube_client.ApiClient:
    """A kubernetes client for the same cluster kopf talks to; it names itself
    in User-Agent, so audit logs tell the operator's requests apart."""
    server = os.environ.get("MODELGATE_API_SERVER")
    timeout = OperatorSettings.from_env().api_timeout
    if server:
        configuration = kube_client.Configuration()
        configuration.host = server
        client = TimedApiClient(configuration, timeout)
    else:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        client = TimedApiClient(timeout=timeout)
    client.user_agent = f"{USER_AGENT}/{__version__}"
    return client


@dataclass
class Runtime:
    """What the handlers share: clients, backends and per-object locks."""

    settings: OperatorSettings
    clients: KubeClients
    store: S3ArtifactStore
    runner: KubeRunner
    delivery: KubeDelivery
    metrics: Metrics = field(default_factory=Metrics)
    metrics_server: Any = None
    locks: defaultdict[str, threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )
    # uid -> resync ticks skipped while the release is at rest
    resting: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    # uid -> (resourceVersion read, status decided from it). kopf patches the
    # status after a handler returns, and a timer can run before the watch
    # brings that write back: a body still at the version read last time is
    # stale, and the status decided then is the truth.
    decided: dict[str, tuple[str, ModelReleaseStatus]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: OperatorSettings) -> Runtime:
        clients = KubeClients(api_client())
        s3_settings = S3Settings(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            path_style=settings.s3_path_style,
        )
        s3 = make_client(s3_settings)
        store = S3ArtifactStore(s3_settings, s3)
        return cls(
            settings=settings,
            clients=clients,
            store=store,
            runner=KubeRunner(clients, settings, store, s3),
            delivery=KubeDelivery(clients, settings),
        )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime  # noqa: PLW0603  (built once per process, at first use)
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime.build(OperatorSettings.from_env())
        return _runtime


def reset_runtime() -> None:
    """Forget the clients (tests start a new emulator per module)."""
    global _runtime  # noqa: PLW0603
    with _runtime_lock:
        _runtime = None


# When this process started: its peering priority (see configure).
_STARTED_NS = time.time_ns()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    operator_settings = OperatorSettings.from_env()
    # The server ends a watch after this long and kopf re-lists; a stream
    # that goes silent (a proxy holding it open) is dropped a little later.
    settings.watching.server_timeout = operator_settings.watch_seconds
    settings.watching.client_timeout = operator_settings.watch_seconds * 1.1 + 5
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = operator_settings.api_timeout
    settings.networking.connect_timeout = min(10.0, operator_settings.api_timeout)
    settings.execution.max_workers = 8
    settings.posting.level = logging.WARNING
    # Even with --verbose: the AWS SDK's debug lines carry signed request
    # headers (the access key id) and every byte sent.
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings.peering.name = "modelgate"
    # kopf pauses every replica when two share a priority: each one needs its
    # own, and the oldest keeps acting (no hand-over while it lives).
    settings.peering.priority = (
        operator_settings.peering_priority
        if operator_settings.peering_priority is not None
        else priority_by_age(_STARTED_NS)
    )
    settings.peering.lifetime = operator_settings.peering_lifetime
    if operator_settings.metrics_port:
        rt = runtime()
        if rt.metrics_server is None:
            rt.metrics_server = rt.metrics.serve(operator_settings.metrics_port)
    if operator_settings.webhook_port:
        settings.admission.server = webhook_server(operator_settings)
        if operator_settings.webhook_managed:
            # kopf creates and updates the webhook configurations itself.
            settings.admission.managed = GROUP


def webhook_server(settings: OperatorSettings) -> kopf.WebhookServer:
    """The admission webhook endpoint: POST /<handler id> (e.g. /validate-release)."""
    if not settings.webhook_insecure and not (settings.webhook_cert and settings.webhook_key):
        raise ValueError(
            "MODELGATE_WEBHOOK_PORT is set but MODELGATE_WEBHOOK_CERT and "
            "MODELGATE_WEBHOOK_KEY are not: mount a TLS certificate (e.g. from cert-manager) "
            "and point both at it"
        )
    return kopf.WebhookServer(
        addr="0.0.0.0",  # the API server calls in through the Service
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=settings.webhook_cert,
        pkeyfile=settings.webhook_key,
        insecure=settings.webhook_insecure,
    )


@kopf.on.cleanup()
def stop_metrics(**_: Any) -> None:
    current = _runtime
    if current is not None and current.metrics_server is not None:
        current.metrics_server.shutdown()
        current.metrics_server.server_close()
        current.metrics_server = None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    server = os.environ.get("MODELGATE_API_SERVER")
    if server:
        return kopf.ConnectionInfo(server=server, insecure=True)
    return kopf.login_via_client(**kwargs)


# -- helpers ---------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``old`` status into ``new``: only what differs
    (an unchanged status writes nothing, so a resync causes no watch event),
    removed keys as null."""
    old = old or {}
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def _invalid(kind: str, body: kopf.Body, patch: kopf.Patch, error: ValidationError) -> None:
    problems = format_validation_error(error)
    message = "; ".join(problems)
    generation = int(body.get("metadata", {}).get("generation") or 1)
    conditions = set_condition([], READY, False, "InvalidSpec", message, generation, _now())
    patch.status["conditions"] = [c.wire() for c in conditions]
    patch.status["observedGeneration"] = generation
    kopf.event(body, type="Warning", reason="InvalidSpec", message=message[:1024])
    raise InvalidSpec(f"invalid {kind}: {message}")


class InvalidSpec(kopf.PermanentError):
    """The object cannot be parsed; its status says why."""


@contextlib.contextmanager
def _measured(kind: str) -> Iterator[None]:
    """Count and time one reconciliation by its result."""
    started = time.monotonic()
    result = "ok"
    try:
        yield
    except InvalidSpec:
        result = "invalid"
        runtime().metrics.error(kind, "InvalidSpec")
        raise
    except kopf.TemporaryError:
        result = "retry"
        raise
    except BaseException:
        result = "error"
        raise
    finally:
        runtime().metrics.reconciled(kind, result, time.monotonic() - started)


def _transient(error: Exception) -> kopf.TemporaryError:
    if isinstance(error, KubeTransientError):
        return kopf.TemporaryError(str(error), delay=error.delay)
    # S3 and Git clients have retried with backoff already (botocore's
    # adaptive mode, the push-race loop): wait a little before the next round.
    return kopf.TemporaryError(str(error), delay=10)


def _get_gate(rt: Runtime, namespace: str, name: str | None) -> QualityGate | None:
    if name is None:
        return None
    try:
        raw = rt.clients.custom.get_namespaced_custom_object(*GATES[:2], namespace, GATES[2], name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise classify_api_error(error, f"reading QualityGate {name}") from error
    try:
        return QualityGate.model_validate(raw)
    except ValidationError:
        return None  # its own handler reports why; the release waits for a valid gate


def list_environments(rt: Runtime, namespace: str) -> dict[str, Environment]:
    try:
        listing = rt.clients.custom.list_namespaced_custom_object(
            *ENVIRONMENTS[:2], namespace, ENVIRONMENTS[2]
        )
    except ApiException as error:
        raise classify_api_error(error, "listing Environments") from error
    found: dict[str, Environment] = {}
    for raw in listing.get("items", []):
        try:
            environment = Environment.model_validate(raw)
        except ValidationError:
            continue  # its own handler reports why
        found[environment.name] = environment
    return found


def _load_data(rt: Runtime) -> Any:
    def load(uri: str, name: str) -> Table:
        if not uri.startswith("s3://"):
            raise TableError(
                f"the operator reads {name} data from s3:// only (got {uri!r}); "
                "local paths work in local mode"
            )
        try:
            return read_table(read_uri(rt.store.client, uri), name)
        except ArtifactError as error:
            raise TableError(f"cannot read {name} data: {error}") from error

    return load


def _record_live(rt: Runtime, environment: Environment, entry: Promotion) -> None:
    """Environment status: what is live there now, and the last promotions."""
    try:
        current = rt.clients.custom.get_namespaced_custom_object(
            *ENVIRONMENTS[:2], environment.namespace, ENVIRONMENTS[2], environment.name
        )
        status = EnvironmentStatus.model_validate(current.get("status") or {})
    except (ApiException, ValidationError):
        status = environment.status or EnvironmentStatus()
    status.live_release, status.live_image = entry.release, entry.image
    status.live_since, status.config_hash = entry.deployed_at, entry.config_hash
    status.history = [entry, *status.history][: environment.spec.history_limit]
    try:
        rt.clients.custom.patch_namespaced_custom_object_status(
            *ENVIRONMENTS[:2],
            environment.namespace,
            ENVIRONMENTS[2],
            environment.name,
            {"status": status.wire()},
        )
    except ApiException as error:
        logger.warning("could not record the promotion in %s: %s", environment.name, error)


def _act(
    rt: Runtime,
    release: ModelRelease,
    plan: Plan,
    environments: Mapping[str, Environment],
    now: datetime,
) -> None:
    for action in plan.actions:
        log_action(release, action)
        if isinstance(action, StartTraining):
            rt.runner.start(release, action)
        elif isinstance(action, EvaluateGate):
            record_gate_evaluation(release, action, rt.store, _load_data(rt), now)
        elif isinstance(action, Deploy):
            environment = environments[action.environment]
            revision = rt.delivery.deploy(environment, action, now)
            entry = Promotion(
                release=action.release.split("/", 1)[1],
                model_version=release.spec.model.version,
                image=action.image,
                config_hash=action.config_hash,
                deployed_at=format_time(now),
                revision=revision,
                rollout=action.rollout,
            )
            _record_live(rt, environments[action.environment], entry)
        elif isinstance(action, StartVerification):
            rt.runner.start_verification(action)
        elif isinstance(action, Rollback):
            environment = environments[action.environment]
            restored, revision = rt.delivery.rollback(environment, action, now)
            live = rt.delivery.observe(
                release.namespace,
                {action.environment: environment},
                action.model,
                action.release,
            ).get(action.environment)
            if live is not None:
                rt.metrics.set_live(
                    release.namespace,
                    action.environment,
                    action.model,
                    (restored or live.release).split("/", 1)[-1],
                    None,  # the restored release's version is on that release
                )
                entry = Promotion(
                    release=(restored or live.release).split("/", 1)[-1],
                    image=live.image,
                    config_hash=live.config_hash,
                    deployed_at=format_time(now),
                    rolled_back=True,
                    revision=revision,
                )
                _record_live(rt, environments[action.environment], entry)


def log_action(release: ModelRelease, action: Action) -> None:
    """One line per side effect, with release and environment as fields (in
    ``--log-format json`` they become JSON keys)."""
    environment = getattr(action, "environment", None)
    fields = {"release": release_key(release), "action": type(action).__name__}
    if environment is not None:
        fields["environment"] = environment
    where = f" in {environment}" if environment else ""
    logger.info("%s %s%s", fields["action"], fields["release"], where, extra=fields)


def _verifications(
    rt: Runtime, release: ModelRelease, environments: Mapping[str, Environment]
) -> dict[str, TrainingObservation]:
    """The verification Jobs this release started (their names are in its status)."""
    found: dict[str, TrainingObservation] = {}
    for progress in release.status.environments if release.status else []:
        environment = environments.get(progress.name)
        if progress.verification_job and environment is not None:
            run = rt.runner.observe(
                environment.spec.namespace, progress.verification_job, ingest=False
            )
            if run is not None:
                found[progress.verification_job] = run
    return found


def reconcile_release(body: kopf.Body, patch: kopf.Patch, resync: bool = False) -> None:
    """Observe, decide with the core, act, and record the status."""
    with _measured("ModelRelease"):
        _reconcile_release(body, patch, resync)


def _reconcile_release(body: kopf.Body, patch: kopf.Patch, resync: bool) -> None:
    rt = runtime()
    try:
        release = ModelRelease.model_validate(dict(body))
    except ValidationError as error:
        if resync:
            return  # reported once by the change handler; nothing new to say
        _invalid("ModelRelease", body, patch, error)
        return
    uid = release.metadata.uid or release_key(release)
    read_at = str(body.get("metadata", {}).get("resourceVersion") or "")
    with rt.locks[uid]:
        old_status = dict(body.get("status") or {})
        earlier = rt.decided.get(uid)
        if earlier is not None and read_at and earlier[0] == read_at:
            release = release.model_copy(update={"status": earlier[1].model_copy(deep=True)})
            # The patch must also undo what that write set (if it landed).
            for key, value in earlier[1].wire().items():
                old_status.setdefault(key, value)
        try:
            gate = _get_gate(rt, release.namespace, release.spec.gate.name)
            environments = list_environments(rt, release.namespace)
            wanted = {
                n: e for n, e in environments.items() if n in release.spec.promotion.environments
            }
            for _ in range(STEPS_PER_CALL):
                now = _now()
                job = training_job_name(release, training_key(release, gate))
                recorded = release.status.training if release.status else None
                finished = (
                    recorded is not None
                    and recorded.job_name == job
                    and recorded.state == "Succeeded"
                    and bool(release.status and release.status.artifacts)
                )
                observed = Observed(
                    # A recorded success is final: no need to read the Job (and
                    # copy its outputs) again on every resync.
                    training=None if finished else rt.runner.observe(release.namespace, job),
                    deployments=rt.delivery.observe(
                        release.namespace, wanted, release.spec.model.name, release_key(release)
                    ),
                    verifications=_verifications(rt, release, wanted),
                )
                plan = reconcile(
                    release,
                    gate,
                    environments,
                    observed,
                    now,
                    server_image=rt.settings.server_image,
                )
                release = release.model_copy(update={"status": plan.status})
                _act(rt, release, plan, environments, now)
                for event in plan.events:
                    kopf.event(body, type=event.type, reason=event.reason, message=event.message)
                if not plan.actions:
                    break
        except (KubeTransientError, ArtifactError, GitError) as error:
            rt.metrics.error("ModelRelease", _error_reason(error))
            if isinstance(error, ArtifactError | GitError) and not error.transient:
                # Not retryable (access refused, missing bucket or Secret, a
                # revert that conflicts): say so in status.
                reason = "ArtifactStoreError" if isinstance(error, ArtifactError) else "GitOpsError"
                status = release.status or ModelReleaseStatus()
                for kind in (READY, STALLED):
                    status.conditions = set_condition(
                        status.conditions,
                        kind,
                        kind == STALLED,  # Ready=False, Stalled=True
                        reason,
                        str(error),
                        release.generation,
                        _now(),
                    )
                release = release.model_copy(update={"status": status})
                kopf.event(body, type="Warning", reason=reason, message=str(error))
                raise kopf.PermanentError(str(error)) from error
            raise _transient(error) from error
        finally:
            if release.status is not None:
                patch.status.update(_status_patch(old_status, release.status.wire()))
                if read_at:
                    rt.decided[uid] = (read_at, release.status.model_copy(deep=True))
                rt.metrics.release_changed(
                    release, _parsed_status(old_status), release.status, _now()
                )


def _parsed_status(raw: Mapping[str, Any]) -> ModelReleaseStatus | None:
    try:
        return ModelReleaseStatus.model_validate(raw) if raw else None
    except ValidationError:
        return None


def _error_reason(error: Exception) -> str:
    """A small, fixed set of reasons (metric labels)."""
    if isinstance(error, ArtifactError):
        return "ArtifactUnavailable" if error.transient else "ArtifactStoreError"
    if isinstance(error, GitError):
        return "GitUnavailable" if error.transient else "GitOpsError"
    return "KubeApiUnavailable"


@kopf.on.resume(*RELEASES)
@kopf.on.create(*RELEASES)
@kopf.on.update(*RELEASES, field="spec")
def release_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_release(body, patch)


@kopf.timer(*RELEASES, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def release_resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    status = body.get("status") or {}
    generation = body.get("metadata", {}).get("generation")
    at_rest = (
        status.get("phase") in AT_REST_PHASES and status.get("observedGeneration") == generation
    )
    uid = str(body.get("metadata", {}).get("uid"))
    rt = runtime()
    if at_rest:
        rt.resting[uid] += 1
        if rt.resting[uid] % AT_REST_FACTOR:
            return
    else:
        rt.resting.pop(uid, None)
    reconcile_release(body, patch, resync=True)


@kopf.on.delete(*RELEASES)
def release_deleted(name: str, namespace: str | None, uid: str | None, **_: Any) -> None:
    """Training Jobs go with their release (owner references do it on a real
    cluster; this also covers clusters without garbage collection of them)."""
    rt = runtime()
    rt.metrics.forget(namespace or "default", name)
    rt.decided.pop(str(uid), None)
    deleted = rt.runner.delete_jobs(namespace or "default", name)
    logger.info("deleted %d training Jobs of %s/%s", deleted, namespace, name)


# -- QualityGate and Environment: validated, Ready with a reason ------------------


@kopf.on.resume(*GATES)
@kopf.on.create(*GATES)
@kopf.on.update(*GATES, field="spec")
def gate_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    with _measured("QualityGate"):
        _gate_changed(body, patch)


def _gate_changed(body: kopf.Body, patch: kopf.Patch) -> None:
    try:
        gate = QualityGate.model_validate(dict(body))
    except ValidationError as error:
        _invalid("QualityGate", body, patch, error)
        return
    old = QualityGateStatus.model_validate(body.get("status") or {})
    status = QualityGateStatus(
        observed_generation=gate.generation,
        check_count=len(gate.spec.checks),
        conditions=set_condition(
            old.conditions,
            READY,
            True,
            "Valid",
            f"{len(gate.spec.checks)} checks are valid",
            gate.generation,
            _now(),
        ),
    )
    patch.status.update(_status_patch(body.get("status"), status.wire()))


@kopf.on.resume(*ENVIRONMENTS)
@kopf.on.create(*ENVIRONMENTS)
@kopf.on.update(*ENVIRONMENTS, field="spec")
@kopf.timer(*ENVIRONMENTS, interval=RESYNC_SECONDS * 4, initial_delay=RESYNC_SECONDS)
def environment_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    with _measured("Environment"):
        _environment_changed(body, patch)


def _environment_changed(body: kopf.Body, patch: kopf.Patch) -> None:
    try:
        environment = Environment.model_validate(dict(body))
    except ValidationError as error:
        _invalid("Environment", body, patch, error)
        return
    try:
        peers = list_environments(runtime(), environment.namespace)
    except KubeTransientError as error:
        raise _transient(error) from error
    peers[environment.name] = environment
    problem = graph_problems(peers).get(environment.name)
    previous = environment.status.conditions if environment.status else []
    conditions = set_condition(
        previous,
        READY,
        problem is None,
        "PromotionPathInvalid" if problem else "Valid",
        problem or "environment is valid",
        environment.generation,
        _now(),
    )
    wanted = {
        "conditions": [c.wire() for c in conditions],
        "observedGeneration": environment.generation,
    }
    old = body.get("status") or {}
    for key, value in wanted.items():
        if old.get(key) != value:  # unchanged status writes nothing
            patch.status[key] = value


# Admission webhooks are registered only where they are served: kopf refuses
# to start with admission handlers but no webhook server.
if OperatorSettings.from_env().webhook_port:
    from modelgate.handlers import admission  # noqa: F401  (registers the webhooks)
