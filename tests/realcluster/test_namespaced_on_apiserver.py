"""The chart's namespaced mode on the real control plane: an operator that
watches named namespaces, authorised by Roles in those namespaces only (and
read access to the few cluster-scoped kinds kopf must see)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from tests.realcluster.conftest import BUCKET, Team, delete_team, make_team
from tests.support.controlplane import ControlPlane
from tests.support.installation import (
    chart_values,
    install,
    spec_writes,
    used_permissions,
)
from tests.support.node import TestNode
from tests.support.s3server import S3Server

RELEASE = "credit-risk-1-4-0"
FULLNAME = "modelgate-ns"


def _roles_granted(documents: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    """Namespace -> (apiGroup, resource, verb) its Roles grant (by kind, not by name)."""
    granted: dict[str, set[tuple[str, str, str]]] = {}
    for document in documents:
        if document["kind"] != "Role":
            continue
        into = granted.setdefault(document["metadata"]["namespace"], set())
        for rule in document.get("rules") or []:
            if rule.get("resourceNames"):
                continue
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        into.add((group, resource, verb))
    return granted


def test_a_namespaced_operator_releases_with_roles_in_its_namespaces_only(
    control_plane: ControlPlane,
    s3: S3Server,
    test_node: TestNode,
    cluster_wide_stopped: None,
    tmp_path: Path,
) -> None:
    team = make_team(control_plane)
    elsewhere = make_team(control_plane)
    watched = [team.namespace, *team.targets.values()]
    values = chart_values(
        s3,
        BUCKET,
        fullnameOverride=FULLNAME,
        watchNamespaces=watched,
        webhook={"enabled": False},
    )
    installed = install(control_plane, values, tmp_path / "chart")
    kinds = {(d["kind"], d["metadata"].get("namespace")) for d in installed.documents}
    assert ("ClusterKopfPeering", None) not in kinds
    assert {("KopfPeering", n) for n in watched} <= kinds
    assert {("Role", n) for n in watched} <= kinds
    operator = installed.operator().start().wait_ready()
    try:
        _release_and_delete(team, elsewhere)
        requests = installed.requests()
        assert installed.forbidden() == []
        assert spec_writes(requests) == []
        # Every namespaced request stayed in the watched namespaces.
        outside = {
            f"{e['verb']} {e['requestURI']}"
            for e in requests
            if (e.get("objectRef") or {}).get("namespace") not in (None, "", *watched)
        }
        assert outside == set()
        # Cluster-wide it reads only what kopf must see.
        cluster_scoped = {
            (group, resource, verb)
            for e in requests
            if not (e.get("objectRef") or {}).get("namespace")
            for group, resource, verb in used_permissions([e])
        }
        assert cluster_scoped <= {
            ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
            ("", "namespaces", "list"),
            ("", "namespaces", "watch"),
        }, cluster_scoped
        # The team's namespace's Role was used for what the release needed.
        used_there = used_permissions(
            [e for e in requests if (e.get("objectRef") or {}).get("namespace") == team.namespace]
        )
        granted_there = _roles_granted(installed.documents)[team.namespace]
        for needed in (
            ("modelgate.dev", "modelreleases", "patch"),
            ("modelgate.dev", "modelreleases/status", "patch"),
            ("batch", "jobs", "create"),
            ("", "events", "create"),
        ):
            assert needed in used_there, needed
            assert needed in granted_there, needed
    finally:
        operator.stop()
        delete_team(team)
        delete_team(elsewhere)
        rbac = client.RbacAuthorizationV1Api(control_plane.api_client())
        rbac.delete_cluster_role_binding(f"{FULLNAME}-cluster")
        rbac.delete_cluster_role(f"{FULLNAME}-cluster")


def _release_and_delete(team: Team, elsewhere: Team) -> None:
    """The sample to production in the watched team; the same release in an
    unwatched one is never touched; deleting the watched one runs the finalizer."""
    team.create(team.release_document())
    elsewhere.create(elsewhere.release_document())
    released = team.wait_phase(RELEASE, "Released")
    assert [e["phase"] for e in released["status"]["environments"]] == ["Deployed", "Deployed"]
    untouched = elsewhere.get("ModelRelease", RELEASE)
    assert "status" not in untouched
    assert untouched["metadata"].get("finalizers", []) == []
    team.delete_and_wait_gone(
        "ModelRelease", RELEASE, "the watched release to be deleted (its finalizer removed)"
    )
