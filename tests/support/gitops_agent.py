"""A GitOps agent played by the test, as Argo CD or Flux would be.

It follows one branch of a real repository, builds the environment's
directory with ``kubectl kustomize`` and applies the result (Deployments,
Services, ConfigMaps and HTTPRoutes) to the API server or the emulator,
pruning what it applied before and no longer finds. The operator only writes
to Git; everything it then sees in the cluster came through here.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.conftest import ROOT

KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Team",
            "GIT_AUTHOR_EMAIL": "team@example.com",
            "GIT_COMMITTER_NAME": "Team",
            "GIT_COMMITTER_EMAIL": "team@example.com",
        },
    )
    return done.stdout


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` builds from ``folder`` (what an agent applies)."""
    built = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(built) if d]


def bare_repository(parent: Path) -> Path:
    """A bare repository with one commit on main."""
    bare = parent / "deploy.git"
    git(parent, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = parent / "seed"
    git(parent, "clone", "--quiet", str(bare), str(seed))
    (seed / "README.md").write_text("deployments\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "--quiet", "-m", "Start")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    return bare


@dataclass
class GitOpsAgent:
    api: client.ApiClient
    repository: Path
    path: str
    workdir: Path
    branch: str = "main"
    # Play Argo CD too: report sync and health on this Application (namespace, name).
    application: tuple[str, str] | None = None
    healthy: bool = True  # what health to report once synced
    synced: list[str] = field(default_factory=list)  # revisions applied, in order
    errors: list[str] = field(default_factory=list)
    _applied: set[tuple[str, str, str]] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _apply(self, document: dict[str, Any]) -> tuple[str, str, str]:
        kind, metadata = document["kind"], document["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        calls = {
            "Deployment": (apps.create_namespaced_deployment, apps.patch_namespaced_deployment),
            "Service": (core.create_namespaced_service, core.patch_namespaced_service),
            "ConfigMap": (core.create_namespaced_config_map, core.patch_namespaced_config_map),
        }
        if kind == "HTTPRoute":
            custom = client.CustomObjectsApi(self.api)
            try:
                custom.create_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2], document)
            except client.exceptions.ApiException as error:
                if error.status != 409:
                    raise
                custom.patch_namespaced_custom_object(
                    *ROUTES[:2], namespace, ROUTES[2], name, {"spec": document["spec"]}
                )
            return kind, namespace, name
        create, patch = calls[kind]
        try:
            create(namespace, document)
        except client.exceptions.ApiException as error:
            if error.status != 409:
                raise
            patch(name, namespace, document)
        return kind, namespace, name

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        if kind == "HTTPRoute":
            with contextlib.suppress(client.exceptions.NotFoundException):
                client.CustomObjectsApi(self.api).delete_namespaced_custom_object(
                    *ROUTES[:2], namespace, ROUTES[2], name
                )
            return
        delete = {
            "Deployment": apps.delete_namespaced_deployment,
            "Service": core.delete_namespaced_service,
            "ConfigMap": core.delete_namespaced_config_map,
        }[kind]
        with contextlib.suppress(client.exceptions.NotFoundException):
            delete(name, namespace)

    def step(self) -> None:
        head = git(self.repository, "rev-parse", self.branch).strip()
        if self.synced and self.synced[-1] == head:
            return
        checkout = self.workdir / "checkout"
        if not checkout.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            git(self.workdir, "clone", "--quiet", f"file://{self.repository}", str(checkout))
        git(checkout, "fetch", "--quiet", "origin")
        git(checkout, "reset", "--quiet", "--hard", head)
        documents: list[dict[str, Any]] = []
        if (checkout / self.path / "kustomization.yaml").exists():
            documents = kustomize_build(checkout / self.path)
        applied = {self._apply(d) for d in documents}
        for stale in self._applied - applied:
            self._delete(*stale)
        self._applied = applied
        self.synced.append(head)
        self.report()

    def report(self) -> None:
        """Argo CD's view of the last sync: Synced at head, Healthy or Progressing."""
        if self.application is None or not self.synced:
            return
        namespace, name = self.application
        status = {
            "sync": {"status": "Synced", "revision": self.synced[-1]},
            "health": {"status": "Healthy" if self.healthy else "Progressing"},
        }
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "applications", name, {"status": status}
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as error:  # keep syncing; the test reports it
                self.errors.append(repr(error))
            self._stop.wait(0.2)

    def start(self) -> GitOpsAgent:
        self._thread = threading.Thread(target=self._loop, name="gitops-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
