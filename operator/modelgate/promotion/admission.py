"""Admission decisions for ModelReleases. Pure: the webhook handlers supply
the request's objects and identity and apply what this returns.

- An update that changes what defines the model (model, serving, image,
  training) is rejected, as the CRD's transition rules do.
- A release is rejected when its own config overrides already break a rule
  (or leak another environment's identifiers) of an environment it names;
  problems in an Environment's own config are warnings, since the release
  did not cause them.
- Approvals added or changed in a request are stamped with the requesting
  user and the time (whatever the request claimed), and refused when the
  environment lists ``policy.approvers`` and the user is not among them.
- Requests added or renewed (retry, abort, rollbacks, reverifications) are
  credited to the requesting user likewise (requestedBy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelgate.api.common import format_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import (
    Approval,
    EnvironmentRequest,
    ModelRelease,
    Request,
    immutable_changes,
)
from modelgate.envconfig import merge_config, validate_config


@dataclass(frozen=True)
class Requester:
    """Who sends the request (the admission request's userInfo)."""

    username: str
    groups: tuple[str, ...] = ()

    @classmethod
    def from_userinfo(cls, userinfo: Mapping[str, object] | None) -> Requester | None:
        if not userinfo or not userinfo.get("username"):
            return None
        groups = userinfo.get("groups")
        names = tuple(str(g) for g in groups) if isinstance(groups, list | tuple) else ()
        return cls(str(userinfo["username"]), names)

    def matches(self, approvers: Sequence[str]) -> bool:
        for approver in approvers:
            if approver.startswith("group:"):
                if approver.removeprefix("group:") in self.groups:
                    return True
            elif approver == self.username:
                return True
        return False


@dataclass
class Review:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _key(approval: Approval) -> tuple[str, str | None]:
    return approval.environment, approval.comment


def new_approvals(old: Sequence[Approval], new: Sequence[Approval]) -> list[int]:
    """Indexes in ``new`` of approvals the request adds or changes."""
    before = {_key(a): a for a in old}
    return [index for index, approval in enumerate(new) if before.get(_key(approval)) != approval]


def stamp_approvals(
    old: Sequence[Approval], new: Sequence[Approval], requester: Requester, now: datetime
) -> list[Approval] | None:
    """``new`` with added or changed approvals credited to the requester, or
    None when nothing needs stamping."""
    changed = [
        i
        for i in new_approvals(old, new)
        if new[i].approved_by != requester.username or new[i].approved_at is None
    ]
    if not changed:
        return None
    stamped = list(new)
    for index in changed:
        stamped[index] = new[index].model_copy(
            update={"approved_by": requester.username, "approved_at": format_time(now)}
        )
    return stamped


def stamp_requests(
    old: ModelRelease | None, new: ModelRelease, requester: Requester
) -> dict[str, Any]:
    """The spec changes that credit each request the update adds or renews
    (a new requestedAt: spec.retry, spec.abort, spec.promotion.rollbacks,
    spec.promotion.reverifications) to whoever sent it; empty when none is
    needed."""
    changes: dict[str, Any] = {}
    for name in ("retry", "abort"):
        asked: Request | None = getattr(new.spec, name)
        before: Request | None = getattr(old.spec, name) if old is not None else None
        renewed = before is None or asked is None or before.requested_at != asked.requested_at
        if asked is not None and renewed and asked.requested_by != requester.username:
            changes[name] = asked.model_copy(update={"requested_by": requester.username}).wire()
    promotion: dict[str, Any] = {}
    for name in ("rollbacks", "reverifications"):
        earlier: dict[str, EnvironmentRequest] = {
            r.environment: r for r in (getattr(old.spec.promotion, name) if old else [])
        }
        stamped, changed = [], False
        for request in getattr(new.spec.promotion, name):
            prior = earlier.get(request.environment)
            renewed = prior is None or prior.requested_at != request.requested_at
            credited = request
            if renewed and request.requested_by != requester.username:
                credited = request.model_copy(update={"requested_by": requester.username})
                changed = True
            stamped.append(credited.wire())
        if changed:
            promotion[name] = stamped
    if promotion:
        changes["promotion"] = promotion
    return changes


def review_release(
    release: ModelRelease,
    environments: Mapping[str, Environment],
    requester: Requester | None,
    old: ModelRelease | None = None,
) -> Review:
    review = Review()
    if old is not None:
        review.errors.extend(immutable_changes(old.spec, release.spec))
    for name in release.spec.promotion.environments:
        environment = environments.get(name)
        if environment is None:
            review.warnings.append(
                f"environment {name} does not exist in namespace {release.namespace} yet; "
                "the release will wait for it"
            )
            continue
        overridden = {item.name for item in release.overrides_for(name)}
        merged = merge_config(environment, release.overrides_for(name))
        for violation in validate_config(environment, merged, environments.values()):
            if violation.key in overridden:
                review.errors.append(violation.describe())
            else:
                review.warnings.append(f"(from the Environment) {violation.describe()}")
    before = old.spec.promotion.approvals if old is not None else []
    approvals = release.spec.promotion.approvals
    for index in new_approvals(before, approvals):
        approval = approvals[index]
        environment = environments.get(approval.environment)
        allowed = environment.spec.policy.approvers if environment is not None else []
        if not allowed:
            continue
        if requester is None or not requester.matches(allowed):
            who = requester.username if requester is not None else "an unknown user"
            review.errors.append(
                f"spec.promotion.approvals[{index}]: {who} may not approve promotions to "
                f"{approval.environment}; its policy.approvers are {', '.join(allowed)}: "
                "ask one of them"
            )
    return review
