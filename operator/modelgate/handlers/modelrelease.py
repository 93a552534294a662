"""ModelRelease handlers: observe, decide with the core, act, record the status."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelgate.api.common import format_time
from modelgate.api.environment import Environment, EnvironmentStatus, Promotion
from modelgate.api.modelrelease import ModelRelease, ModelReleaseStatus
from modelgate.backends.base import ArtifactError
from modelgate.backends.gitops import GitError
from modelgate.backends.informers import MODEL_RELEASES
from modelgate.backends.kube import (
    KubeTransientError,
)
from modelgate.backends.kube_challengers import rollout_unsupported
from modelgate.backends.mlflow import (
    MlflowError,
    headers_from_secret,
    observe_registry,
    perform_sync,
)
from modelgate.handlers.common import (
    AT_REST_PHASES,
    ENVIRONMENTS,
    RELEASES,
    STEPS_PER_CALL,
    Runtime,
    get_gate,
    list_environments,
    logger,
    look_and_record,
    measured,
    now_utc,
    report_invalid,
    runtime,
    status_patch,
    transient,
)
from modelgate.promotion import (
    Action,
    Deploy,
    EvaluateGate,
    Observed,
    Plan,
    Rollback,
    StartTraining,
    StartVerification,
    SyncRegistry,
    TrainingObservation,
    reconcile,
    wakeups,
)
from modelgate.promotion.analysis import due_queries
from modelgate.promotion.conditions import READY, STALLED, set_condition
from modelgate.promotion.keys import release_key
from modelgate.promotion.plan import RegistryObservation, RemoveChallenger, SetTraffic
from modelgate.promotion.registry_sync import record_sync, registered_version
from modelgate.promotion.rollout import due_queries as due_arm_queries
from modelgate.promotion.rollout import removals_for_deleted
from modelgate.promotion.scoring import scoring_job
from modelgate.promotion.training import registry_query, training_job


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
) -> bool:
    """Perform the plan's actions; True when one of them is still under way
    (an evaluation Job): the release is looked at again on its next resync."""
    waiting = False
    for action in plan.actions:
        log_action(release, action)
        if isinstance(action, StartTraining):
            rt.runner.start(release, action)
        elif isinstance(action, EvaluateGate):
            waiting = not rt.runner.evaluate(release, action, now) or waiting
        elif isinstance(action, Deploy) and action.challenger:
            rt.delivery.deploy(environments[action.environment], action, now)
        elif isinstance(action, SetTraffic):
            how = rt.delivery.set_traffic(environments[action.environment], action)
            if how is None:
                # Its router is starting: asked again on the next look.
                waiting = True
                logger.info("traffic of %s in %s: waiting for the router", action.model,
                            action.environment)  # fmt: skip
            else:
                logger.info("traffic of %s in %s: %s", action.model, action.environment, how)
        elif isinstance(action, RemoveChallenger):
            removed = rt.delivery.remove_challenger(environments[action.environment], action)
            if removed is not None:
                logger.info("challenger %s removed from %s", removed, action.environment)
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
                judged=action.judged,
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
                    reason=action.reason,
                    revision=revision,
                )
                _record_live(rt, environments[action.environment], entry)
        elif isinstance(action, SyncRegistry) and release.status is not None:
            try:
                headers = _registry_headers(rt, release)
                restored = (
                    _restored_version(rt, release, environments[action.environment], action)
                    if action.rolled_back
                    else None
                )
                ok, message, version = perform_sync(action, headers, restored)
            except (MlflowError, KubeTransientError) as error:
                ok, message, version = False, str(error), None
            record_sync(release.status, action, ok, message, version, now)
            # Shown in status.source.mlflow.synced (and logged); never an error.
            (logger.info if ok else logger.warning)(
                "registry %s of %s: %s", action.environment, release_key(release), message
            )
    return waiting


def _registry_headers(rt: Runtime, release: ModelRelease) -> dict[str, str]:
    """The registry credentials the release names (none: no header)."""
    secret = release.spec.mlflow.credentials_secret if release.spec.mlflow else None
    if secret is None:
        return {}
    return headers_from_secret(
        rt.delivery.secret_data(release.namespace, secret.name),
        secret.token_key, secret.username_key, secret.password_key,
        f"{release.namespace}/{secret.name}",
    )  # fmt: skip


def _restored_version(
    rt: Runtime, release: ModelRelease, environment: Environment, action: SyncRegistry
) -> str | None:
    """The registered version of the release live again where this one was rolled back."""
    live = rt.delivery.observe(
        release.namespace, {environment.name: environment}, release.spec.model.name,
        release_key(release),
    ).get(environment.name)  # fmt: skip
    if live is None or live.release == release_key(release):
        return None
    namespace, _, name = live.release.partition("/")
    try:
        other = rt.clients.custom.get_namespaced_custom_object(
            RELEASES[0], RELEASES[1], namespace, RELEASES[2], name
        )
        found = ModelRelease.model_validate(other)
    except (ApiException, ValidationError):
        return None
    return registered_version(found.spec, found.status, action)


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
    with measured("ModelRelease"):
        _reconcile_release(body, patch, resync)


def _reconcile_release(body: kopf.Body, patch: kopf.Patch, resync: bool) -> None:
    rt = runtime()
    try:
        release = ModelRelease.model_validate(dict(body))
    except ValidationError as error:
        if resync:
            return  # reported once by the change handler; nothing new to say
        report_invalid("ModelRelease", body, patch, error)
        return
    uid = release.metadata.uid or release_key(release)
    read_at = str(body.get("metadata", {}).get("resourceVersion") or "")
    with rt.locks[uid]:
        old_status = dict(body.get("status") or {})
        read_digest = _digest(old_status)
        earlier = rt.decided.get(uid)
        stale = earlier is not None and (
            (bool(read_at) and read_at == earlier[0]) or read_digest == earlier[1]
        )
        if earlier is not None and stale:
            decided = json.loads(earlier[2])
            release = release.model_copy(
                update={"status": ModelReleaseStatus.model_validate(decided)}
            )
            # The patch must also undo what that write set (if it landed).
            for key, value in decided.items():
                old_status.setdefault(key, value)
        try:
            gate = get_gate(rt, release.namespace, release.spec.gate.name)
            environments = list_environments(rt, release.namespace)
            wanted = {
                n: e for n, e in environments.items() if n in release.spec.promotion.environments
            }
            for _ in range(STEPS_PER_CALL):
                now = now_utc()
                job = training_job(release, gate)
                recorded = release.status.training if release.status else None
                finished = (
                    recorded is not None
                    and recorded.job_name == job
                    and recorded.state == "Succeeded"
                    and bool(release.status and release.status.artifacts)
                )
                scoring = scoring_job(release)
                scored = (
                    release.status is not None
                    and release.status.scoring is not None
                    and (
                        release.status.scoring.job_name == scoring
                        and release.status.scoring.state == "Succeeded"
                    )
                )
                observed = Observed(
                    # A recorded success is final: no need to read the Job (and
                    # copy its outputs) again on every resync.
                    training=None if finished else rt.runner.observe(release.namespace, job),
                    scoring=rt.runner.observe(release.namespace, scoring)
                    if scoring is not None and not scored
                    else None,
                    deployments=rt.delivery.observe(
                        release.namespace, wanted, release.spec.model.name, release_key(release)
                    ),
                    verifications=_verifications(rt, release, wanted),
                    measurements={
                        (q.environment, q.metric): rt.prometheus.measure(q, now)
                        for q in due_queries(release, wanted, now)
                    },
                    challengers=rt.delivery.observe_challengers(wanted, release.spec.model.name),
                    arm_measurements={
                        (q.environment, q.metric, q.arm, q.field): rt.prometheus.measure(q, now)
                        for q in due_arm_queries(release, wanted, now)
                    },
                    registered=_registered(rt, release),
                )
                plan = reconcile(
                    release,
                    gate,
                    environments,
                    observed,
                    now,
                    server_image=rt.settings.server_image,
                    rollout_unsupported=rollout_unsupported,
                )
                release = release.model_copy(update={"status": plan.status})
                waiting = _act(rt, release, plan, environments, now)
                for event in plan.events:
                    kopf.event(body, type=event.type, reason=event.reason, message=event.message)
                if plan.requeue_after is not None:
                    rt.due[uid] = time.monotonic() + plan.requeue_after.total_seconds()
                else:
                    rt.due.pop(uid, None)
                if not plan.actions or waiting:
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
                        now_utc(),
                    )
                release = release.model_copy(update={"status": status})
                kopf.event(body, type="Warning", reason=reason, message=str(error))
                raise kopf.PermanentError(str(error)) from error
            raise transient(error) from error
        finally:
            if release.status is not None:
                written = status_patch(old_status, release.status.wire())
                patch.status.update(written)
                if read_at and written:
                    rt.decided[uid] = (read_at, read_digest, json.dumps(release.status.wire()))
                elif earlier is not None and not stale:
                    # The body shows a later status: that write came back.
                    del rt.decided[uid]
                rt.metrics.release_changed(
                    release, _parsed_status(old_status), release.status, now_utc()
                )


def _digest(status: dict[str, Any]) -> str:
    """A short fingerprint of a status as read (to tell it from a later one)."""
    canonical = json.dumps(status, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _registered(rt: Runtime, release: ModelRelease) -> RegistryObservation | None:
    """The registry's answer, when the release still has to resolve its version."""
    query = registry_query(release)
    if query is None:
        return None
    try:
        headers = _registry_headers(rt, release)
    except MlflowError as error:
        return RegistryObservation(error=str(error), transient=error.transient)
    return observe_registry(query, headers)


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


