"""A Kubernetes API emulator close enough to the real API server for kopf.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves them over
HTTP. It deliberately stays simple; this subclass corrects the deviations
that matter to an operator, each against the real API server's behaviour:

1. resourceVersion: the API server stamps a new, increasing resourceVersion
   on every write. kmock stamps none, so kopf's JSON patches (which ``test``
   the resourceVersion) and optimistic concurrency cannot work.
2. metadata on create: uid, creationTimestamp, generation 1, and a name from
   ``generateName``; kmock sets none of them.
3. generation: increases when (and only when) the spec changes.
4. status subresource: a write to ``/status`` changes only the status, and a
   write to the main resource leaves the status alone, for kinds that declare
   the status subresource.
5. Errors: a failed JSON-patch ``test`` is 422 Unprocessable Entity and a
   stale resourceVersion 409 Conflict; kmock answers 500 / accepts it.
6. Create answers 201 Created (the kubernetes client returns None on 200).
7. Lists carry ``kind``, ``apiVersion`` and the current resourceVersion;
   kubectl refuses lists without a kind, and watches resume from it.
8. Watches honour ``?resourceVersion=`` (no replay of older objects) and
   ``?timeoutSeconds=`` (the server ends the stream), as kopf expects.
9. Discovery lists categories and short names on resources only, not on
   their subresources (``x/status``); otherwise ``kubectl get <category>``
   expands into the subresources and fails.
10. A watch misses no write. kmock snapshots the objects, streams them, and
    only then starts following writes, so a write in between (kopf adding its
    finalizer to an object it had just listed) was never streamed and the
    object never got its creation handler. Here the snapshot and the position
    in the stream of writes are taken together, under the emulator's lock.

Not covered (none of it is needed by these tests): label and field selectors,
strategic-merge semantics for lists, schema validation, server-side apply.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import gc
import itertools
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonpatch
import kmock
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def unprocessable(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=422, reason="Invalid", message=message)


def conflict(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=409, reason="Conflict", message=message)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FixedEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API server's bookkeeping (see module docs)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._revisions = itertools.count(1)
        self._revision = 0
        # (method, path fragment) -> [status, remaining count]: fault injection.
        self._faults: dict[tuple[str, str], list[int]] = {}
        self.created: list[str] = []  # paths of every successful-looking create
        self.spec_changes: list[str] = []  # paths of updates that changed a spec
        # (method, path fragment) -> [seconds, remaining count]: slow answers.
        self._delays: dict[tuple[str, str], list[float]] = {}
        # (path fragment, mode) -> [remaining count]: watch streams that misbehave.
        self._watch_faults: dict[tuple[str, str], list[int]] = {}
        # (user agent, method, group, plural, subresource, action) of every request.
        self.requests: list[tuple[str, str, str, str, str, str]] = []

    def inject(self, method: str, path: str, status: int, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        self._faults[(method.upper(), path)] = [status, times]

    def delay(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` matching requests only after ``seconds``.

        The request is then served as usual: a write the client gave up on
        still lands, as it can on a real, slow API server."""
        self._delays[(method.upper(), path)] = [seconds, times]

    def break_watch(self, path: str, mode: str, times: int = 1) -> None:
        """Make the next ``times`` watches of a path misbehave: ``gone`` sends
        an ERROR event with 410 (resource version too old) and ends, ``end``
        ends at once without an event, ``stall`` sends nothing and stays open
        until the client gives up."""
        if mode not in {"gone", "end", "stall"}:
            raise ValueError(f"unknown watch fault {mode!r}")
        self._watch_faults[(path, mode)] = [times]

    def remaining(self) -> dict[str, int]:
        """Injected faults not yet hit (all zero once the test drove them)."""
        found = {f"{m} {p}": int(f[1]) for (m, p), f in self._faults.items()}
        found.update({f"delay {m} {p}": int(f[1]) for (m, p), f in self._delays.items()})
        found.update({f"watch {m} {p}": f[0] for (p, m), f in self._watch_faults.items()})
        return found

    def _delayed(self, request: kmock.Request) -> float:
        for (method, fragment), delay in self._delays.items():
            matches = str(request.method).upper().endswith(method)
            is_watch = request.action == kmock.action.WATCH
            if matches and not is_watch and fragment in request.url.path and delay[1] > 0:
                delay[1] -= 1
                return delay[0]
        return 0.0

    def _injected(self, request: kmock.Request) -> kmock.KubernetesError | None:
        for (method, fragment), fault in self._faults.items():
            matches = str(request.method).upper().endswith(method)
            if matches and fragment in request.url.path and fault[1] > 0:
                fault[1] -= 1
                return kmock.KubernetesError(
                    status=fault[0], reason="Injected", message="injected by the test"
                )
        return None

    def _next_revision(self) -> str:
        self._revision = next(self._revisions)
        return str(self._revision)

    def _has_status_subresource(self, resource: kmock.resource) -> bool:
        try:
            info = self.resources[resource]
        except KeyError:
            return False
        return "status" in set(getattr(info, "subresources", ()) or ())

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def _prepare_create(self, request: kmock.Request) -> None:
        data = request.data
        if not isinstance(data, dict):
            raise unprocessable("the body must be a JSON object")
        metadata = data.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace and not metadata.get("namespace"):
            metadata["namespace"] = request.namespace
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = _now()
        metadata["generation"] = 1
        metadata["resourceVersion"] = self._next_revision()

    def _prepare_update(self, request: kmock.Request) -> None:
        current = self._current(request)
        if current is None:
            return  # the base class answers 404
        patch = request.data
        status_only = request.subresource == "status"
        guarded = self._has_status_subresource(request.resource)
        if isinstance(patch, list):
            try:
                updated = jsonpatch.apply_patch(current, patch, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise unprocessable(f"the JSON patch does not apply: {error}") from error
        elif isinstance(patch, dict):
            expected = (patch.get("metadata") or {}).get("resourceVersion")
            if expected is not None and expected != current["metadata"].get("resourceVersion"):
                raise conflict(
                    "the object has been modified; please apply your changes to the latest version"
                )
            if guarded and status_only:
                patch = {"status": patch.get("status")} if "status" in patch else {}
            elif guarded:
                patch = {k: v for k, v in patch.items() if k != "status"}
            if patch is not request.data:  # filtered: replace the body in place
                request.data.clear()
                request.data.update(patch)
            updated = merge_patch(current, patch)
        else:
            raise unprocessable("the patch must be a JSON object or a JSON patch list")
        generation = int(current["metadata"].get("generation", 1))
        if not status_only and updated.get("spec") != current.get("spec"):
            generation += 1
            self.spec_changes.append(request.url.path)
        stamp = {"resourceVersion": self._next_revision(), "generation": generation}
        if isinstance(request.data, list):
            request.data.extend(
                {"op": "add", "path": f"/metadata/{key}", "value": value}
                for key, value in stamp.items()
            )
        else:
            request.data.setdefault("metadata", {})
            if request.data["metadata"] is None:
                request.data["metadata"] = {}
            request.data["metadata"].update(stamp)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.action is not None:
            resource = request.resource
            self.requests.append(
                (
                    str(request.headers.get("User-Agent", "")),
                    str(request.method).rsplit(".", 1)[-1].upper(),
                    str(getattr(resource, "group", "") or ""),
                    str(getattr(resource, "plural", "") or ""),
                    str(request.subresource or ""),
                    str(request.action).rsplit(".", 1)[-1].lower(),
                )
            )
        delay = self._delayed(request)
        if delay:
            await asyncio.sleep(delay)
        injected = self._injected(request)
        if injected is not None:
            return await self._render_error(injected)
        if request.resource is not None:
            try:
                if request.action == kmock.action.CREATE:
                    self._prepare_create(request)
                    self.created.append(f"{request.url.path}/{request.data['metadata']['name']}")
                elif request.action == kmock.action.UPDATE and request.name is not None:
                    self._prepare_update(request)
            except kmock.KubernetesError as error:
                return await self._render_error(error)
        return await super()._handle(request)

    async def _serve_create(self, request: kmock.Request) -> Any:
        payload = await super()._serve_create(request)
        return kmock.Response(status=201, payload=payload)

    async def _serve_version(self, request: kmock.Request) -> Any:
        payload = await super()._serve_version(request)
        for entry in payload.get("resources", []):
            if "/" in entry.get("name", ""):
                entry["categories"], entry["shortNames"] = [], []
        return payload

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        info = self.resources.get(request.resource)
        kind = getattr(info, "kind", None) or "List"
        group, version = request.resource.group, request.resource.version
        payload["kind"] = f"{kind}List"
        payload["apiVersion"] = f"{group}/{version}" if group else version
        payload["metadata"] = {"resourceVersion": str(self._revision)}
        return payload

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        for (fragment, mode), fault in self._watch_faults.items():
            if fragment in request.url.path and fault[0] > 0:
                fault[0] -= 1
                if mode == "gone":
                    yield {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "reason": "Expired",
                            "code": 410,
                            "message": "too old resource version (injected by the test)",
                        },
                    }
                    return
                # Headers, then (for "end") the end: an empty stream would
                # otherwise fall through kmock's matching to a 404.
                yield b""
                if mode == "stall":
                    # Silent for longer than the client waits (it gives up
                    # first), but bounded so the server can shut down.
                    await asyncio.sleep(3 * float(request.params.get("timeoutSeconds") or 60))
                return
        since = int(request.params.get("resourceVersion") or 0)
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        stream = self._snapshot_then_writes(request).__aiter__()
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                event = await asyncio.wait_for(stream.__anext__(), remaining)
            except (TimeoutError, StopAsyncIteration):
                return
            if isinstance(event, dict) and event.get("type") in ("ADDED", "MODIFIED"):
                revision = event["object"].get("metadata", {}).get("resourceVersion", "0")
                if int(revision) <= since:
                    continue  # the client has seen it already
            yield event

    async def _snapshot_then_writes(self, request: kmock.Request) -> AsyncIterator[Any]:
        """kmock's watch (existing objects as ADDED, then every write), with
        the snapshot and the mark in the write bus taken under one lock."""
        yield b""
        matches = self._KubernetesEmulator__check
        bus = self._buses[request.resource]
        async with self._lock:
            objects = self._KubernetesEmulator__get_objs(request, strict=False)
            events = [{"type": "ADDED", "object": o.raw} for o in objects if not o.deleted]
            mark = await bus.mark()
        try:
            for event in events:
                yield event
            async for event in bus.stream(since=mark):
                metadata = event.get("object", {}).get("metadata", {})
                if matches(
                    request,
                    request.resource,
                    metadata.get("namespace"),
                    metadata.get("name"),
                    strict=False,
                ):
                    yield event
        finally:
            await bus.unmark(mark)


