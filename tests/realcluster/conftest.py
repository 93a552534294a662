"""The operator on the real control plane, installed as the chart installs it.

Shared by the modules here (servers, not state): one S3 server, one test
node, one installation of the chart's CRDs and RBAC with the operator's
token. Each test gets a team of its own (:func:`team`): its namespaces, the
store's Secret, the sample's gate and environments targeting namespaces of
its own, so a test needs nothing another test did.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.conftest import EXAMPLES
from tests.support.cluster import seed_sample_data, wait_for
from tests.support.controlplane import ControlPlane
from tests.support.installation import (
    ADMISSION_LABEL,
    Installation,
    OperatorProcess,
    chart_values,
    install,
    s3_secret,
    spec_writes,
    used_permissions,
)
from tests.support.mlserver import MLSERVER_REPOSITORY, mlserver_image
from tests.support.node import TestNode, running_node
from tests.support.prometheus import Prometheus, running_prometheus
from tests.support.s3server import S3Server, running_s3

SAMPLE = EXAMPLES / "credit-risk"
BUCKET = "real-artifacts"
GROUP, VERSION = "modelgate.dev", "v1alpha1"
PLURALS = {
    "ModelRelease": "modelreleases",
    "QualityGate": "qualitygates",
    "Environment": "environments",
}


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3(tmp_path_factory.mktemp("moto-real") / "moto.log") as server:
        seed_sample_data(server, BUCKET, SAMPLE / "data")
        yield server


@pytest.fixture(scope="session")
def test_node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestNode]:
    with running_node(
        control_plane.api_client(),
        tmp_path_factory.mktemp("node"),
        foreign={MLSERVER_REPOSITORY: mlserver_image()},
    ) as node:
        yield node
    assert node.errors == []


Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def grants(*needed: Grant) -> pytest.MarkDecorator:
    """Mark a scenario that must use these grants of the chart: the audit
    log of its own requests is checked for each (tests/realcluster/
    test_least_privilege_on_apiserver.py checks that every grant has one)."""
    return pytest.mark.grants(*needed)


@dataclass
class PrometheusWorld:
    """The session's Prometheus, scraping what the test lists in ``targets``
    (file discovery): the operator's analyses ask it."""

    server: Prometheus
    targets: Path


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusWorld]:
    directory = tmp_path_factory.mktemp("prometheus-real")
    targets = directory / "targets.json"
    targets.write_text("[]")
    with running_prometheus([], directory, target_files=[targets]) as server:
        yield PrometheusWorld(server, targets)


@pytest.fixture(scope="session")
def installation(
    control_plane: ControlPlane,
    s3: S3Server,
    prometheus: PrometheusWorld,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installation]:
    values = chart_values(s3, BUCKET, prometheus={"url": prometheus.server.url})
    installed = install(control_plane, values, tmp_path_factory.mktemp("chart"))
    yield installed
    installed.stop()


@pytest.fixture(scope="session")
def operator(installation: Installation, test_node: TestNode) -> Iterator[OperatorProcess]:
    """One operator process for the scenarios that do not kill it."""
    process = installation.operator().start().wait_ready()
    yield process
    process.stop()


@pytest.fixture
def cluster_wide_stopped(installation: Installation) -> Iterator[None]:
    """The session's operators stand aside for a test that runs its own (they
    would reconcile the same objects); restarted afterwards for the others."""
    running = [process for process in installation.operators if process.alive()]
    for process in running:
        process.stop()
    yield
    for process in running:
        process.start().wait_ready()


@pytest.fixture(autouse=True)
def _nothing_forbidden(request: pytest.FixtureRequest) -> Iterator[None]:
    """Any request of the installed operator that the chart's RBAC refused,
    and any write of it to a spec, fails the test that was running (the
    audit log names each one); so does a grant the test is marked to need
    (:func:`grants`) that its requests did not use."""
    if not {"operator", "installation"} & set(request.fixturenames):
        yield
        return
    installation: Installation = request.getfixturevalue("installation")
    before, requests = len(installation.forbidden()), len(installation.requests())
    yield
    assert installation.forbidden()[before:] == []
    own = installation.requests()[requests:]
    assert spec_writes(own) == []
    needed = {grant for mark in request.node.iter_markers("grants") for grant in mark.args}
    unused = needed - used_permissions(own)
    assert unused == set(), f"the scenario did not use the grants it proves: {sorted(unused)}"
    if "operator" in request.fixturenames:
        operator: OperatorProcess = request.getfixturevalue("operator")
        assert operator.alive(), operator.tail()


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLE / name).read_text()) if d]


