"""What ``kubectl modelgate`` prints and writes, from objects as the API
server returns them (the real kubectl runs it in realcluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelgate.plugin import views
from modelgate.plugin.cli import main, parser
from modelgate.plugin.complete import candidates
from modelgate.plugin.verbs import (
    Refused,
    abort_patch,
    approval_patch,
    promote_patch,
    retry_patch,
    reverify_patch,
    rollback_patch,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _release(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "credit-risk-1-4-0", "namespace": "team", "resourceVersion": "42",
                     "creationTimestamp": "2026-12-07T11:00:00Z"},
        "spec": {"model": {"name": "credit-risk", "version": "1.4.0"},
                 "promotion": {"environments": ["staging", "production"],
                               "approvals": [{"environment": "staging", "approvedBy": "bob"}]}},
        "status": status,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("ago", "expected"),
    [(timedelta(seconds=30), "30s"), (timedelta(minutes=7, seconds=5), "7m5s"),
     (timedelta(minutes=42), "42m"), (timedelta(hours=4, minutes=12), "4h12m"),
     (timedelta(days=5, hours=3), "5d3h"), (timedelta(days=40), "40d")],
)  # fmt: skip
def test_ages_read_as_kubectl_prints_them(ago: timedelta, expected: str) -> None:
    assert views.age((NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ"), NOW) == expected
    assert views.age(None, NOW) == "<unknown>"


def test_the_releases_table_has_one_row_each_with_the_namespace_when_asked() -> None:
    release = _release(phase="Promoting", gate={"outcome": "Passed"}, liveIn="staging")
    assert views.releases_table([release], NOW, namespaces=False).splitlines() == [
        "NAME                MODEL         VERSION   PHASE       GATE     LIVE IN   AGE",
        "credit-risk-1-4-0   credit-risk   1.4.0     Promoting   Passed   staging   1h",
    ]
    first = views.releases_table([release], NOW, namespaces=True).splitlines()[1]
    assert first.split()[:2] == ["team", "credit-risk-1-4-0"]


def test_a_release_tree_shows_each_step_the_failing_checks_and_the_jobs() -> None:
    release = _release(
        phase="Promoting",
        conditions=[{"type": "Ready", "status": "False", "reason": "AwaitingApproval",
                     "message": "production needs an approval"}],
        training={"state": "Succeeded", "jobName": "credit-risk-1-4-0-train-ab12"},
        gate={"name": "credit-gate", "outcome": "Passed", "passed": 12, "failed": 0,
              "inconclusive": 1,
              "checks": [{"name": "auc", "outcome": "Passed", "severity": "Blocking",
                          "message": "0.91"},
                         {"name": "drift", "outcome": "Inconclusive", "severity": "Warning",
                          "message": "too few rows in bin [0.2, 0.4)"}]},
        environments=[{"name": "staging", "phase": "Deployed", "deployedAt": "2026-12-07T11:50:00Z",
                       "configHash": "0123456789abcdef" * 4, "verificationJob": "v-1",
                       "verifiedAt": "2026-12-07T11:51:00Z"},
                      {"name": "production", "phase": "Waiting",
                       "message": "waiting for an approval of config 89abcdef0123"}],
    )  # fmt: skip
    job = {"metadata": {"name": "credit-risk-1-4-0-train-ab12", "creationTimestamp": "t",
                        "labels": {"app.kubernetes.io/component": "training"}},
           "status": {"conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    pod = {"metadata": {"name": "credit-risk-1-4-0-train-ab12-xyz",
                        "labels": {"job-name": "credit-risk-1-4-0-train-ab12"}},
           "status": {"phase": "Succeeded"}}  # fmt: skip
    assert views.release_tree(release, [job], [pod], NOW).splitlines() == [
        "ModelRelease team/credit-risk-1-4-0: Promoting (model credit-risk 1.4.0)",
        "  AwaitingApproval: production needs an approval",
        "├─ Training: Succeeded (Job credit-risk-1-4-0-train-ab12)",
        "├─ Gate credit-gate: Passed (12 passed, 0 failed, 1 inconclusive)",
        "│  └─ Inconclusive: drift (Warning): too few rows in bin [0.2, 0.4)",
        "├─ Environment staging: Deployed, deployed 10m ago",
        "│  ├─ config 0123456789ab",
        "│  └─ verification: verified at 2026-12-07T11:51:00Z (Job v-1)",
        "├─ Environment production: Waiting",
        "│  └─ waiting for an approval of config 89abcdef0123",
        "└─ Job credit-risk-1-4-0-train-ab12 (training): Succeeded",
        "   └─ Pod credit-risk-1-4-0-train-ab12-xyz: Succeeded",
    ]


def test_an_approval_is_appended_as_the_caller_with_the_version_it_read() -> None:
    patch = approval_patch(_release(), "production", "alice", NOW, "89abcdef0123", "CHG-7")
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"promotion": {"approvals": [
            {"environment": "staging", "approvedBy": "bob"},
            {"environment": "production", "approvedBy": "alice",
             "approvedAt": "2026-12-07T12:00:00Z", "configHash": "89abcdef0123",
             "comment": "CHG-7"},
        ]}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("environment", "config_hash", "message"),
    [("nowhere", None, r"'nowhere' is not on the promotion path .* \(staging, production\): "
                       r"pass --environment with one of them"),
     ("production", "XYZ", r"--config-hash 'XYZ' is not a config hash: give 12 to 64"),
     ("staging", None, r"already has an approval for staging \(by bob\); nothing to do")],
)  # fmt: skip
def test_an_approval_that_cannot_count_is_refused_naming_the_fix(
    environment: str, config_hash: str | None, message: str
) -> None:
    with pytest.raises(Refused, match=message):
        approval_patch(_release(), environment, "alice", NOW, config_hash)


def _failed(reason: str = "TrainingFailed", **status: Any) -> dict[str, Any]:
    return _release(
        phase="Failed",
        conditions=[{"type": "Trained", "status": "False", "reason": reason}],
        **status,
    )


def test_a_retry_is_asked_as_the_caller_with_a_time_to_the_microsecond() -> None:
    now = NOW.replace(microsecond=250)
    patch = retry_patch(_failed(), "alice", now, "the node came back")
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"retry": {"requestedAt": "2026-12-07T12:00:00.000250Z",
                           "requestedBy": "alice", "reason": "the node came back"}},
    }  # fmt: skip
    # Without a reason, an earlier request's reason is removed (null in a merge patch).
    assert retry_patch(_failed(), "alice", now)["spec"]["retry"]["reason"] is None


def test_a_retry_shows_in_the_tree_with_what_it_did() -> None:
    release = _failed(
        retry={
            "handled": "2026-12-07T12:00:00.000250Z",
            "message": "the training (or import) run runs again (retry 1)",
        }
    )
    release["spec"]["retry"] = {
        "requestedAt": "2026-12-07T12:00:00.000250Z",
        "requestedBy": "alice",
        "reason": "the node came back",
    }
    tree = views.release_tree(release, [], [], NOW).splitlines()
    assert tree[1:4] == [
        "├─ Retry asked by alice at 2026-12-07T12:00:00.000250Z",
        "│  ├─ the node came back",
        "│  └─ the training (or import) run runs again (retry 1)",
    ]  # fmt: skip
    release["spec"]["retry"]["requestedAt"] = "2026-12-07T12:05:00.000000Z"
    assert "not acted on yet" in views.release_tree(release, [], [], NOW)


@pytest.mark.parametrize(
    ("release", "message"),
    [(_release(phase="Promoting", conditions=[{"type": "Trained", "status": "True"}]),
      r"nothing failed to retry in ModelRelease team/credit-risk-1-4-0 \(phase Promoting\): "
      r"retry runs a failed training, scoring or gate evaluation again"),
     ({**_failed(), "spec": {"retry": {"requestedAt": "2026-12-07T11:59:00Z"}}},
      r"has a retry asked at 2026-12-07T11:59:00Z that the operator has not acted on yet")],
)  # fmt: skip
def test_a_retry_with_nothing_to_run_again_is_refused_naming_why(
    release: dict[str, Any], message: str
) -> None:
    with pytest.raises(Refused, match=message):
        retry_patch(release, "alice", NOW)


def _live(**production: Any) -> dict[str, Any]:
    return _release(phase="Released", environments=[
        {"name": "staging", "phase": "Deployed"},
        {"name": "production", "phase": "Deployed", **production},
    ])  # fmt: skip


def test_a_rollback_replaces_the_environment_s_request_and_keeps_the_others() -> None:
    release = _live(rollbackRequest="2026-12-07T10:00:00Z")
    release["spec"]["promotion"]["rollbacks"] = [
        {"environment": "staging", "requestedAt": "2026-12-07T09:00:00Z"},
        {"environment": "production", "requestedAt": "2026-12-07T10:00:00Z"},
    ]
    patch = rollback_patch(release, "production", "carol", NOW, "INC-42")
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"promotion": {"rollbacks": [
            {"environment": "staging", "requestedAt": "2026-12-07T09:00:00Z"},
            {"environment": "production", "requestedAt": "2026-12-07T12:00:00.000000Z",
             "requestedBy": "carol", "reason": "INC-42"},
        ]}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("release", "environment", "message"),
    [(_live(), "qa", r"'qa' is not on the promotion path"),
     (_release(phase="Promoting", environments=[{"name": "staging", "phase": "Deployed"}]),
      "production", r"is not live in production \(phase Pending\): nothing to roll back"),
     (_live(phase="RolledBack", message="rolled back on request by bob"), "production",
      r"already rolled back in production \(rolled back on request by bob\); nothing to do"),
     ({**_live(), "spec": {"promotion": {"environments": ["staging", "production"], "rollbacks": [
         {"environment": "production", "requestedAt": "2026-12-07T11:00:00Z"}]}}},
      "production", r"a request in spec.promotion.rollbacks for production asked at "
                    r"2026-12-07T11:00:00Z that the operator has not acted on yet")],
)  # fmt: skip
def test_a_rollback_with_nothing_to_take_back_is_refused_naming_why(
    release: dict[str, Any], environment: str, message: str
) -> None:
    with pytest.raises(Refused, match=message):
        rollback_patch(release, environment, "carol", NOW)


@pytest.mark.parametrize(
    ("release", "message"),
    [(_release(phase="Promoting", environments=[{"name": "production", "phase": "Verifying"}]),
      r"not live and verified in production \(phase Verifying\): there is nothing to verify"),
     (_live(), r"environment production does not verify what it runs")],
)  # fmt: skip
def test_a_verification_again_is_refused_where_there_is_none_to_run(
    release: dict[str, Any], message: str
) -> None:
    with pytest.raises(Refused, match=message):
        reverify_patch(release, "production", "dave", NOW)


def test_a_verification_again_is_asked_as_the_caller() -> None:
    patch = reverify_patch(
        _live(verificationJob="credit-risk-1-4-0-verify-1a2b3c4d"),
        "production",
        "dave",
        NOW,
        "new feature store",
    )
    assert patch["spec"] == {"promotion": {"reverifications": [
        {"environment": "production", "requestedAt": "2026-12-07T12:00:00.000000Z",
         "requestedBy": "dave", "reason": "new feature store"}]}}  # fmt: skip


def test_an_abort_is_asked_as_the_caller_and_retry_takes_it_back() -> None:
    release = _release(phase="Promoting")
    patch = abort_patch(release, "erin", NOW, "wrong dataset")
    assert patch["spec"]["abort"] == {
        "requestedAt": "2026-12-07T12:00:00.000000Z", "requestedBy": "erin",
        "reason": "wrong dataset",
    }  # fmt: skip
    release["spec"]["abort"] = patch["spec"]["abort"]
    assert retry_patch(release, "erin", NOW) == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"abort": None},
    }
    tree = views.release_tree(release, [], [], NOW).splitlines()
    assert tree[1:3] == ["├─ Aborted by erin at 2026-12-07T12:00:00.000000Z", "│  └─ wrong dataset"]
    with pytest.raises(Refused, match=r"already aborted \(by erin at .*\): `kubectl modelgate "
                                      r"retry` lets it go on"):  # fmt: skip
        abort_patch(release, "erin", NOW)


def test_a_release_with_nothing_in_flight_is_not_aborted() -> None:
    with pytest.raises(Refused, match=r"nothing to abort .* \(phase Released\): it is released "
                                      r"everywhere: take it out with rollback"):  # fmt: skip
        abort_patch(_release(phase="Released"), "erin", NOW)


def test_a_promotion_is_asked_where_the_release_waits_and_refused_where_it_went() -> None:
    waiting = _release(phase="Promoting", environments=[
        {"name": "staging", "phase": "Deployed"},
        {"name": "production", "phase": "Waiting"},
    ])  # fmt: skip
    patch = promote_patch(waiting, "production", "frank", NOW, "hotfix")
    assert patch["spec"]["promotion"]["promotions"] == [
        {"environment": "production", "requestedAt": "2026-12-07T12:00:00.000000Z",
         "requestedBy": "frank", "reason": "hotfix"}]  # fmt: skip
    with pytest.raises(Refused, match=r"nothing to promote: .* is Deployed in staging \(it is "
                                      r"live there already\)"):  # fmt: skip
        promote_patch(waiting, "staging", "frank", NOW)
    waiting["spec"]["promotion"]["promotions"] = patch["spec"]["promotion"]["promotions"]
    with pytest.raises(Refused, match=r"already asks for this in production .*by frank at "
                                      r".*it stands until the release is live there"):  # fmt: skip
        promote_patch(waiting, "production", "frank", NOW)


def test_a_kubeconfig_that_is_not_there_is_an_error_naming_the_fix(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--kubeconfig", str(tmp_path / "missing"), "get", "releases"])
    assert code == 1
    assert "set KUBECONFIG or pass --kubeconfig" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["get", "pods"])
    assert usage.value.code == 2


def test_the_connection_flags_go_before_or_after_the_command() -> None:
    after = parser().parse_args(["get", "releases", "-n", "team", "--context", "kind"])
    before = parser().parse_args(["-n", "team", "--context", "kind", "get", "releases"])
    for args in (after, before):
        assert (args.namespace, args.context, args.kubeconfig) == ("team", "kind", None)


def _names(kind: str, namespace: str | None, kubeconfig: str | None, context: str | None) -> list:
    known = {
        "releases": ["credit-risk-1-4-0", "credit-risk-1-5-0", "fraud-2-0-0"],
        "environments": ["production", "staging"],
        "namespaces": ["team", "ml-prod"],
    }
    assert namespace in (None, "team")
    return known[kind]


@pytest.mark.parametrize(
    ("args", "expected"),
    [([""], ["abort", "approve", "diff", "get", "logs", "promote", "retry", "reverify",
             "rollback"]),
     (["logs", "m", "--step", "e"], ["evaluation"]),
     (["promote", "credit-risk-1-4-0", "-e", "s"], ["staging"]),
     (["abort", "c"], ["credit-risk-1-4-0", "credit-risk-1-5-0"]),
     (["rev"], ["reverify"]),
     (["rollback", "fraud-2-0-0", "-e", "p"], ["production"]),
     (["retry", "fr"], ["fraud-2-0-0"]),
     (["retry", "fraud-2-0-0", "--r"], ["--reason"]),
     (["g"], ["get"]),
     (["get", "re"], ["release", "releases"]),
     (["get", "release", "credit"], ["credit-risk-1-4-0", "credit-risk-1-5-0"]),
     (["-n", "team", "approve", "f"], ["fraud-2-0-0"]),
     (["approve", "credit-risk-1-4-0", "-e", ""], ["production", "staging"]),
     (["approve", "credit-risk-1-4-0", "--env"], ["--environment"]),
     (["get", "releases", "-o", "y"], ["yaml"]),
     (["get", "releases", "-n", "t"], ["team"]),
     (["approve", "x", "--comment", ""], []),
     (["get", "environments", ""], [])],
)  # fmt: skip
def test_completion_offers_what_may_come_next(args: list[str], expected: list[str]) -> None:
    assert candidates(args, _names) == expected
