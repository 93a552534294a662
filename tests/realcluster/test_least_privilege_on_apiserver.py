"""Least privilege, proven grant by grant and in any order: every grant of
the chart is used by a scenario that must use it (its test is marked with
:func:`~tests.realcluster.conftest.grants` and fails when its own requests
do not), or is proven needed here on purpose. A grant only a fallback path
uses (the operator without its watches) has a test that takes that path.
Sufficiency, that nothing the operator asks is refused, is checked after
every test (``_nothing_forbidden``)."""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.realcluster.conftest import Grant, Team, grants
from tests.support.controlplane import ControlPlane
from tests.support.installation import SYSTEM_NAMESPACE, Installation, granted_permissions

RELEASE = "credit-risk-1-4-0"
HERE = Path(__file__).resolve().parent

# Grants no request uses: what the API server checks while authorising
# another request, proven by the test named.
CHECKED_BY_THE_SERVER: dict[Grant, str] = {
    # OwnerReferencesPermissionEnforcement: setting blockOwnerDeletion on a
    # Job owned by a release needs update on the release's finalizers.
    ("modelgate.dev", "modelreleases/finalizers", "update"): (
        "test_owner_references_that_block_deletion_need_the_finalizers_grant"
    ),
}


def marked_grants() -> dict[Grant, list[str]]:
    """Every grant a scenario of this tier is marked to use, with the tests."""
    found: dict[Grant, list[str]] = {}
    for path in sorted(HERE.glob("test_*.py")):
        module = importlib.import_module(f"tests.realcluster.{path.stem}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_"):
                continue
            for mark in getattr(function, "pytestmark", []):
                if mark.name == "grants":
                    for grant in mark.args:
                        found.setdefault(tuple(grant), []).append(f"{path.name}::{name}")
    return found


def test_every_grant_of_the_chart_is_proven_by_a_scenario(installation: Installation) -> None:
    granted = granted_permissions(installation.documents)
    marked = marked_grants()
    assert set(marked) - granted == set(), "tests are marked with grants the chart no longer has"
    unproven = granted - set(marked) - set(CHECKED_BY_THE_SERVER)
    assert unproven == set(), f"grants no scenario proves: {sorted(unproven)}"
    assert set(CHECKED_BY_THE_SERVER) <= granted
    print(json.dumps({f"{g}/{r} {v}": tests for (g, r, v), tests in sorted(marked.items())}))


def _account_with(
    plane: ControlPlane, namespace: str, name: str, rules: list[dict[str, Any]]
) -> client.ApiClient:
    """A ServiceAccount bound to a ClusterRole of these rules, as a client."""
    api = plane.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
    )
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"audiences": [plane.url], "expirationSeconds": 600}}
    ).status.token
    return plane.api_client(token=token)


@pytest.fixture
def release_owner(control_plane: ControlPlane, installation: Installation) -> Iterator[dict]:
    """A ModelRelease (no operator acts on this namespace's objects: it has
    no gate or environments) to own Jobs, in a namespace of its own."""
    namespace = f"owner-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace({"metadata": {"name": namespace}})
    release = {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": "owner"},
        "spec": {
            "model": {"name": "m", "version": "1"},
            "serving": "ReferenceServer",
            "training": {
                "image": "ghcr.io/modelgate/modelgate:0.1.0",
                "data": {"train": "t.csv", "evaluation": "e.csv", "target": "y"},
            },
            "gate": {"name": "absent"},
            "promotion": {"environments": ["staging"]},
        },
    }
    created = client.CustomObjectsApi(control_plane.api_client()).create_namespaced_custom_object(
        "modelgate.dev", "v1alpha1", namespace, "modelreleases", release
    )
    yield created
    core.delete_namespace(namespace)


def test_owner_references_that_block_deletion_need_the_finalizers_grant(
    control_plane: ControlPlane, installation: Installation, release_owner: dict
) -> None:
    """The chart's rules let a Job owned by a release (blockOwnerDeletion, as
    the operator's are) be created; the same rules without update on
    modelreleases/finalizers do not, on a server that enforces owner
    references' permissions (the test control plane does)."""
    roles = [d for d in installation.documents if d["kind"] == "ClusterRole"]
    rules = [rule for role in roles for rule in role["rules"]]
    without = [
        rule
        for rule in copy.deepcopy(rules)
        if rule.get("resources") != ["modelreleases/finalizers"]
    ]
    assert len(without) == len(rules) - 1, "the chart's finalizers rule changed shape"
    namespace = release_owner["metadata"]["namespace"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "owned",
            "ownerReferences": [
                {
                    "apiVersion": "modelgate.dev/v1alpha1",
                    "kind": "ModelRelease",
                    "name": release_owner["metadata"]["name"],
                    "uid": release_owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ghcr.io/modelgate/modelgate:0.1.0"}],
                }
            }
        },
    }
    suffix = uuid.uuid4().hex[:6]
    chart = _account_with(control_plane, SYSTEM_NAMESPACE, f"chart-rules-{suffix}", rules)
    trimmed = _account_with(control_plane, SYSTEM_NAMESPACE, f"no-finalizers-{suffix}", without)
    try:
        client.BatchV1Api(chart).create_namespaced_job(namespace, job, dry_run="All")
        with pytest.raises(client.ApiException) as refused:
            client.BatchV1Api(trimmed).create_namespaced_job(namespace, job, dry_run="All")
        assert refused.value.status == 403
        assert "cannot set blockOwnerDeletion" in str(refused.value.body), refused.value.body
    finally:
        rbac = client.RbacAuthorizationV1Api(control_plane.api_client())
        core = client.CoreV1Api(control_plane.api_client())
        for name in (f"chart-rules-{suffix}", f"no-finalizers-{suffix}"):
            rbac.delete_cluster_role_binding(name)
            rbac.delete_cluster_role(name)
            core.delete_namespaced_service_account(name, SYSTEM_NAMESPACE)


@grants(("batch", "jobs", "get"), ("modelgate.dev", "qualitygates", "get"))
def test_without_its_watches_the_operator_reads_jobs_and_gates_from_the_api_server(
    installation: Installation,
    new_team: Callable[..., Team],
    cluster_wide_stopped: None,
) -> None:
    """The fallback path, on purpose: an operator whose cache is off (or
    not listed yet) reads the gate and the training Job with get."""
    process = installation.operator({"MODELGATE_CACHE": "false"}).start().wait_ready()
    try:
        team = new_team()
        team.create(team.release_document())
        team.wait_phase(RELEASE, {"Evaluating", "Promoting", "Released"})
    finally:
        process.stop()
