"""The ModelRelease handler on a body kopf has not refreshed yet.

kopf writes a handler's status patch after the handler returns; a resync
timer can run before the watch brings that write back, on the body as it was.
The handler then decides from the status it decided last, not from the stale
one (a stale view once made a rolled-back release look deployable).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import pytest

from modelgate import handlers
from modelgate.handlers import common, modelrelease
from modelgate.settings import OperatorSettings

START = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


class NothingRuns:
    """No training Job, no deployment: the world of a release whose gate is missing."""

    def observe(self, namespace: str, name: str, ingest: bool = True) -> None:
        return None


class NothingDeployed:
    def observe(self, *args: Any) -> dict[str, Any]:
        return {}

    def observe_challengers(self, *args: Any) -> dict[str, Any]:
        return {}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    now = [START]
    runtime = handlers.Runtime(
        settings=OperatorSettings(),
        clients=cast(Any, None),
        store=cast(Any, None),
        runner=cast(Any, NothingRuns()),
        delivery=cast(Any, NothingDeployed()),
    )
    monkeypatch.setattr(common, "_runtime", runtime)
    monkeypatch.setattr(modelrelease, "now_utc", lambda: now[0])
    monkeypatch.setattr(modelrelease, "get_gate", lambda rt, namespace, name: None)
    monkeypatch.setattr(modelrelease, "list_environments", lambda rt, namespace: {})
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    return now


def body(resource_version: str, status: dict[str, Any] | None = None) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {
            "name": "m-1",
            "namespace": "team",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": resource_version,
        },
        "spec": {
            "model": {"name": "m", "version": "1.0.0"},
            "image": "registry.example.com/m@sha256:" + "ab" * 32,
            "training": {
                "image": "trainer:1",
                "data": {"train": "train.csv", "evaluation": "eval.csv", "target": "y"},
            },
            "gate": {"name": "gate"},
            "promotion": {"environments": ["staging"]},
        },
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)


def reconciled(found: kopf.Body, resync: bool = False) -> dict[str, Any]:
    patch = kopf.Patch()
    handlers.reconcile_release(found, patch, resync=resync)
    return dict(patch.get("status") or {})


def test_a_body_at_the_version_read_last_is_decided_from_the_last_status(
    clock: list[datetime],
) -> None:
    first = reconciled(body("7"))
    assert first["phase"] == "Pending"
    ready = next(c for c in first["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReferenceNotFound"
    assert ready["lastTransitionTime"] == "2026-12-02T03:00:00Z"

    # The timer, a minute later, on the body as it was before that write:
    # the status decided then stands, so there is nothing to write.
    clock[0] = START + timedelta(minutes=1)
    assert reconciled(body("7"), resync=True) == {}

    # Once the watch brings the write back (a new version), the body is read.
    assert reconciled(body("8", first), resync=True) == {}
    # A newer body whose status differs (someone else wrote it) is believed.
    edited = {**first, "phase": "Training"}
    assert reconciled(body("9", edited), resync=True) == {"phase": "Pending"}


def test_a_later_version_that_still_shows_the_status_read_is_stale(
    clock: list[datetime],
) -> None:
    """kopf's own annotation patch can land between the read and the status
    write: a newer version, the old status (a config change once lost its
    previous config this way, and its rollback put back the wrong thing)."""
    first = reconciled(body("7"))
    clock[0] = START + timedelta(minutes=1)
    assert reconciled(body("8"), resync=True) == {}
    assert reconciled(body("9"), resync=True) == {}
    # The write comes back at last: read from the body again.
    assert reconciled(body("10", first), resync=True) == {}
    edited = {**first, "phase": "Training"}
    assert reconciled(body("11", edited), resync=True) == {"phase": "Pending"}


def test_without_a_version_every_body_is_read_as_it_is(clock: list[datetime]) -> None:
    first = reconciled(body(""))
    clock[0] = START + timedelta(minutes=1)
    again = reconciled(body(""), resync=True)
    # Read as empty again: the same decision, written again in full.
    assert again["phase"] == first["phase"] == "Pending"
