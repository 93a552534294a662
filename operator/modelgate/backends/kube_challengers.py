"""A challenger beside the live release in a cluster (Direct delivery): its
objects, the split (an HTTPRoute on a Gateway, or the live model's Service
selecting both arms' pods with the challenger's replicas weighted), what is
observed of it, and its removal. The objects are built in
``challenger_manifests``; this applies, reads and deletes them."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelgate.api.environment import Environment
from modelgate.api.rollout import Strategy
from modelgate.backends import challenger_manifests as arms
from modelgate.backends import manifests
from modelgate.backends.gitops import is_gitops, split_unsupported
from modelgate.backends.informers import DEPLOYMENTS
from modelgate.backends.kube import KubeDeployer, classify_api_error, plain
from modelgate.promotion.plan import Deploy, DeploymentObservation, SetTraffic


def rollout_unsupported(environment: Environment) -> str | None:
    """Why the operator cannot yet run this environment's judged rollout in
    the cluster, or None. It splits by weight with an HTTPRoute or by
    replicas; a mirror (Shadow) or a sticky split needs its router behind
    the Gateway's route; GitOps commits each split as the route."""
    rollout = environment.spec.policy.rollout
    if rollout is None:
        return None
    if is_gitops(environment):
        return split_unsupported(environment)
    routed = rollout.traffic is not None and rollout.traffic.gateway is not None
    if rollout.strategy == Strategy.SHADOW and not routed:
        return (
            "a shadow needs a mirror of live traffic, which the operator runs behind a "
            "Gateway only: set policy.rollout.traffic.gateway (local mode's router mirrors "
            "without one)"
        )
    if rollout.sticky_header is not None and not routed:
        return (
            f"sticky assignment by header {rollout.sticky_header} needs the operator's router "
            "behind a Gateway: set policy.rollout.traffic.gateway, or remove stickyHeader to "
            "split by replicas"
        )
    return None


def routed_by_gateway(environment: Environment) -> bool:
    """Whether the environment's split goes through a Gateway's HTTPRoute."""
    rollout = environment.spec.policy.rollout
    return (
        rollout is not None
        and rollout.traffic is not None
        and (rollout.traffic.gateway is not None)
    )


