"""The operator installed on the real control plane the way the Helm chart
installs it, except that it runs as a local process instead of a Pod.

From ``helm template`` of charts/modelgate (with the test's values) come the
CRDs, the ServiceAccount, the ClusterRole and its binding and kopf's peering
object, applied as the admin; the operator authenticates with a token the API server issues for
that ServiceAccount (TokenRequest), so every request it makes is authorised
by exactly the RBAC the chart renders and nothing else. Its arguments and
environment are the chart Deployment's, with loopback ports. Every request
is in the API server's audit log under the ServiceAccount's name:
:meth:`Installation.forbidden` lists those the RBAC refused.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.controlplane import ROOT, ControlPlane, namespace_being_deleted
from tests.support.pki import KeyPair
from tests.support.s3server import CREDENTIALS, S3Server, free_port

HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "modelgate"
SYSTEM_NAMESPACE = "modelgate-system"
# The reference server image the chart sets (pinned: production requires it).
SERVER_DIGEST = "sha256:" + "5e" * 32
SERVER_IMAGE = f"ghcr.io/modelgate/modelgate@{SERVER_DIGEST}"
INSTALLED_KINDS = {
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    # kopf's peering object: without it kopf keeps every handler paused.
    "ClusterKopfPeering",
    "KopfPeering",
}
# Namespaces where tests/realcluster/test_crds_on_apiserver.py applies every
# example as is (the operator sees them too; a GitOps example names a Git
# Secret that these chart values do not grant, so its read is refused: RBAC
# working, not missing).
SCRATCH_PREFIX = "crd-"
WEBHOOK_KINDS = {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
# The chart's webhooks apply to the namespaces labelled so (the test's only
# change to them besides the address): the other tests see the API server
# without admission, the way a cluster without the webhook would.
ADMISSION_LABEL = "modelgate.dev/test-admission"


def chart_values(s3: S3Server, bucket: str, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "image": {"digest": SERVER_DIGEST},
        "artifacts": {
            "bucket": bucket,
            "endpoint": s3.endpoint,
            "pathStyle": True,
            "region": CREDENTIALS["AWS_REGION"],
            "jobSecret": "modelgate-s3",
        },
        # The operator still resyncs on a timer; the tests cannot wait 15 s a step.
        "operator": {"resyncSeconds": 1, "logFormat": "json"},
        "peering": {"enabled": True, "lifetime": 10},
        "webhook": {"enabled": True, "timeoutSeconds": 10},
    }
    for key, value in extra.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return values


def render_chart(values: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    """``helm template`` of the chart, CRDs included, as documents."""
    values_file = directory / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [
            str(HELM),
            "template",
            "modelgate",
            str(CHART),
            "--namespace",
            SYSTEM_NAMESPACE,
            "--include-crds",
            "-f",
            str(values_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"helm template: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@dataclass
class OperatorProcess:
    """`python -m modelgate operator` with the chart's arguments and environment."""

    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> OperatorProcess:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"---- start {self.starts} ----\n".encode())
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelgate", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 90) -> OperatorProcess:
        """Until it is alive (kopf's /healthz, the chart's liveness probe) and
        ready (/readyz beside /metrics, the readiness probe: its watches
        listed, its webhook listening), as the kubelet would see it."""
        liveness = next(a.split("=", 1)[1] for a in self.args if a.startswith("--liveness="))
        metrics = next(a.split("=", 1)[1] for a in self.args if a.startswith("--metrics-port="))
        readiness = f"http://127.0.0.1:{metrics}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the operator exited:\n{self.tail()}")
            if _answers(liveness) and _answers(readiness):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"the operator was not ready within {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as an OOM kill or a node loss."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines of every start."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    found.append(value)
        return found

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@dataclass
class Installation:
    """The chart's objects on the server and the operator's identity."""

    plane: ControlPlane
    documents: list[dict[str, Any]]
    token: str
    kubeconfig: Path
    directory: Path
    username: str
    webhook_port: int
    webhook_tls: KeyPair
    operators: list[OperatorProcess] = field(default_factory=list)

    def operator(self, extra_env: dict[str, str] | None = None) -> OperatorProcess:
        """A new operator process (not started) as the chart's Deployment runs it."""
        deployment = next(d for d in self.documents if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        loopback = {
            "--liveness=": lambda: f"--liveness=http://127.0.0.1:{free_port()}/healthz",
            "--metrics-port=": lambda: f"--metrics-port={free_port()}",
        }
        args = [
            next((make() for prefix, make in loopback.items() if arg.startswith(prefix)), arg)
            for arg in container["args"]
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": str(ROOT / "operator"),
            "AWS_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        for item in container["env"]:
            assert "value" in item, f"the test cannot resolve {item}"
            env[item["name"]] = item["value"]
        if "MODELGATE_WEBHOOK_PORT" in env:
            env["MODELGATE_WEBHOOK_PORT"] = str(self.webhook_port)
            env["MODELGATE_WEBHOOK_CERT"] = str(self.webhook_tls.cert)
            env["MODELGATE_WEBHOOK_KEY"] = str(self.webhook_tls.key)
        cache = self.directory / f"git-cache-{len(self.operators)}"
        cache.mkdir(parents=True, exist_ok=True)
        env["MODELGATE_GIT_CACHE"] = str(cache)
        env.update(extra_env or {})
        process = OperatorProcess(args, env, self.directory / f"operator-{len(self.operators)}.log")
        self.operators.append(process)
        return process

    def requests(self) -> list[dict[str, Any]]:
        """Every request the operator made, from the API server's audit log."""
        return self.plane.audit_events(self.username)

    def forbidden(self) -> list[str]:
        """The operator's requests that RBAC refused (403), as readable lines.

        Not counted: refusals while the API server restarts (see
        ControlPlane.restarting_at: its RBAC cache is still empty; kopf
        retries them, and the same requests are allowed in every other test)."""
        refused = []
        for event in self.requests():
            status = event.get("responseStatus") or {}
            if status.get("code") != 403:
                continue
            if self.plane.restarting_at(event["requestReceivedTimestamp"]):
                continue
            message = str(status.get("message", ""))
            if namespace_being_deleted(message):
                continue
            namespace = (event.get("objectRef") or {}).get("namespace", "")
            if namespace.startswith(SCRATCH_PREFIX):
                continue  # the CRD tests' examples, e.g. a Git secret the chart does not grant
            refused.append(f"{event['verb']} {event['requestURI']}: {message}")
        return refused

    def stop(self) -> None:
        for process in self.operators:
            process.stop()


def install(plane: ControlPlane, values: dict[str, Any], directory: Path) -> Installation:
    """Apply the chart's CRDs, ServiceAccount and RBAC; issue the operator's token."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = render_chart(values, directory)
    core = client.CoreV1Api(plane.api_client())
    with contextlib.suppress(client.ApiException):
        core.create_namespace({"metadata": {"name": SYSTEM_NAMESPACE}})
    installed = [d for d in documents if d["kind"] in INSTALLED_KINDS]
    crds = [d for d in installed if d["kind"] == "CustomResourceDefinition"]
    # CRDs first: objects of their kinds are refused until they are Established.
    for stage, objects in (("crds", crds), ("objects", [d for d in installed if d not in crds])):
        manifest = directory / f"installed-{stage}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
        if stage == "crds":
            for crd in crds:
                name = crd["metadata"]["name"]
                plane.kubectl("wait", "--for=condition=Established", f"crd/{name}")
    assert plane.ca is not None
    webhook_tls = plane.ca.serving("webhook", ("127.0.0.1", "localhost"))
    webhook_port = free_port()
    webhooks = [
        loopback_webhooks(d, webhook_port, plane.ca.cert_pem)
        for d in documents
        if d["kind"] in WEBHOOK_KINDS
    ]
    if webhooks:
        manifest = directory / "installed-webhooks.yaml"
        manifest.write_text(yaml.safe_dump_all(webhooks))
        plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    account = next(d for d in installed if d["kind"] == "ServiceAccount")["metadata"]["name"]
    request = {"spec": {"audiences": [plane.url], "expirationSeconds": 4 * 3600}}
    token = core.create_namespaced_service_account_token(
        account, SYSTEM_NAMESPACE, request
    ).status.token
    kubeconfig = plane.write_kubeconfig(directory / "operator.kubeconfig", "modelgate", token=token)
    return Installation(
        plane=plane,
        documents=documents,
        token=token,
        kubeconfig=kubeconfig,
        directory=directory,
        username=f"system:serviceaccount:{SYSTEM_NAMESPACE}:{account}",
        webhook_port=webhook_port,
        webhook_tls=webhook_tls,
    )


def loopback_webhooks(configuration: dict[str, Any], port: int, ca: bytes) -> dict[str, Any]:
    """The chart's webhook configuration, calling the operator on loopback
    (https, an IP SAN for 127.0.0.1, our CA) in labelled namespaces only."""
    configuration = json.loads(json.dumps(configuration))
    for webhook in configuration["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}{path}",
            "caBundle": base64.b64encode(ca).decode(),
        }
        assert "namespaceSelector" not in webhook, "cluster-wide chart values expected"
        webhook["namespaceSelector"] = {"matchLabels": {ADMISSION_LABEL: "on"}}
    return configuration


def user_kubeconfig(
    plane: ControlPlane, directory: Path, user: str, groups: tuple[str, ...] = ()
) -> Path:
    """A kubeconfig for a person: a client certificate with CN=user, O=groups."""
    assert plane.ca is not None
    pair: KeyPair = plane.ca.client(f"user-{user}", user, groups)
    return plane.write_kubeconfig(directory / f"{user}.kubeconfig", user, cert=pair)


def s3_secret(namespace: str) -> dict[str, Any]:
    """The Secret the chart's jobSecret names: the store's keys for pods."""
    keys = {k: CREDENTIALS[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "modelgate-s3", "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
    }


def _lost(sent: Any, stored: Any, path: str) -> list[str]:
    """Paths of ``sent`` (a merge patch or an object) missing from ``stored``."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        lost = []
        for key, value in sent.items():
            if value is None:
                continue  # a merge patch deleting the key
            if key not in stored:
                lost.append(f"{path}.{key}")
            else:
                lost.extend(_lost(value, stored[key], f"{path}.{key}"))
        return lost
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [p for i, item in enumerate(sent) for p in _lost(item, stored[i], f"{path}[{i}]")]
    return []


def pruned_writes(events: list[dict[str, Any]]) -> list[str]:
    """Fields the operator wrote to Modelgate objects that the server did not
    keep (structural pruning drops undeclared fields silently), from the
    audit log's request and response bodies."""
    lost = []
    for event in events:
        ref = event.get("objectRef") or {}
        if ref.get("apiGroup") != "modelgate.dev" or event.get("verb") not in ("patch", "update"):
            continue
        if (event.get("responseStatus") or {}).get("code", 200) >= 300:
            continue
        sent, stored = event.get("requestObject"), event.get("responseObject")
        if sent is None or stored is None:
            continue
        if isinstance(sent, list):  # a JSON patch: every added value is there
            for operation in sent:
                if operation.get("op") in ("add", "replace"):
                    target: Any = stored
                    for escaped in operation["path"].strip("/").split("/"):
                        part = escaped.replace("~1", "/").replace("~0", "~")
                        if isinstance(target, list):
                            target = target[int(part)] if part.isdigit() else None
                        elif isinstance(target, dict):
                            target = target.get(part)
                    if target is None:
                        lost.append(f"{ref.get('name')}: {operation['path']}")
            continue
        lost.extend(f"{ref.get('name')}: {p}" for p in _lost(sent, stored, ""))
    return lost


_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def used_permissions(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every resource request."""
    used = set()
    for event in events:
        ref = event.get("objectRef") or {}
        if not ref.get("resource") or event.get("verb") not in _VERBS:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return used


def granted_permissions(documents: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What the chart's ClusterRoles grant, one triple per group, resource and verb."""
    granted = set()
    for document in documents:
        if document["kind"] != "ClusterRole":
            continue
        for rule in document.get("rules") or []:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        granted.add((group, resource, verb))
    return granted


def spec_writes(events: list[dict[str, Any]]) -> list[str]:
    """Writes that touched the spec of a Modelgate object: Argo CD and Flux
    own spec, so any would be drift (the operator writes status, its own
    annotations and its finalizer only)."""
    found = []
    for event in events:
        ref = event.get("objectRef") or {}
        if ref.get("apiGroup") != "modelgate.dev" or ref.get("subresource"):
            continue
        if event.get("verb") not in ("create", "update", "patch"):
            continue
        body = event.get("requestObject")
        if (
            event["verb"] == "create"
            or (isinstance(body, dict) and "spec" in body)
            or (
                isinstance(body, list)
                and any(str(op.get("path", "")).startswith("/spec") for op in body)
            )
        ):
            found.append(f"{event['verb']} {event['requestURI']}")
    return found
