"""What the handlers share: API clients, backends, per-object locks and small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelgate import __version__
from modelgate.api.environment import Environment
from modelgate.api.loader import format_validation_error
from modelgate.api.modelrelease import ModelRelease
from modelgate.api.qualitygate import QualityGate
from modelgate.backends.delivery import KubeDelivery
from modelgate.backends.informers import (
    DEPLOYMENTS,
    JOBS,
    MODEL_RELEASES,
    QUALITY_GATES,
    KubeCache,
    Resource,
)
from modelgate.backends.informers import (
    ENVIRONMENTS as CACHED_ENVIRONMENTS,
)
from modelgate.backends.kube import (
    GROUP,
    VERSION,
    KubeClients,
    KubeRunner,
    KubeTransientError,
    TimedApiClient,
    classify_api_error,
    read_through,
)
from modelgate.backends.prometheus import PrometheusClient
from modelgate.backends.s3 import LazyClient, S3ArtifactStore, S3Settings
from modelgate.memory import MemoryTrimmer
from modelgate.metrics import Metrics
from modelgate.promotion.conditions import READY, set_condition
from modelgate.promotion.wakeups import (
    ENVIRONMENT,
    QUALITY_GATE,
    EnvironmentIndex,
    ReleaseIndex,
    live_environments,
)
from modelgate.settings import OperatorSettings

RELEASES = (GROUP, VERSION, "modelreleases")
GATES = (GROUP, VERSION, "qualitygates")
ENVIRONMENTS = (GROUP, VERSION, "environments")
RESYNC_SECONDS = float(os.environ.get("MODELGATE_RESYNC_SECONDS", "15"))
# Follow-up steps taken in one handler call when an action can be observed at
# once (a gate result, a created Job): fewer round trips, same decisions.
STEPS_PER_CALL = 5
# Without the watches (MODELGATE_CACHE=false), releases at rest are re-read
# this many times less often than moving ones; a spec change acts at once.
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
    # Returns freed memory to the OS once a minute (memory.py).
    trimmer: MemoryTrimmer | None = None
    prometheus: PrometheusClient = field(default_factory=lambda: PrometheusClient(None))
    locks: defaultdict[str, threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )
    # uid -> (resourceVersion read, digest of the status read, status decided
    # from it). kopf patches the status after a handler returns, and a timer
    # can run before the watch brings that write back: a body still at the
    # version read last time, or at a later one that still shows the status
    # read then (kopf's own annotation patch lands in between), is stale, and
    # the status decided then is the truth (kept as its JSON: a fifth of the
    # memory of the model).
    decided: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # The watches a reconcile reads from, once started (start_cache).
    cache: KubeCache | None = None
    # Releases ("namespace/name") whose Jobs or Deployments changed, or an
    # Environment or QualityGate they name, and Environments
    # ("Environment:namespace/name") whose inputs changed: their daemon
    # looks, and takes it.
    dirty: set[str] = field(default_factory=set)
    # Releases by the Environments and QualityGates they name (from the watch).
    index: ReleaseIndex = field(default_factory=ReleaseIndex)
    # Which Environments to judge again after an event (from the watches).
    environments: EnvironmentIndex = field(default_factory=EnvironmentIndex)
    # uid -> when (time.monotonic) the core asked to look again (requeue_after).
    due: dict[str, float] = field(default_factory=dict)
    # "namespace/name" -> the wake-up of that release's daemon, on kopf's loop.
    _wakeups: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(
        default_factory=dict
    )
    # (resource plural, namespace, name) -> the generation last seen.
    _generations: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def start_cache(self) -> KubeCache:
        """Watch what a reconcile reads; the runner and deployer read it from now."""
        if self.cache is None:
            cache = KubeCache(
                self.clients.api,
                self.settings.namespaces,
                self.changed,
                watch_seconds=int(self.settings.watch_seconds),
            )
            self.runner.cache = cache
            self.delivery.direct.cache = cache
            self.cache = cache.start()
        return self.cache

    def stop_cache(self) -> None:
        if self.cache is not None:
            self.cache.stop()
            self.runner.cache = self.delivery.direct.cache = self.cache = None

    def changed(self, resource: Resource, kind: str, obj: dict[str, Any]) -> None:
        """An informer saw a change: wake the releases and Environments it
        concerns, and only them."""
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        if resource is MODEL_RELEASES:
            self.index.update(obj, deleted=kind == "DELETED")
            for environment in self.environments.release_changed(obj, deleted=kind == "DELETED"):
                self.mark(environment)
            return
        if resource in (CACHED_ENVIRONMENTS, QUALITY_GATES):
            name = str(metadata.get("name", ""))
            key = (resource.plural, namespace, name)
            generation = int(metadata.get("generation") or 0)
            if kind != "DELETED" and self._generations.get(key) == generation:
                return  # a status write: nothing a release reads
            if kind == "DELETED":
                self._generations.pop(key, None)  # one made again starts at generation 1
            else:
                self._generations[key] = generation
            if resource is CACHED_ENVIRONMENTS:
                peers = self.environments.environment_changed(obj, deleted=kind == "DELETED")
                for environment in peers:
                    self.mark(environment)
            referenced = ENVIRONMENT if resource is CACHED_ENVIRONMENTS else QUALITY_GATE
            for release in self.index.concerned(referenced, namespace, name):
                self.mark(release)
            return
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        if resource is JOBS and labels.get("modelgate.dev/release"):
            owner = labels.get("modelgate.dev/release-namespace") or namespace
            self.mark(f"{owner}/{labels['modelgate.dev/release']}")
        elif resource is DEPLOYMENTS and annotations.get("modelgate.dev/release"):
            self.mark(str(annotations["modelgate.dev/release"]))

    def mark(self, key: str) -> None:
        """Something release (or Environment) ``key`` reads changed: wake it now."""
        self.dirty.add(key)
        found = self._wakeups.get(key)
        if found is not None:
            loop, event = found
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(event.set)

    def subscribe(self, key: str) -> asyncio.Event:
        """The wake-up of ``key``'s daemon (called on kopf's loop)."""
        event = asyncio.Event()
        self._wakeups[key] = (asyncio.get_running_loop(), event)
        if key in self.dirty:
            event.set()
        return event

    def unsubscribe(self, key: str, event: asyncio.Event) -> None:
        if self._wakeups.get(key, (None, None))[1] is event:
            del self._wakeups[key]

    async def sleep_and_look(
        self,
        key: str,
        uid: str,
        wait: Callable[[], float | None],
        look: Callable[[], float | None],
        settle: float = 0.0,
    ) -> None:
        """A daemon's life: sleep until woken (``mark``) or ``wait()`` seconds
        pass (None: until woken), take the change, ``look`` in a thread; a
        look returns how soon to try again after a transient error. Woken,
        it first waits ``settle`` seconds, so that one look covers a burst."""
        woken = self.subscribe(key)
        retry: float | None = None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), retry if retry is not None else wait())
                if settle and woken.is_set():
                    await asyncio.sleep(settle)  # the rest of a burst of events
                woken.clear()
                self.take_change(uid, key)
                retry = await asyncio.to_thread(look)
        finally:
            self.unsubscribe(key, woken)

    def cache_ready(self) -> bool:
        return self.cache is not None and self.cache.synced()

    def take_change(self, uid: str, key: str) -> bool:
        """Whether a release (or an Environment) has anything to look at: a
        change of what it reads, or a time the core asked for. Taking it
        clears it."""
        wanted = key in self.dirty or time.monotonic() >= self.due.get(uid, float("inf"))
        if wanted:
            self.dirty.discard(key)
            self.due.pop(uid, None)
        return wanted

    def wait_seconds(self, uid: str, at_rest: bool) -> float | None:
        """How long a release's daemon may sleep unless woken: until the time
        the core asked for; without the watches (or for a release in
        progress, whose GitOps repository or Argo CD Application nobody
        watches) at most a resync period, ten of them at rest; None: until
        woken."""
        waits = []
        if uid in self.due:
            waits.append(max(0.0, self.due[uid] - time.monotonic()))
        if not self.cache_ready():
            waits.append(RESYNC_SECONDS * (AT_REST_FACTOR if at_rest else 1))
        elif not at_rest:
            waits.append(RESYNC_SECONDS)
        return min(waits) if waits else None

    def wake_namespace(self, namespace: str) -> None:
        """Without the watches' index: every release of ``namespace`` looks
        again (an Environment or gate it may use changed)."""
        for key in list(self._wakeups):
            if key.startswith(f"{namespace}/"):
                self.mark(key)

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
        s3 = LazyClient(s3_settings, "MODELGATE_S3_ENDPOINT")
        store = S3ArtifactStore(s3_settings, s3)
        return cls(
            settings=settings,
            clients=clients,
            store=store,
            runner=KubeRunner(clients, settings, store, s3),
            delivery=KubeDelivery(clients, settings),
            prometheus=PrometheusClient(settings.prometheus),
        )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime  # noqa: PLW0603  (built once per process, at first use)
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime.build(OperatorSettings.from_env())
        return _runtime


def wake_releases(namespace: str) -> None:
    """An Environment or QualityGate of ``namespace`` was edited: without the
    watches (whose index wakes only the releases that name it), wake all of
    the namespace's."""
    rt = runtime()
    if not rt.cache_ready():
        rt.wake_namespace(namespace)


