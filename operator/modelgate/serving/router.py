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

import argparse
import asyncio
import hashlib
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from modelgate.serving.shadow import MirroredAnswer, ShadowMetrics

__all__ = ["ARM_HEADER", "MirroredAnswer", "Router", "Split", "arm_of", "bucket", "main"]

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

    def app(self, own: Sequence[web.RouteDef] = ()) -> web.Application:
        """The application: ``own`` routes first, everything else forwarded."""
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.add_routes(own)
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
        # The champion's answer, for the mirror's comparison (never awaited by the caller).
        answered: asyncio.Future[tuple[int | None, bytes, float]] | None = None
        if self.split.mirror is not None:
            answered = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(
                self._mirror(request.method, request.path_qs, headers, body, answered)
            )
            self._mirroring.add(task)
            task.add_done_callback(self._mirroring.discard)
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.request(
                request.method, target + request.path_qs, headers=headers, data=body
            ) as answer:
                content = await answer.read()
                self.served[arm] += 1
                if answered is not None:
                    answered.set_result((answer.status, content, time.monotonic() - started))
                forwarded = {
                    k: v for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED
                }
                forwarded[ARM_HEADER] = arm
                return web.Response(status=answer.status, body=content, headers=forwarded)
        except (aiohttp.ClientError, TimeoutError) as error:
            if answered is not None:
                answered.set_result((None, b"", time.monotonic() - started))
            return web.json_response(
                {"error": f"the {arm} at {target} did not answer: {error or type(error).__name__}"},
                status=502,
                headers={ARM_HEADER: arm},
            )

    async def _mirror(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        answered: asyncio.Future[tuple[int | None, bytes, float]],
    ) -> None:
        assert self._session is not None
        assert self.split.mirror is not None
        started = time.monotonic()
        try:
            async with self._session.request(
                method, self.split.mirror + path, headers=headers, data=body
            ) as answer:
                content = await answer.read()
                mirrored = MirroredAnswer(path, answer.status, content, time.monotonic() - started)
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            mirrored = MirroredAnswer(path, None, b"", time.monotonic() - started, reason)
        status, champion, seconds = await answered
        self.on_mirrored(
            replace(
                mirrored, champion_status=status, champion_body=champion, champion_seconds=seconds
            )
        )


# -- the router as a program: ``python -m modelgate.serving.router`` ----------

# The router's own paths, never forwarded: under a prefix no model server uses.
OWN_PREFIX = "/-/router/"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m modelgate.serving.router",
        description="Split traffic between a live model and a challenger, or mirror it to "
        f"one; its metrics at {OWN_PREFIX}metrics, readiness at {OWN_PREFIX}ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--champion", required=True, help="URL of the live model")
    parser.add_argument("--challenger", help="URL of the new release")
    parser.add_argument("--weight", type=int, default=0, help="the challenger's share, per cent")
    parser.add_argument("--sticky-header", help="a header whose value keeps a caller in one arm")
    parser.add_argument("--mirror", help="URL that gets a copy of every request (a shadow)")
    parser.add_argument("--model", default="", help="the model label of the shadow's metrics")
    args = parser.parse_args(argv)
    try:
        Split(args.champion, args.challenger, args.weight, args.sticky_header, args.mirror)
    except ValueError as error:
        parser.error(str(error))
    return args


async def _serve(args: argparse.Namespace) -> None:
    registry = CollectorRegistry(auto_describe=True)
    shadow = ShadowMetrics(registry, args.model)
    split = Split(args.champion, args.challenger, args.weight, args.sticky_header, args.mirror)
    router = Router(split, on_mirrored=shadow.record)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True, "weight": split.weight})

    application = router.app(
        [web.get(OWN_PREFIX + "metrics", metrics), web.get(OWN_PREFIX + "ready", ready)]
    )
    runner = web.AppRunner(application)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
