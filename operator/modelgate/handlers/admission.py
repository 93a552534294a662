"""Admission webhooks (registered when MODELGATE_WEBHOOK_PORT is set).

They reject what the reconciler would only refuse later, and record who
approved; the decisions are in :mod:`modelgate.promotion.admission`.
Endpoints: POST /validate-release, /stamp-approvals, /validate-environment,
/validate-qualitygate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from modelgate.api.common import ResourceModel
from modelgate.api.environment import Environment
from modelgate.api.loader import format_validation_error
from modelgate.api.modelrelease import ModelRelease
from modelgate.api.qualitygate import QualityGate
from modelgate.handlers.common import ENVIRONMENTS, GATES, RELEASES, list_environments, runtime
from modelgate.promotion.admission import (
    Requester,
    review_release,
    stamp_approvals,
    stamp_requests,
)

ResourceT = TypeVar("ResourceT", bound=ResourceModel)


def _admitted(model: type[ResourceT], body: Mapping[str, Any]) -> ResourceT:
    try:
        return model.model_validate(dict(body))
    except ValidationError as error:
        raise kopf.AdmissionError("; ".join(format_validation_error(error)), code=422) from error


def _spec_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return old is None or dict(old.get("spec") or {}) != dict(new.get("spec") or {})


@kopf.on.validate(*RELEASES, id="validate-release", operations=["CREATE", "UPDATE"])
def validate_release(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    warnings: list[str],
    **kwargs: Any,
) -> None:
    old: kopf.Body | None = kwargs.get("old")  # kopf passes it; its protocol omits it
    if not _spec_changed(old, body):
        return  # metadata or finalizer updates (the operator's own) always pass
    release = _admitted(ModelRelease, body)
    previous: ModelRelease | None = None
    if old is not None:
        with contextlib.suppress(ValidationError):
            previous = ModelRelease.model_validate(dict(old))
    environments = list_environments(runtime(), release.namespace)
    review = review_release(
        release, environments, Requester.from_userinfo(dict(userinfo)), previous
    )
    warnings.extend(review.warnings)
    if review.errors:
        raise kopf.AdmissionError("; ".join(review.errors), code=422)


@kopf.on.mutate(*RELEASES, id="stamp-approvals", operations=["CREATE", "UPDATE"])
def stamp_release_approvals(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    **kwargs: Any,
) -> None:
    """Approvals and requests added in a request are credited to whoever sent it."""
    old: kopf.Body | None = kwargs.get("old")
    requester = Requester.from_userinfo(dict(userinfo))
    if requester is None:
        return
    try:
        release = ModelRelease.model_validate(dict(body))
        previous = ModelRelease.model_validate(dict(old)) if old is not None else None
    except ValidationError:
        return  # the validating webhook says why
    before = previous.spec.promotion.approvals if previous is not None else []
    stamped = stamp_approvals(
        before, release.spec.promotion.approvals, requester, datetime.now(UTC)
    )
    changes = stamp_requests(previous, release, requester)
    if stamped is not None:
        changes.setdefault("promotion", {})["approvals"] = [a.wire() for a in stamped]
    for key, value in changes.items():
        patch.spec[key] = value


@kopf.on.validate(*ENVIRONMENTS, id="validate-environment", operations=["CREATE", "UPDATE"])
def validate_environment(body: kopf.Body, **kwargs: Any) -> None:
    if _spec_changed(kwargs.get("old"), body):
        _admitted(Environment, body)


@kopf.on.validate(*GATES, id="validate-qualitygate", operations=["CREATE", "UPDATE"])
def validate_gate(body: kopf.Body, **kwargs: Any) -> None:
    if _spec_changed(kwargs.get("old"), body):
        _admitted(QualityGate, body)
