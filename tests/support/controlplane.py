"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and
kube-controller-manager, built from the Go module in tests/controlplane
(`make controlplane`, into .tools/bin) and started here on loopback.

Started as envtest and kubeadm start them, with these choices:

- kube-apiserver: secure port on 127.0.0.1 only, client-certificate users
  (CN = user, O = groups) from a throwaway CA, the RBAC authorizer, the
  default admission plugins (ServiceAccount included) and
  OwnerReferencesPermissionEnforcement, service-account token
  signing with its own key pair, ``--endpoint-reconciler-type=none`` (the
  ``kubernetes`` Service would point at an address no pod can use here).
- kube-controller-manager: the garbage collector and the Job, TTL, Deployment,
  ReplicaSet, namespace and service-account controllers, as
  ``system:kube-controller-manager`` with per-controller service-account
  credentials (the bootstrap RBAC kubeadm relies on).
- No scheduler and no kubelet: tests/support/node.py plays the one node.
  With ``for_real_node=True`` (tests/support/realnode.py) the server also
  listens on the machine's address and advertises it (pods reach it through
  the ``kubernetes`` Service), authorizes kubelets with the Node authorizer
  and NodeRestriction, calls them with a client certificate, and
  kube-scheduler and every default controller run beside it.

:class:`ControlPlane` stops only the processes it started; their logs stay
in its directory and are attached to a failing test (tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.pki import CertificateAuthority, KeyPair, service_account_keys
from tests.support.s3server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(os.environ.get("CONTROLPLANE_BIN", ROOT / ".tools" / "bin"))
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
CONTROLLERS = (
    "garbage-collector-controller",
    "job-controller",
    "ttl-after-finished-controller",
    "deployment-controller",
    "replicaset-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
)
SERVICE_CIDR = "10.0.0.0/24"
# The API server's own record of every request: who, what, the answer; the
# bodies of writes to Modelgate's kinds (what was sent and what was stored,
# for the pruning checks). Read with ControlPlane.audit_events().
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "RequestResponse",
            "verbs": ["create", "update", "patch"],
            "resources": [{"group": "modelgate.dev"}],
        },
        {"level": "Metadata"},
    ],
}


class ControlPlaneUnavailable(RuntimeError):
    """The binaries are missing: `make controlplane` builds them."""


def binaries() -> dict[str, Path]:
    """The component binaries, or an error that says how to build them."""
    found = {name: BIN / name for name in COMPONENTS}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise ControlPlaneUnavailable(
            f"{', '.join(missing)} not found in {BIN}: run `make controlplane` "
            "(builds them from tests/controlplane/go.mod)"
        )
    return found


