"""A small HTTP router in front of a champion and a challenger, for local mode
(in a cluster the Gateway API's HTTPRoute does this): a weighted split, an
optional sticky assignment by a request header, and an optional mirror that
gets a copy of every request and whose answers are recorded, never returned.

The split is by buckets: each request (or each value of the sticky header,
hashed) falls in one of 10,000 buckets, and the challenger owns the first
``weight`` per cent of them. Raising the challenger's weight (a canary's
steps) therefore only ever moves users from the champion to the challenger,
never back; a user with the sticky header stays in one arm while the
weights stand.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

BUCKETS = 10_000
ARM_HEADER = "x-modelgate-arm"
# Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones the client recomputes.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class Split:
    """Where requests go: the challenger's share in per cent (0-100), the
    arms' URLs, the header that keeps a user in one arm, and a mirror."""

    champion: str
    challenger: str | None = None
    weight: int = 0
    sticky_header: str | None = None
    mirror: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"weight is the challenger's share in per cent (0-100): {self.weight}")
        if self.weight and self.challenger is None:
            raise ValueError("a weight above 0 needs a challenger to send requests to")


def bucket(sticky_value: str | None, draw: Callable[[], float] = random.random) -> int:
    """The request's bucket: the sticky value's hash, or a random one."""
    if sticky_value is None:
        return int(draw() * BUCKETS) % BUCKETS
    digest = hashlib.sha256(sticky_value.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def arm_of(split: Split, request_bucket: int) -> str:
    """``challenger`` for the first ``weight`` per cent of the buckets."""
    return "challenger" if request_bucket < split.weight * BUCKETS // 100 else "champion"


@dataclass(frozen=True)
class MirroredAnswer:
    """What the mirror answered to a copy of a request (never returned)."""

    path: str
    status: int | None  # None: it could not be reached
    body: bytes
    seconds: float
    error: str | None = None


@dataclass
class Router:
    split: Split
    # Called with each mirrored answer (shadow comparison records them).
    on_mirrored: Callable[[MirroredAnswer], None] = lambda _: None
    draw: Callable[[], float] = random.random
    timeout: float = 30.0
    served: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    _session: aiohttp.ClientSession | None = None
    _mirroring: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), auto_decompress=False
        )

    async def close(self) -> None:
        if self._mirroring:
            await asyncio.gather(*self._mirroring, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def app(self) -> web.Application:
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_route("*", "/{tail:.*}", self.handle)

        async def started(_: web.Application) -> None:
            await self.start()

        async def stopped(_: web.Application) -> None:
            await self.close()

        application.on_startup.append(started)
        application.on_cleanup.append(stopped)
        return application

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        header = self.split.sticky_header
        sticky = request.headers.get(header) if header else None
        arm = arm_of(self.split, bucket(sticky, self.draw))
        target = self.split.challenger if arm == "challenger" else self.split.champion
        assert target is not None  # Split refuses a weight without a challenger
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        if self.split.mirror is not None:
            task = asyncio.create_task(self._mirror(request.method, request.path_qs, headers, body))
            self._mirroring.add(task)
            task.add_done_callback(self._mirroring.discard)
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, target + request.path_qs, headers=headers, data=body
            ) as answer:
                content = await answer.read()
                self.served[arm] += 1
                forwarded = {
                    k: v for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED
                }
                forwarded[ARM_HEADER] = arm
                return web.Response(status=answer.status, body=content, headers=forwarded)
        except (aiohttp.ClientError, TimeoutError) as error:
            return web.json_response(
                {"error": f"the {arm} at {target} did not answer: {error or type(error).__name__}"},
                status=502,
                headers={ARM_HEADER: arm},
            )

    async def _mirror(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        assert self._session is not None
        assert self.split.mirror is not None
        started = time.monotonic()
        try:
            async with self._session.request(
                method, self.split.mirror + path, headers=headers, data=body
            ) as answer:
                content = await answer.read()
                self.on_mirrored(
                    MirroredAnswer(path, answer.status, content, time.monotonic() - started)
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            self.on_mirrored(
                MirroredAnswer(
                    path, None, b"", time.monotonic() - started, str(error) or type(error).__name__
                )
            )
