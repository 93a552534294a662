"""A challenger's objects in a cluster, against the real API server with the
Gateway API's own CRDs (sigs.k8s.io/gateway-api, as a Gateway implementation
installs them): deployed beside the live model's, the split by replicas (the
live Service selecting both arms' pods) and by an HTTPRoute the server
validates with the CRD's schema and rules, observed, replaced and removed;
and in GitOps mode the same as commits, applied by an agent."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelgate.api.environment import Environment
from modelgate.backends.challenger_manifests import ARM_LABEL
from modelgate.backends.delivery import KubeDelivery
from modelgate.backends.kube import KubeClients, KubeDeployer
from modelgate.backends.kube_challengers import KubeChallengers
from modelgate.backends.manifests import challenger_name
from modelgate.promotion.plan import Deploy, SetTraffic
from modelgate.settings import OperatorSettings
from tests.support.cluster import wait_for
from tests.support.controlplane import ControlPlane
from tests.support.gitops_agent import GitOpsAgent, bare_repository, git

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_API = ROOT / ".tools" / "gateway-api" / "v1.6.1"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
IMAGE = "registry.example.com/credit-risk@sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def httproutes(control_plane: ControlPlane) -> None:
    """The Gateway API's HTTPRoute CRD, fetched from the Go module proxy."""
    subprocess.run([str(ROOT / "scripts" / "fetch-gateway-api.sh")], check=True)
    document = yaml.safe_load(
        (GATEWAY_API / "gateway.networking.k8s.io_httproutes.yaml").read_text()
    )
    extensions = client.ApiextensionsV1Api(control_plane.api_client())
    try:
        extensions.create_custom_resource_definition(document)
    except client.ApiException as error:
        if error.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(document["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    wait_for(established, 60, "the HTTPRoute CRD established")


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"arms-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _deploy(namespace: str, release: str, config_hash: str, **changes: Any) -> Deploy:
    return replace(
        Deploy(
            environment="production", namespace=namespace, release=f"team/{release}",
            model="credit-risk", image=IMAGE, config={"URL": "https://prod.example.com"},
            config_hash=config_hash, predictions=None,
        ),
        **changes,
    )  # fmt: skip


def _split(namespace: str, weight: int, **changes: Any) -> SetTraffic:
    return replace(
        SetTraffic(
            environment="production", namespace=namespace, model="credit-risk",
            champion="team/m-1", challenger="team/m-2", weight=weight,
        ),
        **changes,
    )  # fmt: skip


def test_a_challenger_beside_the_live_model_split_by_replicas_and_by_a_route(
    control_plane: ControlPlane, httproutes: None, namespace: str
) -> None:
    clients = KubeClients(control_plane.api_client())
    deployer = KubeDeployer(clients, OperatorSettings(server_image=IMAGE))
    challengers = KubeChallengers(deployer)
    environments = {"production": _environment(namespace)}
    apps, core, custom = clients.apps, clients.core, clients.custom
    deployer.deploy(_deploy(namespace, "m-1", "a" * 64), NOW)
    challengers.deploy(_deploy(namespace, "m-2", "b" * 64, challenger=True), NOW)

    name = challenger_name("credit-risk", "production")
    created = apps.read_namespaced_deployment(name, namespace)
    assert created.spec.template.metadata.labels[ARM_LABEL] == "challenger"
    assert core.read_namespaced_service(name, namespace).spec.selector == {
        "app.kubernetes.io/instance": name, "modelgate.dev/model": "credit-risk",
    }  # fmt: skip
    [seen] = challengers.observe(environments, "credit-risk").values()
    assert (seen.release, seen.config_hash, seen.weight, seen.ready) == (
        "team/m-2", "b" * 64, 0, False,  # its image pulls nowhere here: never ready
    )  # fmt: skip

    # By replicas: the live Service selects both arms; one pod each is an even split.
    how = challengers.set_traffic(_split(namespace, 50))
    assert how.startswith("replicas: 1 challenger and 1 live pods")
    live = core.read_namespaced_service("credit-risk-production", namespace)
    assert live.spec.selector == {
        "modelgate.dev/model": "credit-risk", "modelgate.dev/environment": "production",
    }  # fmt: skip
    assert challengers.observe(environments, "credit-risk")["production"].weight == 50

    # Through a Gateway: the route the API server takes (its CRD's schema and rules).
    gateway = ("models", "gateways", "http")
    challengers.set_traffic(_split(namespace, 10, gateway=gateway, hostnames=("c.example.com",)))
    route = custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "credit-risk-production"
    )
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "credit-risk-production", "port": 80,
         "weight": 90},
        {"group": "", "kind": "Service", "name": name, "port": 80, "weight": 10},
    ]  # fmt: skip
    assert challengers.observe(environments, "credit-risk")["production"].weight == 10

    # A mirror is the router's, behind a Gateway's route: refused without one.
    with pytest.raises(RuntimeError, match=r"needs policy.rollout.traffic.gateway"):
        challengers.set_traffic(_split(namespace, 0, mirror=True))
    # With one: the router's objects first; the route moves to it only once
    # it is ready (never here: its image pulls nowhere), so callers keep the
    # split they have meanwhile.
    assert challengers.set_traffic(_split(namespace, 0, mirror=True, gateway=gateway)) is None
    router = apps.read_namespaced_deployment("credit-risk-production-router", namespace)
    [container] = router.spec.template.spec.containers
    assert container.args[container.args.index("--mirror") + 1] == (
        f"http://{name}.{namespace}.svc"
    )
    assert core.read_namespaced_service("credit-risk-production-router", namespace)
    route = custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "credit-risk-production"
    )
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    seen = challengers.observe(environments, "credit-risk")["production"]
    assert (seen.weight, seen.mirror) == (10, False)

    # Another release's challenger replaces this one (its split undone first).
    challengers.deploy(_deploy(namespace, "m-3", "c" * 64, challenger=True), NOW)
    assert challengers.observe(environments, "credit-risk")["production"].release == "team/m-3"
    assert core.read_namespaced_service("credit-risk-production", namespace).spec.selector == {
        "app.kubernetes.io/instance": "credit-risk-production",
        "modelgate.dev/model": "credit-risk",
    }

    # Removed: the live model keeps all traffic, the route kept for callers.
    assert challengers.remove(namespace, "production", "credit-risk") == "team/m-3"
    assert challengers.observe(environments, "credit-risk") == {}
    route = custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "credit-risk-production"
    )
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("credit-risk-production", 100)
    ]
    for read, removed in (
        (apps.read_namespaced_deployment, name),
        (core.read_namespaced_service, name),
        (apps.read_namespaced_deployment, "credit-risk-production-router"),
        (core.read_namespaced_service, "credit-risk-production-router"),
    ):
        with pytest.raises(client.ApiException) as gone:
            read(removed, namespace)
        assert gone.value.status == 404
    assert challengers.remove(namespace, "production", "credit-risk") is None  # idempotent


