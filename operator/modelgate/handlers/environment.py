"""Environment handlers: the promotion graph and the live config, judged by its rules."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from modelgate.api.environment import Environment
from modelgate.backends.informers import ENVIRONMENTS as CACHED_ENVIRONMENTS
from modelgate.backends.kube import (
    KubeTransientError,
)
from modelgate.handlers.common import (
    ENVIRONMENTS,
    RESYNC_SECONDS,
    list_environments,
    list_releases,
    look_and_record,
    measured,
    now_utc,
    report_invalid,
    runtime,
    transient,
    wake_releases,
)
from modelgate.promotion.conditions import set_condition
from modelgate.promotion.environment_status import environment_verdicts
from modelgate.promotion.wakeups import environment_key

# Without the watches (MODELGATE_CACHE=false) nothing says when another
# Environment or a live release changed: an Environment looks this many
# resync periods apart.
POLL_FACTOR = 4
# Woken, an Environment waits this long before judging: a burst of releases
# going live or leaving (an operator's first sight of many) is judged once.
SETTLE_SECONDS = 1.0


@kopf.on.resume(*ENVIRONMENTS)
@kopf.on.create(*ENVIRONMENTS)
@kopf.on.update(*ENVIRONMENTS, field="spec")
def environment_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    judge(body, patch)


def judge(body: kopf.Body, patch: kopf.Patch) -> None:
    """The Environment's conditions into ``patch`` (counted and timed)."""
    with measured("Environment"):
        _environment_changed(body, patch)


def _environment_changed(body: kopf.Body, patch: kopf.Patch) -> None:
    try:
        environment = Environment.model_validate(dict(body))
    except ValidationError as error:
        report_invalid("Environment", body, patch, error)
        return
    rt = runtime()
    # Its change handler and its daemon may judge at once: one at a time.
    with rt.locks[environment_key(environment.namespace, environment.name)]:
        _record_verdicts(environment, body, patch)


def _record_verdicts(environment: Environment, body: kopf.Body, patch: kopf.Patch) -> None:
    rt = runtime()
    try:
        peers = list_environments(rt, environment.namespace)
        releases = list_releases(rt, environment.namespace, live_in=environment.name)
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


@kopf.daemon(*ENVIRONMENTS, cancellation_timeout=1.0)
async def environment_daemon(body: kopf.Body, **_: Any) -> None:
    """An Environment's conditions read the Environments of its namespace and
    the config of the releases live in it: it is judged again when the
    watches say one of those changed (without them, every few resync
    periods). Its own spec changes are its change handler's."""
    rt = runtime()
    metadata = body.get("metadata") or {}
    key = environment_key(str(metadata.get("namespace")), str(metadata.get("name")))
    await rt.sleep_and_look(
        key,
        key,
        lambda: None if rt.cache_ready() else RESYNC_SECONDS * POLL_FACTOR,
        lambda: judge_again(body),
        settle=SETTLE_SECONDS,
    )


def judge_again(body: kopf.Body) -> float | None:
    """Judge outside a kopf handler and write the conditions; returns when to
    try again after a transient error."""
    return look_and_record(body, ENVIRONMENTS, CACHED_ENVIRONMENTS, judge)


@kopf.on.update(*ENVIRONMENTS, field="spec", id="wake-releases")
def environment_edited(namespace: str | None, **_: Any) -> None:
    """Without the watches, every release of the namespace looks again at
    once (with them, their index already woke the releases that name it)."""
    wake_releases(namespace or "default")
