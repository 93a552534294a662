"""kube-score (github.com/zegl/kube-score, built by `make tools`) over the
chart rendered with every ci/*-values.yaml and over every workload the
operator creates (training, import, evaluation and verification Jobs,
model-server Deployments, as the manifest builders make them): no finding,
or one ignored here, in this one place, with the reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_chart import VALUES, helm
from tests.support.controlplane import BIN
from tests.support.installation import CHART, SYSTEM_NAMESPACE
from tests.unit.test_manifests import every_object

KUBE_SCORE = BIN / "kube-score"
# The checks not followed, each with why.
IGNORED = {
    "container-image-pull-policy": (
        "images are pinned by digest where it matters (image.digest; production's "
        "policy.requireDigest), which a pull cannot change; Always would ask the registry "
        "on every pod start and fail pods when it is away"
    ),
    "deployment-replicas": (
        "one replica acts at a time (kopf peering: more are standbys, replicas: 2 adds "
        "one, with a PodDisruptionBudget and anti-affinity); a model's Deployment has one "
        "replica per environment, which its rollout, verification and analysis judge"
    ),
    "pod-networkpolicy": (
        "NetworkPolicies are opt-in (networkPolicy.enabled; what the operator reaches is "
        "the cluster's: API server address, store, registry, Git, so the chart cannot "
        "guess it), and the namespaces the operator deploys models into have their "
        "owners' policies; the values file that enables it is scored with this check"
    ),
}
# The operator and its pods get no CPU limits (charts/modelgate/values.yaml
# says why): a CPU limit throttles bursts the requests already pay for.
FLAGS = ["--kubernetes-version", "v1.34", "--ignore-container-cpu-limit"]


def score(documents: str, path: Path, ignore: set[str]) -> list[str]:
    """kube-score's findings (WARNING or CRITICAL) for these manifests."""
    path.write_text(documents)
    ignored = [f"--ignore-test={check}" for check in sorted(ignore)]
    done = subprocess.run(
        [str(KUBE_SCORE), "score", "--output-format", "ci", *FLAGS, *ignored, str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    findings = [
        line for line in done.stdout.splitlines() if line.startswith(("[WARNING]", "[CRITICAL]"))
    ]
    critical = any(line.startswith("[CRITICAL]") for line in findings)
    assert (done.returncode == 1) == critical, done.stdout
    return findings


def _enables_network_policy(values: Path) -> bool:
    import yaml  # noqa: PLC0415

    loaded = yaml.safe_load(values.read_text()) or {}
    return bool((loaded.get("networkPolicy") or {}).get("enabled"))


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.name)
def test_the_chart_as_rendered_has_no_finding(values: Path, tmp_path: Path) -> None:
    rendered = helm(
        "template", "modelgate", str(CHART), "--namespace", SYSTEM_NAMESPACE, "-f", str(values)
    )
    assert rendered.returncode == 0, rendered.stderr
    ignore = set(IGNORED)
    if _enables_network_policy(values):
        ignore.discard("pod-networkpolicy")
    assert score(rendered.stdout, tmp_path / "chart.yaml", ignore) == []


def test_the_workloads_the_operator_creates_have_no_finding(tmp_path: Path) -> None:
    objects: list[dict[str, Any]] = every_object()
    kinds = {o["kind"] for o in objects}
    assert {"Job", "Deployment", "Service"} <= kinds
    documents = "\n---\n".join(json.dumps(o) for o in objects)
    assert score(documents, tmp_path / "workloads.yaml", set(IGNORED)) == []


def test_the_checks_are_not_ignored_in_vain(tmp_path: Path) -> None:
    """Each ignored check finds something here when it is not ignored, so
    the list holds only what is needed (and kube-score really checks)."""
    rendered = helm("template", "modelgate", str(CHART), "--namespace", SYSTEM_NAMESPACE)
    documents = rendered.stdout + "\n---\n" + "\n---\n".join(json.dumps(o) for o in every_object())
    for check in IGNORED:
        findings = score(documents, tmp_path / f"{check}.yaml", set(IGNORED) - {check})
        assert findings, f"{check} is ignored but finds nothing"
