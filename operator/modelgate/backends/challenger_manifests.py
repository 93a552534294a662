"""The objects of a challenger beside the live release in a cluster
(policy.rollout), and the two ways a split reaches callers.

The challenger gets its own ConfigMap, Deployment and Service, named after
the model's with ``-challenger``, its pods labelled ``modelgate.dev/arm:
challenger`` (Prometheus copies the label as ``arm``; the live model's pods
carry none, read as ``champion``). The live model's Service selects only the
live model's pods until the split:

- through a Gateway: an HTTPRoute named after the model sends ``weight`` per
  cent to the challenger's Service and the rest to the live model's (exact);
- by replicas: the live model's Service selects both arms' pods (by model
  and environment) and the challenger runs as many replicas as gives it about
  ``weight`` per cent of them (coarse: one live replica and a 10 % canary is
  an even split, and status says so).

Pure: builders of manifests, no client.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from modelgate.backends.manifests import (
    ANNOTATION_PREFIX,
    ENVIRONMENT_LABEL,
    MODEL_LABEL,
    RESTRICTED_CONTAINER,
    build_configmap,
    build_deployment,
    build_service,
    challenger_name,
    common_labels,
    dns_name,
    serving_deployment,
    serving_name,
    sized,
)
from modelgate.promotion.plan import Deploy, SetTraffic
from modelgate.settings import OperatorSettings

ARM_LABEL = "modelgate.dev/arm"
WEIGHT = f"{ANNOTATION_PREFIX}weight"
TRAFFIC = f"{ANNOTATION_PREFIX}traffic"
MIRROR = f"{ANNOTATION_PREFIX}mirror"
# The router's own endpoints (modelgate.serving.router's OWN_PREFIX).
ROUTER_PREFIX = "/-/router/"
INSTANCE = "app.kubernetes.io/instance"
GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTES = (GATEWAY_GROUP, "v1", "httproutes")
SERVICE_PORT = 80


def champion_selector(model: str, environment: str) -> dict[str, str]:
    """What the live model's Service selects outside a split: its own pods."""
    return {INSTANCE: serving_name(model, environment), MODEL_LABEL: model}


def shared_selector(model: str, environment: str) -> dict[str, str]:
    """What it selects during a split by replicas: both arms' pods."""
    return {MODEL_LABEL: model, ENVIRONMENT_LABEL: environment}


def selector_patch(model: str, environment: str, shared: bool) -> dict[str, Any]:
    """A JSON merge patch of the live model's Service: the keys of the other
    selector removed (null), this one's set."""
    wanted = (
        shared_selector(model, environment) if shared else champion_selector(model, environment)
    )
    other = champion_selector(model, environment) if shared else shared_selector(model, environment)
    selector: dict[str, str | None] = dict.fromkeys(other)
    selector.update(wanted)
    return {"spec": {"selector": selector}}


def _renamed(body: dict[str, Any], name: str, instance: str) -> dict[str, Any]:
    found = copy.deepcopy(body)
    found["metadata"]["name"] = name
    found["metadata"]["labels"] = {
        **found["metadata"]["labels"],
        INSTANCE: instance,
        ARM_LABEL: "challenger",
    }
    return found


