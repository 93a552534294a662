"""The operator's readiness (the chart's readinessProbe, /readyz beside
/metrics): ready once its watches listed and its webhook listens; liveness
stays kopf's own /healthz."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from modelgate.handlers.lifecycle import unready
from modelgate.metrics import Metrics
from modelgate.settings import OperatorSettings
from tests.support.s3server import free_port


@dataclass
class Cache:
    listed: bool

    def synced(self) -> bool:
        return self.listed


@dataclass
class Runtime:
    cache: Cache | None


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_ready_once_the_watches_listed_and_the_webhook_listens(listening: int) -> None:
    settings = OperatorSettings(webhook_port=listening)
    rt: Any = Runtime(Cache(listed=False))
    assert unready(settings, rt) == "waiting for the watches to list"
    rt.cache.listed = True
    assert unready(settings, rt) is None
    closed = free_port()
    assert unready(OperatorSettings(webhook_port=closed), rt) == (
        f"waiting for the admission webhook to listen on port {closed}"
    )
    # Without watches (MODELGATE_CACHE=false) or a webhook, nothing to wait for.
    assert unready(OperatorSettings(), Runtime(None)) is None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_readyz_answers_beside_metrics() -> None:
    waiting: list[str | None] = ["waiting for the watches to list"]
    port = free_port()
    server = Metrics().serve(port, addr="127.0.0.1", unready=lambda: waiting[0])
    try:
        assert _get(f"http://127.0.0.1:{port}/readyz") == (503, "waiting for the watches to list")
        waiting[0] = None
        assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "ready")
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "modelgate_build_info" in text
    finally:
        server.shutdown()
        server.server_close()
