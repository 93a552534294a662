"""The chart's admission webhooks, called by the real kube-apiserver: its
ValidatingWebhookConfiguration and MutatingWebhookConfiguration, pointed at
the operator on loopback over https with the CA in caBundle. Requests come
from real users (client certificates); what the webhook is told about them
is what the API server authenticated."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.realcluster.conftest import Team, documents
from tests.support.controlplane import ControlPlane
from tests.support.installation import Installation, user_kubeconfig

EDITOR_RULES = [
    {
        "apiGroups": ["modelgate.dev"],
        "resources": ["modelreleases", "environments", "qualitygates"],
        "verbs": ["get", "list", "watch", "create", "update", "patch"],
    }
]


@pytest.fixture
def admitted_team(new_team: Callable[..., Team], installation: Installation) -> Team:
    environments = copy.deepcopy(documents("environments.yaml"))
    for environment in environments:
        if environment["metadata"]["name"] == "production":
            environment["spec"].setdefault("policy", {}).update(
                {"requireApproval": True, "approvers": ["group:ml-leads"]}
            )
    team = new_team(environments=environments, admission=True)
    rbac = client.RbacAuthorizationV1Api(team.api)
    rbac.create_namespaced_role(
        team.namespace, {"metadata": {"name": "release-editor"}, "rules": EDITOR_RULES}
    )
    rbac.create_namespaced_role_binding(
        team.namespace,
        {
            "metadata": {"name": "release-editors"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "release-editor",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}
                for name in ("alice", "bob")
            ],
        },
    )
    return team


def _apply(plane: ControlPlane, config: Path, team: Team, document: dict[str, Any]) -> Any:
    return plane.kubectl(
        "apply",
        "-n",
        team.namespace,
        "-f",
        "-",
        kubeconfig=config,
        stdin=yaml.safe_dump(document),
        check=False,
    )


def test_kubectl_apply_of_the_leaking_release_is_refused_with_the_rule(
    control_plane: ControlPlane, admitted_team: Team, tmp_path: Path
) -> None:
    alice = user_kubeconfig(control_plane, tmp_path, "alice", ("ml-leads",))
    leak = admitted_team.release_document("release-backtest-leak.yaml")
    done = _apply(control_plane, alice, admitted_team, leak)
    assert done.returncode != 0
    assert 'admission webhook "validate-release.modelgate.dev" denied the request' in done.stderr
    assert "environment production: FEATURE_STORE_URL='https://features.backtest" in done.stderr
    assert "violates rule leakage:backtest" in done.stderr
    listed = client.CustomObjectsApi(admitted_team.api).list_namespaced_custom_object(
        "modelgate.dev", "v1alpha1", admitted_team.namespace, "modelreleases"
    )
    assert listed["items"] == []  # refused before it was stored
    good = _apply(control_plane, alice, admitted_team, admitted_team.release_document())
    assert good.returncode == 0, good.stderr


def test_approvals_are_credited_to_the_real_requesting_user(
    control_plane: ControlPlane, admitted_team: Team, tmp_path: Path
) -> None:
    alice = user_kubeconfig(control_plane, tmp_path, "alice", ("ml-leads",))
    bob = user_kubeconfig(control_plane, tmp_path, "bob")
    created = _apply(control_plane, alice, admitted_team, admitted_team.release_document())
    assert created.returncode == 0, created.stderr
    forged = [{"environment": "production", "approvedBy": "the-cto", "comment": "CHG-7"}]
    patch = json.dumps({"spec": {"promotion": {"approvals": forged}}})

    def approve(config: Path) -> Any:
        return control_plane.kubectl(
            "patch",
            "modelrelease",
            "credit-risk-1-4-0",
            "-n",
            admitted_team.namespace,
            "--type=merge",
            "-p",
            patch,
            kubeconfig=config,
            check=False,
        )

    refused = approve(bob)
    # Bob authenticated as bob, whatever he wrote; he is not an approver.
    assert refused.returncode != 0
    assert "bob may not approve promotions to production" in refused.stderr
    approved = approve(alice)
    assert approved.returncode == 0, approved.stderr
    [approval] = admitted_team.get("ModelRelease", "credit-risk-1-4-0")["spec"]["promotion"][
        "approvals"
    ]
    assert approval["approvedBy"] == "alice"
    assert approval["approvedAt"]
    assert approval["comment"] == "CHG-7"
    released = admitted_team.wait_phase("credit-risk-1-4-0", "Released")
    entries = {e["name"]: e for e in released["status"]["environments"]}
    assert entries["production"]["approvedBy"] == "alice"
    # A request (here a retry, which finds nothing failed) is credited likewise.
    forged_retry = {"requestedAt": "2026-12-07T12:00:00Z", "requestedBy": "the-cto"}
    asked = control_plane.kubectl(
        "patch", "modelrelease", "credit-risk-1-4-0", "-n", admitted_team.namespace,
        "--type=merge", "-p", json.dumps({"spec": {"retry": forged_retry}}),
        kubeconfig=bob, check=False,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    retry = admitted_team.get("ModelRelease", "credit-risk-1-4-0")["spec"]["retry"]
    assert retry == {**forged_retry, "requestedBy": "bob"}


def test_an_environment_with_a_bad_regex_is_refused_naming_the_field(
    control_plane: ControlPlane, admitted_team: Team, tmp_path: Path
) -> None:
    alice = user_kubeconfig(control_plane, tmp_path, "alice", ("ml-leads",))
    production = next(
        d for d in documents("environments.yaml") if d["metadata"]["name"] == "production"
    )
    production["metadata"]["name"] = "production-2"
    production["spec"]["configRules"][0]["pattern"] = "^https://([a-z.]+$"
    done = _apply(control_plane, alice, admitted_team, production)
    assert done.returncode != 0
    assert "spec.configRules[0].pattern: pattern '^https://([a-z.]+$' is not a valid regex" in (
        done.stderr
    )
