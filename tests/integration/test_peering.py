"""Two operator replicas at once: only one acts; when it dies the other takes over.

Both are `python -m modelgate operator` processes with kopf peering (the
chart's default for more than one replica) against one emulator. kopf
pauses every replica that sees a live peer with a higher *or equal*
priority, so equal priorities would pause both: the operator ranks replicas
by age and this test runs the defaults. The first replica is killed with
SIGKILL (no goodbye in the peering object), so the take-over is bounded by
the peering lifetime.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.cluster import create, get, wait_for
from tests.support.crash import (
    RELEASE,
    Cluster,
    World,
    actions,
    cluster_for,
    crash_world,
    documents,
    release_document,
    start_operator,
    stop_operator,
)
from tests.support.emulator import KOPF_PEERINGS
from tests.support.gitops_agent import GitOpsAgent
from tests.support.s3server import free_port

LIFETIME = 10  # seconds; the chart's default is 60
ALL_ACTIONS = frozenset(
    {"StartTraining", "EvaluateGate", "Deploy", "StartVerification", "Rollback"}
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, Cluster]]:
    with crash_world(tmp_path) as world, cluster_for(world, KOPF_PEERINGS) as cluster:
        client.CustomObjectsApi(cluster.api).create_cluster_custom_object(
            "kopf.dev",
            "v1",
            "clusterkopfpeerings",
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": "modelgate"},
            },
        )
        yield world, cluster
    assert world.controller_errors == []


def peers(cluster: Cluster) -> dict[str, Any]:
    peering = client.CustomObjectsApi(cluster.api).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "modelgate"
    )
    return dict(peering.get("status") or {})


def liveness() -> tuple[str, str]:
    """Each replica its own probe port (in a cluster each pod has its own)."""
    return ("--liveness", f"http://127.0.0.1:{free_port()}/healthz")


def phase(cluster: Cluster, namespace: str) -> str | None:
    status = get(cluster.api, "ModelRelease", namespace, RELEASE).get("status") or {}
    found: str | None = status.get("phase")
    return found


def start_release(world: World, cluster: Cluster, namespace: str) -> None:
    path = f"clusters/{namespace}"
    for document in documents(namespace, path, world.repository):
        create(cluster.api, document, namespace)
    create(cluster.api, release_document(), namespace)


def test_one_replica_acts_and_the_other_takes_over_when_it_dies(
    world: tuple[World, Cluster],
) -> None:
    world_, cluster = world
    options = ("--peering-lifetime", str(LIFETIME))
    first_log, second_log = world_.workdir / "first.log", world_.workdir / "second.log"
    first = start_operator(world_, cluster, first_log, *options, *liveness())
    second = None
    agents = []
    try:
        wait_for(lambda: len(peers(cluster)) == 1, 30, "the first replica in the peering")
        second = start_operator(world_, cluster, second_log, *options, *liveness())
        wait_for(lambda: len(peers(cluster)) == 2, 30, "both replicas in the peering")
        priorities = sorted(entry["priority"] for entry in peers(cluster).values())
        assert priorities[0] != priorities[1], "equal priorities pause every replica"
        agents.append(_agent(world_, cluster, "one"))
        start_release(world_, cluster, "one")
        wait_for(
            lambda: phase(cluster, "one") == "Released",
            120,
            "the first release Released",
            lambda: get(cluster.api, "ModelRelease", "one", RELEASE).get("status"),
        )
        key = f"one/{RELEASE}"
        assert sum(actions(first_log, key, ALL_ACTIONS).values()) >= 4
        assert actions(second_log, key, ALL_ACTIONS) == {}, "the paused replica acted"

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed = time.monotonic()
        agents.append(_agent(world_, cluster, "two"))
        start_release(world_, cluster, "two")
        key = f"two/{RELEASE}"
        wait_for(
            lambda: actions(second_log, key, frozenset({"StartTraining"})),
            LIFETIME + 30,
            "the second replica taking over",
            lambda: second_log.read_text(errors="replace")[-3000:],
        )
        takeover = time.monotonic() - killed
        # Bound: the dead replica's record expires after LIFETIME; then one
        # re-list and one reconcile.
        assert takeover < LIFETIME + 15, takeover
        wait_for(
            lambda: phase(cluster, "two") == "Released",
            120,
            "the second release Released by the survivor",
            lambda: get(cluster.api, "ModelRelease", "two", RELEASE).get("status"),
        )
        print(json.dumps({"takeover_seconds": round(takeover, 1), "lifetime": LIFETIME}))
        # The first release was left alone by the survivor: nothing redone.
        assert actions(second_log, f"one/{RELEASE}", ALL_ACTIONS) == {}
        jobs = [p for p in cluster.emulator.emulator.created if "/jobs/" in p]
        assert len([p for p in jobs if "/namespaces/one/" in p]) == 1, jobs
        assert len([p for p in jobs if "/namespaces/two/" in p]) == 1, jobs
    finally:
        for agent in agents:
            agent.stop()
        stop_operator(first)
        if second is not None:
            stop_operator(second)


def _agent(world: World, cluster: Cluster, namespace: str) -> GitOpsAgent:
    """The test-played GitOps agent for one namespace's production path."""
    agent = GitOpsAgent(
        cluster.api, world.repository, f"clusters/{namespace}", world.workdir / f"agent-{namespace}"
    )
    agent.start()
    return agent
