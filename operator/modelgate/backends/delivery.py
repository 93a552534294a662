"""The operator's delivery: each environment by its mode, Direct or GitOps.

Direct applies the Deployment, Service and ConfigMap itself (KubeDeployer).
GitOps commits to Git (GitOpsDelivery) and reads from the cluster only what
tells it the commit is running: the model's Deployment in the target
namespace, or an Argo CD Application's sync and health.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelgate.api.environment import Environment
from modelgate.backends import manifests
from modelgate.backends.challenger_manifests import ARM_LABEL
from modelgate.backends.gitformats import ImageRef
from modelgate.backends.gitops import (
    GitCredentials,
    GitError,
    GitOpsDelivery,
    RolloutState,
    is_gitops,
)
from modelgate.backends.kube import KubeClients, KubeDeployer, classify_api_error, plain
from modelgate.backends.kube_challengers import KubeChallengers, routed_by_gateway
from modelgate.promotion import Deploy, DeploymentObservation, Rollback
from modelgate.promotion.plan import RemoveChallenger, SetTraffic
from modelgate.settings import OperatorSettings

ARGO = ("argoproj.io", "v1alpha1", "applications")


class KubeDelivery:
    """Deploy, roll back and observe, whatever each environment's mode."""

    def __init__(self, clients: KubeClients, settings: OperatorSettings) -> None:
        self.clients = clients
        self.direct = KubeDeployer(clients, settings)
        # A judged rollout's challenger beside the live release (Direct only).
        self.challengers = KubeChallengers(self.direct)
        self.gitops = GitOpsDelivery(settings, self.git_credentials, self.rollout)

    def deploy(self, environment: Environment, action: Deploy, now: datetime) -> str | None:
        """Returns the commit for GitOps, None for Direct."""
        if action.challenger:
            if is_gitops(environment):
                return self.gitops.deploy_challenger(environment, action, now)
            self.challengers.deploy(action, now)
            return None
        if is_gitops(environment):
            # The split ends in a commit of its own before the promotion's:
            # a rollback reverts the promotion alone.
            self.gitops.remove_challenger(
                environment, action.model, f"{action.release} takes over {environment.name}"
            )
            return self.gitops.deploy(environment, action, now)
        # Taking over (a challenger that won, or any new release) ends the
        # split first: every caller goes to the live model's pods again.
        self.challengers.remove(
            action.namespace, action.environment, action.model, routed_by_gateway(environment)
        )
        self.direct.deploy(action, now)
        return None

    def set_traffic(self, environment: Environment, action: SetTraffic) -> str | None:
        """Split the traffic; returns how it reaches callers, or None while
        the router it needs starts (asked again on a later look)."""
        if is_gitops(environment):
            return self.gitops.set_traffic(
                environment,
                action,
                lambda: self.challengers.router_ready(
                    action.namespace, action.model, action.environment
                ),
            )
        return self.challengers.set_traffic(action)

    def remove_challenger(self, environment: Environment, action: RemoveChallenger) -> str | None:
        """The release removed from beside the live one, if there was one."""
        if is_gitops(environment):
            return self.gitops.remove_challenger(environment, action.model, action.reason)
        return self.challengers.remove(
            action.namespace, action.environment, action.model, routed_by_gateway(environment)
        )

    def rollback(
        self, environment: Environment, action: Rollback, now: datetime
    ) -> tuple[str | None, str | None]:
        """(release put back if known, revert commit for GitOps)."""
        if is_gitops(environment):
            return None, self.gitops.rollback(environment, action, now)
        return self.direct.rollback(action, now), None

    def observe(
        self,
        namespace: str,
        environments: Mapping[str, Environment],
        model: str,
        release: str,
    ) -> dict[str, DeploymentObservation]:
        direct = {n: e for n, e in environments.items() if not is_gitops(e)}
        found = self.direct.observe(namespace, direct, model) if direct else {}
        for name, environment in environments.items():
            if is_gitops(environment):
                live = self.gitops.observe(environment, model, release)
                if live is not None:
                    found[name] = live
        return found

    def observe_challengers(
        self, environments: Mapping[str, Environment], model: str
    ) -> dict[str, DeploymentObservation]:
        # A GitOps agent applies the same objects from the commits: what runs
        # is read from the cluster alike.
        return self.challengers.observe(environments, model) if environments else {}

    # -- what GitOps needs from the cluster -----------------------------------

    def git_credentials(self, environment: Environment) -> GitCredentials | None:
        target = environment.spec.delivery.git
        if target is None or target.secret_ref is None:
            return None
        name, namespace = target.secret_ref.name, environment.namespace
        data = self.secret_data(namespace, name)
        if data is None:
            raise GitError(
                f"Secret {namespace}/{name} named by delivery.git.secretRef does not exist; "
                "create it with `token` (HTTPS) or `sshPrivateKey` (SSH)",
                transient=False,
            )
        return GitCredentials.from_secret(data, f"{namespace}/{name}")

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's values, decoded; None when there is no such Secret."""
        try:
            secret = plain(self.clients.core.read_namespaced_secret(name, namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise classify_api_error(error, f"reading Secret {namespace}/{name}") from error
        data = {
            key: base64.b64decode(value).decode()
            for key, value in (secret.get("data") or {}).items()
        }
        data.update(secret.get("stringData") or {})
        return data

    def rollout(self, environment: Environment, model: str, image: str) -> RolloutState:
        application = environment.spec.delivery.argo_cd
        if application is not None:
            return self._argo(application.namespace, application.name)
        return self._deployments(environment.spec.namespace, environment.name, image)

    def _argo(self, namespace: str, name: str) -> RolloutState:
        try:
            app = self.clients.custom.get_namespaced_custom_object(
                ARGO[0], ARGO[1], namespace, ARGO[2], name
            )
        except ApiException as error:
            if error.status == 404:
                return RolloutState(False, f"Argo CD Application {namespace}/{name} not found")
            raise classify_api_error(error, f"reading Application {namespace}/{name}") from error
        status = app.get("status") or {}
        sync = status.get("sync") or {}
        health = (status.get("health") or {}).get("status")
        revision = sync.get("revision")
        if sync.get("status") != "Synced" or health != "Healthy":
            return RolloutState(
                False,
                f"Argo CD Application {namespace}/{name} is {sync.get('status') or 'Unknown'}"
                f"/{health or 'Unknown'}",
                revision,
            )
        return RolloutState(True, None, revision)

    def _deployments(self, namespace: str, environment: str, image: str) -> RolloutState:
        """Ready when every Deployment in ``namespace`` running ``image`` is
        available (the agent applies whatever the repository holds)."""
        try:
            listed = plain(self.clients.apps.list_namespaced_deployment(namespace))
        except ApiException as error:
            raise classify_api_error(error, f"listing Deployments in {namespace}") from error
        wanted = ImageRef.parse(image)
        running = [d for d in listed.get("items", []) if _runs(d, wanted)]
        # Deployments labelled for an environment (as Modelgate generates them)
        # count only for theirs: staging may run the same image next door.
        running = [
            d
            for d in running
            if _labels(d).get(manifests.ENVIRONMENT_LABEL, environment) == environment
            # A challenger may run the same image beside it (a config change).
            and ARM_LABEL not in _labels(d)
        ]
        if not running:
            return RolloutState(False, f"waiting for a Deployment in {namespace} running {image}")
        for deployment in running:
            waiting = manifests.rollout_pending(deployment)
            if waiting:
                return RolloutState(False, waiting)
        return RolloutState(True)


def _labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment.get("metadata", {}).get("labels") or {}


def _runs(deployment: dict[str, Any], image: ImageRef) -> bool:
    spec = (deployment.get("spec") or {}).get("template", {}).get("spec") or {}
    return any(
        ImageRef.parse(str(c.get("image", ""))).same_as(image) for c in spec.get("containers") or []
    )