def reset_runtime() -> None:
    """Forget the clients (tests start a new emulator per module)."""
    global _runtime  # noqa: PLW0603
    with _runtime_lock:
        _runtime = None


# -- helpers ---------------------------------------------------------------------


def now_utc() -> datetime:
    return datetime.now(UTC)


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``old`` status into ``new``: only what differs
    (an unchanged status writes nothing, so a resync causes no watch event),
    removed keys as null."""
    old = old or {}
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def look_and_record(
    body: kopf.Body,
    crd: tuple[str, str, str],
    cached: Resource,
    look: Callable[[kopf.Body, kopf.Patch], None],
) -> float | None:
    """What a daemon does when woken: ``look`` (a handler's work, outside
    kopf), then write the status it decided to the status subresource and
    into the cache at once. Returns when to try again after a transient
    error or a failed write; never raises, so the daemon lives on."""
    patch = kopf.Patch()
    retry: float | None = None
    metadata = body.get("metadata") or {}
    try:
        look(body, patch)
    except kopf.TemporaryError as error:
        retry = error.delay or RESYNC_SECONDS
        logger.warning("%s", error)
    except kopf.PermanentError as error:
        logger.warning("%s", error)  # in its status and Events already; an edit retries
    except Exception:  # never let one object's bug stop its daemon
        logger.exception("looking at %s %s failed", crd[2], metadata.get("name"))
        retry = RESYNC_SECONDS
    status = patch.get("status") or {}
    if not status:
        return retry
    rt = runtime()
    try:
        written = rt.clients.custom.patch_namespaced_custom_object_status(
            crd[0], crd[1], metadata.get("namespace"), crd[2], metadata.get("name"),
            {"status": dict(status)},
        )  # fmt: skip
    except ApiException as error:
        if error.status == 404:
            return retry  # deleted meanwhile: its daemon is being stopped
        logger.warning("could not record the status of %s: %s", metadata.get("name"), error)
        return retry or RESYNC_SECONDS
    if rt.cache is not None:
        rt.cache.remember(cached, written)
    return retry


def report_invalid(kind: str, body: kopf.Body, patch: kopf.Patch, error: ValidationError) -> None:
    problems = format_validation_error(error)
    message = "; ".join(problems)
    generation = int(body.get("metadata", {}).get("generation") or 1)
    conditions = set_condition([], READY, False, "InvalidSpec", message, generation, now_utc())
    patch.status["conditions"] = [c.wire() for c in conditions]
    patch.status["observedGeneration"] = generation
    kopf.event(body, type="Warning", reason="InvalidSpec", message=message[:1024])
    raise InvalidSpec(f"invalid {kind}: {message}")


class InvalidSpec(kopf.PermanentError):
    """The object cannot be parsed; its status says why."""


@contextlib.contextmanager
def measured(kind: str) -> Iterator[None]:
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


def transient(error: Exception) -> kopf.TemporaryError:
    if isinstance(error, KubeTransientError):
        return kopf.TemporaryError(str(error), delay=error.delay)
    # S3 and Git clients have retried with backoff already (botocore's
    # adaptive mode, the push-race loop): wait a little before the next round.
    return kopf.TemporaryError(str(error), delay=10)


def get_gate(rt: Runtime, namespace: str, name: str | None) -> QualityGate | None:
    if name is None:
        return None

    def read(gate: str, where: str) -> Any:
        return rt.clients.custom.get_namespaced_custom_object(*GATES[:2], where, GATES[2], gate)

    raw = read_through(rt.cache, QUALITY_GATES, namespace, name, read, "QualityGate")
    if raw is None:
        return None
    try:
        return QualityGate.model_validate(raw)
    except ValidationError:
        return None  # its own handler reports why; the release waits for a valid gate


def _listed(
    rt: Runtime, resource: Resource, custom: tuple[str, str, str], namespace: str
) -> list[dict[str, Any]]:
    """A kind's objects in ``namespace``: from the watch, or the API server
    while there is none."""
    items = rt.cache.list(resource, namespace) if rt.cache is not None else None
    if items is not None:
        return items
    try:
        listing = rt.clients.custom.list_namespaced_custom_object(
            custom[0], custom[1], namespace, custom[2]
        )
    except ApiException as error:
        raise classify_api_error(error, f"listing {custom[2]}") from error
    found: list[dict[str, Any]] = listing.get("items", [])
    return found


def list_releases(rt: Runtime, namespace: str, live_in: str | None = None) -> list[ModelRelease]:
    """The valid ModelReleases of ``namespace`` (invalid ones report
    themselves); with ``live_in``, only those live in that environment
    (picked before the costly validation: a namespace keeps every release)."""
    items = _listed(rt, MODEL_RELEASES, RELEASES, namespace)
    if live_in is not None:
        items = [raw for raw in items if live_in in live_environments(raw)]
    found: list[ModelRelease] = []
    for raw in items:
        with contextlib.suppress(ValidationError):
            found.append(ModelRelease.model_validate(raw))
    return found


def list_environments(rt: Runtime, namespace: str) -> dict[str, Environment]:
    items = _listed(rt, CACHED_ENVIRONMENTS, ENVIRONMENTS, namespace)
    found: dict[str, Environment] = {}
    for raw in items:
        try:
            environment = Environment.model_validate(raw)
        except ValidationError:
            continue  # its own handler reports why
        found[environment.name] = environment
    return found