class KubeChallengers:
    def __init__(self, deployer: KubeDeployer) -> None:
        self.deployer = deployer
        self.clients = deployer.clients

    def deploy(self, action: Deploy, now: datetime) -> None:
        """The challenger's ConfigMap, Deployment and Service, with no traffic.
        One of another release there is replaced (its split undone first)."""
        name = manifests.challenger_name(action.model, action.environment)
        current = self.deployer._read("deployment", name, action.namespace)
        if current is not None and _annotation(current, "release") != action.release:
            self.remove(action.namespace, action.environment, action.model)
        config, deployment, service = arms.build_challenger(action, self.deployer.settings, now)
        if current is not None and _annotation(current, "release") == action.release:
            # Applied again (a retry, a config edit): the split it has stays.
            kept = current.get("metadata", {}).get("annotations") or {}
            for key in (arms.WEIGHT, arms.TRAFFIC):
                if key in kept:
                    deployment["metadata"]["annotations"][key] = kept[key]
            deployment["spec"]["replicas"] = int((current.get("spec") or {}).get("replicas", 1))
        self.deployer._apply("config_map", config)
        self.deployer._apply("deployment", deployment)
        self.deployer._apply("service", service)

    def set_traffic(self, action: SetTraffic) -> str | None:
        """Split the traffic as ``action`` says; returns how it reaches
        callers, or None while the router it needs is not ready yet (the
        split is then asked for again: the challenger's weight is unchanged)."""
        name = manifests.challenger_name(action.model, action.environment)
        namespace = action.namespace
        live_name = manifests.serving_name(action.model, action.environment)
        if arms.needs_router(action):
            if action.gateway is None:
                raise RuntimeError(
                    "a mirror or a sticky split needs policy.rollout.traffic.gateway: the "
                    "router runs behind the Gateway's HTTPRoute"
                )
            if not self.deployer.settings.server_image:
                raise RuntimeError(
                    "the router runs the operator's image: set MODELGATE_SERVER_IMAGE (the "
                    "chart does)"
                )
            router, service = arms.build_router(action, self.deployer.settings)
            applied = self.deployer._apply("deployment", router)
            self.deployer._apply("service", service)
            waiting = manifests.rollout_pending(applied or router)
            if waiting is not None:
                return None
            self._apply_route(arms.build_httproute(action))
            what = "a mirror of every request" if action.mirror else f"{action.weight}%"
            how = (
                f"HTTPRoute {namespace}/{live_name} to the router "
                f"{router['metadata']['name']}: {what} to the challenger"
                + (f", sticky by {action.sticky_header}" if action.sticky_header else "")
            )
            patch: dict[str, Any] = {}
        elif action.gateway is not None:
            self._apply_route(arms.build_httproute(action))
            how = f"HTTPRoute {namespace}/{live_name}"
            patch = {}
        else:
            live = self.deployer._read("deployment", live_name, namespace)
            champion = int(((live or {}).get("spec") or {}).get("replicas", 1) or 1)
            replicas = arms.challenger_replicas(champion, action.weight)
            share = arms.replica_share(champion, replicas)
            self._patch_live_service(action.model, action.environment, namespace, shared=True)
            how = (
                f"replicas: {replicas} challenger and {champion} live pods behind one Service "
                f"({share}% for a wanted {action.weight}%)"
            )
            patch = {"spec": {"replicas": replicas}}
        patch.setdefault("metadata", {})["annotations"] = {
            arms.WEIGHT: str(action.weight),
            arms.MIRROR: str(action.mirror).lower(),
            arms.TRAFFIC: how,
        }
        try:
            applied = self.clients.apps.patch_namespaced_deployment(name, namespace, patch)
        except ApiException as error:
            raise classify_api_error(error, f"splitting traffic to {namespace}/{name}") from error
        if self.deployer.cache is not None:
            self.deployer.cache.remember(DEPLOYMENTS, plain(applied))
        return how

    def router_ready(self, namespace: str, model: str, environment: str) -> bool:
        """Whether the router's Deployment is available (a GitOps agent
        applied it)."""
        router = self.deployer._read("deployment", arms.router_name(model, environment), namespace)
        return router is not None and manifests.rollout_pending(router) is None

    def remove(
        self, namespace: str, environment: str, model: str, routed: bool = False
    ) -> str | None:
        """The live release keeps all traffic: the split undone, the challenger's
        objects deleted. Returns the release removed, if there was one.
        ``routed``: the environment splits through a Gateway (its route is
        then read and reset even if the challenger's record of it was lost)."""
        name = manifests.challenger_name(model, environment)
        current = self.deployer._read("deployment", name, namespace)
        if current is None:
            # Nothing beside the live release (the Deployment goes last, so a
            # removal cut short is finished by the next one).
            return None
        self._patch_live_service(model, environment, namespace, shared=False)
        # Read only when the split goes through one: without the Gateway API
        # grants (rbac.gatewayAPI) a read is refused, and no route was written.
        routed = routed or (_annotation(current, "traffic") or "").startswith("HTTPRoute")
        route = (
            self._read_route(namespace, manifests.serving_name(model, environment))
            if routed
            else None
        )
        if route is not None:
            self._apply_route(arms.build_route_alone(route, model, environment))
        apps, core = self.clients.apps, self.clients.core
        router = arms.router_name(model, environment)
        for delete, object_name in (
            (apps.delete_namespaced_deployment, router),
            (core.delete_namespaced_service, router),
            (core.delete_namespaced_service, name),
            (core.delete_namespaced_config_map, manifests.dns_name(name, "config")),
            (apps.delete_namespaced_deployment, name),
        ):
            try:
                delete(object_name, namespace)
            except ApiException as error:
                if error.status != 404:
                    raise classify_api_error(
                        error, f"removing {namespace}/{object_name}"
                    ) from error
        if self.deployer.cache is not None:
            self.deployer.cache.forget(DEPLOYMENTS, namespace, name)
        return _annotation(current, "release")

    def observe(
        self, environments: Mapping[str, Environment], model: str
    ) -> dict[str, DeploymentObservation]:
        found: dict[str, DeploymentObservation] = {}
        for environment, spec in environments.items():
            name = manifests.challenger_name(model, environment)
            deployment = self.deployer._observed(spec.spec.namespace, name)
            release = _annotation(deployment, "release") if deployment is not None else None
            if deployment is None or not release:
                continue
            containers = (deployment.get("spec") or {}).get("template", {}).get("spec", {}).get(
                "containers"
            ) or [{}]
            waiting = manifests.rollout_pending(deployment)
            weight = _annotation(deployment, "weight") or "0"
            found[environment] = DeploymentObservation(
                environment=environment,
                release=release,
                image=containers[0].get("image", ""),
                config_hash=_annotation(deployment, "config-hash") or "",
                deployed_at=_annotation(deployment, "deployed-at") or "",
                ready=waiting is None,
                message=waiting,
                weight=int(weight) if weight.isdigit() else 0,
                mirror=_annotation(deployment, "mirror") == "true",
            )
        return found

    # -- the split's two forms ------------------------------------------------

    def _patch_live_service(
        self, model: str, environment: str, namespace: str, shared: bool
    ) -> None:
        name = manifests.serving_name(model, environment)
        with contextlib.suppress(ApiException):
            # Gone with its release (a rollback to nothing): nothing to split.
            self.clients.core.patch_namespaced_service(
                name, namespace, arms.selector_patch(model, environment, shared)
            )

    def _read_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = arms.HTTPROUTES
        try:
            found: dict[str, Any] = self.clients.custom.get_namespaced_custom_object(
                group, version, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:  # no route, or no Gateway API in this cluster
                return None
            raise classify_api_error(error, f"reading HTTPRoute {namespace}/{name}") from error
        return found

    def _apply_route(self, route: dict[str, Any]) -> None:
        group, version, plural = arms.HTTPROUTES
        name, namespace = route["metadata"]["name"], route["metadata"]["namespace"]
        custom = self.clients.custom
        try:
            custom.create_namespaced_custom_object(group, version, namespace, plural, route)
            return
        except ApiException as error:
            if error.status == 404:
                raise RuntimeError(
                    f"the cluster has no HTTPRoute ({group}/{version}): install the Gateway "
                    "API CRDs and a Gateway, or omit policy.rollout.traffic.gateway to split "
                    "by replicas"
                ) from error
            if error.status != 409:
                raise classify_api_error(error, f"creating HTTPRoute {namespace}/{name}") from error
        try:
            custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, {"spec": route["spec"]}
            )
        except ApiException as error:
            raise classify_api_error(error, f"updating HTTPRoute {namespace}/{name}") from error


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(
        f"{manifests.ANNOTATION_PREFIX}{key}"
    )
    return None if value is None else str(value)
