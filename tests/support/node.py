"""The one node of the test control plane: Pods run as local processes.

No kubelet can run here, so the tests play the node and only the node; the
Job, Deployment, ReplicaSet and garbage-collector controllers are the real
ones. :class:`TestNode` registers a Ready Node, binds unscheduled Pods to it
(there is no scheduler) and runs each bound Pod's containers:

- Images: the project's own (``ghcr.io/modelgate/modelgate`` or
  ``modelgate``, any tag or digest) run only its own commands
  (``python -m modelgate.trainer``, ``.evaluate``, ``.server``, ``.verify``,
  ``.importer``, ``.layout``, ``modelgate``); ``python`` is this test run's
  interpreter. A foreign image the node is given (:class:`ForeignImage`,
  e.g. MLServer's from ``.tools/mlserver``) runs the commands of its
  installation's ``bin`` folder, with the image's own env. Any other image
  stays Waiting with reason ``ErrImagePull`` and a message saying so;
  another command fails the container with exit 127.
- Containers: init containers one after the other, each to exit 0 (one that
  fails fails a ``restartPolicy: Never`` pod); a native sidecar (an init
  container with ``restartPolicy: Always``) once started is left running
  beside the rest and is stopped when the pod's own containers have ended.
  Then the pod's containers, together. Statuses for each
  (``initContainerStatuses``, ``containerStatuses``), phase Pending while
  initializing.
- Env: ``value`` (with ``$(VAR)`` expansion), ``secretKeyRef``,
  ``configMapKeyRef``, ``fieldRef`` (metadata.name/namespace/uid/labels/
  annotations, spec.nodeName/serviceAccountName, status.podIP/hostIP) and
  ``envFrom``; a missing non-optional key keeps the container Waiting with
  ``CreateContainerConfigError``, as the kubelet does. Nothing of the test
  process's own environment leaks in besides PATH and the pod network.
- Volumes: each ``emptyDir`` is a directory of the pod, shared by its
  containers; an env value or an argument that starts with a mount path is
  rewritten to that directory. ``TMPDIR`` is the ``/tmp`` mount when there
  is one.
- Status, honestly: Running, Ready only once every container's and
  sidecar's readiness probe (httpGet) answers 2xx, then Succeeded or Failed
  with the exit codes, reason ``Completed``/``Error`` and, for
  ``FallbackToLogsOnError``, the log's tail (80 lines, 2 KiB) as the
  termination message. ``restartPolicy: Always`` restarts an exited
  container (restartCount).
- Deletion: a Pod marked for deletion has its processes stopped (SIGTERM,
  then SIGKILL after the grace period, at most 5 s) and is then removed,
  which the kubelet does on a real node.
- Network: every Pod gets an address of its own in 127.0.0.0/8, shared by
  its containers; the pod network module (tests/support/podnet/
  sitecustomize.py) binds wildcard listeners to it, resolves ``localhost``
  to it and ``<service>.<namespace>.svc`` to a ready endpoint of that
  Service (the node keeps the map from Services and ready Pods), so the
  verification Pod reaches the model server by its Service name.

Its pods' listeners share this machine's port space: while a model server
pod holds 127.1.x.y:8080, no other process can bind 0.0.0.0:8080 (test
processes take free loopback ports instead). Listeners the pod network
module cannot reach (gRPC's C core) are bound to the pod's address by the
foreign image's env (MLServer's ``MLSERVER_HOST``).

Not modelled: resource limits and OOM kills, liveness and startup probes,
init containers' restartPolicy other than Always, image pulls, image
entrypoints but a foreign image's (:class:`ForeignImage`), volumes other
than emptyDir (projected service-account tokens are ignored: the project's
pods do not mount them), the termination-message file, Pod networking for
non-Python processes, node heartbeats and eviction.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from tests.support.controlplane import namespace_being_deleted

PODNET = Path(__file__).resolve().parent / "podnet"
PROJECT_IMAGES = ("ghcr.io/modelgate/modelgate", "modelgate")
PROJECT_MODULES = (
    "modelgate",
    "modelgate.trainer",
    "modelgate.evaluate",
    "modelgate.server",
    "modelgate.verify",
    "modelgate.importer",
    "modelgate.layout",
)
DEFAULT_COMMAND = ("python", "-m", "modelgate")  # the image's CMD (Dockerfile)
NODE_NAME = "modelgate-test-node"
TERMINATION_LINES, TERMINATION_BYTES = 80, 2048


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_repository(image: str) -> str:
    """``ghcr.io/modelgate/modelgate`` of ``ghcr.io/modelgate/modelgate:0.1@sha256:...``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


