"""An Environment is judged again when a peer or a release live in it
changes: no timer with the watches, a poll without them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import kopf
import pytest

from modelgate import handlers
from modelgate.handlers import common, environment
from tests.support.runtimes import bare_runtime

KEY = "Environment:team/staging"


class Synced:
    def synced(self) -> bool:
        return True


BODY = cast(kopf.Body, {"metadata": {"name": "staging", "namespace": "team", "uid": "u"}})


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> tuple[handlers.Runtime, list[float]]:
    runtime = bare_runtime()
    monkeypatch.setattr(common, "_runtime", runtime)
    seen: list[float] = []

    def judge_again(_: kopf.Body) -> float | None:
        seen.append(time.monotonic())
        return None

    monkeypatch.setattr(environment, "judge_again", judge_again)
    return runtime, seen


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def start() -> asyncio.Task[None]:
    daemon: Any = environment.environment_daemon  # kopf types it with all its kwargs
    task: asyncio.Task[None] = asyncio.create_task(daemon(body=BODY))
    return task


def test_with_the_watches_it_judges_only_when_woken(
    judged: tuple[handlers.Runtime, list[float]],
) -> None:
    runtime, seen = judged
    runtime.cache = cast(Any, Synced())

    async def scenario() -> None:
        task = start()
        await asyncio.sleep(1.2)
        assert seen == []  # no timer
        # A watch thread sees releases go live here, three in a burst:
        # judged once, after the burst settled.
        marked = time.monotonic()
        for _ in range(3):
            threading.Thread(target=runtime.mark, args=(KEY,)).start()
            await asyncio.sleep(0.05)
        await until(lambda: len(seen) == 1)
        assert seen[0] - marked >= environment.SETTLE_SECONDS
        assert KEY not in runtime.dirty
        await asyncio.sleep(environment.SETTLE_SECONDS + 0.5)
        assert len(seen) == 1
        await stopped(task)
        assert KEY not in runtime._wakeups

    asyncio.run(scenario())


def test_without_the_watches_it_polls(
    judged: tuple[handlers.Runtime, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, seen = judged
    monkeypatch.setattr(environment, "RESYNC_SECONDS", 0.1)  # polls every 0.4 s

    async def scenario() -> None:
        task = start()
        await until(lambda: len(seen) >= 2)
        assert seen[1] - seen[0] >= 0.4 * 0.9
        await stopped(task)

    asyncio.run(scenario())
