"""The objects of a challenger beside the live release, and the split's two
forms (an HTTPRoute; the live model's Service selecting both arms)."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

import kubernetes_validate
import pytest

from modelgate.api.environment import Environment
from modelgate.backends import challenger_manifests as arms
from modelgate.backends import manifests
from modelgate.backends.kube_challengers import rollout_unsupported
from modelgate.promotion.plan import SetTraffic, StartVerification
from tests.unit.test_manifests import (
    NOW,
    SERVER_SETTINGS,
    SETTINGS,
    VERSIONS,
    deploy_action,
    model_server_deploy_action,
    reference_deploy_action,
)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(
    ("action", "settings"),
    [
        (deploy_action(), SETTINGS),
        (reference_deploy_action(), SETTINGS),
        (model_server_deploy_action(), SERVER_SETTINGS),
    ],
)
def test_the_challenger_has_objects_of_its_own_the_live_service_does_not_select(
    action: Any, settings: Any
) -> None:
    action = replace(action, challenger=True, release="team/m-2")
    config, deployment, service = arms.build_challenger(action, settings, NOW)
    live = manifests.build_deployment(action, settings, NOW)
    live_service = manifests.build_service(action, settings)
    name = manifests.challenger_name(action.model, action.environment)
    assert [o["metadata"]["name"] for o in (deployment, service)] == [name, name]
    assert config["metadata"]["name"] == f"{name}-config"
    assert config["data"] == manifests.build_configmap(action)["data"]
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert pods[arms.ARM_LABEL] == "challenger"
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pods)
    assert _selects(service["spec"]["selector"], pods)
    # The live model's Deployment and Service never take the challenger's pods,
    # nor the challenger's the live ones; during a split by replicas the live
    # Service selects both.
    live_pods = live["spec"]["template"]["metadata"]["labels"]
    assert not _selects(live["spec"]["selector"]["matchLabels"], pods)
    assert not _selects(live_service["spec"]["selector"], pods)
    assert not _selects(deployment["spec"]["selector"]["matchLabels"], live_pods)
    shared = arms.shared_selector(action.model, action.environment)
    assert _selects(shared, pods)
    assert _selects(shared, live_pods)
    assert live_service["spec"]["selector"] == arms.champion_selector(
        action.model, action.environment
    )
    # It reads its own ConfigMap, and starts with no traffic.
    template = deployment["spec"]["template"]["spec"]
    sources = [
        s["configMapRef"]["name"]
        for c in [*template.get("initContainers", []), *template["containers"]]
        for s in c.get("envFrom", [])
    ]
    assert sources
    assert set(sources) == {config["metadata"]["name"]}
    assert deployment["metadata"]["annotations"][arms.WEIGHT] == "0"
    assert deployment["metadata"]["annotations"][f"{manifests.ANNOTATION_PREFIX}release"] == (
        "team/m-2"
    )
    for version in VERSIONS:
        for obj in (config, deployment, service):
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_selector_patch_swaps_one_selector_for_the_other() -> None:
    to_shared = arms.selector_patch("credit-risk", "production", shared=True)["spec"]["selector"]
    assert to_shared == {
        "app.kubernetes.io/instance": None,
        manifests.MODEL_LABEL: "credit-risk",
        manifests.ENVIRONMENT_LABEL: "production",
    }
    back = arms.selector_patch("credit-risk", "production", shared=False)["spec"]["selector"]
    assert back == {
        "app.kubernetes.io/instance": "credit-risk-production",
        manifests.MODEL_LABEL: "credit-risk",
        manifests.ENVIRONMENT_LABEL: None,
    }


@pytest.mark.parametrize(
    ("champion", "weight", "replicas", "share"),
    [(1, 50, 1, 50), (1, 10, 1, 50), (9, 10, 1, 10), (4, 20, 1, 20), (3, 50, 3, 50),
     (10, 90, 90, 90), (2, 25, 1, 33)],
)  # fmt: skip
def test_a_split_by_replicas_is_as_close_as_whole_pods_allow(
    champion: int, weight: int, replicas: int, share: int
) -> None:
    assert arms.challenger_replicas(champion, weight) == replicas
    assert arms.replica_share(champion, replicas) == share


@pytest.mark.parametrize("weight", [0, 100])
def test_a_split_by_replicas_needs_both_arms(weight: int) -> None:
    with pytest.raises(ValueError, match="1-99"):
        arms.challenger_replicas(1, weight)


def _split(weight: int, **changes: Any) -> SetTraffic:
    base = SetTraffic(
        environment="production", namespace="ml-prod", model="credit-risk",
        champion="team/m-1", challenger="team/m-2", weight=weight,
        gateway=("models", "gateways", "http"), hostnames=("credit.example.com",),
    )  # fmt: skip
    return replace(base, **changes)


def test_the_route_weights_the_two_services() -> None:
    route = arms.build_httproute(_split(10))
    assert route["metadata"]["name"] == "credit-risk-production"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "models",
         "namespace": "gateways", "sectionName": "http"}
    ]  # fmt: skip
    assert route["spec"]["hostnames"] == ["credit.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"name": "credit-risk-production", "port": 80, "weight": 90},
        {"name": "credit-risk-production-challenger", "port": 80, "weight": 10},
    ]
    # Without the challenger: the live model alone, the route kept for callers.
    alone = arms.build_httproute(_split(0, gateway=("models", "gateways", None), hostnames=()))
    assert alone["spec"]["rules"] == [
        {"backendRefs": [{"name": "credit-risk-production", "port": 80, "weight": 100}]}
    ]
    assert "sectionName" not in alone["spec"]["parentRefs"][0]
    assert "hostnames" not in alone["spec"]


def _args(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    return dict(zip(args[::2], args[1::2], strict=True))


def test_a_mirror_or_a_sticky_split_goes_through_the_router_behind_the_route() -> None:
    sticky = _split(50, sticky_header="x-user-id")
    deployment, service = arms.build_router(sticky, SERVER_SETTINGS)
    kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    kubernetes_validate.validate(service, VERSIONS[-1], strict=True)
    assert deployment["metadata"]["name"] == "credit-risk-production-router"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "modelgate.serving.router"]
    assert container["image"] == SERVER_SETTINGS.server_image
    assert _args(deployment) == {
        "--host": "0.0.0.0", "--port": str(SERVER_SETTINGS.model_port), "--model": "credit-risk",
        "--champion": "http://credit-risk-production.ml-prod.svc",
        "--challenger": "http://credit-risk-production-challenger.ml-prod.svc",
        "--weight": "50", "--sticky-header": "x-user-id",
    }  # fmt: skip
    pod = deployment["spec"]["template"]
    assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert pod["metadata"]["labels"][arms.ARM_LABEL] == "router"
    # Prometheus scrapes its shadow counters where the router serves them.
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/-/router/metrics"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/router/ready"
    # Neither arm's Service selects it.
    live = manifests.build_service(deploy_action(), SETTINGS)
    assert not _selects(live["spec"]["selector"], pod["metadata"]["labels"])
    # The route sends every caller to it.
    route = arms.build_httproute(sticky)
    assert route["spec"]["rules"] == [
        {"backendRefs": [{"name": "credit-risk-production-router", "port": 80, "weight": 100}]}
    ]
    shadow, _ = arms.build_router(_split(0, mirror=True), SERVER_SETTINGS)
    assert _args(shadow)["--mirror"] == "http://credit-risk-production-challenger.ml-prod.svc"
    assert "--challenger" not in _args(shadow)
    assert "--sticky-header" not in _args(shadow)
    assert not arms.needs_router(_split(50))


def test_the_router_prefix_is_the_router_programs() -> None:
    from modelgate.serving.router import OWN_PREFIX  # noqa: PLC0415  (aiohttp, only here)

    assert arms.ROUTER_PREFIX == OWN_PREFIX


def test_a_challenger_is_verified_at_its_own_service_before_any_caller_reaches_it() -> None:
    action = StartVerification(
        job_name="m-2-verify-1234abcd", environment="production", namespace="ml-prod",
        release="team/m-2", model="credit-risk", image="verify:1", command=("verify",),
        args=(), timeout=timedelta(minutes=10), predictions=None, challenger=True,
    )  # fmt: skip

    def endpoint(job: dict[str, Any]) -> str:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        (url,) = [e["value"] for e in container["env"] if e["name"] == "MODELGATE_VERIFY_URL"]
        return str(url)

    assert endpoint(manifests.build_verification_job(action, SETTINGS)) == (
        "http://credit-risk-production-challenger.ml-prod.svc"
    )
    live = replace(action, challenger=False)
    assert endpoint(manifests.build_verification_job(live, SETTINGS)) == (
        "http://credit-risk-production.ml-prod.svc"
    )


SPLIT_BY_WEIGHT = {
    "strategy": "Canary",
    "canary": {"steps": [{"weight": 10, "duration": "5m"}, {"weight": 50, "duration": "5m"}]},
    "metrics": [
        {"name": "errors", "role": "Guardrail", "statistic": "Proportion", "better": "Lower",
         "count": 'sum(x{arm="{{arm}}"})', "successes": 'sum(y{arm="{{arm}}"})', "margin": 0.01},
    ],
}  # fmt: skip


def _environment(rollout: dict[str, Any], **spec: Any) -> Environment:
    return Environment.model_validate(
        {
            "apiVersion": "modelgate.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "production", "namespace": "team"},
            "spec": {"namespace": "ml-prod", "tier": "production",
                     "policy": {"rollout": rollout}, **spec},
        }
    )  # fmt: skip


def test_the_operator_runs_the_splits_it_can_and_says_why_not_the_others() -> None:
    assert rollout_unsupported(_environment(SPLIT_BY_WEIGHT)) is None
    assert rollout_unsupported(_environment({"strategy": "Replace"})) is None
    sticky = copy.deepcopy(SPLIT_BY_WEIGHT)
    sticky["canary"]["stickyHeader"] = "x-user-id"
    assert "sticky assignment by header x-user-id needs the operator's router" in (
        rollout_unsupported(_environment(sticky)) or ""
    )
    shadow = {"strategy": "Shadow", "shadow": {"duration": "10m"}}
    assert "a shadow needs a mirror of live traffic" in (
        rollout_unsupported(_environment(shadow)) or ""
    )
    # Behind a Gateway the operator's router mirrors and keeps users in one arm.
    gateway = {"gateway": {"name": "public"}}
    assert rollout_unsupported(_environment({**shadow, "traffic": gateway})) is None
    assert rollout_unsupported(_environment({**sticky, "traffic": gateway})) is None

    # GitOps commits each split as the model's HTTPRoute, in files it writes whole.
    def gitops(rollout: dict[str, Any], fmt: str = "kustomize") -> Environment:
        return _environment(
            rollout,
            delivery={"mode": "GitOps", "git": {"repository": "https://git.example/ml.git",
                                                "path": "prod", "format": fmt}},
        )  # fmt: skip

    assert "each split is committed as the model's HTTPRoute: set policy.rollout.traffic" in (
        rollout_unsupported(gitops(SPLIT_BY_WEIGHT)) or ""
    )
    assert rollout_unsupported(gitops({**sticky, "traffic": gateway})) is None
    assert rollout_unsupported(gitops({**shadow, "traffic": gateway}, "manifest")) is None
    assert "use format kustomize or manifest" in (
        rollout_unsupported(gitops({**shadow, "traffic": gateway}, "helm-values")) or ""
    )
