"""A release sleeps until something it reads changes or the time it asked
for comes: no polling at rest, and a change wakes it at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import kopf
import pytest

from modelgate import handlers
from modelgate.handlers import common, modelrelease
from tests.support.runtimes import bare_runtime

KEY, UID = "team/m-1", "uid-1"


class Synced:
    def synced(self) -> bool:
        return True


def body(phase: str, observed: int = 1) -> kopf.Body:
    raw = {
        "metadata": {"name": "m-1", "namespace": "team", "uid": UID, "generation": 1},
        "status": {"phase": phase, "observedGeneration": observed},
    }
    return cast(kopf.Body, raw)


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> tuple[handlers.Runtime, list[float]]:
    runtime = bare_runtime()
    runtime.cache = cast(Any, Synced())
    monkeypatch.setattr(common, "_runtime", runtime)
    seen: list[float] = []

    def look_again(_: kopf.Body) -> float | None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            # The core asks to be looked at again in 0.3 s (a soak's end).
            runtime.due[UID] = time.monotonic() + 0.3
        else:
            runtime.due.pop(UID, None)
        return None

    monkeypatch.setattr(modelrelease, "look_again", look_again)
    return runtime, seen


async def run_daemon(release: kopf.Body) -> asyncio.Task[None]:
    daemon: Any = modelrelease.release_daemon  # kopf types it with all its kwargs
    task: asyncio.Task[None] = asyncio.create_task(daemon(body=release, uid=UID))
    await asyncio.sleep(0.05)
    return task


def test_at_rest_it_looks_only_when_woken_or_due(
    looks: tuple[handlers.Runtime, list[float]],
) -> None:
    runtime, seen = looks

    async def scenario() -> None:
        task = await run_daemon(body("Released"))
        # At rest: no look without a reason (a poll would come every 0.5 s here).
        await asyncio.sleep(1.2)
        assert seen == []

        # A watch thread sees its Deployment change: it looks at once.
        threading.Thread(target=runtime.mark, args=(KEY,)).start()
        await until(lambda: len(seen) >= 1)
        assert KEY not in runtime.dirty  # taken

        # Then at the time it asked for (0.3 s later), and not again.
        await until(lambda: len(seen) >= 2)
        assert seen[1] - seen[0] >= 0.3
        await asyncio.sleep(1.2)
        assert len(seen) == 2

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert KEY not in runtime._wakeups  # unsubscribed: marks go nowhere

    asyncio.run(scenario())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


def test_a_change_before_the_daemon_starts_is_not_lost(
    looks: tuple[handlers.Runtime, list[float]],
) -> None:
    runtime, seen = looks
    runtime.mark(KEY)  # e.g. the watch's first listing, before kopf spawned it

    async def scenario() -> None:
        task = await run_daemon(body("Released"))
        await until(lambda: len(seen) >= 1)
        task.cancel()

    asyncio.run(scenario())


def test_the_waits_by_state() -> None:
    runtime = bare_runtime()
    resync = common.RESYNC_SECONDS
    # Without the watches: polled, ten times less often at rest.
    assert runtime.wait_seconds(UID, at_rest=False) == resync
    assert runtime.wait_seconds(UID, at_rest=True) == resync * common.AT_REST_FACTOR
    runtime.cache = cast(Any, Synced())
    assert runtime.wait_seconds(UID, at_rest=True) is None  # until woken
    assert runtime.wait_seconds(UID, at_rest=False) == resync  # GitOps, Argo CD
    runtime.due[UID] = time.monotonic() + 0.5
    wait = runtime.wait_seconds(UID, at_rest=True)
    assert wait is not None
    assert 0.4 < wait <= 0.5
    # A release that is not at rest: a changed generation not yet observed.
    assert not modelrelease.at_rest(body("Released", observed=0))
    assert modelrelease.at_rest(body("GateFailed"))