def at_rest(body: Mapping[str, Any]) -> bool:
    """Nothing to do until something it reads changes: a final phase, for
    the current generation."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    return status.get("phase") in AT_REST_PHASES and status.get("observedGeneration") == generation


@kopf.daemon(*RELEASES, cancellation_timeout=1.0)
async def release_daemon(body: kopf.Body, uid: str | None, **_: Any) -> None:
    """Each release sleeps until something it reads changes (a watch event of
    its Jobs or Deployments, an edit of an Environment or QualityGate it
    names), or the time the core asked for comes, then looks again. Releases
    in progress also look every resync period: their GitOps repository or
    Argo CD Application is not watched. Spec changes are the change
    handler's."""
    rt = runtime()
    metadata = body.get("metadata") or {}
    release_uid = str(uid)
    await rt.sleep_and_look(
        wakeups.release_key(str(metadata.get("namespace")), str(metadata.get("name"))),
        release_uid,
        lambda: rt.wait_seconds(release_uid, at_rest(body)),
        lambda: look_again(body),
    )


def look_again(body: kopf.Body) -> float | None:
    """Reconcile outside a kopf handler and write the status it decided;
    returns when to try again after a transient error."""
    return look_and_record(
        body, RELEASES, MODEL_RELEASES, lambda b, p: reconcile_release(b, p, resync=True)
    )


@kopf.on.delete(*RELEASES)
def release_deleted(
    name: str, namespace: str | None, uid: str | None, body: kopf.Body, **_: Any
) -> None:
    """Training Jobs go with their release (owner references do it on a real
    cluster; this also covers clusters without garbage collection of them),
    and so does a challenger of it still beside a live release (with its
    split): a failure to remove one is retried before the release goes."""
    rt = runtime()
    model = ((body.get("spec") or {}).get("model") or {}).get("name")
    if model:
        environments = list_environments(rt, namespace or "default")
        key = f"{namespace or 'default'}/{name}"
        beside = rt.delivery.observe_challengers(environments, str(model))
        for action in removals_for_deleted(key, str(model), environments, beside):
            rt.delivery.remove_challenger(environments[action.environment], action)
            logger.info("challenger %s removed from %s: the release was deleted", key,
                        action.environment)  # fmt: skip
    rt.metrics.forget(namespace or "default", name)
    rt.decided.pop(str(uid), None)
    rt.due.pop(str(uid), None)
    deleted = rt.runner.delete_jobs(namespace or "default", name)
    logger.info("deleted %d training Jobs of %s/%s", deleted, namespace, name)
