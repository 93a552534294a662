"""The local traffic router (modelgate.serving.router) over HTTP: two backends
and a mirror answering on loopback, the router in front of them, requests
from a real client. The split follows the weight, a sticky header keeps a
user in one arm and only moves users towards the challenger as its weight
rises, the mirror gets a copy whose answer is recorded and never returned,
and an arm that does not answer is named."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from modelgate.serving.router import (
    ARM_HEADER,
    MirroredAnswer,
    Router,
    Split,
    arm_of,
    bucket,
)
from tests.support.s3server import free_port


def _backend(name: str, seen: list[tuple[str, bytes]]) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.path_qs, body))
        return web.json_response({"served_by": name, "path": request.path_qs})

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", answer)
    return application


@asynccontextmanager
async def serving(application: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(application)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


Scenario = Callable[[str, dict[str, list[tuple[str, bytes]]], Router], Awaitable[None]]


def run(split_of: Callable[[dict[str, str]], Split], scenario: Scenario, **router: Any) -> None:
    """Backends champion, challenger and mirror, the router in front with the
    split ``split_of`` their URLs make, and ``scenario`` against it."""

    async def main() -> None:
        seen: dict[str, list[tuple[str, bytes]]] = {"champion": [], "challenger": [], "mirror": []}
        async with (
            serving(_backend("champion", seen["champion"])) as champion,
            serving(_backend("challenger", seen["challenger"])) as challenger,
            serving(_backend("mirror", seen["mirror"])) as mirror,
        ):
            urls = {"champion": champion, "challenger": challenger, "mirror": mirror}
            routing = Router(split_of(urls), **router)
            async with serving(routing.app()) as url:
                await scenario(url, seen, routing)

    asyncio.run(main())


async def ask(
    session: aiohttp.ClientSession, url: str, user: str | None = None, body: bytes = b"{}"
) -> tuple[str, dict[str, Any]]:
    headers = {"x-user": user} if user is not None else {}
    async with session.post(url + "/v2/models/m/infer", data=body, headers=headers) as answer:
        return answer.headers[ARM_HEADER], json.loads(await answer.read())


def test_the_split_follows_the_weight() -> None:
    async def scenario(url: str, seen: dict[str, list[tuple[str, bytes]]], router: Router) -> None:
        async with aiohttp.ClientSession() as session:
            arms = [await ask(session, url) for _ in range(2000)]
        for arm, answer in arms:
            assert answer["served_by"] == arm
        share = sum(arm == "challenger" for arm, _ in arms) / len(arms)
        assert 0.27 < share < 0.33, share  # 30 % within 3 standard errors
        assert router.served == {"challenger": len(seen["challenger"]), "champion": 2000 - len(
            seen["challenger"]
        )}  # fmt: skip

    run(
        lambda urls: Split(urls["champion"], urls["challenger"], weight=30),
        scenario,
        draw=random.Random(5).random,
    )


def test_a_sticky_user_stays_in_one_arm() -> None:
    async def scenario(url: str, seen: dict[str, list[tuple[str, bytes]]], _: Router) -> None:
        async with aiohttp.ClientSession() as session:
            users = [f"user-{i}" for i in range(600)]
            first = {u: (await ask(session, url, u))[0] for u in users}
            again = {u: (await ask(session, url, u))[0] for u in users[:100]}
        assert all(again[u] == first[u] for u in again)
        share = sum(arm == "challenger" for arm in first.values()) / len(first)
        assert 0.44 < share < 0.56, share

    run(
        lambda urls: Split(urls["champion"], urls["challenger"], weight=50, sticky_header="x-user"),
        scenario,
    )


def test_raising_the_weight_only_moves_users_to_the_challenger() -> None:
    users = [f"user-{i}" for i in range(5000)]
    before = Split("http://a", "http://b", weight=10, sticky_header="x-user")
    after = Split("http://a", "http://b", weight=50, sticky_header="x-user")
    arms_before = {u: arm_of(before, bucket(u)) for u in users}
    arms_after = {u: arm_of(after, bucket(u)) for u in users}
    assert all(arms_after[u] == "challenger" for u in users if arms_before[u] == "challenger")
    moved = sum(arms_before[u] != arms_after[u] for u in users) / len(users)
    assert 0.37 < moved < 0.43, moved


def test_the_mirror_gets_a_copy_and_its_answers_are_recorded_never_returned() -> None:
    recorded: list[MirroredAnswer] = []

    async def scenario(url: str, seen: dict[str, list[tuple[str, bytes]]], router: Router) -> None:
        async with aiohttp.ClientSession() as session:
            answers = [await ask(session, url, body=f'{{"n": {i}}}'.encode()) for i in range(20)]
        await router.close()  # waits for the copies in flight
        assert {arm for arm, _ in answers} == {"champion"}
        assert {a["served_by"] for _, a in answers} == {"champion"}
        assert sorted(seen["mirror"]) == sorted(seen["champion"])
        assert len(recorded) == 20
        assert {r.status for r in recorded} == {200}
        assert {json.loads(r.body)["served_by"] for r in recorded} == {"mirror"}

    run(
        lambda urls: Split(urls["champion"], mirror=urls["mirror"]),
        scenario,
        on_mirrored=recorded.append,
    )


def test_a_mirror_that_does_not_answer_never_touches_the_callers_answer() -> None:
    recorded: list[MirroredAnswer] = []
    nowhere = f"http://127.0.0.1:{free_port()}"

    async def scenario(url: str, seen: dict[str, list[tuple[str, bytes]]], router: Router) -> None:
        async with aiohttp.ClientSession() as session:
            arm, answer = await ask(session, url)
        await router.close()
        assert (arm, answer["served_by"]) == ("champion", "champion")
        [missed] = recorded
        assert missed.status is None
        assert missed.error

    run(lambda urls: Split(urls["champion"], mirror=nowhere), scenario, on_mirrored=recorded.append)


def test_an_arm_that_does_not_answer_is_named() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"

    async def scenario(url: str, seen: dict[str, list[tuple[str, bytes]]], _: Router) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "/v2/models/m/infer", data=b"{}") as answer,
        ):
            said = json.loads(await answer.read())
        assert answer.status == 502
        assert answer.headers[ARM_HEADER] == "challenger"
        assert said["error"].startswith(f"the challenger at {nowhere} did not answer")

    run(lambda urls: Split(urls["champion"], nowhere, weight=100), scenario)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (lambda: Split("http://a", "http://b", weight=120), "weight is the challenger's share"),
        (lambda: Split("http://a", weight=10), "needs a challenger"),
    ],
)
def test_a_bad_split_is_refused(split: Callable[[], Split], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split()