def build_challenger(
    action: Deploy, settings: OperatorSettings, now: datetime
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The challenger's ConfigMap, Deployment (one replica, no traffic) and Service."""
    model, environment = action.model, action.environment
    name = challenger_name(model, environment)
    live_config = dns_name(serving_name(model, environment), "config")
    config = _renamed(build_configmap(action), dns_name(name, "config"), name)
    deployment = _renamed(build_deployment(action, settings, now), name, name)
    selector = {INSTANCE: name, MODEL_LABEL: model}
    spec = deployment["spec"]
    spec["selector"] = {"matchLabels": selector}
    template = spec["template"]
    template["metadata"]["labels"] = {**deployment["metadata"]["labels"], **selector}
    for container in [*template["spec"].get("initContainers", []), *template["spec"]["containers"]]:
        for source in container.get("envFrom", []):
            if source.get("configMapRef", {}).get("name") == live_config:
                source["configMapRef"]["name"] = config["metadata"]["name"]
    deployment["metadata"]["annotations"].update({WEIGHT: "0", TRAFFIC: "none"})
    service = _renamed(build_service(action, settings), name, name)
    service["spec"]["selector"] = selector
    return config, deployment, service


def challenger_replicas(champion: int, weight: int) -> int:
    """Replicas that give the challenger about ``weight`` per cent of all pods
    beside ``champion`` replicas (at least one)."""
    if not 0 < weight < 100:
        raise ValueError(f"a split by replicas gives the challenger 1-99 %, not {weight}")
    return max(1, round(champion * weight / (100 - weight)))


def replica_share(champion: int, challenger: int) -> int:
    """The per cent of the pods (and so, roughly, of requests) the challenger has."""
    return round(100 * challenger / (champion + challenger))


def router_name(model: str, environment: str) -> str:
    return dns_name(serving_name(model, environment), "router")


def needs_router(action: SetTraffic) -> bool:
    """A mirror, or a split that keeps each caller in one arm, is the
    router's work (the Gateway API has no split by header, and gateways
    such as Traefik have no RequestMirror filter)."""
    return action.mirror or action.sticky_header is not None


def build_router(
    action: SetTraffic, settings: OperatorSettings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Modelgate's router (``python -m modelgate.serving.router``, the
    operator's image) behind the model's HTTPRoute: it sends each request to
    the live model's Service or the challenger's, by the sticky header's
    hash, or answers from the live model and mirrors to the challenger,
    comparing the two answers (its modelgate_shadow_* counters at
    /-/router/metrics). Its Deployment and Service."""
    model, environment, namespace = action.model, action.environment, action.namespace
    name = router_name(model, environment)

    def url(service: str) -> str:
        return f"http://{service}.{namespace}.svc"

    args = ["--host", "0.0.0.0", "--port", str(settings.model_port), "--model", model,
            "--champion", url(serving_name(model, environment))]  # fmt: skip
    challenger = url(challenger_name(model, environment))
    if action.mirror:
        args += ["--mirror", challenger]
    else:
        args += ["--challenger", challenger, "--weight", str(action.weight)]
    if action.sticky_header is not None:
        args += ["--sticky-header", action.sticky_header]
    labels = {
        **common_labels("router", name),
        MODEL_LABEL: model,
        ENVIRONMENT_LABEL: environment,
        ARM_LABEL: "router",
    }
    selector = {INSTANCE: name, MODEL_LABEL: model}
    container = {
        "name": "router",
        "image": settings.server_image or "",
        "command": ["python", "-m", "modelgate.serving.router"],
        "args": args,
        "ports": [{"name": "http", "containerPort": settings.model_port}],
        "readinessProbe": {
            "httpGet": {"path": f"{ROUTER_PREFIX}ready", "port": "http"},
            "periodSeconds": 2,
        },
        # Alive while it accepts connections (ready: while it answers).
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "resources": sized("serving", settings),
        "securityContext": RESTRICTED_CONTAINER,
    }
    deployment = serving_deployment(
        {"name": name, "namespace": namespace, "labels": labels,
         "annotations": {WEIGHT: str(action.weight)}},
        selector,
        {"prometheus.io/scrape": "true", "prometheus.io/port": str(settings.model_port),
         "prometheus.io/path": f"{ROUTER_PREFIX}metrics"},
        {"containers": [container]},
    )  # fmt: skip
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}],
        },
    }
    return deployment, service


def build_httproute(action: SetTraffic, champion_weight: int | None = None) -> dict[str, Any]:
    """The model's HTTPRoute on the Gateway: ``action.weight`` per cent to the
    challenger (``champion_weight`` to the live model; default the rest), or
    everything to the router when the split needs it."""
    assert action.gateway is not None
    gateway, gateway_namespace, section = action.gateway
    live = serving_name(action.model, action.environment)
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway,
                              "namespace": gateway_namespace}  # fmt: skip
    if section:
        parent["sectionName"] = section
    backends = [
        {"name": live, "port": SERVICE_PORT,
         "weight": 100 - action.weight if champion_weight is None else champion_weight},
    ]  # fmt: skip
    if needs_router(action):
        backends = [
            {"name": router_name(action.model, action.environment), "port": SERVICE_PORT,
             "weight": 100}
        ]  # fmt: skip
    elif action.weight:
        backends.append(
            {"name": challenger_name(action.model, action.environment), "port": SERVICE_PORT,
             "weight": action.weight}
        )  # fmt: skip
    route: dict[str, Any] = {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": live,
            "namespace": action.namespace,
            "labels": {
                INSTANCE: live,
                MODEL_LABEL: action.model,
                ENVIRONMENT_LABEL: action.environment,
                "app.kubernetes.io/managed-by": "modelgate",
            },
            "annotations": {WEIGHT: str(action.weight)},
        },
        "spec": {"parentRefs": [parent], "rules": [{"backendRefs": backends}]},
    }
    if action.hostnames:
        route["spec"]["hostnames"] = list(action.hostnames)
    return route


def build_route_alone(route: dict[str, Any], model: str, environment: str) -> dict[str, Any]:
    """``route`` (the model's HTTPRoute as it is) sending every caller to
    the live model again: the same Gateway and host names, one backend."""
    spec = route.get("spec") or {}
    parent = (spec.get("parentRefs") or [{}])[0]
    namespace = (route.get("metadata") or {}).get("namespace", "")
    alone = SetTraffic(
        environment=environment, namespace=namespace, model=model, champion="", challenger="",
        weight=0,
        gateway=(parent.get("name", ""), parent.get("namespace", namespace),
                 parent.get("sectionName")),
        hostnames=tuple(spec.get("hostnames") or ()),
    )  # fmt: skip
    return build_httproute(alone)
