"""Watches into memory: what a reconcile reads, without asking the API server.

An :class:`Informer` lists one kind (in one namespace, or the whole cluster)
once, then follows its watch from that resourceVersion, reconnecting where it
left off when the server ends the stream and listing again only when the
server says the version is gone (410). A :class:`KubeCache` holds the
informers of what the operator reads on every reconcile (its Jobs and
Deployments, by the ``app.kubernetes.io/managed-by`` label; Environments,
QualityGates and the ModelReleases an Environment's verdicts name) and tells
the handlers what changed, so that a release at rest costs no API request
and a change is acted on when it happens.

Until an informer has listed, reads fall back to the API server (the caller
sees ``None`` from :meth:`KubeCache.get` / :meth:`KubeCache.list`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client

logger = logging.getLogger("modelgate.informers")

MANAGED = "app.kubernetes.io/managed-by=modelgate"


@dataclass(frozen=True)
class Resource:
    """A kind by its API path: ``batch/v1`` ``jobs``; ``v1`` for the core group."""

    group_version: str
    plural: str
    selector: str = ""  # a label selector the server filters by

    def path(self, namespace: str | None) -> str:
        prefix = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return (
            f"{prefix}/namespaces/{namespace}/{self.plural}"
            if namespace
            else (f"{prefix}/{self.plural}")
        )


JOBS = Resource("batch/v1", "jobs", MANAGED)
DEPLOYMENTS = Resource("apps/v1", "deployments", MANAGED)
ENVIRONMENTS = Resource("modelgate.dev/v1alpha1", "environments")
QUALITY_GATES = Resource("modelgate.dev/v1alpha1", "qualitygates")
MODEL_RELEASES = Resource("modelgate.dev/v1alpha1", "modelreleases")
CACHED = (JOBS, DEPLOYMENTS, ENVIRONMENTS, QUALITY_GATES, MODEL_RELEASES)

# Objects per page of a listing.
LIST_PAGE = 250
# (resource, event type, the object) for each change an informer saw.
ChangeHandler = Callable[[Resource, str, dict[str, Any]], None]


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


def _trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without ``metadata.managedFields``: server-side apply's
    bookkeeping, often the largest part of an object, read by no reconcile."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        metadata = {k: v for k, v in metadata.items() if k != "managedFields"}
        return {**obj, "metadata": metadata}
    return obj


def _version(obj: dict[str, Any]) -> int | None:
    """The resourceVersion as a number where the server gives one (etcd's
    are), to keep a newer object over an older event of it."""
    text = str((obj.get("metadata") or {}).get("resourceVersion", ""))
    return int(text) if text.isdigit() else None


def _lines(response: Any) -> Iterator[bytes]:
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _interrupt(response: Any) -> None:
    """End a watch blocked reading its socket, from another thread: shut the
    socket down (closing the response there would wait for that read)."""
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock")):
        found: Any = response
        for attribute in path:
            found = getattr(found, attribute, None)
            if found is None:
                break
        if found is not None:
            with contextlib.suppress(OSError):
                found.shutdown(socket.SHUT_RDWR)
            return


class Informer:
    """One kind in one scope, listed and watched into :attr:`store`."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: Resource,
        namespace: str | None,
        on_change: ChangeHandler | None = None,
        watch_seconds: int = 300,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.on_change = on_change
        self.watch_seconds = watch_seconds
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = threading.Event()
        self.lists = 0  # how many times it listed (once, unless told 410)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{resource.plural}-{namespace or 'all'}", daemon=True
        )

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self, wait: float = 1.0) -> None:
        """Ask the watch to end; a daemon thread still blocked on its socket
        after ``wait`` ends with the process."""
        self._stop.set()
        response = self._response
        if response is not None:
            _interrupt(response)
        if self._thread.is_alive():
            self._thread.join(timeout=wait)

    # ---- reads --------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.store.get((namespace, name))

    def items(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [o for (ns, _), o in self.store.items() if namespace is None or ns == namespace]

    def remember(self, obj: dict[str, Any]) -> None:
        """What the operator itself just wrote, before its watch event comes
        back (the next reconcile must not act on an older copy)."""
        self._put("MODIFIED", obj, notify=False)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self.store.pop((namespace, name), None)

    # ---- the loop -------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                failures = 0
            except Gone:
                version = None
            except Exception as error:
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                logger.warning(
                    "watching %s failed (%s); again in %.1f s", self.resource.plural, error, delay
                )
                version = None  # the stream may have missed events: list again
                self._stop.wait(delay)

    def _request(self, query: list[tuple[str, str]], timeout: Any) -> Any:
        if self.resource.selector:
            query.append(("labelSelector", self.resource.selector))
        response = self.api.call_api(
            self.resource.path(self.namespace),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        return response[0] if isinstance(response, tuple) else response

    def _list(self) -> str:
        """One consistent listing, in pages (a thousand releases in one answer
        is tens of MB of JSON at once); returns its resourceVersion."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        token = ""
        while True:
            query = [("limit", str(LIST_PAGE))]
            if token:
                query.append(("continue", token))
            response = self._request(query, 60)
            listing = json.loads(response.data)
            del response
            for obj in listing.get("items") or []:
                trimmed = _trimmed(obj)
                found[_key(trimmed)] = trimmed
            metadata = listing.get("metadata") or {}
            token = str(metadata.get("continue") or "")
            del listing
            if not token:
                break
        self.lists += 1
        with self._lock:
            gone = [o for k, o in self.store.items() if k not in found]
            changed = [o for k, o in found.items() if self.store.get(k) != o]
            self.store = found
        self.synced.set()
        if self.on_change is not None:
            for obj in gone:
                self.on_change(self.resource, "DELETED", obj)
            for obj in changed:
                self.on_change(self.resource, "MODIFIED", obj)
        return str(metadata.get("resourceVersion", ""))

    def _watch(self, version: str) -> str:
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.watch_seconds)),
        ]
        response = self._request(query, (10, self.watch_seconds * 1.1 + 5))
        self._response = response
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    break
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "resourceVersion too old"))
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                self._put(str(kind), obj, notify=True)
        finally:
            self._response = None
            response.release_conn()
        return version

    def _put(self, kind: str, obj: dict[str, Any], notify: bool) -> None:
        obj = _trimmed(obj)
        key = _key(obj)
        with self._lock:
            if kind == "DELETED":
                self.store.pop(key, None)
            else:
                held = self.store.get(key)
                newer, older = _version(obj), _version(held) if held else None
                if held is not None and newer is not None and older is not None and newer < older:
                    return  # an event older than what the operator wrote since
                self.store[key] = obj
        if notify and self.on_change is not None:
            self.on_change(self.resource, kind, obj)


class KubeCache:
    """The informers of what a reconcile reads, per watched namespace (or
    cluster-wide), and the change handler the operator gives them."""

    def __init__(
        self,
        api: client.ApiClient,
        namespaces: tuple[str, ...] = (),
        on_change: ChangeHandler | None = None,
        watch_seconds: int = 300,
    ) -> None:
        scopes: tuple[str | None, ...] = namespaces or (None,)
        self.informers: dict[Resource, list[Informer]] = {
            resource: [Informer(api, resource, scope, on_change, watch_seconds) for scope in scopes]
            for resource in CACHED
        }

    def start(self) -> KubeCache:
        for informers in self.informers.values():
            for informer in informers:
                informer.start()
        return self

    def stop(self) -> None:
        everyone = [i for informers in self.informers.values() for i in informers]
        for informer in everyone:
            informer.stop(wait=0)
        deadline = time.monotonic() + 2.0
        for informer in everyone:
            informer.stop(wait=max(0.0, deadline - time.monotonic()))

    def synced(self) -> bool:
        """Every informer has listed."""
        return all(i.synced.is_set() for informers in self.informers.values() for i in informers)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for informers in self.informers.values():
            for informer in informers:
                if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def _scope(self, resource: Resource, namespace: str) -> Informer | None:
        """The informer holding ``namespace``'s objects, once it has listed."""
        for informer in self.informers.get(resource, []):
            if informer.namespace in (None, namespace):
                return informer if informer.synced.is_set() else None
        return None

    def known(self, resource: Resource, namespace: str) -> bool:
        return self._scope(resource, namespace) is not None

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist; ask :meth:`known`
        first (an informer that has not listed yet knows nothing)."""
        informer = self._scope(resource, namespace)
        return informer.get(namespace, name) if informer is not None else None

    def list(self, resource: Resource, namespace: str) -> list[dict[str, Any]] | None:
        informer = self._scope(resource, namespace)
        return informer.items(namespace) if informer is not None else None

    def remember(self, resource: Resource, obj: dict[str, Any]) -> None:
        namespace = str((obj.get("metadata") or {}).get("namespace", ""))
        informer = self._scope(resource, namespace)
        if informer is not None:
            informer.remember(obj)

    def forget(self, resource: Resource, namespace: str, name: str) -> None:
        informer = self._scope(resource, namespace)
        if informer is not None:
            informer.forget(namespace, name)
