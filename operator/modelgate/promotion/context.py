"""The state of one reconcile pass, and how it records progress and stalls."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    ModelRelease,
    ModelReleaseStatus,
)
from modelgate.promotion import conditions as cond
from modelgate.promotion.keys import serving_config
from modelgate.promotion.plan import Plan

WAIT_FOR_REFERENCE = timedelta(seconds=30)
WAIT_FOR_ROLLOUT = timedelta(seconds=10)


def runs_every_rollout(environment: Environment) -> str | None:
    """A driver that runs every policy.rollout (local mode)."""
    return None


@dataclass
class Context:
    release: ModelRelease
    now: datetime
    previous: ModelReleaseStatus
    status: ModelReleaseStatus
    plan: Plan
    environments: dict[str, Environment]
    # The operator's model server image (reference serving, built-in verification).
    server_image: str | None = None
    # Why the driver cannot run this environment's judged rollout beside the
    # live release (policy.rollout), or None when it can; a promotion it
    # cannot judge is blocked, saying why, rather than replace.
    rollout_unsupported: Callable[[Environment], str | None] = runs_every_rollout
    # How the driver's split reaches callers (status' judged.traffic); None:
    # the cluster's way (rollout.traffic_description).
    describe_traffic: Callable[[Environment], str] | None = None

    @property
    def image(self) -> str:
        """What is promoted: the release's image, or with serving ReferenceServer
        the reference server's (the release's own override first)."""
        spec = self.release.spec
        if spec.image is not None:
            return spec.image
        return self.server_image or ""

    @functools.cached_property
    def serving(self) -> dict[str, str]:
        """The artifact the reference server loads, once training has recorded
        it (asked for only while promoting, when the artifacts are final)."""
        return serving_config(self.release, self.status.artifacts)

    def condition(self, kind: str, ok: bool | None, reason: str, message: str) -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, kind, ok, reason, message, self.release.generation, self.now
        )


def min_delay(current: timedelta | None, new: timedelta) -> timedelta:
    return new if current is None else min(current, new)


def progressing(ctx: Context, reason: str, message: str) -> None:
    ctx.condition(cond.READY, False, reason, message)
    ctx.condition(cond.RECONCILING, True, reason, message)
    ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.STALLED)


def stalled(ctx: Context, reason: str, message: str) -> None:
    ctx.condition(cond.READY, False, reason, message)
    ctx.condition(cond.STALLED, True, reason, message)
    ctx.status.conditions = cond.remove_condition(ctx.status.conditions, cond.RECONCILING)
