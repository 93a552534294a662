"""The analysis of a live model while it soaks: measured, judged, rolled back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from modelgate.api import Environment, ModelRelease
from modelgate.api.analysis import AnalysisMetric
from modelgate.api.common import format_time
from modelgate.promotion import reconcile
from modelgate.promotion.analysis import AnalysisQuery, due_queries
from modelgate.promotion.plan import MeasurementObservation, Plan
from tests.unit.test_reconcile import (
    NOW,
    VerifyingWorld,
    condition,
    make_env,
    make_envs,
    make_gate,
    make_release,
)

POSITIVE_RATE = (
    'sum(rate(modelgate_positive_total{model="{{model}}",version="{{version}}",'
    'environment="{{environment}}",namespace="{{namespace}}"}[5m]))'
)

Answer = Callable[[AnalysisQuery, datetime], MeasurementObservation]


def metric(**spec: Any) -> dict[str, Any]:
    return {
        "name": "positive-rate",
        "query": POSITIVE_RATE,
        "interval": "1m",
        "count": 3,
        "min": 0.05,
        "max": 0.3,
        **spec,
    }


def analysed_envs(where: str = "staging", **spec: Any) -> dict[str, Environment]:
    envs = make_envs()
    policy = {"analysis": {"metrics": [metric(**spec)]}}
    if where == "staging":
        envs["staging"] = make_env(
            "staging", config=[{"name": "URL", "value": "https://s.example.com"}], policy=policy
        )
    else:
        envs = make_envs(policy=policy)
    return envs


def value(number: float | None) -> Answer:
    return lambda _query, now: MeasurementObservation(at=format_time(now), value=number)


def soak(
    release: ModelRelease,
    world: VerifyingWorld,
    envs: dict[str, Environment],
    answer: Answer,
    minutes: int = 10,
    start: datetime = NOW,
) -> tuple[ModelRelease, list[Plan], list[AnalysisQuery]]:
    """Reconcile once a minute (and at once after actions), answering every
    query the core asks for."""
    plans: list[Plan] = []
    asked: list[AnalysisQuery] = []
    now = start
    for _ in range(minutes * 4 + 10):
        queries = due_queries(release, envs, now)
        asked.extend(queries)
        measurements = {(q.environment, q.metric): answer(q, now) for q in queries}
        observed = replace(world.observed(), measurements=measurements)
        plan = reconcile(release, make_gate(), envs, observed, now)
        plans.append(plan)
        release = world.act(release, plan, now)
        if not plan.actions:
            now += timedelta(minutes=1)
        if now > start + timedelta(minutes=minutes):
            break
    return release, plans, asked


def test_the_next_environment_waits_until_every_measurement_passed() -> None:
    world = VerifyingWorld()
    envs = analysed_envs()
    release, plans, asked = soak(make_release(), world, envs, value(0.12), minutes=1)
    assert release.status is not None
    staging = release.status.environments[0]
    assert staging.phase == "Analyzing"
    assert release.status.phase == "Promoting"
    assert "production" not in world.deployments
    assert condition(release, "Analyzed")[:2] == ("Unknown", "Analyzing")
    assert [p.requeue_after for p in plans if p.requeue_after][-1] == timedelta(minutes=1)
    # The placeholders are the release's values; the namespace is the model's.
    assert asked[0].query == (
        'sum(rate(modelgate_positive_total{model="m",version="1.0.0",'
        'environment="staging",namespace="ml-staging"}[5m]))'
    )
    release, _, asked = soak(release, world, envs, value(0.12), start=NOW + timedelta(minutes=2))
    assert release.status is not None
    assert release.status.phase == "Released"
    assert world.deployments["production"].release == "team/m-1"
    analysis = release.status.environments[0].analysis
    assert analysis is not None
    assert analysis.phase == "Passed"
    [progress] = analysis.metrics
    assert (progress.taken, progress.failed, progress.wanted) == (3, 0, 3)
    assert [m.value for m in progress.measurements] == [0.12, 0.12, 0.12]
    assert condition(release, "Analyzed") == (
        "True",
        "AnalysisPassed",
        "analysis passed in staging",
    )
    assert condition(release, "Ready")[0] == "True"


def test_a_failed_measurement_beyond_the_limit_rolls_back_naming_query_values_threshold() -> None:
    world = VerifyingWorld()
    envs = analysed_envs(failureLimit=1)
    values = iter([0.12, 0.61, 0.7])
    release, plans, _ = soak(
        make_release(),
        world,
        envs,
        lambda _q, now: MeasurementObservation(at=format_time(now), value=next(values)),
    )
    assert release.status is not None
    assert release.status.phase == "RolledBack"
    assert [r.environment for r in world.rollbacks] == ["staging"]
    # The environment's history keeps why: the query, the values, the bounds.
    reason = world.rollbacks[0].reason or ""
    assert reason.startswith("analysis failed (metric positive-rate Failed")
    assert "values 0.12, 0.61, 0.7" in reason
    assert "staging" not in world.deployments  # nothing was live there before
    assert "production" not in world.deployments
    staging = release.status.environments[0]
    assert staging.phase == "RolledBack"
    status, reason, message = condition(release, "Analyzed")
    assert (status, reason) == ("False", "AnalysisFailed")
    assert "values 0.12, 0.61, 0.7" in message
    assert "passes when 0.05 <= value <= 0.3" in message
    assert 'model="m",version="1.0.0"' in message
    assert "2 failed, 0 inconclusive of 3 measurements" in message
    assert condition(release, "Stalled")[0] == "True"
    _, reason, ready = condition(release, "Ready")
    assert reason == "RolledBack"
    assert "analysis failed (metric positive-rate Failed" in ready
    assert "the previous release was put back" in ready
    reasons = [e.reason for p in plans for e in p.events]
    assert reasons.count("AnalysisFailed") == 1
    assert "RolledBack" in reasons
    # Level-based: nothing is deployed or queried again.
    again, later, asked = soak(release, world, envs, value(0.1), start=NOW + timedelta(hours=1))
    assert asked == []
    assert all(not p.actions for p in later)
    assert again.status is not None
    assert again.status.phase == "RolledBack"


def test_no_data_is_inconclusive_and_blocks_without_rolling_back() -> None:
    world = VerifyingWorld()
    envs = analysed_envs()
    release, _, _ = soak(make_release(), world, envs, value(None))
    assert release.status is not None
    assert world.rollbacks == []
    assert world.deployments["staging"].release == "team/m-1"  # it stays live
    assert "production" not in world.deployments
    assert release.status.phase == "Blocked"
    status, reason, message = condition(release, "Analyzed")
    assert (status, reason) == ("False", "AnalysisInconclusive")
    assert "values no data" in message
    assert condition(release, "Ready")[1] == "AnalysisInconclusive"
    assert "edit the Environment's analysis" in condition(release, "Ready")[2]


def test_no_data_may_be_declared_a_pass() -> None:
    world = VerifyingWorld()
    release, _, _ = soak(make_release(), world, analysed_envs(noData="Passed"), value(None))
    assert release.status is not None
    assert release.status.phase == "Released"


def test_prometheus_down_is_asked_again_and_shown_not_counted() -> None:
    world = VerifyingWorld()
    envs = analysed_envs()
    down: Answer = lambda _q, now: MeasurementObservation(  # noqa: E731
        at=format_time(now), error="GET http://prometheus:9090: connection refused"
    )
    release, plans, asked = soak(make_release(), world, envs, down, minutes=5)
    assert release.status is not None
    assert len(asked) >= 5  # asked again every time
    analysis = release.status.environments[0].analysis
    assert analysis is not None
    assert analysis.phase == "Running"
    assert analysis.metrics[0].taken == 0
    assert "connection refused" in (release.status.environments[0].message or "")
    assert "not measured, asking again" in condition(release, "Ready")[2]
    assert all(p.requeue_after is not None for p in plans[-3:])
    # Back up: measured from where it stood.
    release, _, _ = soak(release, world, envs, value(0.2), start=NOW + timedelta(minutes=6))
    assert release.status is not None
    assert release.status.phase == "Released"


def test_a_query_prometheus_refuses_is_an_inconclusive_measurement() -> None:
    world = VerifyingWorld()
    refused: Answer = lambda _q, now: MeasurementObservation(  # noqa: E731
        at=format_time(now), error="bad_data: parse error at char 5", invalid=True
    )
    release, _, _ = soak(make_release(), world, analysed_envs(), refused)
    assert release.status is not None
    assert release.status.phase == "Blocked"
    assert "parse error at char 5" in condition(release, "Analyzed")[2]


def test_an_analysis_in_production_holds_released_until_it_passes() -> None:
    world = VerifyingWorld()
    envs = analysed_envs("production", count=2)
    release, _, _ = soak(make_release(), world, envs, value(0.2), minutes=0)
    assert release.status is not None
    assert release.status.phase == "Promoting"
    assert condition(release, "Ready")[0] == "False"
    release, _, _ = soak(release, world, envs, value(0.2), start=NOW + timedelta(minutes=1))
    assert release.status is not None
    assert release.status.phase == "Released"


def test_editing_an_inconclusive_analysis_measures_again() -> None:
    world = VerifyingWorld()
    release, _, _ = soak(make_release(), world, analysed_envs(), value(None))
    assert release.status is not None
    assert release.status.phase == "Blocked"
    edited = analysed_envs(noData="Passed")
    release, _, _ = soak(release, world, edited, value(0.2), start=NOW + timedelta(hours=1))
    assert release.status is not None
    assert release.status.phase == "Released"


def test_measurements_are_spaced_by_the_interval_after_the_initial_delay() -> None:
    world = VerifyingWorld()
    envs = analysed_envs(initialDelay="5m", interval="2m", duration="6m", count=None)
    release, _, asked = soak(make_release(), world, envs, value(0.2), minutes=20)
    assert release.status is not None
    analysis = release.status.environments[0].analysis
    assert analysis is not None
    assert [m.at for m in analysis.metrics[0].measurements] == [
        format_time(NOW + timedelta(minutes=m)) for m in (5, 7, 9)
    ]
    assert len(asked) == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"min": None, "max": None}, "needs min, max or both"),
        ({"min": 0.5, "max": 0.1}, "min is greater than max"),
        ({"query": "up{job='{{team}}'}"}, "query names {{team}}"),
        ({"duration": "10m"}, "set count (measurements) or duration"),
        ({"interval": "100ms"}, "interval is shorter than 1s"),
        ({"noData": "Maybe"}, "no_data"),
    ],
)
def test_a_bad_metric_is_refused_naming_the_problem(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        AnalysisMetric.model_validate(metric(**spec))
    assert message in str(raised.value) or message.replace("_", "") in str(raised.value).lower()


def test_metric_names_must_differ() -> None:
    with pytest.raises(ValidationError, match="metric names repeat: positive-rate"):
        make_env("staging", policy={"analysis": {"metrics": [metric(), metric()]}})