@dataclass
class Team:
    """A team's namespace and its environments' namespaces on the server."""

    plane: ControlPlane
    namespace: str
    targets: dict[str, str]  # environment -> the namespace it deploys to

    @property
    def api(self) -> client.ApiClient:
        return self.plane.api_client()

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create(self, document: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom().create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[document["kind"]], document
        )
        return result

    def get(self, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom().get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name
        )
        return result

    def patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom().patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name, body
        )
        return result

    def delete_and_wait_gone(self, kind: str, name: str, what: str, timeout: float = 60) -> None:
        """Delete an object of the team's and wait until the server no longer
        has it (its finalizers removed)."""
        self.custom().delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name
        )

        def gone() -> bool:
            try:
                self.get(kind, name)
            except client.ApiException as error:
                return error.status == 404
            return False

        wait_for(gone, timeout, what)

    def environment(self, name: str) -> dict[str, Any]:
        return self.get("Environment", name)

    def phase(self, name: str) -> str | None:
        return (self.get("ModelRelease", name).get("status") or {}).get("phase")

    def wait_phase(self, name: str, wanted: str | set[str], timeout: float = 240) -> dict[str, Any]:
        wanted_set = {wanted} if isinstance(wanted, str) else wanted
        wait_for(
            lambda: self.phase(name) in wanted_set,
            timeout,
            f"release {name} in {sorted(wanted_set)}",
            lambda: self.get("ModelRelease", name).get("status") or {},
        )
        return self.get("ModelRelease", name)

    def release_document(self, source: str = "release.yaml", name: str | None = None) -> dict:
        document = copy.deepcopy(documents(source)[0])
        if name:
            document["metadata"]["name"] = name
        data = document["spec"]["training"]["data"]
        data["train"] = f"s3://{BUCKET}/data/train.csv"
        data["evaluation"] = f"s3://{BUCKET}/data/eval.csv"
        return document


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def _wait_for_default_account(core: client.CoreV1Api, namespace: str) -> None:
    # The ServiceAccount admission plugin refuses pods until `default` exists.
    wait_for(
        lambda: any(
            a.metadata.name == "default"
            for a in core.list_namespaced_service_account(namespace).items
        ),
        60,
        f"the default service account of {namespace}",
    )


def make_team(
    plane: ControlPlane,
    environments: list[dict[str, Any]] | None = None,
    gate: dict[str, Any] | None = None,
    admission: bool = False,
) -> Team:
    """A team with the sample's gate and environments (or the given ones);
    ``admission``: the chart's webhooks judge its namespace's objects."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"team-{suffix}"
    environments = copy.deepcopy(environments or documents("environments.yaml"))
    targets = {}
    for environment in environments:
        target = f"{environment['spec']['namespace']}-{suffix}"
        environment["spec"]["namespace"] = target
        targets[environment["metadata"]["name"]] = target
    core = client.CoreV1Api(plane.api_client())
    labels = {ADMISSION_LABEL: "on"} if admission else {}
    for name in (namespace, *targets.values()):
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        core.create_namespaced_secret(name, s3_secret(name))
    for name in (namespace, *targets.values()):
        _wait_for_default_account(core, name)
    team = Team(plane, namespace, targets)
    for document in [gate or documents("gate.yaml")[0], *environments]:
        team.create(copy.deepcopy(document))
    return team


def delete_team(team: Team) -> None:
    """Delete a team's namespaces: the namespace controller removes what is
    in them, and the node stops their pods."""
    core = client.CoreV1Api(team.plane.api_client())
    for name in (team.namespace, *team.targets.values()):
        core.delete_namespace(name)


@pytest.fixture
def new_team(
    control_plane: ControlPlane, operator: OperatorProcess
) -> Iterator[Callable[..., Team]]:
    """Make teams (make_team's options); their namespaces go with the test."""
    made: list[Team] = []

    def make(**options: Any) -> Team:
        made.append(make_team(control_plane, **options))
        return made[-1]

    yield make
    for team in made:
        delete_team(team)


@pytest.fixture
def team(new_team: Callable[..., Team]) -> Team:
    """A team with the sample's gate and environments."""
    return new_team()