def _environment(namespace: str) -> Environment:
    return Environment.model_validate(
        {"metadata": {"name": "production", "namespace": "team"},
         "spec": {"tier": "production", "namespace": namespace}}
    )  # fmt: skip


def _gitops_environment(namespace: str, remote: Path) -> Environment:
    return Environment.model_validate(
        {"metadata": {"name": "production", "namespace": "team"},
         "spec": {"tier": "production", "namespace": namespace,
                  "delivery": {"mode": "GitOps",
                               "git": {"repository": f"file://{remote}", "path": "production"}},
                  "policy": {"rollout": {
                      "strategy": "Canary", "interval": "2s",
                      "canary": {"steps": [{"weight": 20, "duration": "1m"}]},
                      "metrics": [{"name": "errors", "role": "Guardrail", "statistic": "Mean",
                                   "better": "Lower", "margin": 0.01,
                                   "count": 'sum(requests{arm="{{arm}}"})',
                                   "sum": 'sum(errors{arm="{{arm}}"})',
                                   "sumOfSquares": 'sum(errors{arm="{{arm}}"})'}],
                      "traffic": {"gateway": {"name": "public", "namespace": "gateways"},
                                  "hostnames": ["credit.example.com"]}}}}}
    )  # fmt: skip


def test_in_gitops_mode_the_challenger_and_each_split_are_commits_an_agent_applies(
    control_plane: ControlPlane, httproutes: None, namespace: str, tmp_path: Path
) -> None:
    remote = bare_repository(tmp_path)
    api = control_plane.api_client()
    settings = OperatorSettings(
        server_image=IMAGE, git_cache=str(tmp_path / "cache"), git_fetch_seconds=0
    )
    delivery = KubeDelivery(KubeClients(api), settings)
    environment = _gitops_environment(namespace, remote)
    environments = {"production": environment}
    agent = GitOpsAgent(api, remote, "production", tmp_path / "agent")
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    name = challenger_name("credit-risk", "production")

    def route() -> list[tuple[str, int]]:
        found = custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "credit-risk-production"
        )
        return [(b["name"], b["weight"]) for b in found["spec"]["rules"][0]["backendRefs"]]

    def subjects() -> list[str]:
        return git(remote, "log", "--format=%s", "main").splitlines()

    delivery.deploy(environment, _deploy(namespace, "m-1", "a" * 64), NOW)
    challenger = _deploy(namespace, "m-2", "b" * 64, challenger=True, model_version="1.5.0")
    assert delivery.deploy(environment, challenger, NOW) is not None
    assert delivery.deploy(environment, challenger, NOW) is None  # already committed
    agent.step()
    created = apps.read_namespaced_deployment(name, namespace)
    assert created.spec.template.metadata.labels[ARM_LABEL] == "challenger"
    # What the operator reads back is what the agent applied.
    [seen] = delivery.observe_challengers(environments, "credit-risk").values()
    assert (seen.release, seen.config_hash, seen.weight) == ("team/m-2", "b" * 64, 0)

    # The canary's step: one commit, the route's weights (taken by the API
    # server with the CRD's rules) and the weight read back together.
    how = delivery.set_traffic(environment, _split(namespace, 20, gateway=("public", "gateways",
                               None), hostnames=("credit.example.com",)))  # fmt: skip
    assert how is not None
    assert "committed to main: 20% to the challenger" in how
    agent.step()
    assert route() == [("credit-risk-production", 80), (name, 20)]
    assert delivery.observe_challengers(environments, "credit-risk")["production"].weight == 20

    # A sticky split: the router is committed first; the route moves to it in
    # a commit of its own once it is ready (never here: no node runs it).
    sticky = _split(namespace, 50, sticky_header="x-user-id", gateway=("public", "gateways", None),
                    hostnames=("credit.example.com",))  # fmt: skip
    assert delivery.set_traffic(environment, sticky) is None
    assert delivery.set_traffic(environment, sticky) is None
    agent.step()
    assert apps.read_namespaced_deployment("credit-risk-production-router", namespace)
    assert route() == [("credit-risk-production", 80), (name, 20)]

    # The challenger takes over: the split ends in a commit of its own, then
    # the promotion; the agent prunes the challenger and the router.
    delivery.deploy(environment, _deploy(namespace, "m-2", "b" * 64, model_version="1.5.0"), NOW)
    agent.step()
    assert route() == [("credit-risk-production", 100)]
    assert delivery.observe_challengers(environments, "credit-risk") == {}
    for removed in (name, "credit-risk-production-router"):
        with pytest.raises(client.ApiException) as gone:
            apps.read_namespaced_deployment(removed, namespace)
        assert gone.value.status == 404
    [live] = delivery.observe(namespace, environments, "credit-risk", "team/m-2").values()
    assert live.release == "team/m-2"
    assert subjects()[:6] == [
        "Promote credit-risk 1.5.0 to production",
        "Remove the challenger of credit-risk from production",
        "Start Modelgate's router for credit-risk in production",
        "Give the challenger 20% of credit-risk in production",
        "Run credit-risk 1.5.0 beside the live one in production",
        "Promote credit-risk to production",
    ]
    assert agent.errors == []
