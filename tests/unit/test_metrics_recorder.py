"""Metrics from status transitions, asserted through the registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelgate.api import ModelRelease, load_documents
from modelgate.api.modelrelease import ModelReleaseStatus
from modelgate.metrics import Metrics
from tests.conftest import EXAMPLES

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
GATE = {
    "name": "credit-gate",
    "inputsHash": "h1",
    "outcome": "Passed",
    "evaluatedAt": "2026-11-22T10:05:00Z",
    "passed": 1,
    "failed": 0,
    "inconclusive": 0,
    "checks": [
        {
            "name": "auc",
            "kind": "metric",
            "metric": "roc_auc",
            "severity": "blocking",
            "outcome": "Passed",
            "value": 0.87,
            "min": 0.8,
        }
    ],
}


def release(name: str = "credit-risk-1-4-0", model: str = "credit-risk") -> ModelRelease:
    [document] = load_documents((EXAMPLES / "credit-risk" / "release.yaml").read_text())
    document["metadata"].update(
        {"name": name, "namespace": "team", "creationTimestamp": "2026-11-22T10:00:00Z"}
    )
    document["spec"]["model"]["name"] = model
    return ModelRelease.model_validate(document)


def status(**fields: Any) -> ModelReleaseStatus:
    return ModelReleaseStatus.model_validate(fields)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


TRAINED = {
    "jobName": "j1",
    "key": "k",
    "state": "Succeeded",
    "startedAt": "2026-11-22T10:00:00Z",
    "completedAt": "2026-11-22T10:04:00Z",
    "retries": 2,
}


def test_training_counts_once_per_finished_run() -> None:
    metrics = Metrics()
    running = status(phase="Training", training={**TRAINED, "state": "Running"})
    done = status(phase="Evaluating", training=TRAINED)
    metrics.release_changed(release(), running, done, CREATED)
    metrics.release_changed(release(), done, done, CREATED)  # a resync: nothing new
    labels = {"namespace": "team", "model": "credit-risk"}
    assert sample(metrics, "modelgate_training_runs_total", **labels, outcome="Succeeded") == 1
    assert sample(metrics, "modelgate_training_retries_total", **labels) == 2
    assert (
        sample(
            metrics,
            "modelgate_training_duration_seconds_sum",
            namespace="team",
            outcome="Succeeded",
        )
        == 240
    )


def test_gate_outcomes_values_and_thresholds() -> None:
    metrics = Metrics()
    metrics.release_changed(release(), status(), status(gate=GATE), CREATED)
    metrics.release_changed(release(), status(gate=GATE), status(gate=GATE), CREATED)
    assert (
        sample(
            metrics,
            "modelgate_gate_evaluations_total",
            namespace="team",
            gate="credit-gate",
            outcome="Passed",
        )
        == 1
    )
    labels = {"namespace": "team", "model": "credit-risk", "check": "auc"}
    assert sample(metrics, "modelgate_gate_check_value", **labels) == 0.87
    assert sample(metrics, "modelgate_gate_check_threshold", **labels, bound="min") == 0.8


def test_deploy_lead_time_and_rollback_restore() -> None:
    metrics = Metrics()
    deploying = status(environments=[{"name": "production", "phase": "Deploying"}])
    live = status(
        environments=[
            {"name": "production", "phase": "Deployed", "deployedAt": "2026-11-22T11:00:00Z"}
        ]
    )
    metrics.release_changed(release(), deploying, live, CREATED + timedelta(hours=1))
    where = {"namespace": "team", "environment": "production"}
    assert sample(metrics, "modelgate_deployments_total", **where, model="credit-risk") == 1
    assert sample(metrics, "modelgate_lead_time_seconds_sum", **where) == 3600
    assert (
        sample(
            metrics,
            "modelgate_live_release_info",
            **where,
            model="credit-risk",
            release="credit-risk-1-4-0",
            version="1.4.0",
        )
        == 1
    )
    bad = release("credit-risk-1-5-0")
    verifying = status(
        environments=[
            {"name": "production", "phase": "Verifying", "deployedAt": "2026-11-22T12:00:00Z"}
        ]
    )
    rolled_back = status(
        environments=[
            {"name": "production", "phase": "RolledBack", "deployedAt": "2026-11-22T12:00:00Z"}
        ]
    )
    metrics.release_changed(bad, verifying, rolled_back, CREATED + timedelta(hours=2, minutes=10))
    assert sample(metrics, "modelgate_rollbacks_total", **where, model="credit-risk") == 1
    assert (
        sample(metrics, "modelgate_verification_failures_total", **where, model="credit-risk") == 1
    )
    assert sample(metrics, "modelgate_time_to_restore_seconds_sum", **where) == 600
    # Superseded and back (GitOps rollback restoring the previous release) is
    # not a new deployment.
    superseded = status(environments=[{"name": "production", "phase": "Superseded"}])
    metrics.release_changed(release(), superseded, live, CREATED)
    assert sample(metrics, "modelgate_deployments_total", **where, model="credit-risk") == 1


def test_a_rollback_a_person_asked_for_is_a_change_failure_and_no_failed_check() -> None:
    metrics = Metrics()
    live = status(
        environments=[
            {"name": "production", "phase": "Deployed", "deployedAt": "2026-11-22T11:00:00Z"}
        ]
    )
    rolled_back = status(
        environments=[
            {"name": "production", "phase": "RolledBack", "deployedAt": "2026-11-22T11:00:00Z",
             "rolledBackBy": "carol", "rollbackRequest": "2026-11-22T11:30:00Z"}
        ]
    )  # fmt: skip
    metrics.release_changed(release(), live, rolled_back, CREATED + timedelta(hours=1, minutes=30))
    where = {"namespace": "team", "environment": "production", "model": "credit-risk"}
    assert sample(metrics, "modelgate_rollbacks_total", **where) == 1
    assert sample(metrics, "modelgate_verification_failures_total", **where) in (None, 0)


def test_config_changes_are_counted_by_result_and_keep_lead_time_for_releases() -> None:
    metrics = Metrics()
    where = {"namespace": "team", "environment": "production", "model": "credit-risk"}
    live = {"name": "production", "phase": "Deployed", "rollout": 1, "configHash": "a" * 64}
    pending = {**live, "phase": "Blocked", "previousConfigHash": "a" * 64, "configHash": "b" * 64}
    metrics.release_changed(
        release(),
        status(environments=[live]),
        status(environments=[pending]),
        CREATED + timedelta(hours=1),
    )
    assert sample(metrics, "modelgate_config_changes_total", **where, result="Refused") == 1
    deploying = {**pending, "phase": "Deploying", "rollout": 2, "configHash": "c" * 64}
    rolled_out = {**deploying, "phase": "Deployed"}
    metrics.release_changed(
        release(),
        status(environments=[deploying]),
        status(environments=[rolled_out]),
        CREATED + timedelta(hours=2),
    )
    assert sample(metrics, "modelgate_config_changes_total", **where, result="Deployed") == 1
    assert sample(metrics, "modelgate_deployments_total", **where) == 1
    # Lead time is the release's, not the change's.
    lead = {"namespace": "team", "environment": "production"}
    assert sample(metrics, "modelgate_lead_time_seconds_count", **lead) is None
    failed = {
        **rolled_out,
        "phase": "RolledBack",
        "rollout": 3,
        "deployedAt": "2026-11-22T12:00:00Z",
    }
    metrics.release_changed(
        release(),
        status(environments=[{**failed, "phase": "Verifying"}]),
        status(environments=[failed]),
        CREATED + timedelta(hours=3),
    )
    assert sample(metrics, "modelgate_config_changes_total", **where, result="RolledBack") == 1
    assert sample(metrics, "modelgate_rollbacks_total", **where) == 1


def _series(metrics: Metrics) -> int:
    return sum(len(family.samples) for family in metrics.registry.collect())


def _release_story(metrics: Metrics, count: int, models: int) -> None:
    for index in range(count):
        model = f"model-{index % models}"
        candidate = release(f"{model}-release-{index}", model)
        before = status(phase="Training", training={**TRAINED, "state": "Running"})
        after = status(
            phase="Released",
            training={**TRAINED, "jobName": f"j{index}"},
            gate=GATE,
            environments=[
                {"name": "staging", "phase": "Deployed"},
                {"name": "production", "phase": "Deployed"},
            ],
        )
        metrics.release_changed(candidate, before, after, CREATED + timedelta(hours=1))
        metrics.reconciled("ModelRelease", "ok", 0.01)


def test_series_do_not_grow_with_the_number_of_releases() -> None:
    few, many = Metrics(), Metrics()
    _release_story(few, 10, models=5)
    _release_story(many, 1000, models=5)
    # Only the per-phase release count changes value; no series per release.
    assert _series(many) == _series(few)
    assert sample(many, "modelgate_releases", namespace="team", phase="Released") == 1000
    print(f"series after 10 releases: {_series(few)}, after 1000: {_series(many)}")


def test_forgetting_a_deleted_release() -> None:
    metrics = Metrics()
    _release_story(metrics, 3, models=1)
    metrics.forget("team", "model-0-release-1")
    assert sample(metrics, "modelgate_releases", namespace="team", phase="Released") == 2


def _analysing(phase: str, entry: str, values: list[float], outcomes: list[str]) -> dict[str, Any]:
    return {
        "name": "staging",
        "phase": entry,
        "deployedAt": "2026-11-22T11:00:00Z",
        "analysis": {
            "phase": phase,
            "specHash": "s",
            "startedAt": "2026-11-22T11:00:00Z",
            "metrics": [
                {
                    "name": "score-psi",
                    "query": "q",
                    "phase": phase,
                    "max": 0.25,
                    "taken": len(values),
                    "wanted": 3,
                    "failed": outcomes.count("Failed"),
                    "measurements": [
                        {"at": f"2026-11-22T11:0{i}:00Z", "value": v, "outcome": o}
                        for i, (v, o) in enumerate(zip(values, outcomes, strict=True))
                    ],
                }
            ],
        },
    }


def test_analysis_measurements_values_and_verdicts_are_counted_once() -> None:
    metrics = Metrics()
    where = {"namespace": "team", "environment": "staging", "model": "credit-risk"}
    one = status(environments=[_analysing("Running", "Analyzing", [0.1], ["Passed"])])
    two = status(
        environments=[_analysing("Running", "Analyzing", [0.1, 0.4], ["Passed", "Failed"])]
    )
    failed = status(
        environments=[
            _analysing("Failed", "RolledBack", [0.1, 0.4, 0.5], ["Passed", "Failed", "Failed"])
        ]
    )
    metrics.release_changed(release(), None, one, CREATED)
    metrics.release_changed(release(), one, two, CREATED)
    metrics.release_changed(release(), two, two, CREATED)  # a resync: nothing new
    metrics.release_changed(release(), two, failed, CREATED)
    metrics.release_changed(release(), failed, failed, CREATED)
    measured = "modelgate_analysis_measurements_total"
    assert sample(metrics, measured, **where, metric="score-psi", outcome="Passed") == 1
    assert sample(metrics, measured, **where, metric="score-psi", outcome="Failed") == 2
    assert sample(metrics, "modelgate_analysis_value", **where, metric="score-psi") == 0.5
    assert sample(metrics, "modelgate_analysis_runs_total", **where, outcome="Failed") == 1
    assert sample(metrics, "modelgate_rollbacks_total", **where) == 1
    # A failed analysis is not a failed verification.
    assert sample(metrics, "modelgate_verification_failures_total", **where) is None
    # Live while it soaks.
    assert (
        sample(
            metrics,
            "modelgate_live_release_info",
            **where,
            release="credit-risk-1-4-0",
            version="1.4.0",
        )
        == 1
    )
