"""The operator process: kopf settings at startup, login, metrics and webhook servers."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import kopf

from modelgate.backends.kube import (
    GROUP,
)
from modelgate.handlers import common
from modelgate.handlers.common import Runtime, runtime
from modelgate.memory import MemoryTrimmer
from modelgate.settings import OperatorSettings, priority_by_age

_STARTED_NS = time.time_ns()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    operator_settings = OperatorSettings.from_env()
    # The server ends a watch after this long and kopf re-lists; a stream
    # that goes silent (a proxy holding it open) is dropped a little later.
    settings.watching.server_timeout = operator_settings.watch_seconds
    settings.watching.client_timeout = operator_settings.watch_seconds * 1.1 + 5
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = operator_settings.api_timeout
    settings.networking.connect_timeout = min(10.0, operator_settings.api_timeout)
    settings.execution.max_workers = 8
    settings.posting.level = logging.WARNING
    # Even with --verbose: the AWS SDK's debug lines carry signed request
    # headers (the access key id) and every byte sent.
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings.peering.name = "modelgate"
    # kopf pauses every replica when two share a priority: each one needs its
    # own, and the oldest keeps acting (no hand-over while it lives).
    settings.peering.priority = (
        operator_settings.peering_priority
        if operator_settings.peering_priority is not None
        else priority_by_age(_STARTED_NS)
    )
    settings.peering.lifetime = operator_settings.peering_lifetime
    patterns = namespace_patterns(operator_settings.namespaces)
    if operator_settings.cache and patterns:
        common.logger.warning(
            "namespace patterns %s: reading from the API server on every reconcile (the "
            "cache watches namespaces by name)",
            patterns,
        )
    elif operator_settings.cache:
        # Listed before the first reconcile, so that it reads the watches (an
        # API server that does not answer in time: reads go to it meanwhile).
        runtime().start_cache().wait_synced(operator_settings.api_timeout)
    rt = runtime()
    if rt.trimmer is None:
        rt.trimmer = MemoryTrimmer().start()
    if operator_settings.metrics_port and rt.metrics_server is None:
        rt.metrics_server = rt.metrics.serve(
            operator_settings.metrics_port, unready=lambda: unready(operator_settings, rt)
        )
    if operator_settings.webhook_port:
        settings.admission.server = webhook_server(operator_settings)
        if operator_settings.webhook_managed:
            # kopf creates and updates the webhook configurations itself.
            settings.admission.managed = GROUP


def unready(settings: OperatorSettings, rt: Runtime) -> str | None:
    """What the operator still waits for before it can serve (its readiness
    probe; liveness is kopf's own /healthz): its watches listed, and its
    admission webhook listening, which it does once its certificate loaded."""
    if rt.cache is not None and not rt.cache.synced():
        return "waiting for the watches to list"
    if settings.webhook_port and not _listening(settings.webhook_port):
        return f"waiting for the admission webhook to listen on port {settings.webhook_port}"
    return None


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def webhook_server(settings: OperatorSettings) -> kopf.WebhookServer:
    """The admission webhook endpoint: POST /<handler id> (e.g. /validate-release)."""
    if not settings.webhook_insecure and not (settings.webhook_cert and settings.webhook_key):
        raise ValueError(
            "MODELGATE_WEBHOOK_PORT is set but MODELGATE_WEBHOOK_CERT and "
            "MODELGATE_WEBHOOK_KEY are not: mount a TLS certificate (e.g. from cert-manager) "
            "and point both at it"
        )
    return kopf.WebhookServer(
        addr="0.0.0.0",  # the API server calls in through the Service
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=settings.webhook_cert,
        pkeyfile=settings.webhook_key,
        insecure=settings.webhook_insecure,
    )


@kopf.on.cleanup()
def stop_metrics(**_: Any) -> None:
    current = common._runtime
    if current is None:
        return
    current.stop_cache()
    if current.trimmer is not None:
        current.trimmer.stop()
        current.trimmer = None
    if current.metrics_server is not None:
        current.metrics_server.shutdown()
        current.metrics_server.server_close()
        current.metrics_server = None


# Requests kopf may have open at once besides its watches. Its own session
# has no limit: judging a thousand new releases at once opened about 760 TLS
# connections (each with 256 KiB of buffers), and the process kept the memory.
API_CONNECTIONS = 32
# Watches kopf keeps open per watched namespace (the three kinds) and besides
# (resource discovery, peering), each holding a connection.
WATCHES_PER_NAMESPACE = 3
OTHER_WATCHES = 8


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    server = os.environ.get("MODELGATE_API_SERVER")
    info = kopf.ConnectionInfo(server=server, insecure=True) if server else None
    info = info or kopf.login_via_client(**kwargs)
    if info is None:
        return None
    return bounded_session(info, connection_limit(OperatorSettings.from_env().namespaces))


def namespace_patterns(namespaces: Sequence[str]) -> list[str]:
    """The watched namespaces given as globs (kopf matches them), not names."""
    return [n for n in namespaces if any(c in n for c in "*?[!")]


def connection_limit(namespaces: Sequence[str]) -> int:
    """Connections to the API server: the requests' share plus one per watch;
    0 (no limit, kopf's default) when namespace patterns make the number of
    watches unknown."""
    if namespace_patterns(namespaces):
        return 0
    return API_CONNECTIONS + WATCHES_PER_NAMESPACE * max(1, len(namespaces)) + OTHER_WATCHES


def bounded_session(info: kopf.ConnectionInfo, limit: int) -> kopf.AiohttpSession:
    """kopf's session for these credentials, with at most ``limit`` connections."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),  # the token or basic auth, too
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )
