"""Step 5 (releases of registered models): the MLflow registry kept in step.

While the release is live in an environment, its registered version carries
that environment's alias (``mlflow.aliases``, else the environment's name)
and tags (release, gate outcome, config hash); once it is rolled back there
the alias goes to the version put back, or away. Each update is asked of the
driver until it is recorded as done (a failure is tried again 30 s later);
none of it ever blocks or delays a release, least of all a rollback.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from modelgate.api.common import format_time, parse_time
from modelgate.api.modelrelease import (
    EnvironmentPhase,
    ModelReleaseSpec,
    ModelReleaseStatus,
    RegistrySync,
)
from modelgate.promotion.context import Context, min_delay
from modelgate.promotion.keys import release_key
from modelgate.promotion.plan import SyncRegistry

RETRY = timedelta(seconds=30)


def sync_registry(ctx: Context) -> None:
    """Ask for the registry updates the environments' progress calls for."""
    spec = ctx.release.spec.mlflow
    resolved = ctx.status.source.mlflow if ctx.status.source is not None else None
    if spec is None or resolved is None:
        return
    done = {s.environment: s for s in resolved.synced}
    secret = spec.credentials_secret
    for entry in ctx.status.environments:
        if entry.phase == EnvironmentPhase.DEPLOYED:
            reason = "Live"
        elif entry.phase == EnvironmentPhase.ROLLED_BACK:
            reason = "RolledBack"
        else:
            continue
        record = done.get(entry.name)
        if record is not None and record.reason == reason:
            if record.state == "Synced":
                continue
            due = parse_time(record.at) + RETRY
            if ctx.now < due:
                ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, due - ctx.now)
                continue
        gate = ctx.status.gate.outcome if ctx.status.gate is not None else "none"
        tags = (
            ("modelgate.dev/release", release_key(ctx.release)),
            ("modelgate.dev/gate", str(gate)),
            (f"modelgate.dev/{entry.name}.config-hash", entry.config_hash or ""),
        )
        ctx.plan.actions.append(
            SyncRegistry(
                environment=entry.name,
                tracking_uri=spec.tracking_uri,
                name=spec.name,
                alias=spec.aliases.get(entry.name, entry.name),
                version=resolved.version,
                rolled_back=reason == "RolledBack",
                tags=tags if reason == "Live" else (),
                credentials=(
                    (secret.name, secret.token_key, secret.username_key, secret.password_key)
                    if secret is not None
                    else None
                ),
            )
        )


def record_sync(
    status: ModelReleaseStatus,
    action: SyncRegistry,
    ok: bool,
    message: str,
    version: str | None,
    now: datetime,
) -> None:
    """What the driver did with one SyncRegistry, kept in status."""
    resolved = status.source.mlflow if status.source is not None else None
    if resolved is None:
        return
    record = RegistrySync(
        environment=action.environment,
        alias=action.alias,
        reason="RolledBack" if action.rolled_back else "Live",
        state="Synced" if ok else "Failed",
        version=version,
        message=message[:512],
        at=format_time(now),
    )
    resolved.synced = [
        *(s for s in resolved.synced if s.environment != action.environment),
        record,
    ]


def registered_version(
    spec: ModelReleaseSpec | None, status: ModelReleaseStatus | None, action: SyncRegistry
) -> str | None:
    """The version a release put back by a rollback carries, when it is a
    release of the same registered model (else the alias has nothing to name)."""
    source = spec.mlflow if spec is not None else None
    resolved = status.source.mlflow if status is not None and status.source else None
    if source is None or resolved is None or source.name != action.name:
        return None
    if source.tracking_uri.rstrip("/") != action.tracking_uri.rstrip("/"):
        return None
    return resolved.version
