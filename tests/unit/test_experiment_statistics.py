"""The experiment statistics (modelgate.experiments) against scipy and
statsmodels, and calibrated by simulation: over thousands of simulated
experiments with no difference, looked at 20 times each, the test promotes
at most alpha of the time; at the minimum detectable effect it detects it
with the stated power by the sample size it states."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats.power import NormalIndPower

from modelgate.experiments.sequential import (
    Arm,
    Comparison,
    Direction,
    Verdict,
    compare,
    from_moments,
    likelihood_ratio,
    non_inferiority,
    proportion,
    radius,
    running_p_value,
    superiority,
)
from modelgate.experiments.sizing import fixed_horizon_samples, sequential_samples


@pytest.mark.parametrize(
    ("effect", "variance", "tau", "null"),
    [
        (0.0, 1e-4, 0.03, 0.0),
        (0.02, 4e-5, 0.03, 0.0),
        (-0.05, 1e-3, 0.01, 0.01),
        (3.0, 2.0, 1.0, 1.0),
    ],
)
def test_the_likelihood_ratio_is_the_normal_mixture_integrated_by_scipy(
    effect: float, variance: float, tau: float, null: float
) -> None:
    sd = math.sqrt(variance)

    def integrand(theta: float) -> float:
        ratio = stats.norm.pdf(effect, theta, sd) / stats.norm.pdf(effect, null, sd)
        return float(ratio * stats.norm.pdf(theta, null, tau))

    numeric, _ = integrate.quad(integrand, null - 12 * tau, null + 12 * tau, points=[effect])
    assert likelihood_ratio(effect, variance, tau, null) == pytest.approx(numeric, rel=1e-6)


def test_the_interval_is_the_nulls_the_test_does_not_reject() -> None:
    effect, variance, tau, alpha = 0.013, 2e-5, 0.02, 0.05
    half = radius(variance, tau, alpha)
    for null in (effect - half, effect + half):
        assert likelihood_ratio(effect, variance, tau, null) == pytest.approx(1 / alpha)
    assert likelihood_ratio(effect, variance, tau, effect + 0.99 * half) < 1 / alpha
    assert likelihood_ratio(effect, variance, tau, effect + 1.01 * half) > 1 / alpha


def test_the_fixed_horizon_size_is_statsmodels_z_test_size() -> None:
    # credit approvals at 30 %, a 3-point lift to detect
    variance = 0.3 * 0.7
    effect, alpha, power = 0.03, 0.05, 0.8
    ours = fixed_horizon_samples(variance, variance, effect, alpha, power)
    theirs = NormalIndPower().solve_power(
        effect_size=effect / math.sqrt(variance), alpha=alpha, power=power, ratio=1.0
    )
    assert ours == math.ceil(theirs)


def test_arms_from_counts_and_moments_match_numpy() -> None:
    rng = np.random.default_rng(7)
    values = rng.gamma(2.0, 0.05, size=500)
    arm = from_moments(len(values), float(values.sum()), float((values**2).sum()))
    assert arm.mean == pytest.approx(values.mean())
    assert arm.variance == pytest.approx(values.var(ddof=1))
    assert proportion(30, 100) == Arm(100, 0.3, 0.3 * 0.7)
    assert proportion(0, 0) == Arm(0, 0.0, 0.0)


def test_an_arm_with_no_samples_is_no_evidence() -> None:
    comparison = compare(Arm(0, 0.0, 0.0), proportion(50, 100), alpha=0.05, tau=0.03)
    assert comparison.likelihood_ratio == 1.0
    assert (comparison.low, comparison.high) == (-math.inf, math.inf)
    assert superiority(comparison, Direction.HIGHER) == Verdict.UNDECIDED


def _comparison(effect: float, low: float, high: float) -> Comparison:
    return Comparison(effect, low, high, 1.0, 1.0, (1000, 1000), 0.05)


@pytest.mark.parametrize(
    ("low", "high", "direction", "verdict"),
    [
        (0.01, 0.05, Direction.HIGHER, Verdict.BETTER),
        (0.01, 0.05, Direction.LOWER, Verdict.WORSE),
        (-0.05, -0.01, Direction.HIGHER, Verdict.WORSE),
        (-0.05, -0.01, Direction.LOWER, Verdict.BETTER),
        (-0.01, 0.02, Direction.HIGHER, Verdict.UNDECIDED),
    ],
)
def test_superiority_follows_the_interval_and_the_direction(
    low: float, high: float, direction: Direction, verdict: Verdict
) -> None:
    assert superiority(_comparison((low + high) / 2, low, high), direction) == verdict


@pytest.mark.parametrize(
    ("low", "high", "direction", "verdict"),
    [
        # latency (lower is better), margin 20 ms
        (0.025, 0.040, Direction.LOWER, Verdict.WORSE),  # surely over 20 ms slower
        (-0.010, 0.015, Direction.LOWER, Verdict.BETTER),  # surely under 20 ms slower
        (0.010, 0.030, Direction.LOWER, Verdict.UNDECIDED),
        # a rate that should stay high, margin 0.02
        (-0.040, -0.025, Direction.HIGHER, Verdict.WORSE),
        (-0.010, 0.030, Direction.HIGHER, Verdict.BETTER),
    ],
)
def test_a_guardrail_is_judged_against_its_margin(
    low: float, high: float, direction: Direction, verdict: Verdict
) -> None:
    margin = 0.020
    assert non_inferiority(_comparison((low + high) / 2, low, high), direction, margin) == verdict


def test_the_p_value_is_the_running_minimum() -> None:
    first = compare(proportion(300, 1000), proportion(340, 1000), alpha=0.05, tau=0.03)
    later = compare(proportion(600, 2000), proportion(610, 2000), alpha=0.05, tau=0.03)
    assert running_p_value(None, first) == first.p_value
    assert running_p_value(first.p_value, later) == min(first.p_value, later.p_value)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: compare(proportion(1, 2), proportion(1, 2), alpha=1.5, tau=0.1), "alpha"),
        (lambda: compare(proportion(1, 2), proportion(1, 2), alpha=0.05, tau=0.0), "tau"),
        (lambda: proportion(5, 3), "successes"),
        (lambda: Arm(-1, 0.0, 0.0), "samples"),
        (lambda: Arm(1, math.nan, 0.0), "mean"),
        (lambda: fixed_horizon_samples(0.2, 0.2, 0.0, 0.05, 0.8), "minimum detectable effect"),
        (lambda: sequential_samples(0.2, 0.2, 0.03, 0.05, 1.2, 0.03), "power"),
        (lambda: non_inferiority(_comparison(0, -1, 1), Direction.LOWER, -0.1), "margin"),
    ],
)
def test_bad_input_is_refused_naming_what_is_wrong(call: object, field: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=field):
        call()


# The calibration (benchmarks/experiment_calibration.py runs it bigger):
# approvals at 30 %, a lift of 3 points to detect, alpha 0.05, power 0.8.
BASELINE, LIFT, ALPHA, POWER, LOOKS = 0.30, 0.03, 0.05, 0.80, 20


def simulate(rate: float, experiments: int, samples: int, seed: int) -> tuple[float, float]:
    """The share of simulated experiments promoted and rolled back, looked at
    LOOKS times each up to ``samples`` per arm, stopping at the first verdict."""
    rng = np.random.default_rng(seed)
    step = samples // LOOKS
    champion = rng.binomial(step, BASELINE, size=(experiments, LOOKS)).cumsum(axis=1)
    challenger = rng.binomial(step, rate, size=(experiments, LOOKS)).cumsum(axis=1)
    promoted = rolled_back = 0
    for row in range(experiments):
        for look in range(LOOKS):
            n = step * (look + 1)
            verdict = superiority(
                compare(
                    proportion(int(champion[row, look]), n),
                    proportion(int(challenger[row, look]), n),
                    alpha=ALPHA,
                    tau=LIFT,
                ),
                Direction.HIGHER,
            )
            if verdict != Verdict.UNDECIDED:
                promoted += verdict == Verdict.BETTER
                rolled_back += verdict == Verdict.WORSE
                break
    return promoted / experiments, rolled_back / experiments


# Each arm's variance at its own rate: the challenger's is at the lift.
VARIANCES = (BASELINE * (1 - BASELINE), (BASELINE + LIFT) * (1 - BASELINE - LIFT))


def test_no_difference_is_promoted_at_most_alpha_of_the_time_however_often_one_looks() -> None:
    samples = sequential_samples(*VARIANCES, LIFT, ALPHA, POWER, tau=LIFT)
    promoted, rolled_back = simulate(BASELINE, experiments=2000, samples=samples, seed=1)
    assert promoted <= ALPHA
    assert promoted + rolled_back <= ALPHA  # two-sided: either verdict is a false one


def test_the_lift_is_detected_with_the_stated_power_by_the_stated_size() -> None:
    samples = sequential_samples(*VARIANCES, LIFT, ALPHA, POWER, tau=LIFT)
    fixed = fixed_horizon_samples(*VARIANCES, LIFT, ALPHA, POWER)
    assert fixed < samples < 4 * fixed  # the price of looking at will
    promoted, rolled_back = simulate(BASELINE + LIFT, experiments=1000, samples=samples, seed=2)
    assert promoted >= POWER
    assert rolled_back == 0.0
