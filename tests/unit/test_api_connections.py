"""kopf's connections to the API server are bounded: a thousand releases
judged at once once opened ~760 TLS connections whose buffers stayed in
memory. Each watch holds one, so the bound leaves room for every watch."""

from __future__ import annotations

import asyncio

import kopf

from modelgate.handlers.lifecycle import (
    API_CONNECTIONS,
    OTHER_WATCHES,
    WATCHES_PER_NAMESPACE,
    bounded_session,
    connection_limit,
)


def test_the_limit_leaves_a_connection_for_every_watch() -> None:
    assert connection_limit([]) == API_CONNECTIONS + WATCHES_PER_NAMESPACE + OTHER_WATCHES
    twenty = [f"team-{i}" for i in range(20)]
    assert connection_limit(twenty) == API_CONNECTIONS + 20 * WATCHES_PER_NAMESPACE + OTHER_WATCHES
    # Patterns: how many namespaces match is unknown, so no limit (kopf's own).
    assert connection_limit(["team-*"]) == 0


def test_the_session_keeps_the_credentials_and_the_limit() -> None:
    info = kopf.ConnectionInfo(
        server="https://api.example.com:6443",
        token="secret-token",
        default_namespace="team",
        insecure=True,
    )

    async def build() -> tuple[kopf.AiohttpSession, int, str | None]:
        made = bounded_session(info, 43)
        try:
            connector = made.aiohttp_session.connector
            assert connector is not None
            return made, connector.limit, made.aiohttp_session.headers.get("Authorization")
        finally:
            await made.aiohttp_session.close()

    made, limit, authorization = asyncio.run(build())
    assert limit == 43
    assert authorization == "Bearer secret-token"
    assert made.server == "https://api.example.com:6443"
    assert made.default_namespace == "team"
