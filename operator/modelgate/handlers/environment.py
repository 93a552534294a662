"""Environment handlers: the promotion graph and the live config, judged by its rules."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from modelgate.api.environment import Environment
from modelgate.backends.kube import (
    KubeTransientError,
)
from modelgate.handlers.common import (
    ENVIRONMENTS,
    RESYNC_SECONDS,
    list_environments,
    list_releases,
    measured,
    now_utc,
    report_invalid,
    runtime,
    transient,
    wake_releases,
)
from modelgate.promotion.conditions import set_condition
from modelgate.promotion.environment_status import environment_verdicts


@kopf.on.resume(*ENVIRONMENTS)
@kopf.on.create(*ENVIRONMENTS)
@kopf.on.update(*ENVIRONMENTS, field="spec")
@kopf.timer(*ENVIRONMENTS, interval=RESYNC_SECONDS * 4, initial_delay=RESYNC_SECONDS)
def environment_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    with measured("Environment"):
        _environment_changed(body, patch)


def _environment_changed(body: kopf.Body, patch: kopf.Patch) -> None:
    try:
        environment = Environment.model_validate(dict(body))
    except ValidationError as error:
        report_invalid("Environment", body, patch, error)
        return
    rt = runtime()
    try:
        peers = list_environments(rt, environment.namespace)
        releases = list_releases(rt, environment.namespace)
    except KubeTransientError as error:
        raise transient(error) from error
    peers[environment.name] = environment
    conditions = environment.status.conditions if environment.status else []
    for verdict in environment_verdicts(environment, peers, releases):
        conditions = set_condition(
            conditions,
            verdict.kind,
            verdict.ok,
            verdict.reason,
            verdict.message,
            environment.generation,
            now_utc(),
        )
    wanted = {
        "conditions": [c.wire() for c in conditions],
        "observedGeneration": environment.generation,
    }
    old = body.get("status") or {}
    for key, value in wanted.items():
        if old.get(key) != value:  # unchanged status writes nothing
            patch.status[key] = value


@kopf.on.update(*ENVIRONMENTS, field="spec", id="wake-releases")
def environment_edited(namespace: str | None, **_: Any) -> None:
    """Without the watches, every release of the namespace looks again at
    once (with them, their index already woke the releases that name it)."""
    wake_releases(namespace or "default")