def crd_resources(paths: list[Path] | None = None) -> dict[str, kmock.ResourceInfo]:
    """ResourceInfo for CRDs read from files (default: the project's, crds/)."""
    found: dict[str, kmock.ResourceInfo] = {}
    documents = [
        document
        for path in (paths if paths is not None else sorted((ROOT / "crds").glob("*.yaml")))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    for crd in documents:
        spec = crd["spec"]
        for version in spec["versions"]:
            found[f"{spec['group']}/{version['name']}/{spec['names']['plural']}"] = (
                kmock.ResourceInfo(
                    kind=spec["names"]["kind"],
                    singular=spec["names"]["singular"],
                    namespaced=spec["scope"] == "Namespaced",
                    shortnames=set(spec["names"].get("shortNames", [])),
                    categories=set(spec["names"].get("categories", [])),
                    verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                    subresources=set(version.get("subresources", {})),
                )
            )
    return found


# Argo CD's Application, for tests that play Argo CD (status is not a subresource).
ARGO_APPLICATION = {
    "argoproj.io/v1alpha1/applications": kmock.ResourceInfo(
        kind="Application",
        singular="application",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
}


class RunningEmulator:
    """An emulator served on loopback from its own thread and event loop."""

    def __init__(self, extra: dict[str, kmock.ResourceInfo] | None = None) -> None:
        self.extra = extra or {}
        self.emulator = FixedEmulator()
        self.port = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # reported by start()
            self._error = error
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        resources = self.emulator.resources
        with warnings.catch_warnings():
            # kmock 0.8 reads its bundled list with a deprecated importlib call.
            warnings.simplefilter("ignore", DeprecationWarning)
            resources.load_bundled()
        for key, info in {**crd_resources(), **self.extra}.items():
            resources[key] = info
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.port = server.port
            self.url = f"http://127.0.0.1:{self.port}"
            self._ready.set()
            await self._stop.wait()

    def start(self) -> RunningEmulator:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the Kubernetes emulator did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator failed: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Live objects of one resource plural (e.g. 'jobs'), for assertions."""
        found = []
        for (resource, object_namespace, _name), obj in list(self.emulator.objects.items()):
            wanted = namespace is None or object_namespace == namespace
            if resource.plural == plural and not obj.deleted and wanted:
                found.append(copy.deepcopy(obj.raw))
        return found


@contextmanager
def running_emulator(
    extra: dict[str, kmock.ResourceInfo] | None = None,
) -> Iterator[RunningEmulator]:
    server = RunningEmulator(extra).start()
    try:
        yield server
    finally:
        server.stop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
