"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(f"{name}={value!r} is not a number") from error


Sizes = dict[str, dict[str, str]]  # requests/limits -> resource -> quantity

# What the operator's pods get for every resource their release does not
# size itself (like a LimitRange the operator brings): requests so the
# scheduler places them, memory and ephemeral-storage limits so one pod
# cannot starve a node. No CPU limits: a throttled trainer or model server
# only gets slower, while requests already guarantee each its share.
DEFAULT_WORKLOAD_RESOURCES: dict[str, Sizes] = {
    # Training and import runs (their fetch step too).
    "training": {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "4Gi", "ephemeral-storage": "8Gi"},
    },
    # spec.evaluation.resources sizes cpu and memory (with its own defaults).
    "evaluation": {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "4Gi", "ephemeral-storage": "8Gi"},
    },
    "verification": {
        "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
        "limits": {"memory": "1Gi", "ephemeral-storage": "1Gi"},
    },
    # The model's server (the reference server or the release's own).
    "serving": {
        "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "256Mi"},
        "limits": {"memory": "4Gi", "ephemeral-storage": "8Gi"},
    },
    # The step that lays a model file out for a server of the release's own.
    "layout": {
        "requests": {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
        "limits": {"memory": "512Mi", "ephemeral-storage": "8Gi"},
    },
}
WORKLOAD_RESOURCES = "MODELGATE_WORKLOAD_RESOURCES"


def workload_resources(text: str | None) -> dict[str, Sizes]:
    """The defaults, with what ``text`` (JSON: workload -> requests/limits ->
    resource -> quantity) gives in place of a workload's requests or limits."""
    found = {
        kind: {k: dict(v) for k, v in sizes.items()}
        for kind, sizes in DEFAULT_WORKLOAD_RESOURCES.items()
    }
    if not text:
        return found
    try:
        given = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{WORKLOAD_RESOURCES} is not JSON: {error}") from error
    if not isinstance(given, dict):
        raise ValueError(f"{WORKLOAD_RESOURCES} must map workloads to their resources")
    for kind, sizes in given.items():
        if kind not in found:
            raise ValueError(
                f"{WORKLOAD_RESOURCES}: unknown workload {kind!r}; use {', '.join(found)}"
            )
        if not isinstance(sizes, dict) or set(sizes) - {"requests", "limits"}:
            raise ValueError(f"{WORKLOAD_RESOURCES}.{kind}: give requests and/or limits")
        for part, quantities in sizes.items():
            if not isinstance(quantities, dict) or not all(
                isinstance(k, str) and isinstance(v, str | int) for k, v in quantities.items()
            ):
                raise ValueError(
                    f"{WORKLOAD_RESOURCES}.{kind}.{part}: map resource names to quantities, "
                    'e.g. {"memory": "2Gi"}'
                )
            found[kind][part] = {k: str(v) for k, v in quantities.items()}
    return found


