"""Every pod the operator creates passes the "restricted" Pod Security Standard
(the chart's operator pod is checked in tests/integration/test_chart.py)."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.backends import manifests
from tests.support.pss import restricted_violations
from tests.unit.test_manifests import (
    NOW,
    SETTINGS,
    deploy_action,
    evaluation_job,
    training_job,
    verification_job,
)


def pods() -> dict[str, dict[str, Any]]:
    deployment = manifests.build_deployment(deploy_action(), SETTINGS, NOW)
    return {
        "training Job": training_job()["spec"]["template"]["spec"],
        "verification Job": verification_job()["spec"]["template"]["spec"],
        "evaluation Job": evaluation_job()["spec"]["template"]["spec"],
        "model Deployment": deployment["spec"]["template"]["spec"],
    }


@pytest.mark.parametrize("workload", sorted(pods()))
def test_restricted(workload: str) -> None:
    assert restricted_violations(pods()[workload]) == []


def test_the_checker_catches_what_it_should() -> None:
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {"privileged": True, "runAsUser": 0},
                "ports": [{"containerPort": 80, "hostPort": 80}],
            }
        ],
    }
    assert restricted_violations(bad) == [
        "hostNetwork is set",
        "volume h uses ['hostPath']",
        "c: privileged",
        "c: allowPrivilegeEscalation is not false",
        "c: capabilities do not drop ALL",
        "c: runAsNonRoot is not true",
        "c: runs as user 0",
        "c: seccompProfile is None, not RuntimeDefault/Localhost",
        "c: hostPort 80",
    ]
