"""The cluster the e2e tier runs on.

By default: a real node (containerd, runc, kubelet, kube-proxy, CoreDNS)
joined to the real control plane, built by `make tools` and started here
(tests/support/realnode.py), with Modelgate installed by `make deploy`, the
README's command. With ``--with-e2e``: the current kubectl context instead
(kind, after `make kind-up images kind-load deploy`).

The tests and scripts/kind_sample.py call ``kubectl`` as a user does: the
module-wide environment here points it at the cluster.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import pytest

from tests.conftest import ROOT

TOOLS = ROOT / ".tools" / "bin"


@dataclass
class Cluster:
    """Where the e2e tests run, and how to reach it."""

    # KUBECONFIG and PATH for kubectl and helm; empty: the user's own.
    environment: dict[str, str]
    image: str  # Modelgate's image, as the nodes know it
    node: object | None = None  # tests/support/realnode.RealNode, when one runs

    def run(
        self, *command: str, stdin: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, **self.environment},
            cwd=ROOT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        return done


def sample_module() -> ModuleType:
    """scripts/kind_sample.py (`make sample`), loaded as a module."""
    spec = importlib.util.spec_from_file_location("kind_sample", ROOT / "scripts/kind_sample.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deploy(cluster: Cluster, repository: str, tag: str) -> None:
    """`make deploy`, as the README says: the in-cluster S3 store and the chart."""
    cluster.run(
        "make",
        "--no-print-directory",
        "deploy",
        f"IMAGE_REPO={repository}",
        f"IMAGE_TAG={tag}",
        f"HELM={TOOLS / 'helm'}",
        timeout=900,
    )


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    if request.config.getoption("--with-e2e"):
        yield Cluster({}, os.environ.get("MODELGATE_IMAGE", "modelgate:dev"))
        return
    from tests.support.realnode import MODELGATE_IMAGE, running_real_node  # noqa: PLC0415

    with running_real_node(tmp_path_factory.mktemp("realnode")) as (plane, node):
        environment = {
            "KUBECONFIG": str(plane.admin_kubeconfig()),
            "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}",
            "MODELGATE_IMAGE": MODELGATE_IMAGE,
        }
        real = Cluster(environment, MODELGATE_IMAGE, node)
        repository, tag = MODELGATE_IMAGE.rsplit(":", 1)
        deploy(real, repository, tag)
        yield real


@pytest.fixture(scope="module", autouse=True)
def _kubectl_reaches_the_cluster(cluster: Cluster) -> Iterator[None]:
    """kubectl (tests, scripts/kind_sample.py) talks to the e2e cluster."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster.environment.items():
            patch.setenv(name, value)
        yield


def node_logs(cluster: Cluster) -> str:
    from tests.support.realnode import RealNode  # noqa: PLC0415

    return cluster.node.logs_tail(60) if isinstance(cluster.node, RealNode) else ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing e2e test gets the node's and the operator's logs."""
    outcome = yield
    report = outcome.get_result()
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if not report.failed or not isinstance(cluster, Cluster):
        return
    if cluster.node is not None:
        report.sections.append(("real node logs", node_logs(cluster)))
    operator = cluster.run(
        "kubectl", "-n", "modelgate-system", "logs", "deploy/modelgate", "--tail=200", check=False
    )
    report.sections.append(("operator logs", operator.stdout + operator.stderr))
    pods = cluster.run("kubectl", "get", "pods", "-A", "-o", "wide", check=False)
    report.sections.append(("pods", pods.stdout + pods.stderr))