@dataclass(frozen=True)
class PrometheusSettings:
    """Where Prometheus answers and how to authenticate (the chart's
    ``prometheus`` values): a bearer token file (e.g. a mounted Secret) or a
    user name with a password file."""

    url: str
    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PrometheusSettings | None:
        url = env.get("MODELGATE_PROMETHEUS_URL", "").strip()
        if not url:
            return None
        timeout = env.get("MODELGATE_PROMETHEUS_TIMEOUT", "10")
        try:
            seconds = float(timeout)
        except ValueError as error:
            raise ValueError(
                f"MODELGATE_PROMETHEUS_TIMEOUT={timeout!r} is not a number of seconds"
            ) from error
        return cls(
            url=url,
            bearer_token_file=env.get("MODELGATE_PROMETHEUS_BEARER_TOKEN_FILE") or None,
            username=env.get("MODELGATE_PROMETHEUS_USERNAME") or None,
            password_file=env.get("MODELGATE_PROMETHEUS_PASSWORD_FILE") or None,
            ca_file=env.get("MODELGATE_PROMETHEUS_CA_FILE") or None,
            timeout_seconds=seconds,
        )


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator needs to know about its surroundings."""

    # Artifact store (S3 or S3-compatible).
    s3_bucket: str = "modelgate-artifacts"
    s3_prefix: str = "modelgate"
    s3_endpoint: str | None = None
    s3_path_style: bool = False
    s3_region: str | None = None
    # Secret (in each release's namespace) with AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY for training Jobs; mounted by reference only.
    s3_secret: str | None = "modelgate-s3"
    # How often every release is reconciled even without events.
    resync_seconds: float = 15.0
    # Finished training Jobs are garbage-collected after this long.
    job_ttl_seconds: int = 86400
    # Port the served model listens on (the reference server's default).
    model_port: int = 8080
    # Which namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    # GitOps: where clones are kept, who commits, how often remotes are fetched.
    git_cache: str = "/tmp/modelgate-git"
    git_author: str = "Modelgate <modelgate@modelgate.dev>"
    git_fetch_seconds: float = 5.0
    # Prometheus /metrics on this port (0: not served).
    metrics_port: int = 0
    # Admission webhooks: served only when a port is set. TLS from the files
    # (e.g. a cert-manager Secret); insecure HTTP is for tests only.
    webhook_port: int | None = None
    webhook_host: str | None = None
    webhook_cert: str | None = None
    webhook_key: str | None = None
    webhook_insecure: bool = False
    # Let the operator create and update its webhook configurations.
    webhook_managed: bool = False
    # The reference model server image (serving ReferenceServer and the
    # built-in verification run it); the chart sets the operator's own image.
    server_image: str | None = None
    # Seconds an API request may take before it counts as failed (retried).
    api_timeout: float = 30.0
    # Seconds the API server keeps a watch open before kopf re-lists.
    watch_seconds: int = 300
    # Read Jobs, Deployments, Environments, QualityGates and ModelReleases
    # from watches kept in memory (a release at rest then costs no request);
    # off: every reconcile reads them from the API server.
    cache: bool = True
    # Peering: the live replica with the highest priority acts, the others
    # wait. None: derived from the start time, so the oldest replica keeps
    # acting and a new or restarted one never takes over from a live one.
    peering_priority: int | None = None
    # Seconds a replica's peering record stays valid without a keep-alive:
    # the bound on how long a killed replica blocks the others.
    peering_lifetime: int = 60
    # Where analysis queries go (None: an analysis says there is no Prometheus).
    prometheus: PrometheusSettings | None = None
    # Requests and limits of the operator's pods, by workload, where the
    # release does not size them (see DEFAULT_WORKLOAD_RESOURCES).
    workloads: Mapping[str, Sizes] = field(
        default_factory=lambda: workload_resources(None), hash=False
    )

    @classmethod
    def from_env(cls) -> OperatorSettings:
        namespaces = tuple(
            n.strip() for n in os.environ.get("MODELGATE_NAMESPACES", "").split(",") if n.strip()
        )
        return cls(
            s3_bucket=os.environ.get("MODELGATE_S3_BUCKET", cls.s3_bucket),
            s3_prefix=os.environ.get("MODELGATE_S3_PREFIX", cls.s3_prefix),
            s3_endpoint=os.environ.get("MODELGATE_S3_ENDPOINT") or None,
            s3_path_style=_flag("MODELGATE_S3_PATH_STYLE", False),
            s3_region=os.environ.get("AWS_REGION") or None,
            s3_secret=os.environ.get("MODELGATE_S3_SECRET", "modelgate-s3") or None,
            resync_seconds=_number("MODELGATE_RESYNC_SECONDS", cls.resync_seconds),
            job_ttl_seconds=int(_number("MODELGATE_JOB_TTL_SECONDS", cls.job_ttl_seconds)),
            model_port=int(_number("MODELGATE_MODEL_PORT", cls.model_port)),
            namespaces=namespaces,
            git_cache=os.environ.get("MODELGATE_GIT_CACHE", cls.git_cache),
            git_author=os.environ.get("MODELGATE_GIT_AUTHOR", cls.git_author),
            git_fetch_seconds=_number("MODELGATE_GIT_FETCH_SECONDS", cls.git_fetch_seconds),
            metrics_port=int(_number("MODELGATE_METRICS_PORT", cls.metrics_port)),
            webhook_port=int(_number("MODELGATE_WEBHOOK_PORT", 0)) or None,
            webhook_host=os.environ.get("MODELGATE_WEBHOOK_HOST") or None,
            webhook_cert=os.environ.get("MODELGATE_WEBHOOK_CERT") or None,
            webhook_key=os.environ.get("MODELGATE_WEBHOOK_KEY") or None,
            webhook_insecure=_flag("MODELGATE_WEBHOOK_INSECURE", False),
            webhook_managed=_flag("MODELGATE_WEBHOOK_MANAGED", False),
            server_image=os.environ.get("MODELGATE_SERVER_IMAGE") or None,
            api_timeout=_number("MODELGATE_API_TIMEOUT", cls.api_timeout),
            # Whole seconds: the API server takes timeoutSeconds as an integer.
            watch_seconds=int(_number("MODELGATE_WATCH_SECONDS", cls.watch_seconds)),
            cache=_flag("MODELGATE_CACHE", True),
            peering_priority=(
                int(_number("MODELGATE_PEERING_PRIORITY", 0))
                if os.environ.get("MODELGATE_PEERING_PRIORITY")
                else None
            ),
            peering_lifetime=int(_number("MODELGATE_PEERING_LIFETIME", cls.peering_lifetime)),
            prometheus=PrometheusSettings.from_env(os.environ),
            workloads=workload_resources(os.environ.get(WORKLOAD_RESOURCES)),
        )


# Priorities by age: later starts get lower numbers. Microseconds, so two
# replicas started together still differ (equal priorities pause them all).
_PRIORITY_EPOCH_US = 2**62


def priority_by_age(started_ns: int) -> int:
    """A peering priority that is higher the earlier the process started."""
    return _PRIORITY_EPOCH_US - started_ns // 1000