@dataclass
class Component:
    """One started process and its log."""

    name: str
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in ``directory``."""

    directory: Path
    for_real_node: bool = False
    components: dict[str, Component] = field(default_factory=dict)
    url: str = ""
    # Where pods reach the server: the machine's own address (real node only).
    advertise_address: str = "127.0.0.1"
    ca: CertificateAuthority | None = None
    admin: KeyPair | None = None
    _apiserver_port: int = 0
    restarts: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)

    # ---- start and stop -------------------------------------------------

    def start(self, timeout: float = 120) -> ControlPlane:
        paths = binaries()
        pki_dir = self.directory / "pki"
        self.ca = ca = CertificateAuthority(pki_dir)
        if self.for_real_node:
            self.advertise_address = machine_address()
        serving = ca.serving(
            "apiserver",
            (
                "localhost",
                "127.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.0.0.1",
                *((self.advertise_address,) if self.for_real_node else ()),
            ),
        )
        self.admin = ca.client("admin", "modelgate-test-admin", ("system:masters",))
        kcm = ca.client("kube-controller-manager", "system:kube-controller-manager")
        sa = service_account_keys(pki_dir)

        audit_policy = self.directory / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        etcd_port, etcd_peer = free_port(), free_port()
        self._apiserver_port = free_port()
        self.url = f"https://127.0.0.1:{self._apiserver_port}"
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.components["etcd"] = Component(
            "etcd",
            [
                str(paths["etcd"]),
                "--name=modelgate-test",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=modelgate-test=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            logs / "etcd.log",
        )
        self.components["kube-apiserver"] = Component(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={pki_dir}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                f"--secure-port={self._apiserver_port}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # As strict clusters (OpenShift) run: setting blockOwnerDeletion
                # needs update on the owner's finalizers, which the chart grants.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement"
                + (",NodeRestriction" if self.for_real_node else ""),
                f"--service-account-issuer={self.url}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                *self._node_flags(ca),
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                # The node's "kubelet" is played by the tests: nothing to dial.
                "--kubelet-preferred-address-types=InternalIP",
                "--v=1",
            ],
            logs / "kube-apiserver.log",
        )
        kcm_config = self.write_kubeconfig(
            self.directory / "kube-controller-manager.kubeconfig", "kcm", cert=kcm
        )
        self.components["kube-controller-manager"] = Component(
            "kube-controller-manager",
            [
                str(paths["kube-controller-manager"]),
                f"--kubeconfig={kcm_config}",
                f"--authentication-kubeconfig={kcm_config}",
                f"--authorization-kubeconfig={kcm_config}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={'*' if self.for_real_node else ','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={ca.cert_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Finished Jobs' pods and unused ReplicaSets go quickly.
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
            logs / "kube-controller-manager.log",
        )
        if self.for_real_node:
            scheduler = self.write_kubeconfig(
                self.directory / "kube-scheduler.kubeconfig",
                "scheduler",
                cert=ca.client("kube-scheduler", "system:kube-scheduler"),
            )
            self.components["kube-scheduler"] = Component(
                "kube-scheduler",
                [
                    str(paths["kube-scheduler"]),
                    f"--kubeconfig={scheduler}",
                    f"--authentication-kubeconfig={scheduler}",
                    f"--authorization-kubeconfig={scheduler}",
                    "--leader-elect=false",
                    f"--secure-port={free_port()}",
                    "--bind-address=127.0.0.1",
                    "--v=1",
                ],
                logs / "kube-scheduler.log",
            )
        try:
            self.components["etcd"].start()
            self._wait(lambda: self._etcd_healthy(etcd_url), timeout, "etcd")
            self.components["kube-apiserver"].start()
            self._wait(self._apiserver_ready, timeout, "kube-apiserver /readyz")
            self.components["kube-controller-manager"].start()
            self._wait(self._controllers_running, timeout, "the controller manager")
            if "kube-scheduler" in self.components:
                self.components["kube-scheduler"].start()
        except BaseException:
            self.stop()
            raise
        return self

    def _node_flags(self, ca: CertificateAuthority) -> list[str]:
        if not self.for_real_node:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--authorization-mode=RBAC",
                # No pod could use the address the `kubernetes` Service would name.
                "--endpoint-reconciler-type=none",
            ]
        kubelet_client = ca.client(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
        )
        return [
            # Pods reach the server at the machine's address, through the
            # `kubernetes` Service that kube-proxy routes.
            "--bind-address=0.0.0.0",
            f"--advertise-address={self.advertise_address}",
            "--authorization-mode=Node,RBAC",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            # Webhooks are called at their Service's endpoints (the pod's IP):
            # the server runs on the machine, outside every pod network.
            "--enable-aggregator-routing=true",
        ]

    def stop(self) -> None:
        """Stop what this object started, newest first."""
        for name in reversed(list(self.components)):
            self.components[name].stop()

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd."""
        apiserver = self.components["kube-apiserver"]
        stopped = datetime.datetime.now(datetime.UTC)
        apiserver.stop()
        apiserver.start()
        self._wait(self._apiserver_ready, 120, "kube-apiserver /readyz after a restart")
        self.restarts.append((stopped, datetime.datetime.now(datetime.UTC)))

    def restarting_at(self, timestamp: str) -> bool:
        """Whether an audit timestamp falls in a restart: from the stop until
        a few seconds after /readyz. A server that has just started answers
        before its RBAC cache holds the bindings, and refuses (403) what it
        will allow a moment later."""
        when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        settle = datetime.timedelta(seconds=5)
        return any(start <= when <= ready + settle for start, ready in self.restarts)

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for component in self.components.values():
                if component.process is not None and not component.alive():
                    raise RuntimeError(
                        f"{component.name} exited while waiting for {what}:\n{component.tail()}"
                    )
            with contextlib.suppress(OSError, ValueError, client.ApiException):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{self.logs_tail()}")

    # ---- readiness --------------------------------------------------------

    @staticmethod
    def _etcd_healthy(url: str) -> bool:
        with urllib.request.urlopen(url + "/health", timeout=2) as answer:
            return b'"health":"true"' in answer.read()

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.ca is not None
        assert self.admin is not None
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return context

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                self.url + "/readyz", timeout=2, context=self._ssl_context()
            ) as answer:
                return answer.status == 200
        except urllib.error.HTTPError:
            return False

    def _controllers_running(self) -> bool:
        # The service-account controller makes `default` in every namespace:
        # once it exists, the controller manager has synced and acts.
        core = client.CoreV1Api(self.api_client())
        core.read_namespaced_service_account("default", "default")
        return True

    # ---- clients and kubeconfigs -------------------------------------------

    def write_kubeconfig(
        self,
        path: Path,
        user: str = "admin",
        cert: KeyPair | None = None,
        token: str | None = None,
        namespace: str | None = None,
    ) -> Path:
        """A kubeconfig for this server, as a certificate or a bearer token user."""
        assert self.ca is not None
        if token is None:
            cert = cert or self.admin
            assert cert is not None
            credentials: dict[str, str] = {
                "client-certificate-data": _b64(cert.cert.read_bytes()),
                "client-key-data": _b64(cert.key.read_bytes()),
            }
        else:
            credentials = {"token": token}
        context: dict[str, str] = {"cluster": "modelgate-test", "user": user}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelgate-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.ca.cert_pem),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": context}],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def configuration(self, token: str | None = None) -> client.Configuration:
        assert self.ca is not None
        assert self.admin is not None
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca.cert_path)
        if token is None:
            configuration.cert_file = str(self.admin.cert)
            configuration.key_file = str(self.admin.key)
        else:
            configuration.api_key = {"authorization": f"Bearer {token}"}
        return configuration

    def api_client(self, token: str | None = None) -> client.ApiClient:
        """A client as the admin (``system:masters``) or as a token's identity."""
        return client.ApiClient(self.configuration(token))

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl (built at the server's version) as the admin, or as the
        user of ``kubeconfig``; ``check``: a failure raises with its stderr."""
        config = kubeconfig or self.admin_kubeconfig()
        done = subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={config}", "--request-timeout=60s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def admin_kubeconfig(self) -> Path:
        path = self.directory / "admin.kubeconfig"
        if not path.exists():
            self.write_kubeconfig(path)
        return path

    def install_crds(self) -> None:
        """The generated CRDs from crds/, applied as a user would, Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        for plural in ("environments", "qualitygates", "modelreleases"):
            self.kubectl(
                "wait",
                "--for=condition=Established",
                f"crd/{plural}.modelgate.dev",
                "--timeout=60s",
            )
        # Established is not published: the OpenAPI documents that kubectl
        # explain and client-side tools read follow a few seconds later.
        self._wait(self._openapi_published, 60, "the CRDs' OpenAPI v3 document")

    def _openapi_published(self) -> bool:
        with urllib.request.urlopen(
            self.url + "/openapi/v3", timeout=5, context=self._ssl_context()
        ) as answer:
            paths = json.loads(answer.read()).get("paths", {})
        if "apis/modelgate.dev/v1alpha1" not in paths:
            return False
        with urllib.request.urlopen(
            self.url + "/" + paths["apis/modelgate.dev/v1alpha1"]["serverRelativeURL"].lstrip("/"),
            timeout=5,
            context=self._ssl_context(),
        ) as answer:
            schemas = json.loads(answer.read()).get("components", {}).get("schemas", {})
        names = {name.rsplit(".", 1)[-1] for name in schemas}
        return {"ModelRelease", "QualityGate", "Environment"} <= names

    @property
    def audit_log(self) -> Path:
        return self.directory / "logs" / "audit.log"

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """The API server's audit events, one per request (ResponseComplete;
        ResponseStarted for a watch still open), of ``user`` only when given."""
        events: dict[str, dict[str, Any]] = {}
        if not self.audit_log.exists():
            return []
        for line in self.audit_log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            if user is not None and (event.get("user") or {}).get("username") != user:
                continue
            stage = event.get("stage")
            if stage == "ResponseComplete" or (
                stage == "ResponseStarted" and event["auditID"] not in events
            ):
                events[event["auditID"]] = event
        return list(events.values())

    def logs_tail(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {name} (last {lines} lines) ---\n{component.tail(lines)}"
            for name, component in self.components.items()
        )


def machine_address() -> str:
    """The address of the interface the default route leaves by: pods on the
    machine's bridge reach the host there."""
    route = subprocess.run(
        ["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=False
    ).stdout.split()
    if "src" in route:
        return route[route.index("src") + 1]
    # No default route: the first global address will do.
    addresses = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if "inet" not in addresses:
        raise RuntimeError("the machine has no global IPv4 address for pods to reach it by")
    return addresses[addresses.index("inet") + 1].split("/")[0]


def namespace_being_deleted(message: str) -> bool:
    """Whether a refusal is NamespaceLifecycle's: nothing new may be created
    in a namespace being deleted (a test's namespace going away)."""
    return "because it is being terminated" in message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextlib.contextmanager
def running_control_plane(directory: Path, for_real_node: bool = False) -> Iterator[ControlPlane]:
    plane = ControlPlane(directory, for_real_node=for_real_node).start()
    try:
        yield plane
    finally:
        plane.stop()
        # etcd's data is large and worthless once stopped; the logs stay.
        shutil.rmtree(directory / "etcd", ignore_errors=True)
