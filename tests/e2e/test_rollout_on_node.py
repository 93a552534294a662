"""A judged rollout on the real node, with live traffic through a real
Gateway API implementation: Traefik, built from the Go module proxy
(scripts/build-traefik.sh), watches the cluster's Gateways and HTTPRoutes
and sends each arm its weight. The operator, installed by the chart, runs
the new release beside the live one as a Deployment of its own, verifies it
at its own Service, splits the traffic by rewriting the model's HTTPRoute,
measures each arm in the cluster's Prometheus (which labels every server's
series with its pod's arm) and promotes the better model."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT
from tests.e2e.conftest import Cluster, sample_module
from tests.e2e.workloads import delete_namespaces, kubectl_json, wait_finished
from tests.support.cluster import wait_for
from tests.support.processes import stop
from tests.support.s3server import free_port
from tests.support.traffic import Traffic, feature_rows

pytestmark = pytest.mark.e2e

SAMPLE = EXAMPLES / "credit-risk"
GATEWAY_API = ROOT / ".tools" / "gateway-api" / "v1.6.1"
TRAEFIK = ROOT / ".tools" / "bin" / "traefik"
GATEWAYS = "gateway.networking.k8s.io"
CONTROLLER = "traefik.io/gateway-controller"
HOSTNAME = "credit-risk.example.com"
CHAMPION, SLOWER, CHALLENGER = "credit-risk-1-4-0", "credit-risk-1-4-1", "credit-risk-1-6-0"
SHADOWED = "credit-risk-1-4-2"  # the forest again, in the tree's shadow
ROUTER = "credit-risk-production-router"


@dataclass
class Gateway:
    """Traefik serving a GatewayClass of its own on this machine: callers
    reach the Gateways of that class at ``url`` (their listener's ``port``)."""

    gateway_class: str
    port: int
    url: str
    log: Path


def _kubectl(*args: str, stdin: str | None = None) -> str:
    """kubectl as the sample script runs it (an error names the command)."""
    output: str = sample_module().kubectl(*args, stdin=stdin)
    return output


def _install_gateway_api() -> None:
    """The Gateway API's standard CRDs, as a cluster's admin installs them."""
    subprocess.run([str(ROOT / "scripts" / "fetch-gateway-api.sh")], check=True)
    for path in sorted(GATEWAY_API.glob("gateway.networking.k8s.io_*.yaml")):
        # Server-side: the CRDs are larger than client-side apply's annotation.
        _kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    _kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        f"crd/httproutes.{GATEWAYS}", f"crd/gateways.{GATEWAYS}",
        f"crd/gatewayclasses.{GATEWAYS}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def gateway(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    _install_gateway_api()
    subprocess.run([str(ROOT / "scripts" / "build-traefik.sh")], check=True)
    name = f"traefik-{uuid.uuid4().hex[:6]}"
    _kubectl("apply", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": f"{GATEWAYS}/v1", "kind": "GatewayClass", "metadata": {"name": name},
         "spec": {"controllerName": CONTROLLER}}
    ))  # fmt: skip
    port = free_port()
    log = tmp_path_factory.mktemp("traefik") / "traefik.log"
    kubeconfig = cluster.environment.get("KUBECONFIG") or os.environ.get("KUBECONFIG", "")
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                str(TRAEFIK),
                f"--entryPoints.web.address=127.0.0.1:{port}",
                "--providers.kubernetesGateway=true",
                "--log.level=INFO",
            ],
            env={**os.environ, "KUBECONFIG": kubeconfig},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        def accepted() -> bool:
            found = kubectl_json("get", "gatewayclass", name)
            return any(
                c["type"] == "Accepted" and c["status"] == "True"
                for c in (found.get("status") or {}).get("conditions", [])
            )

        wait_for(accepted, 90, f"Traefik to accept GatewayClass {name}", log.read_text)
        yield Gateway(name, port, f"http://127.0.0.1:{port}", log)
    finally:
        stop(process)
        _kubectl("delete", "gatewayclass", name, "--wait=false")


