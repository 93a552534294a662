"""Local mode's challenger and router as processes: served beside the live
release, routed, observed, brought back after their processes died (a
laptop rebooted mid-experiment) on the port callers had, and removed."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelgate.backends.local import LocalServers
from modelgate.backends.local_challengers import LocalChallengers
from modelgate.cli import main
from modelgate.promotion.plan import Deploy, SetTraffic
from modelgate.serving.router import ARM_HEADER
from tests.integration.test_localmode import ENVS, GATE, RELEASE, copy_state

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def released_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    assert main(["run", str(GATE), str(ENVS), str(RELEASE), "--state-dir", str(state)]) == 0
    assert main(["stop", "--state-dir", str(state)]) == 0
    return state


@pytest.fixture
def state(released_state: Path, tmp_path: Path) -> Iterator[Path]:
    """The sample released (its production server started here), stopped after."""
    copied = copy_state(released_state, tmp_path)
    servers = LocalServers(copied)
    live = json.loads((copied / "environments" / "default" / "production.json").read_text())
    servers.start("default", "production", live["live"]["config"], target_namespace="ml-prod")
    try:
        yield copied
    finally:
        servers.stop_all()


def _challenger(state: Path) -> Deploy:
    """The live release's artifact deployed again, as a challenger release."""
    live = json.loads((state / "environments" / "default" / "production.json").read_text())["live"]
    return Deploy(
        environment="production", namespace="ml-prod", release="default/credit-risk-2",
        model="credit-risk", image=live["image"], config=live["config"],
        config_hash="c" * 64, predictions=None, challenger=True,
    )  # fmt: skip


def _ask(url: str, user: str) -> str | None:
    body = json.dumps({"instances": [{"age": 40, "income": 50000, "debt_ratio": 0.3,
                                      "credit_lines": 3, "late_payments": 0,
                                      "region": "north"}]}).encode()  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v1/predict", data=body,
        headers={"Content-Type": "application/json", "x-user-id": user},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
        return answer.headers.get(ARM_HEADER)


def test_a_challenger_is_served_routed_restored_after_a_crash_and_removed(state: Path) -> None:
    servers = LocalServers(state)
    challengers = LocalChallengers(state, servers)
    deploy = _challenger(state)
    challengers.deploy(deploy, NOW)
    [seen] = challengers.observe("default").values()
    assert (seen.release, seen.ready, seen.weight, seen.mirror) == (
        "default/credit-risk-2",
        True,
        0,
        False,
    )
    # No traffic yet: callers still reach the live model itself.
    assert servers.url("default", "production") == servers.url("default", "production", "champion")

    split = SetTraffic(
        environment="production", namespace="ml-prod", model="credit-risk",
        champion="default/credit-risk-1-4-0", challenger="default/credit-risk-2",
        weight=50, sticky_header="x-user-id",
    )  # fmt: skip
    routed = challengers.set_traffic(split)
    assert routed["state"] == "ready", routed
    url = servers.url("default", "production")
    assert url == routed["url"]
    arms = {user: _ask(url, user) for user in (f"user-{i}" for i in range(40))}
    assert set(arms.values()) == {"champion", "challenger"}
    assert challengers.observe("default")["production"].weight == 50
    targets = json.loads(servers.targets_file.read_text())
    labels = sorted(
        (g["labels"].get("arm", "router"), g["labels"]["namespace"]) for g in targets
        if g["labels"]["environment"] == "production"
    )  # fmt: skip
    assert labels == [("challenger", "ml-prod"), ("champion", "ml-prod"), ("router", "ml-prod")]

    # Every process dies; the next run brings back the challenger and the
    # router on the port callers had, and users keep their arm.
    for arm in ("challenger", "router", "champion"):
        record = servers.record("default", "production", arm)
        assert record is not None
        os.killpg(int(record["pid"]), signal.SIGKILL)
        os.waitpid(int(record["pid"]), 0)  # spawned by this process: reaped here
    assert challengers.observe("default")["production"].weight == 0  # the split is gone
    rebooted = LocalServers(state)
    live = json.loads((state / "environments" / "default" / "production.json").read_text())
    rebooted.start("default", "production", live["live"]["config"], target_namespace="ml-prod")
    LocalChallengers(state, rebooted).ensure("default")
    assert servers.url("default", "production") == url
    assert challengers.observe("default")["production"].weight == 50
    assert {user: _ask(url, user) for user in arms} == arms

    # Deploying the same challenger again changes nothing; another one replaces it.
    challengers.deploy(deploy, NOW)
    assert servers.url("default", "production") == url
    challengers.deploy(replace(deploy, release="default/credit-risk-3"), NOW)
    assert servers.record("default", "production", "router") is None
    assert challengers.observe("default")["production"].release == "default/credit-risk-3"

    assert challengers.remove("default", "production") == "default/credit-risk-3"
    assert challengers.observe("default") == {}
    assert servers.record("default", "production", "challenger") is None
    assert servers.url("default", "production") == servers.url("default", "production", "champion")
