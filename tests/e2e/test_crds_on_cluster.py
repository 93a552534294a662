"""On a real cluster (kind): the generated CRDs install and the examples apply.

Run with ``pytest tests/e2e --with-e2e`` against the current kubectl context
(e.g. ``kind create cluster --config kind-config.yaml``). Skipped otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.e2e


def kubectl(*args: str) -> str:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is needed for e2e tests"
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for crd in ("environments", "qualitygates", "modelreleases"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.modelgate.dev", "--timeout=60s")
    name = f"modelgate-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false")


def test_examples_apply_and_list_under_the_category(namespace: str) -> None:
    for manifest in ("gate.yaml", "environments.yaml", "release.yaml"):
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "credit-risk" / manifest))
    listed = kubectl("get", "modelgate", "-n", namespace, "-o", "name")
    assert "qualitygate.modelgate.dev/credit-gate" in listed
    assert "environment.modelgate.dev/production" in listed
    assert "modelrelease.modelgate.dev/credit-risk-1-4-0" in listed


def test_explain_shows_descriptions(namespace: str) -> None:
    assert "Environments to go through" in kubectl("explain", "modelrelease.spec.promotion")


def test_server_rejects_what_the_schema_forbids(namespace: str) -> None:
    binary = shutil.which("kubectl") or "kubectl"
    bad = (
        "apiVersion: modelgate.dev/v1alpha1\nkind: QualityGate\nmetadata: {name: bad}\n"
        "spec: {task: ranking, checks: [{name: a, metric: {name: f1, min: 0.5}}]}\n"
    )
    result = subprocess.run(
        [binary, "apply", "-n", namespace, "-f", "-"],
        input=bad,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "ranking" in result.stderr