def _experiment() -> dict[str, Any]:
    """The worked experiment's rollout (examples/credit-risk/experiment/):
    half of the users, each kept in one arm by x-user-id, behind the Gateway."""
    production = next(
        d for d in yaml.safe_load_all((SAMPLE / "experiment" / "environments.yaml").read_text())
        if d and d["metadata"]["name"] == "production"
    )  # fmt: skip
    rollout: dict[str, Any] = production["spec"]["policy"]["rollout"]
    assert rollout["experiment"]["stickyHeader"] == "x-user-id"
    rollout["traffic"] = {"gateway": {"name": "public"}, "hostnames": [HOSTNAME]}
    return rollout


def _shadow() -> dict[str, Any]:
    """Every request mirrored to the new release for 30 s; it takes over only
    if it labels at most 5 % of the mirrored rows differently."""
    return {
        "strategy": "Shadow",
        "interval": "2s",
        "shadow": {"duration": "30s", "minRows": 200, "maxDisagreement": 0.05},
        "traffic": {"gateway": {"name": "public"}, "hostnames": [HOSTNAME]},
    }


def _canary() -> dict[str, Any]:
    """A canary judged by the experiment's latency guardrail alone: 20 %,
    then 50 %, each step for up to 3 minutes."""
    experiment = _experiment()
    return {
        "strategy": "Canary",
        "interval": "2s",
        "canary": {
            "steps": [{"weight": 20, "duration": "3m"}, {"weight": 50, "duration": "3m"}],
            "minSamples": 100,
        },
        "metrics": [m for m in experiment["metrics"] if m["role"] == "Guardrail"],
        "traffic": experiment["traffic"],
    }


def _judged_by_canary(document: dict[str, Any]) -> None:
    """The sample, its production judging by the canary. Releases go to
    production alone: staging would judge nothing here (it replaces)."""
    if document["kind"] == "Environment" and document["metadata"]["name"] == "production":
        document["spec"].setdefault("policy", {})["rollout"] = _canary()
        del document["spec"]["promotesFrom"]
    if document["kind"] == "ModelRelease":
        _to_production(document)


def _to_production(release: dict[str, Any]) -> dict[str, Any]:
    release["spec"]["promotion"]["environments"] = ["production"]
    return release


def _judge_by(namespace: str, rollout: dict[str, Any]) -> None:
    """Production's rollout replaced (a JSON patch: a merge would keep the
    other strategy's settings)."""
    patch = [{"op": "replace", "path": "/spec/policy/rollout", "value": rollout}]
    _kubectl("-n", namespace, "patch", "environment", "production", "--type", "json",
             "-p", json.dumps(patch))  # fmt: skip


def _publish(namespace: str, gateway: Gateway) -> None:
    """What a platform team does once: a Gateway in production's namespace,
    and the model's HTTPRoute sending callers to the live model's Service
    (the operator rewrites its rules while it judges)."""
    documents = [
        {"apiVersion": f"{GATEWAYS}/v1", "kind": "Gateway",
         "metadata": {"name": "public", "namespace": namespace},
         "spec": {"gatewayClassName": gateway.gateway_class,
                  "listeners": [{"name": "web", "port": gateway.port, "protocol": "HTTP",
                                 "allowedRoutes": {"namespaces": {"from": "Same"}}}]}},
        {"apiVersion": f"{GATEWAYS}/v1", "kind": "HTTPRoute",
         "metadata": {"name": "credit-risk-production", "namespace": namespace},
         "spec": {"parentRefs": [{"name": "public"}], "hostnames": [HOSTNAME],
                  "rules": [{"backendRefs": [{"name": "credit-risk-production", "port": 80}]}]}},
    ]  # fmt: skip
    _kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))


def _forest(sample: ModuleType, namespace: str, name: str, trees: int) -> dict[str, Any]:
    """The sample's forest, released again as ``name`` with ``trees`` trees."""
    release: dict[str, Any] = next(
        d for d in sample.documents(namespace) if d["kind"] == "ModelRelease"
    )
    release["metadata"]["name"] = name
    release["spec"]["model"]["version"] = name.removeprefix("credit-risk-").replace("-", ".")
    release["spec"]["training"]["params"]["n_estimators"] = trees
    return _to_production(release)


