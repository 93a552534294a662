"""The mixture sequential probability ratio test for two arms (Johari,
Pekelis and Walsh, "Always valid inference", 2017; Robbins' normal mixture).

Each arm is summarised by its sample count, mean and per-sample variance;
the difference of means (challenger minus champion) is approximately normal
with variance ``V = var_a / n_a + var_b / n_b``. Mixing the alternative over
a normal prior ``N(null, tau^2)`` gives the likelihood ratio in closed form:

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - null)^2 / (2 V (V + tau^2)))

a nonnegative martingale under the null, so by Ville's inequality the
chance that it ever reaches ``1/alpha``, at any of any number of looks, is at
most ``alpha``. Hence an always-valid p-value (``1/Lambda``, kept at its
running minimum) and confidence interval (the nulls not rejected), valid
however often the operator looks. A proportion is a mean of 0/1 samples
with variance ``p(1 - p)``; the plug-in variances make the guarantee
asymptotic, which is why an arm needs a minimum of samples first.

``tau`` is the spread of effects the test is tuned to detect: the minimum
detectable effect is a good choice (the test is then most powerful near it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """Which way a metric is better."""

    HIGHER = "Higher"
    LOWER = "Lower"


class Verdict(StrEnum):
    BETTER = "Better"  # the challenger is better, at the level
    WORSE = "Worse"  # the challenger is worse (a guardrail: beyond its margin)
    UNDECIDED = "Undecided"  # not yet: more samples


@dataclass(frozen=True)
class Arm:
    """One arm's samples of one metric: how many, their mean, their variance."""

    samples: int
    mean: float
    variance: float

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, not {self.samples}")
        if not math.isfinite(self.mean) or not math.isfinite(self.variance) or self.variance < 0:
            raise ValueError(f"mean and variance must be finite, variance >= 0: {self}")


def proportion(successes: int, samples: int) -> Arm:
    """An arm of 0/1 samples (an approval, a click, an error)."""
    if not 0 <= successes <= samples:
        raise ValueError(f"successes must be within 0..samples: {successes} of {samples}")
    rate = successes / samples if samples else 0.0
    return Arm(samples, rate, rate * (1 - rate))


def from_moments(samples: int, total: float, total_of_squares: float) -> Arm:
    """An arm of real samples from their count, sum and sum of squares."""
    if samples == 0:
        return Arm(0, 0.0, 0.0)
    mean = total / samples
    # Sample variance (n - 1); never below 0 through rounding.
    spread = max(total_of_squares - samples * mean * mean, 0.0)
    return Arm(samples, mean, spread / (samples - 1) if samples > 1 else 0.0)


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on one metric, at one look."""

    effect: float  # challenger mean minus champion mean
    low: float  # always-valid confidence interval of the effect, at 1 - alpha
    high: float
    likelihood_ratio: float  # Lambda against the null: the e-value
    p_value: float  # always-valid p-value against the null at this look (1/Lambda, <= 1)
    samples: tuple[int, int]  # (champion, challenger)
    alpha: float
    null: float = 0.0


def _variance_of_difference(champion: Arm, challenger: Arm) -> float:
    if champion.samples == 0 or challenger.samples == 0:
        return math.inf
    return champion.variance / champion.samples + challenger.variance / challenger.samples


def likelihood_ratio(effect: float, variance: float, tau: float, null: float = 0.0) -> float:
    """Lambda: the normal-mixture likelihood ratio of an observed ``effect``
    whose estimate has ``variance``, against ``null``, mixing over N(null, tau^2)."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, not {tau}")
    if math.isinf(variance):
        return 1.0  # no samples on one side: no evidence either way
    if variance == 0:
        return math.inf if effect != null else 1.0
    spread = tau * tau
    exponent = spread * (effect - null) ** 2 / (2 * variance * (variance + spread))
    log_ratio = 0.5 * math.log(variance / (variance + spread)) + exponent
    return math.exp(min(log_ratio, 700.0))  # beyond ~1e304 every level is passed


def radius(variance: float, tau: float, alpha: float) -> float:
    """Half the width of the always-valid confidence interval: the nulls
    whose Lambda stays below 1/alpha are those within ``effect ± radius``."""
    if math.isinf(variance):
        return math.inf
    if variance == 0:
        return 0.0
    spread = tau * tau
    threshold = math.log(1 / alpha) + 0.5 * math.log((variance + spread) / variance)
    return math.sqrt(2 * variance * (variance + spread) / spread * threshold)


def compare(
    champion: Arm, challenger: Arm, *, alpha: float, tau: float, null: float = 0.0
) -> Comparison:
    """The mSPRT of challenger minus champion against ``null``, at this look."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be within (0, 1), not {alpha}")
    effect = challenger.mean - champion.mean
    variance = _variance_of_difference(champion, challenger)
    ratio = likelihood_ratio(effect, variance, tau, null)
    half = radius(variance, tau, alpha)
    return Comparison(
        effect=effect,
        low=effect - half,
        high=effect + half,
        likelihood_ratio=ratio,
        p_value=min(1.0, 1 / ratio) if ratio > 0 else 1.0,
        samples=(champion.samples, challenger.samples),
        alpha=alpha,
        null=null,
    )


def running_p_value(previous: float | None, comparison: Comparison) -> float:
    """The always-valid p-value over every look so far: the running minimum."""
    return comparison.p_value if previous is None else min(previous, comparison.p_value)


def superiority(comparison: Comparison, direction: Direction) -> Verdict:
    """The primary metric: better or worse once the interval excludes no
    difference, undecided while it holds it."""
    if comparison.low > comparison.null:
        return Verdict.BETTER if direction == Direction.HIGHER else Verdict.WORSE
    if comparison.high < comparison.null:
        return Verdict.WORSE if direction == Direction.HIGHER else Verdict.BETTER
    return Verdict.UNDECIDED


def non_inferiority(comparison: Comparison, direction: Direction, margin: float) -> Verdict:
    """A guardrail: WORSE once the challenger is surely worse by more than
    ``margin`` (its interval lies beyond it), BETTER (non-inferior) once it is
    surely not (its interval lies inside it), undecided in between."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, not {margin}")
    # Harm: how much worse the challenger is, in the metric's units.
    low, high = (
        (-comparison.high, -comparison.low)
        if direction == Direction.HIGHER
        else (comparison.low, comparison.high)
    )
    if low > margin:
        return Verdict.WORSE
    if high < margin:
        return Verdict.BETTER
    return Verdict.UNDECIDED
