"""Admission decisions: what the webhook rejects, warns about and stamps."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from modelgate.api import Environment, ModelRelease, load_documents
from modelgate.api.modelrelease import Approval
from modelgate.promotion.admission import (
    Requester,
    review_release,
    stamp_approvals,
    stamp_requests,
)
from tests.conftest import EXAMPLES

SAMPLE = EXAMPLES / "credit-risk"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ALICE = Requester("alice@example.com", ("system:authenticated", "ml-leads"))


def environments(**policy: Any) -> dict[str, Environment]:
    found = {}
    for document in load_documents((SAMPLE / "environments.yaml").read_text()):
        document["metadata"]["namespace"] = "team"
        if document["metadata"]["name"] == "production":
            document["spec"]["policy"].update(policy)
        environment = Environment.model_validate(document)
        found[environment.name] = environment
    return found


def release(name: str = "release.yaml", **changes: Any) -> ModelRelease:
    [document] = load_documents((SAMPLE / name).read_text())
    document["metadata"]["namespace"] = "team"
    document["spec"].update(changes)
    return ModelRelease.model_validate(document)


def test_the_seed_story_is_rejected_at_admission() -> None:
    review = review_release(release("release-backtest-leak.yaml"), environments(), ALICE)
    rules = {e.split(" violates rule ")[1].split(":")[0] for e in review.errors}
    assert rules == {"pattern", "forbid=backtest", "leakage"}
    assert all(
        e.startswith("environment production: FEATURE_STORE_URL='https://features.backtest")
        for e in review.errors
    )
    assert any("violates rule leakage:backtest" in e for e in review.errors)
    assert all("; fix: " in e for e in review.errors)


def test_a_good_release_passes() -> None:
    review = review_release(release(), environments(), ALICE)
    assert review.errors == []
    assert review.warnings == []


def test_problems_the_release_did_not_cause_are_warnings() -> None:
    envs = environments()
    document = envs["production"].model_dump(by_alias=True, exclude_none=True)
    document["spec"]["configRules"].append({"key": "OWNER", "required": True})
    envs["production"] = Environment.model_validate(document)
    review = review_release(release(), envs, ALICE)
    assert review.errors == []
    assert review.warnings == [
        "(from the Environment) environment production: OWNER=(missing) violates rule "
        "required: the key is required but missing or empty; fix: set OWNER in the "
        "Environment's config or in the release's promotion.config for production"
    ]


def test_missing_environment_is_a_warning_not_a_rejection() -> None:
    envs = environments()
    del envs["production"]
    review = review_release(release(), envs, ALICE)
    assert review.errors == []
    assert review.warnings == [
        "environment production does not exist in namespace team yet; the release will wait for it"
    ]


@pytest.mark.parametrize(
    ("approvers", "allowed"),
    [
        ([], True),
        (["alice@example.com"], True),
        (["group:ml-leads"], True),
        (["bob@example.com", "group:sre"], False),
    ],
)
def test_approvers_are_enforced(approvers: list[str], allowed: bool) -> None:
    approval = [{"environment": "production", "approvedBy": "alice@example.com"}]
    old = release()
    new = copy.deepcopy(old)
    new.spec.promotion.approvals = [Approval.model_validate(a) for a in approval]
    review = review_release(new, environments(approvers=approvers), ALICE, old)
    if allowed:
        assert review.errors == []
    else:
        assert review.errors == [
            "spec.promotion.approvals[0]: alice@example.com may not approve promotions to "
            "production; its policy.approvers are bob@example.com, group:sre: ask one of them"
        ]
    # An approval already there before the request is not re-judged.
    assert review_release(new, environments(approvers=approvers), ALICE, new).errors == []


def test_new_approvals_are_credited_to_the_requester() -> None:
    kept = Approval(environment="staging", approved_by="carol", approved_at="2026-11-01T00:00:00Z")
    forged = Approval(environment="production", approved_by="the-ceo")
    bare = Approval(environment="production", comment="CHG-42")
    stamped = stamp_approvals([kept], [kept, forged, bare], ALICE, NOW)
    assert stamped == [
        kept,
        Approval(
            environment="production",
            approved_by="alice@example.com",
            approved_at="2026-11-22T12:00:00Z",
        ),
        Approval(
            environment="production",
            approved_by="alice@example.com",
            approved_at="2026-11-22T12:00:00Z",
            comment="CHG-42",
        ),
    ]
    # Nothing new: nothing to stamp.
    assert stamp_approvals([kept], [kept], ALICE, NOW) is None


def test_requester_from_userinfo() -> None:
    assert Requester.from_userinfo({}) is None
    assert Requester.from_userinfo({"username": "bob", "groups": ["a"]}) == Requester("bob", ("a",))


def test_an_update_of_what_defines_the_model_is_rejected_with_the_fix() -> None:
    before = release()
    training = before.spec.training.wire()
    training["params"]["n_estimators"] = 500
    after = release(training=training)
    review = review_release(after, environments(), ALICE, before)
    assert len(review.errors) == 1
    assert review.errors[0].startswith("spec.training is immutable")
    assert "create a new ModelRelease" in review.errors[0]


def test_an_update_of_the_promotion_config_is_admitted() -> None:
    before = release()
    promotion = before.spec.promotion.wire()
    promotion["config"][0]["values"].append({"name": "LOG_LEVEL", "value": "warning"})
    review = review_release(release(promotion=promotion), environments(), ALICE, before)
    assert review.errors == []


def test_requests_added_or_renewed_are_credited_to_the_requester() -> None:
    body = release().wire()
    body["spec"]["promotion"]["rollbacks"] = [
        {"environment": "staging", "requestedAt": "2026-11-22T10:00:00Z", "requestedBy": "carol"}
    ]
    old = ModelRelease.model_validate(body)
    body["spec"]["retry"] = {"requestedAt": "2026-11-22T12:00:00Z", "requestedBy": "the-ceo"}
    body["spec"]["promotion"]["rollbacks"].append(
        {"environment": "production", "requestedAt": "2026-11-22T12:00:00Z"}
    )
    body["spec"]["promotion"]["reverifications"] = [
        {"environment": "staging", "requestedAt": "2026-11-22T12:00:00Z", "requestedBy": "bob"}
    ]
    new = ModelRelease.model_validate(body)
    changes = stamp_requests(old, new, ALICE)
    assert changes["retry"]["requestedBy"] == "alice@example.com"
    assert "abort" not in changes
    rollbacks = changes["promotion"]["rollbacks"]
    # Carol's request was there before: hers it stays.
    assert [r["requestedBy"] for r in rollbacks] == ["carol", "alice@example.com"]
    assert changes["promotion"]["reverifications"][0]["requestedBy"] == "alice@example.com"
    # Nothing renewed: nothing to stamp.
    assert stamp_requests(new, new, ALICE) == {}
