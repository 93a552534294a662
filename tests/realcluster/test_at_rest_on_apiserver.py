"""A release at rest costs the API server nothing: the operator reads what it
needs from watches kept in memory, and a change of what a release reads (its
Deployment, here) is acted on when it happens, not at the next poll."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from tests.realcluster.conftest import Team, conditions
from tests.support.cluster import wait_for
from tests.support.installation import Installation

# Twenty of the operator's resync intervals (resyncSeconds is 1 here).
QUIET_SECONDS = 20


def _since(installation: Installation, start: datetime, namespaces: set[str]) -> list[str]:
    """The operator's requests about objects in ``namespaces`` received after
    ``start``, but the watches it keeps open (each one long-lived request,
    re-opened when the server ends it, whatever the number of releases)."""
    found = []
    for event in installation.requests():
        received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        namespace = (event.get("objectRef") or {}).get("namespace")
        if received > start and namespace in namespaces and event["verb"] != "watch":
            found.append(f"{event['verb']} {event['requestURI']}")
    return found


def test_a_release_at_rest_makes_no_api_requests_and_a_change_wakes_it(
    team: Team, installation: Installation
) -> None:
    team.create(team.release_document(name="credit-risk-resting"))
    release = team.wait_phase("credit-risk-resting", "Released", timeout=300)
    namespaces = {team.namespace, *team.targets.values()}
    # The last status write and Events of getting there are behind us.
    time.sleep(5)
    start = datetime.now(UTC)
    time.sleep(QUIET_SECONDS)  # resyncSeconds is 1 here: a poll would show
    assert _since(installation, start, namespaces) == []

    # Someone deletes production's model server: the watch tells the operator,
    # which looks at the release at once (no poll) and says it is no longer
    # live there (the core never deploys a release again where it was replaced).
    assert release["status"]["liveIn"] == "production"
    apps = client.AppsV1Api(team.api)
    apps.delete_namespaced_deployment("credit-risk-production", team.targets["production"])

    def seen() -> Any:
        status = team.get("ModelRelease", "credit-risk-resting")["status"]
        return status if status.get("liveIn") != "production" else None

    status = wait_for(seen, 20, "the release to see production's Deployment gone")
    assert status["liveIn"] == "staging"
    production = next(e for e in status["environments"] if e["name"] == "production")
    assert production["phase"] == "Superseded"


def test_an_environment_is_judged_again_when_a_peer_changes(team: Team) -> None:
    """production promotes from staging: staging deleted, production's path
    dangles; staging made again, it is whole. No timer judges Environments:
    the Environments' watch wakes production."""
    kept = team.environment("staging")

    def production_ready(wanted: str, reason: str) -> Any:
        ready = conditions(team.environment("production")).get("Ready", {})
        return ready if (ready.get("status"), ready.get("reason")) == (wanted, reason) else None

    wait_for(lambda: production_ready("True", "Valid"), 60, "production to be Ready")
    team.delete_and_wait_gone("Environment", "staging", "staging")
    ready = wait_for(
        lambda: production_ready("False", "PromotionPathInvalid"),
        30,
        "production to say its path lost staging",
    )
    assert "staging" in ready["message"]
    team.create(
        {k: kept[k] for k in ("apiVersion", "kind", "spec")}
        | {"metadata": {"name": "staging", "namespace": team.namespace}}
    )
    wait_for(lambda: production_ready("True", "Valid"), 30, "production to be Ready again")
