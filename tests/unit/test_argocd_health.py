"""Argo CD health checks (Lua) for the three kinds, run with a Lua interpreter
(lupa) against sample objects in every phase."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from tests.conftest import EXAMPLES

SNIPPET = EXAMPLES / "gitops" / "argocd-cm-health.yaml"


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check as Argo CD does: `obj` is a global, the script returns hs."""
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    script = data[f"resource.customizations.health.modelgate.dev_{kind}"]
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"] or "")


def _to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def release(
    phase: str | None, reason: str = "", generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "r", "generation": generation}}
    if phase is not None:
        obj["status"] = {
            "phase": phase,
            "observedGeneration": observed,
            "conditions": [
                {
                    "type": "Trained",
                    "status": "True",
                    "reason": "TrainingSucceeded",
                    "message": "ok",
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": reason or phase,
                    "message": f"{phase} detail",
                },
            ],
        }
    return obj


@pytest.mark.parametrize(
    ("phase", "reason", "expected"),
    [
        ("Pending", "", "Progressing"),
        ("Training", "", "Progressing"),
        ("Evaluating", "", "Progressing"),
        ("Promoting", "Deploying", "Progressing"),
        ("Promoting", "Soaking", "Progressing"),
        ("Promoting", "AwaitingApproval", "Suspended"),
        ("Promoting", "FreezeWindow", "Suspended"),
        ("Released", "Released", "Healthy"),
        ("GateFailed", "GateFailed", "Degraded"),
        ("Failed", "TrainingFailed", "Degraded"),
        ("Blocked", "ConfigRuleViolated", "Degraded"),
        ("RolledBack", "VerificationFailed", "Degraded"),
        ("Aborted", "Aborted", "Degraded"),
    ],
)
def test_model_release_in_every_phase(phase: str, reason: str, expected: str) -> None:
    status, message = health("ModelRelease", release(phase, reason))
    assert status == expected
    assert message == f"{phase}: {phase} detail"


def test_model_release_without_status_or_with_a_stale_one() -> None:
    assert health("ModelRelease", release(None)) == (
        "Progressing",
        "Waiting for the Modelgate operator",
    )
    assert health("ModelRelease", release("Released", generation=3, observed=2)) == (
        "Progressing",
        "Waiting for the operator to observe generation 3",
    )


@pytest.mark.parametrize("kind", ["QualityGate", "Environment"])
@pytest.mark.parametrize(
    ("ready", "expected"),
    [("True", "Healthy"), ("False", "Degraded"), (None, "Progressing")],
)
def test_gate_and_environment_follow_ready(kind: str, ready: str | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "x"}}
    if ready is not None:
        obj["status"] = {
            "conditions": [
                {"type": "Ready", "status": ready, "reason": "R", "message": "cycle via staging"}
            ]
        }
    status, message = health(kind, obj)
    assert status == expected
    if ready == "False":
        assert message == "cycle via staging"


def test_environment_names_its_live_release() -> None:
    obj = {
        "metadata": {"name": "production"},
        "status": {
            "liveRelease": "credit-risk-1-4-0",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Valid", "message": "ok"}],
        },
    }
    assert health("Environment", obj) == ("Healthy", "live: credit-risk-1-4-0")
