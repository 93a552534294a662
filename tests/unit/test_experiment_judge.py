"""One look at an experiment (modelgate.experiments.judge): promote only on a
better primary metric with every guardrail non-inferior; a failed guardrail
or a worse primary rolls back at once; too little traffic is never a pass."""

from __future__ import annotations

import pytest

from modelgate.experiments.judge import MetricPlan, Outcome, Role, judge
from modelgate.experiments.sequential import Arm, Direction, Verdict, proportion

APPROVALS = MetricPlan("approval-rate", Role.PRIMARY, Direction.HIGHER, effect=0.03)
LATENCY = MetricPlan("latency", Role.GUARDRAIL, Direction.LOWER, effect=0.020)  # seconds
ERRORS = MetricPlan("error-rate", Role.GUARDRAIL, Direction.LOWER, effect=0.01)
PLANS = (APPROVALS, LATENCY, ERRORS)
N = 20_000


def latency(mean: float, n: int = N) -> Arm:
    return Arm(n, mean, 0.010**2)  # 10 ms spread


def measured(
    approvals: tuple[float, float] = (0.30, 0.30),
    latencies: tuple[float, float] = (0.050, 0.050),
    errors: tuple[float, float] = (0.001, 0.001),
    n: int = N,
) -> dict[str, tuple[Arm, Arm]]:
    def rates(pair: tuple[float, float]) -> tuple[Arm, Arm]:
        return proportion(round(pair[0] * n), n), proportion(round(pair[1] * n), n)

    return {
        "approval-rate": rates(approvals),
        "latency": (latency(latencies[0], n), latency(latencies[1], n)),
        "error-rate": rates(errors),
    }


def test_a_better_challenger_with_its_guardrails_held_is_promoted() -> None:
    looked = judge(PLANS, measured(approvals=(0.30, 0.34)), alpha=0.05, min_samples=1000)
    assert looked.outcome == Outcome.PROMOTE, looked.reason
    assert looked.reason.startswith("the challenger is better: approval-rate: challenger +0.04 [")
    assert "samples 20,000 / 20,000" in looked.reason
    verdicts = {r.plan.name: r.verdict for r in looked.results}
    assert verdicts == {
        "approval-rate": Verdict.BETTER,
        "latency": Verdict.BETTER,
        "error-rate": Verdict.BETTER,
    }
    primary = looked.results[0]
    assert primary.comparison is not None
    assert primary.comparison.low > 0
    assert primary.p_value < 0.05


def test_a_failed_guardrail_rolls_back_at_once_even_with_a_better_primary() -> None:
    slower = measured(approvals=(0.30, 0.34), latencies=(0.050, 0.080))  # +30 ms > 20 ms
    looked = judge(PLANS, slower, alpha=0.05, min_samples=1000)
    assert looked.outcome == Outcome.ROLL_BACK
    assert looked.reason.startswith("guardrail failed: latency: challenger +0.03 [")
    assert looked.reason.endswith("beyond the margin 0.02")


def test_a_worse_primary_rolls_back() -> None:
    looked = judge(PLANS, measured(approvals=(0.30, 0.26)), alpha=0.05, min_samples=1000)
    assert looked.outcome == Outcome.ROLL_BACK
    assert looked.reason.startswith("the challenger is worse: approval-rate")


def test_a_guardrail_not_yet_shown_within_its_margin_holds_the_promotion() -> None:
    # 15 ms slower with a 20 ms margin, measured on too little to tell.
    few = measured(approvals=(0.30, 0.36), latencies=(0.050, 0.065), n=1500)
    few["latency"] = (latency(0.050, 40), latency(0.065, 40))
    looked = judge(PLANS, few, alpha=0.05, min_samples=30)
    assert looked.outcome == Outcome.RUNNING
    assert looked.reason.startswith("measuring: latency: challenger +0.015")


def test_an_arm_with_too_little_traffic_is_never_a_pass() -> None:
    starved = measured(approvals=(0.30, 0.40))
    champion, _ = starved["approval-rate"]
    starved["approval-rate"] = (champion, proportion(40, 99))  # far better, on 99 requests
    looked = judge(PLANS, starved, alpha=0.05, min_samples=100)
    assert looked.outcome == Outcome.RUNNING
    assert "approval-rate: too few samples to compare" in looked.reason
    at_deadline = judge(PLANS, starved, alpha=0.05, min_samples=100, deadline_passed=True)
    assert at_deadline.outcome == Outcome.INCONCLUSIVE
    assert at_deadline.reason == (
        "the deadline passed undecided: approval-rate: too few samples to compare"
    )


def test_no_difference_stays_undecided_then_inconclusive() -> None:
    same = measured()
    assert judge(PLANS, same, alpha=0.05, min_samples=1000).outcome == Outcome.RUNNING
    looked = judge(PLANS, same, alpha=0.05, min_samples=1000, deadline_passed=True)
    assert looked.outcome == Outcome.INCONCLUSIVE
    assert looked.reason.startswith("the deadline passed undecided: approval-rate: challenger +0 [")


def test_the_p_values_are_kept_over_the_looks() -> None:
    first = judge(PLANS, measured(approvals=(0.30, 0.32)), alpha=0.05, min_samples=1000)
    earlier = {r.plan.name: r.p_value for r in first.results}
    later = judge(
        PLANS, measured(), alpha=0.05, min_samples=1000, previous_p_values=earlier
    )  # the lift vanished: the evidence seen before still counts
    assert {r.plan.name: r.p_value for r in later.results}["approval-rate"] == min(
        earlier["approval-rate"], 1.0
    )


def test_a_guardrails_p_value_is_against_its_margin() -> None:
    looked = judge(PLANS, measured(latencies=(0.050, 0.070)), alpha=0.05, min_samples=1000)
    [latency_result] = [r for r in looked.results if r.plan.name == "latency"]
    # Exactly at the margin: no evidence either way.
    assert latency_result.verdict == Verdict.UNDECIDED
    assert latency_result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("plans", "message"),
    [
        ((LATENCY, ERRORS), "exactly one primary metric, not 0"),
        ((APPROVALS, APPROVALS), "exactly one primary metric, not 2"),
    ],
)
def test_an_experiment_needs_exactly_one_primary_metric(
    plans: tuple[MetricPlan, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        judge(plans, measured(), alpha=0.05, min_samples=1)


def test_a_metric_needs_a_positive_effect_or_margin() -> None:
    with pytest.raises(ValueError, match="metric latency: effect must be > 0"):
        MetricPlan("latency", Role.GUARDRAIL, Direction.LOWER, effect=0.0)