class ContainerConfigError(Exception):
    """A referenced Secret or ConfigMap key that does not exist (yet)."""


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, undefined
    ones stay as written, ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


@dataclass(frozen=True)
class ForeignImage:
    """An image that is not the project's, run from a local installation of
    it: its commands come from ``bin`` only, with the image's own environment
    (``env``, whose values may name the node's runtime variables as
    ``$(MODELGATE_POD_IP)``; the container's env overrides it, as a real
    image's ENV is overridden); ``entrypoint``: what a container that names
    no command runs (the image's ENTRYPOINT)."""

    bin: Path
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] = ()


@dataclass
class ContainerRun:
    """One container of a pod: its process and what the kubelet reports of it."""

    spec: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    restart: str  # started again when it exits: "always", "on-failure" or "never"
    sidecar: bool = False
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    started_at: str = ""
    next_probe: float = 0.0
    # Set once it exited for good: (exit code, reason, message, finished at).
    terminated: tuple[int, str, str, str] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.cwd / f"{self.spec.get('name', 'main')}.log"

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "main"))

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = _now()
        self.ready = False
        self.next_probe = 0.0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def termination_message(self) -> str:
        if not self.log.exists():
            return ""
        lines = self.log.read_bytes().splitlines()[-TERMINATION_LINES:]
        return b"\n".join(lines)[-TERMINATION_BYTES:].decode(errors="replace")


@dataclass
class PodProcess:
    """A running Pod: its address, sandbox and containers. Init containers
    run one after the other (a sidecar, ``restartPolicy: Always``, is left
    running once started), then the containers together."""

    uid: str
    namespace: str
    name: str
    ip: str
    sandbox: Path
    policy: str  # the pod's restartPolicy
    init_specs: list[dict[str, Any]]
    main_specs: list[dict[str, Any]]
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    next_init: int = 0
    finished: str | None = None  # Succeeded or Failed, once it is
    announced: bool = False  # in TestNode.started: a process of it ran
    reported: str = ""  # the last status written, to write only changes

    @property
    def initialized(self) -> bool:
        return self.next_init >= len(self.init_specs)

    @property
    def ready(self) -> bool:
        """Ready as a Service counts it: every container and sidecar is."""
        if not self.initialized or self.finished:
            return False
        wanted = [c for c in self.containers.values() if c.sidecar or c.spec in self.main_specs]
        return len(wanted) == len(self.main_specs) + self.sidecars() and all(
            c.ready for c in wanted
        )

    def sidecars(self) -> int:
        return sum(1 for c in self.init_specs if c.get("restartPolicy") == "Always")

    def stop(self, grace: float = 5.0) -> None:
        # The pod's own containers first, then its sidecars, as the kubelet does.
        ordered = sorted(self.containers.values(), key=lambda c: c.sidecar)
        for container in ordered:
            container.stop(grace)

    def container_port(self, target: Any) -> int | None:
        if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            return int(target)
        for spec in [*self.init_specs, *self.main_specs]:
            for port in spec.get("ports") or []:
                if port.get("name") == target:
                    return int(port["containerPort"])
        return None