def _challenger(sample: ModuleType, namespace: str) -> dict[str, Any]:
    """The worked experiment's challenger release, placed as the sample is."""
    release: dict[str, Any] = yaml.safe_load(
        (SAMPLE / "experiment" / "release-challenger.yaml").read_text()
    )
    release["metadata"]["namespace"] = namespace
    training = release["spec"]["training"]
    training["image"] = sample.IMAGE
    training["data"]["train"] = f"s3://{sample.BUCKET}/data/train.csv"
    training["data"]["evaluation"] = f"s3://{sample.BUCKET}/data/eval.csv"
    return _to_production(release)


def _route(namespace: str) -> dict[str, Any]:
    return kubectl_json("-n", namespace, "get", "httproute", "credit-risk-production")


def _backends(route: dict[str, Any]) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def _judge(namespace: str, release: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a new release; (the route as the operator split it, the
    release once finished)."""
    production = f"{namespace}-production"
    name = release["metadata"]["name"]
    _kubectl("apply", "-f", "-", stdin=yaml.safe_dump(release))
    wait_for(
        lambda: list(_backends(_route(production))) != ["credit-risk-production"],
        600,
        f"the operator to split the route for {name}",
        lambda: kubectl_json("-n", namespace, "get", "modelrelease", name).get("status"),
    )
    split = _route(production)
    return split, wait_finished(namespace, name, timeout=600)


def _alone(namespace: str) -> None:
    """Every caller goes to the live model's Service, and the challenger's
    objects are gone."""
    production = f"{namespace}-production"
    assert list(_backends(_route(production))) == ["credit-risk-production"]
    wait_for(
        lambda: not [
            d for d in kubectl_json("-n", production, "get", "deployments,services")["items"]
            if d["metadata"]["name"].endswith(("-challenger", "-router"))
        ],
        60,
        "the challenger's and the router's Deployments and Services to go",
    )  # fmt: skip


def _live(namespace: str) -> str:
    deployment = kubectl_json(
        "-n", f"{namespace}-production", "get", "deployment", "credit-risk-production"
    )
    release: str = deployment["metadata"]["annotations"]["modelgate.dev/release"]
    return release.split("/", 1)[1]


def _production(release: dict[str, Any]) -> dict[str, Any]:
    status = release.get("status") or {}
    [entry] = [e for e in status.get("environments", []) if e["name"] == "production"]
    judged: dict[str, Any] = entry["judged"]
    return judged


def test_judged_rollouts_through_the_gateway_keep_the_better_model_only(
    gateway: Gateway,
) -> None:
    """The sample's forest is live, its users coming through Traefik.

    - Canary: an 800-tree forest gets 20 % of the callers by the route's
      weights; answering more than 10 ms slower, it is removed by the latency
      guardrail while the forest keeps serving.
    - Experiment (the worked one): the shallower tree that approves more
      applicants gets half of the users, each kept in one arm by x-user-id
      (the operator's router behind the route); the mSPRT decides that it is
      better (sized from the live model's traffic first), and it takes over.
    - Shadow: the forest again gets a mirror of every request; it labels
      about 15 % of them differently from the live tree, more than the 5 %
      allowed, and is removed; callers only ever got the tree's answers."""
    sample = sample_module()
    namespace = f"team-ab-{uuid.uuid4().hex[:5]}"
    production = f"{namespace}-production"
    rows = feature_rows(pd.read_csv(SAMPLE / "data" / "eval.csv").sample(frac=1.0, random_state=7))
    try:
        sample.apply(namespace, _judged_by_canary)
        _publish(production, gateway)
        with Traffic(
            lambda: {"gateway": gateway.url}, rows, batch=50, headers={"Host": HOSTNAME},
            user_header="x-user-id",
        ) as traffic:  # fmt: skip
            champion = wait_finished(namespace, CHAMPION, timeout=600)
            assert (champion.get("status") or {}).get("phase") == "Released", champion
            slower_split, slower = _judge(namespace, _forest(sample, namespace, SLOWER, 800))
            slower_alone = (_backends(_route(production)), _live(namespace))
            _judge_by(namespace, _experiment())
            traffic.take_arms()
            better_split, better = _judge(namespace, _challenger(sample, namespace))
            sticky = traffic.take_arms()
            better_alone = (_backends(_route(production)), _live(namespace))
            _judge_by(namespace, _shadow())
            shadow_split, shadowed = _judge(namespace, _forest(sample, namespace, SHADOWED, 100))
            mirrored = traffic.take_arms()
        assert traffic.sent.get("gateway", 0) > 0

        # Canary: a fifth of the callers by the route's weights, then removed.
        canary = {"credit-risk-production": 80, "credit-risk-production-challenger": 20}
        assert _backends(slower_split) == canary
        parent = slower_split["spec"]["parentRefs"][0]
        assert (parent["name"], parent["namespace"]) == ("public", production)
        assert slower_split["spec"]["hostnames"] == [HOSTNAME]
        status = slower.get("status") or {}
        assert status.get("phase") == "RolledBack", json.dumps(status, indent=2)[:6000]
        judged = _production(slower)
        assert (judged["strategy"], judged["phase"], judged["step"]) == (
            "Canary",
            "RolledBack",
            1,
        ), judged
        assert "guardrail failed: latency" in judged["message"], judged
        latency = next(m for m in judged["metrics"] if m["name"] == "latency")
        assert latency["verdict"] == "Worse", latency
        assert latency["effect"] > 0.01, latency
        assert slower_alone == ({"credit-risk-production": 100}, CHAMPION)

        # Experiment: every caller through the router, each user in one arm.
        assert _backends(better_split) == {ROUTER: 100}
        status = better.get("status") or {}
        assert status.get("phase") == "Released", json.dumps(status, indent=2)[:6000]
        judged = _production(better)
        assert (judged["strategy"], judged["phase"]) == ("Experiment", "Promoted"), judged
        assert judged["champion"] == f"{namespace}/{CHAMPION}"
        assert judged["requiredSamples"] > 0
        assert "sticky by x-user-id" in (judged.get("traffic") or ""), judged
        approval = next(m for m in judged["metrics"] if m["name"] == "approval-rate")
        assert approval["verdict"] == "Better", approval
        assert approval["low"] > 0, approval
        champion_rows = approval["champion"]["samples"]
        challenger_rows = approval["challenger"]["samples"]
        assert 0.25 < challenger_rows / (champion_rows + challenger_rows) < 0.75, approval
        latency = next(m for m in judged["metrics"] if m["name"] == "latency")
        assert latency["verdict"] == "Better", latency  # within its margin
        routed = {user: arms for user, arms in sticky.items() if arms}
        assert len(routed) > 100, routed
        assert all(len(arms) == 1 for arms in routed.values()), routed
        assert {next(iter(arms)) for arms in routed.values()} == {"champion", "challenger"}
        environment = kubectl_json("-n", namespace, "get", "environment", "production")
        record = next(e for e in environment["status"]["history"] if e["release"] == CHALLENGER)
        assert record["judged"].startswith(f"Experiment against {namespace}/{CHAMPION}: ")
        assert "the challenger is better: approval-rate" in record["judged"], record
        assert better_alone == ({"credit-risk-production": 100}, CHALLENGER)

        # Shadow: the router mirrors; callers only got the live tree's answers.
        assert _backends(shadow_split) == {ROUTER: 100}
        status = shadowed.get("status") or {}
        assert status.get("phase") == "RolledBack", json.dumps(status, indent=2)[:6000]
        judged = _production(shadowed)
        assert (judged["strategy"], judged["phase"]) == ("Shadow", "RolledBack"), judged
        shadow = judged["shadow"]
        assert shadow["rows"] >= 200, shadow
        assert shadow["disagreements"] / shadow["rows"] > 0.05, shadow
        assert {arm for arms in mirrored.values() for arm in arms} == {"champion"}
        assert _live(namespace) == CHALLENGER
        _alone(namespace)
    finally:
        delete_namespaces(namespace, "", "-staging", "-production")
