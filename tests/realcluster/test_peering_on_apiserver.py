"""Two replicas of the operator as the chart runs them (peering on, through
the ClusterKopfPeering it installs) on the real control plane: only the
older acts; SIGKILLed, it leaves no goodbye, and the other takes over once
its record in the peering object expires."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from tests.realcluster.conftest import Team
from tests.support.cluster import wait_for
from tests.support.installation import Installation, OperatorProcess
from tests.support.s3server import free_port

RELEASE = "credit-risk-1-4-0"


def _live_peers(installation: Installation) -> dict[str, dict[str, Any]]:
    """The peering object's records that have not expired yet."""
    peering = client.CustomObjectsApi(installation.plane.api_client()).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "modelgate"
    )
    now = datetime.now(UTC)
    live = {}
    for peer, record in (peering.get("status") or {}).items():
        if not isinstance(record, dict) or "lastseen" not in record:
            continue
        seen = datetime.fromisoformat(str(record["lastseen"]).replace("Z", "+00:00"))
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if seen + timedelta(seconds=int(record.get("lifetime", 60))) > now:
            live[peer] = record
    return live


def _actions(process: OperatorProcess, release: str) -> Counter[str]:
    """The side effects a replica logged for a release (namespace/name)."""
    return Counter(
        str(line["action"])
        for line in process.lines()
        if line.get("release") == release and line.get("action")
    )


def test_one_replica_acts_and_the_other_takes_over_when_it_is_killed(
    installation: Installation,
    new_team: Callable[..., Team],
    cluster_wide_stopped: None,
) -> None:
    lifetime = 10  # chart_values sets peering.lifetime to 10 s (the chart's default is 60)
    first = installation.operator().start().wait_ready()
    # Its own webhook port: in a cluster each replica is a pod of its own,
    # and the webhook Service reaches the one the test's configuration names.
    second = installation.operator({"MODELGATE_WEBHOOK_PORT": str(free_port())})
    try:
        wait_for(
            lambda: len(_live_peers(installation)) == 1, 30, "the first replica in the peering"
        )
        second.start().wait_ready()
        wait_for(lambda: len(_live_peers(installation)) == 2, 30, "both replicas in the peering")
        priorities = sorted(r["priority"] for r in _live_peers(installation).values())
        assert priorities[0] != priorities[1], "equal priorities would pause both replicas"

        one = new_team()
        one.create(one.release_document())
        one.wait_phase(RELEASE, "Released")
        key = f"{one.namespace}/{RELEASE}"
        assert sum(_actions(first, key).values()) >= 4, _actions(first, key)
        assert _actions(second, key) == Counter(), "the paused replica acted"

        first.kill()
        killed = time.monotonic()
        two = new_team()
        two.create(two.release_document())
        key = f"{two.namespace}/{RELEASE}"
        wait_for(
            lambda: _actions(second, key)["StartTraining"] == 1,
            lifetime + 30,
            "the second replica taking over",
            second.tail,
        )
        takeover = time.monotonic() - killed
        # The dead replica's record expires after the lifetime; then one
        # re-list and one reconcile.
        assert takeover < lifetime + 15, takeover
        two.wait_phase(RELEASE, "Released")
        print(json.dumps({"takeover_seconds": round(takeover, 1), "lifetime": lifetime}))
        # The survivor left the first team's finished release alone.
        assert _actions(second, f"{one.namespace}/{RELEASE}") == Counter()
        trainings = client.BatchV1Api(installation.plane.api_client()).list_namespaced_job(
            two.namespace
        )
        assert len([j for j in trainings.items if "-train-" in j.metadata.name]) == 1
        assert installation.forbidden() == []
    finally:
        first.stop()
        second.stop()