class TestNode:
    """Plays the node (and the scheduler's binding) for a real API server."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(
        self,
        api: client.ApiClient,
        directory: Path,
        name: str = NODE_NAME,
        images: tuple[str, ...] = PROJECT_IMAGES,
        foreign: dict[str, ForeignImage] | None = None,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.directory = directory
        self.name = name
        self.images = images
        self.foreign = dict(foreign or {})
        self.pods: dict[str, PodProcess] = {}
        self.refused: dict[str, str] = {}  # pod uid -> why it did not start
        self.errors: list[str] = []
        self.started: list[str] = []  # namespace/name of every pod started, in order
        self.services_file = directory / "services.json"
        self._next_ip = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------

    def start(self) -> TestNode:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.services_file.write_text("{}")
        self._register()
        self._thread = threading.Thread(target=self._loop, name="test-node", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            for pod in self.pods.values():
                pod.stop(grace=2)

    def _register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux"},
            },
        }
        with contextlib.suppress(client.ApiException):
            self.core.create_node(node)
        capacity = {"cpu": "2", "memory": "24Gi", "pods": "110"}
        self.core.patch_node_status(
            self.name,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "the test node runs pods as local processes",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                }
            },
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except client.ApiException as error:
                if not _expected(error):
                    self.errors.append(f"{error.status} {error.reason}: {error.body}")
            except (urllib3.exceptions.HTTPError, OSError):
                pass  # the API server is restarting: as a kubelet, try again
            except Exception as error:  # keep playing; the test reports it
                self.errors.append(repr(error))
            self._stop.wait(0.2)

    # ---- one pass -----------------------------------------------------------

    def step(self) -> None:
        items = self.api.sanitize_for_serialization(self.core.list_pod_for_all_namespaces())
        pods = items.get("items", [])
        seen: set[str] = set()
        with self._lock:
            for pod in pods:
                uid = pod["metadata"]["uid"]
                seen.add(uid)
                self._handle(pod)
            for uid in list(self.pods):
                if uid not in seen:  # deleted behind our back (force delete)
                    self.pods.pop(uid).stop(grace=1)
            self._write_services(pods)

    def _handle(self, pod: dict[str, Any]) -> None:
        metadata, spec = pod["metadata"], pod.get("spec") or {}
        uid = metadata["uid"]
        if metadata.get("deletionTimestamp"):
            self._delete(pod)
            return
        node = spec.get("nodeName")
        if not node:
            self._bind(pod)
            return
        if node != self.name:
            return
        phase = (pod.get("status") or {}).get("phase")
        running = self.pods.get(uid)
        if running is None:
            if phase in (None, "Pending") and uid not in self.refused:
                self._start(pod)
            return
        self._observe(running, pod)

    def _bind(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        # The generated client cannot parse the Binding it gets back; the
        # server's answer is all that matters here.
        self.api.call_api(
            f"/api/v1/namespaces/{metadata['namespace']}/pods/{metadata['name']}/binding",
            "POST",
            body=body,
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )

    def _delete(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        running = self.pods.pop(metadata["uid"], None)
        if running is not None:
            grace = min(float(metadata.get("deletionGracePeriodSeconds") or 0), 5.0)
            running.stop(grace=grace)
        with contextlib.suppress(client.ApiException):
            self.core.delete_namespaced_pod(
                metadata["name"],
                metadata["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=metadata["uid"]),
                ),
            )

    # ---- starting a container ----------------------------------------------

    def _allocate_ip(self) -> str:
        self._next_ip += 1
        return f"127.1.{self._next_ip // 250}.{self._next_ip % 250 + 1}"

    def _start(self, pod: dict[str, Any]) -> None:
        metadata, spec = pod["metadata"], pod["spec"]
        uid = metadata["uid"]
        init_specs = list(spec.get("initContainers") or [])
        main_specs = list(spec.get("containers") or [])
        for container in [*init_specs, *main_specs]:
            image = container.get("image", "")
            repository = image_repository(image)
            if repository not in self.images and repository not in self.foreign:
                runnable = [*self.images, *self.foreign]
                why = (
                    f"image {image!r} is not one of the project's own images "
                    f"({', '.join(runnable)}); the test node runs no other image"
                )
                self.refused[uid] = why
                self._waiting(pod, container, "ErrImagePull", why)
                return
            if container in init_specs and container.get("restartPolicy") not in (None, "Always"):
                why = f"init container restartPolicy {container['restartPolicy']!r} is not modelled"
                self._fail_unstartable(pod, why)
                return
        ip = self._allocate_ip()
        sandbox = self.directory / "pods" / f"{metadata['namespace']}_{metadata['name']}_{uid[:8]}"
        sandbox.mkdir(parents=True, exist_ok=True)
        self.pods[uid] = PodProcess(
            uid=uid,
            namespace=metadata["namespace"],
            name=metadata["name"],
            ip=ip,
            sandbox=sandbox,
            policy=spec.get("restartPolicy", "Always"),
            init_specs=init_specs,
            main_specs=main_specs,
        )
        self._observe(self.pods[uid], pod)

    def _container(
        self, running: PodProcess, pod: dict[str, Any], container: dict[str, Any], sidecar: bool
    ) -> ContainerRun | None:
        """The container ready to start, or None while its config is missing
        (it waits, as the kubelet does); a command the image does not have
        fails it with exit 127."""
        spec = pod["spec"]
        mounts = self._mounts(spec, container, running.sandbox)
        try:
            env = self._environment(pod, container, running.ip)
        except ContainerConfigError as error:
            self._waiting(pod, container, "CreateContainerConfigError", str(error))
            return None  # tried again on the next pass
        metadata = pod["metadata"]
        runtime_env = self._runtime_env(metadata, running.ip, mounts)
        foreign = self.foreign.get(image_repository(container.get("image", "")))
        if foreign is not None:
            runtime_env["PATH"] = f"{foreign.bin}:{runtime_env['PATH']}"
            for name, value in foreign.env:
                runtime_env[name] = expand(value, runtime_env)
        command = list(container.get("command") or DEFAULT_COMMAND)
        if not container.get("command") and foreign is not None and foreign.entrypoint:
            command = list(foreign.entrypoint)
        elif not container.get("command") and container.get("args"):
            command = list(DEFAULT_COMMAND[:1])
        # Expanded as the container sees its values, then each path that
        # names a mount is translated once to the pod's directory.
        seen = {**runtime_env, **env}
        parts = [*command, *(container.get("args") or [])]
        argv = [_rewrite(expand(part, seen), mounts, self.directory) for part in parts]
        expanded = {
            **runtime_env,
            **{k: _rewrite(v, mounts, self.directory) for k, v in env.items()},
        }
        run = ContainerRun(
            spec=container,
            argv=argv,
            env=expanded,
            cwd=running.sandbox,
            restart=_restart(running.policy, container in running.init_specs, sidecar),
            sidecar=sidecar,
        )
        if foreign is not None:
            executable = foreign.bin / argv[0] if argv and "/" not in argv[0] else None
            if executable is None or not os.access(executable, os.X_OK):
                why = (
                    f"command {argv[:1]!r} is not one of the image's commands "
                    f"(those in {foreign.bin})"
                )
                return self._cannot_run(run, why)
            run.argv[0] = str(executable)
            return run
        allowed = len(argv) >= 3 and argv[0] == "python" and argv[1] == "-m"
        if not allowed or argv[2] not in PROJECT_MODULES:
            why = (
                f"command {argv[:3]!r} is not one of the project image's commands "
                f"(python -m {' | '.join(PROJECT_MODULES)})"
            )
            return self._cannot_run(run, why)
        run.argv[0] = sys.executable
        return run

    def _cannot_run(self, run: ContainerRun, why: str) -> ContainerRun:
        run.log.write_text(why + "\n")
        run.restart = "never"
        run.terminated = (127, "ContainerCannotRun", why, _now())
        return run

    def _mounts(self, spec: dict[str, Any], container: dict[str, Any], sandbox: Path) -> list:
        empty_dirs = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
        mounts: list[tuple[str, str]] = []
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in empty_dirs:
                directory = sandbox / "volumes" / mount["name"]
                directory.mkdir(parents=True, exist_ok=True)
                mounts.append((mount["mountPath"].rstrip("/") or "/", str(directory)))
        # Longest first: /work/out before /work.
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        return mounts

    def _runtime_env(
        self, metadata: dict[str, Any], ip: str, mounts: list[tuple[str, str]]
    ) -> dict[str, str]:
        tmp = dict(mounts).get("/tmp") or str(self.directory / "tmp")
        Path(tmp).mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "TMPDIR": tmp,
            "HOSTNAME": metadata["name"],
            "PYTHONPATH": str(PODNET),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MODELGATE_POD_IP": ip,
            "MODELGATE_POD_NAMESPACE": metadata["namespace"],
            "MODELGATE_POD_SERVICES": str(self.services_file),
        }

    def _environment(self, pod: dict[str, Any], container: dict[str, Any], ip: str) -> dict:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._config_map(namespace, ref["name"], ref.get("optional", False))
            else:
                ref = source["secretRef"]
                data = self._secret(namespace, ref["name"], ref.get("optional", False))
            env.update({prefix + k: v for k, v in (data or {}).items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
            elif "valueFrom" in item:
                value = self._value_from(pod, item["valueFrom"], ip)
                if value is not None:
                    env[item["name"]] = value
            else:
                env[item["name"]] = ""
        return env

    def _value_from(self, pod: dict[str, Any], source: dict[str, Any], ip: str) -> str | None:
        namespace = pod["metadata"]["namespace"]
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if secret else "configMapKeyRef"]
            optional = bool(ref.get("optional", False))
            read = self._secret if secret else self._config_map
            data = read(namespace, ref["name"], optional)
            if data is None or ref["key"] not in data:
                if optional:
                    return None
                kind = "secret" if secret else "configmap"
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                )
            return str(data[ref["key"]])
        if "fieldRef" in source:
            return _field(pod, source["fieldRef"]["fieldPath"], ip)
        raise ContainerConfigError(f"the test node does not model env source {sorted(source)}")

    def _secret(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        import base64  # noqa: PLC0415  (only here)

        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                if optional:
                    return None
                raise ContainerConfigError(f'secret "{name}" not found') from error
            raise
        data = secret.data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _config_map(self, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        try:
            config_map = self.core.read_namespaced_config_map(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                if optional:
                    return None
                raise ContainerConfigError(f'configmap "{name}" not found') from error
            raise
        return dict(config_map.data or {})

    # ---- running and status -------------------------------------------------

    def _waiting(
        self, pod: dict[str, Any], container: dict[str, Any], reason: str, message: str
    ) -> None:
        init = container in (pod["spec"].get("initContainers") or [])
        key = "initContainerStatuses" if init else "containerStatuses"
        status: dict[str, Any] = {
            "phase": "Pending",
            "conditions": [_condition("PodScheduled", True)],
            key: [
                {
                    "name": container.get("name", "main"),
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
            ],
        }
        current = ((pod.get("status") or {}).get(key) or [{}])[0]
        if current.get("state") != status[key][0]["state"]:
            self._patch_status(pod, status)

    def _fail_unstartable(self, pod: dict[str, Any], why: str) -> None:
        self.refused[pod["metadata"]["uid"]] = why
        self._patch_status(
            pod,
            {"phase": "Failed", "reason": "Unsupported", "message": why},
        )

    def _launch(self, running: PodProcess, pod: dict[str, Any], spec: dict[str, Any]) -> bool:
        """Start one container; False while it must wait for its config."""
        sidecar = spec in running.init_specs and spec.get("restartPolicy") == "Always"
        container = self._container(running, pod, spec, sidecar)
        if container is None:
            return False
        running.containers[container.name] = container
        if container.terminated is None:
            container.start()
            if not running.announced:
                running.announced = True
                self.started.append(f"{running.namespace}/{running.name}")
        return True

    def _observe(self, running: PodProcess, pod: dict[str, Any]) -> None:
        # Init containers, one at a time: a sidecar once started, any other
        # once it exited 0.
        while not running.initialized and running.finished is None:
            spec = running.init_specs[running.next_init]
            current = running.containers.get(spec.get("name", "main"))
            if current is None:
                if not self._launch(running, pod, spec):
                    return
                continue
            if current.sidecar and current.terminated is None:
                running.next_init += 1
                continue
            self._reap(running, current)
            if current.terminated is None and current.running():
                break
            if current.terminated is not None and current.terminated[0] == 0:
                running.next_init += 1
                continue
            if current.terminated is not None:
                running.finished = "Failed"  # restartPolicy Never: the pod fails
            break
        if running.initialized and running.finished is None:
            for spec in running.main_specs:
                if spec.get("name", "main") not in running.containers and not self._launch(
                    running, pod, spec
                ):
                    return
        for container in list(running.containers.values()):
            self._reap(running, container)
            if container.running() and not container.ready:
                self._probe_container(running, container)
        main = [running.containers.get(s.get("name", "main")) for s in running.main_specs]
        if running.finished is None and all(c is not None and c.terminated for c in main):
            codes = [c.terminated[0] for c in main if c is not None and c.terminated]
            running.finished = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        if running.finished is not None:
            for container in running.containers.values():
                if container.sidecar and container.terminated is None:
                    container.stop(grace=2)
                    code = container.process.returncode if container.process else 0
                    container.terminated = (code or 0, "Completed", "", _now())
        self._report(running, pod)
        if running.finished is not None:
            self.pods.pop(running.uid, None)

    def _reap(self, running: PodProcess, container: ContainerRun) -> None:
        """An exited process: started again, or terminated for good."""
        process = container.process
        if container.terminated is not None or process is None:
            return
        code = process.poll()
        if code is None:
            return
        again = container.restart == "always" or (container.restart == "on-failure" and code)
        if again and running.finished is None:
            container.restarts += 1
            container.start()
            return
        message = ""
        if container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and code:
            message = container.termination_message()
        reason = "Completed" if code == 0 else "Error"
        container.terminated = (code, reason, message, _now())
        container.ready = False

    def _probe_container(self, running: PodProcess, container: ContainerRun) -> None:
        if time.monotonic() < container.next_probe:
            return
        container.ready = self._probe(running, container)
        if not container.ready:
            period = (container.spec.get("readinessProbe") or {}).get("periodSeconds", 10)
            # Probed at least once a second: the tests wait on readiness.
            container.next_probe = time.monotonic() + min(float(period), 1.0)

    def _probe(self, running: PodProcess, container: ContainerRun) -> bool:
        probe = (container.spec.get("readinessProbe") or {}).get("httpGet")
        if not probe:
            return True
        port = probe.get("port")
        if isinstance(port, str) and not port.isdigit():
            named = {
                p.get("name"): p.get("containerPort") for p in container.spec.get("ports") or []
            }
            port = named.get(port)
        if port is None:
            return False
        url = f"http://{running.ip}:{port}{probe.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return 200 <= answer.status < 400
        except OSError:
            return False

    def _container_status(
        self, running: PodProcess, spec: dict[str, Any], pending: str
    ) -> dict[str, Any]:
        container = running.containers.get(spec.get("name", "main"))
        status: dict[str, Any] = {
            "name": spec.get("name", "main"),
            "image": spec.get("image", ""),
            "imageID": spec.get("image", ""),
            "restartCount": container.restarts if container else 0,
            "ready": False,
            "started": False,
        }
        if container is None:
            status["state"] = {"waiting": {"reason": pending}}
            return status
        status["containerID"] = (
            f"modelgate-test://{running.uid}-{container.name}-{container.restarts}"
        )
        if container.terminated is not None:
            code, reason, message, finished = container.terminated
            terminated: dict[str, Any] = {
                "exitCode": code,
                "reason": reason,
                "startedAt": container.started_at or finished,
                "finishedAt": finished,
            }
            if message:
                terminated["message"] = message
            status["state"] = {"terminated": terminated}
            return status
        status.update(
            ready=container.ready,
            started=True,
            state={"running": {"startedAt": container.started_at}},
        )
        return status

    def _report(self, running: PodProcess, pod: dict[str, Any]) -> None:
        main_started = running.initialized and running.finished is None
        if running.finished is not None:
            phase = running.finished
        else:
            phase = "Running" if main_started else "Pending"
        ready = running.ready
        conditions = [
            _condition("PodScheduled", True),
            _condition("Initialized", running.initialized),
            _condition("ContainersReady", ready),
            _condition("Ready", ready),
        ]
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": running.ip,
            "podIPs": [{"ip": running.ip}],
            "startTime": (pod.get("status") or {}).get("startTime") or _now(),
            "conditions": conditions,
            "containerStatuses": [
                self._container_status(running, s, "PodInitializing") for s in running.main_specs
            ],
        }
        if running.init_specs:
            status["initContainerStatuses"] = [
                self._container_status(running, s, "PodInitializing") for s in running.init_specs
            ]
        # Written only when something changed (the condition times aside).
        fingerprint = json.dumps(
            {**status, "conditions": [(c["type"], c["status"]) for c in conditions]},
            sort_keys=True,
        )
        if fingerprint == running.reported:
            return
        running.reported = fingerprint
        self._patch_status(pod, status)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        with contextlib.suppress(client.ApiException):  # gone meanwhile: fine
            self.core.patch_namespaced_pod_status(
                metadata["name"], metadata["namespace"], {"status": status}
            )

    # ---- the Service map ------------------------------------------------------

    def _write_services(self, pods: list[dict[str, Any]]) -> None:
        services = self.api.sanitize_for_serialization(
            self.core.list_service_for_all_namespaces()
        ).get("items", [])
        ready = [
            p
            for p in pods
            if p["metadata"]["uid"] in self.pods
            and self.pods[p["metadata"]["uid"]].ready
            and not p["metadata"].get("deletionTimestamp")
        ]
        table: dict[str, dict[str, list[Any]]] = {}
        for service in services:
            metadata, spec = service["metadata"], service.get("spec") or {}
            selector = spec.get("selector") or {}
            if not selector:
                continue
            members = [
                p
                for p in ready
                if p["metadata"]["namespace"] == metadata["namespace"]
                and all(
                    (p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items()
                )
            ]
            ports: dict[str, list[Any]] = {}
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port["port"])
                for member in members:
                    resolved = self.pods[member["metadata"]["uid"]].container_port(target)
                    if resolved is not None:
                        ports[str(port["port"])] = [
                            self.pods[member["metadata"]["uid"]].ip,
                            resolved,
                        ]
                        break
                else:
                    ports.setdefault(str(port["port"]), [])
            table[f"{metadata['name']}.{metadata['namespace']}.svc"] = ports
        text = json.dumps(table, sort_keys=True)
        if self.services_file.read_text() != text:
            temporary = self.services_file.with_suffix(".tmp")
            temporary.write_text(text)
            temporary.replace(self.services_file)

    def logs(self) -> dict[str, str]:
        """Every pod's container log, for a failing test's report."""
        found: dict[str, str] = {}
        for log in sorted((self.directory / "pods").glob("*/*.log")):
            found[f"{log.parent.name}/{log.stem}"] = log.read_text(errors="replace")[-4000:]
        return found


def _restart(policy: str, init: bool, sidecar: bool) -> str:
    """When the kubelet starts a container again: a sidecar always, an init
    container only after a failure (unless the pod's policy is Never), the
    pod's own containers as its restartPolicy says."""
    if sidecar:
        return "always"
    if init:
        return "never" if policy == "Never" else "on-failure"
    return {"Always": "always", "OnFailure": "on-failure"}.get(policy, "never")


def _condition(kind: str, value: bool) -> dict[str, Any]:
    return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": _now()}


def _rewrite(value: str, mounts: list[tuple[str, str]], own: Path | None = None) -> str:
    if own is not None and (value == str(own) or value.startswith(f"{own}/")):
        return value  # already a path of the node's own (TMPDIR, HOME)
    for mount_path, directory in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return directory + value[len(mount_path) :]
    return value


_LABEL_PATH = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def _field(pod: dict[str, Any], path: str, ip: str) -> str:
    metadata, spec = pod["metadata"], pod.get("spec") or {}
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": ip,
        "status.podIPs": ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    match = _LABEL_PATH.fullmatch(path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"the test node does not model fieldRef {path!r}")


@contextlib.contextmanager
def running_node(
    api: client.ApiClient, directory: Path, foreign: dict[str, ForeignImage] | None = None
) -> Iterator[TestNode]:
    node = TestNode(api, directory, foreign=foreign).start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(directory / "tmp", ignore_errors=True)


def _expected(error: client.ApiException) -> bool:
    """Answers a kubelet shrugs off: the object went away or changed under it
    (404, 409), the server is busy (5xx, no answer), or a binding or status
    write in a namespace being deleted (NamespaceLifecycle's 403)."""
    if error.status in (0, 404, 409) or error.status >= 500:
        return True
    return error.status == 403 and namespace_being_deleted(str(error.body))
