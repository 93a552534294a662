"""The Helm chart: lints, renders and validates for every CI values file.

helm comes from .tools/bin (`make tools`); rendered manifests are validated
offline with kubernetes-validate for Kubernetes 1.30 and the newest version
it bundles; the rest is asserted on the rendered objects.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.support.pss import restricted_violations

CHART = ROOT / "charts" / "modelgate"
HELM = ROOT / ".tools" / "bin" / "helm"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Kinds from CRDs that kubernetes-validate has no schema for; asserted below.
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "Certificate",
    "Issuer",
    "ClusterKopfPeering",
    "KopfPeering",
}
HANDLER_IDS = {"validate-release", "validate-environment", "validate-qualitygate"}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)


@cache
def render(values: Path | None = None, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "modelgate", str(CHART), "--namespace", "modelgate-system"]
    args += ["--include-crds", *extra]
    if values is not None:
        args += ["-f", str(values)]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def operator_pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = of_kind(documents, "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_lint_strict(values: Path) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_every_manifest_validates(values: Path, version: str) -> None:
    documents = render(values)
    assert documents
    for document in documents:
        if document["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_operator_pod_is_hardened_and_probed(values: Path) -> None:
    pod = operator_pod(render(values))
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Alive is kopf's endpoint; ready is /readyz beside /metrics (the watches
    # listed, the webhook listening): a slow readiness never restarts it.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert "ephemeral-storage" in requests
    assert "ephemeral-storage" in limits
    assert "cpu" not in limits  # deliberately (values.yaml says why)
    sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v}
    assert sizes == {"tmp": "256Mi", "git-cache": "1Gi"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/cache/modelgate"} <= mounts  # writable with a read-only root
    assert container["command"] == ["python", "-m", "modelgate"]


def test_peering_and_standalone() -> None:
    default = operator_pod(render(None))["containers"][0]["args"]
    assert "--standalone" not in default
    environment = {
        e["name"]: e.get("value") for e in operator_pod(render(None))["containers"][0]["env"]
    }
    # The take-over bound; no fixed priority (replicas rank themselves by age).
    assert environment["MODELGATE_PEERING_LIFETIME"] == "60"
    assert "MODELGATE_PEERING_PRIORITY" not in environment
    # The reference server runs the operator's own image.
    image = operator_pod(render(None))["containers"][0]["image"]
    assert environment["MODELGATE_SERVER_IMAGE"] == image
    assert of_kind(render(None), "ClusterKopfPeering")[0]["metadata"]["name"] == "modelgate"
    pinned = render(CHART / "ci" / "pinned-values.yaml")
    assert "--standalone" in operator_pod(pinned)["containers"][0]["args"]
    assert of_kind(pinned, "ClusterKopfPeering") == []
    refused = helm(
        "template", "m", str(CHART), "--set", "replicas=2", "--set", "peering.enabled=false"
    )
    assert refused.returncode != 0
    assert "replicas > 1 needs peering.enabled=true" in refused.stderr


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_rbac_is_least_privilege(values: Path) -> None:
    documents = render(values)
    roles = of_kind(documents, "ClusterRole") + of_kind(documents, "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
            if "secrets" in rule["resources"]:
                assert role["kind"] == "Role", "no cluster-wide Secret access"
                assert rule["verbs"] == ["get"]
                assert rule["resourceNames"], "only named Secrets"
    for binding in of_kind(documents, "ClusterRoleBinding") + of_kind(documents, "RoleBinding"):
        [subject] = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "modelgate",
            "namespace": "modelgate-system",
        }


def test_named_git_and_mlflow_secrets_are_readable_one_by_one() -> None:
    documents = render(
        None,
        "--set", "rbac.gitSecrets[0].namespace=team-a",
        "--set", "rbac.gitSecrets[0].names={deploy-repo}",
        "--set", "rbac.mlflowSecrets[0].namespace=team-a",
        "--set", "rbac.mlflowSecrets[0].names={mlflow}",
    )  # fmt: skip
    readable = {
        (role["metadata"]["namespace"], name)
        for role in of_kind(documents, "Role")
        for rule in role["rules"]
        if "secrets" in rule["resources"]
        for name in rule["resourceNames"]
    }
    assert readable == {("team-a", "deploy-repo"), ("team-a", "mlflow")}
    bound = {b["roleRef"]["name"] for b in of_kind(documents, "RoleBinding")}
    assert {"modelgate-git-secrets", "modelgate-mlflow-secrets"} <= bound


def test_namespaced_mode_has_no_cluster_wide_writes() -> None:
    documents = render(CHART / "ci" / "namespaced-values.yaml")
    [cluster] = of_kind(documents, "ClusterRole")
    for rule in cluster["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    namespaces = {r["metadata"]["namespace"] for r in of_kind(documents, "Role")}
    assert namespaces == {"team-a", "team-b", "ml-prod"}
    args = operator_pod(documents)["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
        "--namespace=ml-prod",
    ]
    secret_rules = [
        (r["metadata"]["namespace"], rule["resourceNames"])
        for r in of_kind(documents, "Role")
        for rule in r["rules"]
        if "secrets" in rule["resources"]
    ]
    assert secret_rules == [
        ("team-a", ["deploy-repo"]),
        ("team-b", ["deploy-repo", "deploy-repo-ssh"]),
    ]
    assert {p["metadata"]["namespace"] for p in of_kind(documents, "KopfPeering")} == namespaces


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_selectors_match_the_pods(values: Path) -> None:
    documents = render(values)
    [deployment] = of_kind(documents, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for service in of_kind(documents, "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
    for document in documents:
        metadata = document["metadata"]
        if metadata["name"].endswith(".kopf.dev"):
            continue  # static files of crds/: no templating, no labels
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "modelgate"
        assert metadata["labels"]["app.kubernetes.io/instance"] == "modelgate"


def test_crds_are_the_generated_ones_and_kept() -> None:
    rendered = {d["metadata"]["name"]: d for d in of_kind(render(None), "CustomResourceDefinition")}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        committed = yaml.safe_load(path.read_text())
        crd = rendered[committed["metadata"]["name"]]
        assert crd["spec"] == committed["spec"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "clusterkopfpeerings.kopf.dev" in rendered  # from crds/, install-only
    pinned = render(CHART / "ci" / "pinned-values.yaml")
    names = {d["metadata"]["name"] for d in of_kind(pinned, "CustomResourceDefinition")}
    assert not any(name.endswith(".modelgate.dev") for name in names)


def test_webhooks_point_at_the_operator_handlers() -> None:
    documents = render(CHART / "ci" / "webhook-selfsigned-values.yaml")
    [validating] = of_kind(documents, "ValidatingWebhookConfiguration")
    [mutating] = of_kind(documents, "MutatingWebhookConfiguration")
    paths = {w["clientConfig"]["service"]["path"] for w in validating["webhooks"]}
    assert paths == {f"/{handler}" for handler in HANDLER_IDS}
    assert mutating["webhooks"][0]["clientConfig"]["service"]["path"] == "/stamp-approvals"
    [secret] = [s for s in of_kind(documents, "Secret") if s["type"] == "kubernetes.io/tls"]
    for webhook in validating["webhooks"] + mutating["webhooks"]:
        assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        assert webhook["failurePolicy"] == "Ignore"
    env = {e["name"]: e.get("value") for e in operator_pod(documents)["containers"][0]["env"]}
    assert env["MODELGATE_WEBHOOK_PORT"] == "9443"
    assert env["MODELGATE_WEBHOOK_CERT"] == "/etc/modelgate/webhook/tls.crt"
    managed = render(CHART / "ci" / "webhook-certmanager-values.yaml")
    [certificate] = of_kind(managed, "Certificate")
    assert certificate["spec"]["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer"}
    [validating] = of_kind(managed, "ValidatingWebhookConfiguration")
    assert validating["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "modelgate-system/modelgate-webhook"
    )


def test_monitoring_objects_carry_the_shipped_rules_and_dashboard() -> None:
    documents = render(CHART / "ci" / "monitoring-values.yaml")
    [rule] = of_kind(documents, "PrometheusRule")
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    [monitor] = of_kind(documents, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    [dashboard] = [c for c in of_kind(documents, "ConfigMap") if "modelgate.json" in c["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["modelgate.json"])["uid"] == "modelgate"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("webhook.enabld=true", "Additional property enabld is not allowed"),
        ("replicas=two", "replicas"),
        ("operator.logFormat=xml", "logFormat"),
        ("image.digest=latest", "digest"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(setting: str, message: str) -> None:
    done = helm("lint", "--strict", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_pinned_image_and_static_keys() -> None:
    pod = operator_pod(render(CHART / "ci" / "pinned-values.yaml"))
    [container] = pod["containers"]
    assert container["image"] == (
        "registry.example.com/platform/modelgate@sha256:"
        "4f9c2b1d3e5a6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
    )
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "modelgate-operator-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    default = operator_pod(render(None))["containers"][0]
    assert default["image"] == "ghcr.io/modelgate/modelgate:0.1.0"


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_prometheus_url_and_credentials_reach_the_operator_as_files(auth: str) -> None:
    pod = operator_pod(
        render(
            None,
            "--set",
            "prometheus.url=https://prometheus.monitoring:9090",
            "--set",
            "prometheus.authSecret=prometheus-reader",
            "--set",
            f"prometheus.authType={auth}",
            "--set",
            "prometheus.caConfigMap=monitoring-ca",
        )
    )
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELGATE_PROMETHEUS_URL"]["value"] == "https://prometheus.monitoring:9090"
    assert env["MODELGATE_PROMETHEUS_CA_FILE"]["value"] == "/etc/modelgate/prometheus-ca/ca.crt"
    if auth == "bearer":
        assert env["MODELGATE_PROMETHEUS_BEARER_TOKEN_FILE"]["value"] == (
            "/etc/modelgate/prometheus/token"
        )
        assert "MODELGATE_PROMETHEUS_USERNAME" not in env
    else:
        assert env["MODELGATE_PROMETHEUS_USERNAME"]["valueFrom"]["secretKeyRef"] == {
            "name": "prometheus-reader",
            "key": "username",
        }
        assert env["MODELGATE_PROMETHEUS_PASSWORD_FILE"]["value"] == (
            "/etc/modelgate/prometheus/password"
        )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["prometheus-auth"] == "/etc/modelgate/prometheus"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["prometheus-auth"]["secret"]["secretName"] == "prometheus-reader"
    assert volumes["prometheus-ca"]["configMap"]["name"] == "monitoring-ca"
    # No url: nothing about Prometheus in the pod (analyses say there is none).
    default = operator_pod(render(None))["containers"][0]
    assert not [e for e in default["env"] if e["name"].startswith("MODELGATE_PROMETHEUS")]


def test_a_prometheus_url_that_is_not_http_is_refused() -> None:
    done = helm("lint", "--strict", str(CHART), "--set", "prometheus.url=prometheus:9090")
    assert done.returncode != 0
    assert "prometheus.url" in done.stdout + done.stderr
