"""One look at an experiment: each metric's comparison of the challenger with
the champion, and what follows — promote, roll back, go on measuring, or
inconclusive at the deadline.

One primary metric decides a promotion (superiority at alpha: a challenger
that is no better is promoted at most alpha of the time, however often the
operator looks); guardrails only hold it back or roll it back (non-
inferiority within their margins: a failed one rolls back at once). A
metric with fewer samples than the minimum in either arm has no verdict: the
normal approximation is not trusted on a handful of requests, and an arm
that gets too little traffic ends Inconclusive at the deadline, never
promoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from modelgate.experiments.sequential import (
    Arm,
    Comparison,
    Direction,
    Verdict,
    compare,
    non_inferiority,
    running_p_value,
    superiority,
)


class Role(StrEnum):
    PRIMARY = "Primary"  # decides: the challenger must be better
    GUARDRAIL = "Guardrail"  # holds back: the challenger must not be worse beyond a margin


class Outcome(StrEnum):
    RUNNING = "Running"  # measure again
    PROMOTE = "Promote"  # the challenger takes all traffic
    ROLL_BACK = "RollBack"  # the champion keeps it
    INCONCLUSIVE = "Inconclusive"  # the deadline passed undecided: the policy says which


@dataclass(frozen=True)
class MetricPlan:
    """What one metric of the experiment must show."""

    name: str
    role: Role
    direction: Direction
    # Primary: the minimum detectable effect. Guardrail: the margin (how much
    # worse the challenger may be). Either also tunes the test (its tau).
    effect: float

    def __post_init__(self) -> None:
        if not self.effect > 0:
            raise ValueError(f"metric {self.name}: effect must be > 0, not {self.effect}")


@dataclass(frozen=True)
class MetricResult:
    plan: MetricPlan
    comparison: Comparison | None  # None: too few samples in an arm to compare
    verdict: Verdict
    p_value: float  # always-valid, the running minimum over the looks so far

    def describe(self) -> str:
        """The numbers, as status, Events and the evidence record say them."""
        if self.comparison is None:
            return f"{self.plan.name}: too few samples to compare"
        c = self.comparison
        return (
            f"{self.plan.name}: challenger {c.effect:+.4g} [{c.low:+.4g}, {c.high:+.4g}] "
            f"against the champion, p {self.p_value:.3g}, samples {c.samples[1]:,} / "
            f"{c.samples[0]:,}"
        )


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reason: str
    results: tuple[MetricResult, ...]


def judge(
    plans: tuple[MetricPlan, ...],
    measured: Mapping[str, tuple[Arm, Arm]],
    *,
    alpha: float,
    min_samples: int,
    previous_p_values: Mapping[str, float] | None = None,
    deadline_passed: bool = False,
) -> Judgement:
    """One look: ``measured`` maps each metric to its (champion, challenger)
    arms; ``previous_p_values`` are the running p-values of earlier looks."""
    previous = previous_p_values or {}
    results = tuple(
        _result(plan, measured.get(plan.name), alpha, min_samples, previous) for plan in plans
    )
    primaries = [r for r in results if r.plan.role == Role.PRIMARY]
    if len(primaries) != 1:
        raise ValueError(f"an experiment has exactly one primary metric, not {len(primaries)}")
    [primary] = primaries
    guardrails = [r for r in results if r.plan.role == Role.GUARDRAIL]
    failed = _failed_guardrails(results)
    if failed is not None:
        return failed
    if primary.verdict == Verdict.WORSE:
        worse = f"the challenger is worse: {primary.describe()}"
        return Judgement(Outcome.ROLL_BACK, worse, results)
    holding = [r for r in guardrails if r.verdict != Verdict.BETTER]
    if primary.verdict == Verdict.BETTER and not holding:
        better = f"the challenger is better: {primary.describe()}"
        return Judgement(Outcome.PROMOTE, better, results)
    waiting = ([primary] if primary.verdict == Verdict.UNDECIDED else []) + holding
    if deadline_passed:
        return Judgement(
            Outcome.INCONCLUSIVE,
            "the deadline passed undecided: " + "; ".join(r.describe() for r in waiting),
            results,
        )
    return Judgement(
        Outcome.RUNNING, "measuring: " + "; ".join(r.describe() for r in waiting), results
    )


def _failed_guardrails(results: tuple[MetricResult, ...]) -> Judgement | None:
    """A roll back naming every guardrail proven worse than its margin, if any."""
    failed = [r for r in results if r.plan.role == Role.GUARDRAIL and r.verdict == Verdict.WORSE]
    if not failed:
        return None
    return Judgement(
        Outcome.ROLL_BACK,
        "guardrail failed: "
        + "; ".join(f"{r.describe()}, beyond the margin {r.plan.effect:g}" for r in failed),
        results,
    )


def _result(
    plan: MetricPlan,
    arms: tuple[Arm, Arm] | None,
    alpha: float,
    min_samples: int,
    previous: Mapping[str, float],
) -> MetricResult:
    earlier = previous.get(plan.name)
    if arms is None or min(arms[0].samples, arms[1].samples) < min_samples:
        return MetricResult(plan, None, Verdict.UNDECIDED, 1.0 if earlier is None else earlier)
    champion, challenger = arms
    if plan.role == Role.PRIMARY:
        comparison = compare(champion, challenger, alpha=alpha, tau=plan.effect)
        verdict = superiority(comparison, plan.direction)
    else:
        # A guardrail's null is the margin itself (the harm it may not pass):
        # its p-value weighs the evidence against exactly that.
        harm = plan.effect if plan.direction == Direction.LOWER else -plan.effect
        comparison = compare(champion, challenger, alpha=alpha, tau=plan.effect, null=harm)
        verdict = non_inferiority(comparison, plan.direction, plan.effect)
    return MetricResult(plan, comparison, verdict, running_p_value(earlier, comparison))


def judge_step(
    plans: tuple[MetricPlan, ...],
    measured: Mapping[str, tuple[Arm, Arm]],
    *,
    alpha: float,
    min_samples: int,
    previous_p_values: Mapping[str, float] | None = None,
    step_over: bool = False,
) -> Judgement:
    """One look at a canary step, judged by guardrails alone: a guardrail
    proven worse than its margin rolls back at once; the step passes
    (PROMOTE: on to the next) when its time is up with every metric measured
    on at least ``min_samples`` per arm and none proven worse. A canary
    catches harm early; it does not wait to prove parity."""
    previous = previous_p_values or {}
    results = tuple(
        _result(plan, measured.get(plan.name), alpha, min_samples, previous) for plan in plans
    )
    if any(r.plan.role != Role.GUARDRAIL for r in results):
        raise ValueError("a canary step is judged by guardrails only")
    failed = _failed_guardrails(results)
    if failed is not None:
        return failed
    short = [r for r in results if r.comparison is None]
    if not step_over:
        return Judgement(
            Outcome.RUNNING, "measuring: " + "; ".join(r.describe() for r in results), results
        )
    if short:
        return Judgement(
            Outcome.INCONCLUSIVE,
            f"the step ended with fewer than {min_samples} samples per arm: "
            + "; ".join(r.describe() for r in short),
            results,
        )
    return Judgement(
        Outcome.PROMOTE,
        "no guardrail failed: " + "; ".join(r.describe() for r in results),
        results,
    )
