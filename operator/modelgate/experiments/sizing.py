"""How many samples per arm an experiment needs, shown before it starts.

Two figures: the fixed-horizon size (one look at the end, the textbook
two-sided z-test) for comparison, and the size at which the mSPRT, looking
continuously, detects the minimum detectable effect with the stated power —
larger, the price of looking as often as one likes."""

from __future__ import annotations

import math
from statistics import NormalDist

from modelgate.experiments.sequential import likelihood_ratio

_NORMAL = NormalDist()
_MOST = 10**12  # no experiment waits for more samples than this


def fixed_horizon_samples(
    variance_champion: float, variance_challenger: float, effect: float, alpha: float, power: float
) -> int:
    """Samples per arm for a two-sided z-test at ``alpha`` to detect ``effect``
    with ``power`` (equal arms)."""
    _check(effect, alpha, power)
    z = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)
    return math.ceil(z * z * (variance_champion + variance_challenger) / (effect * effect))


def sequential_samples(
    variance_champion: float,
    variance_challenger: float,
    effect: float,
    alpha: float,
    power: float,
    tau: float,
) -> int:
    """Samples per arm by which the mSPRT has rejected with at least ``power``
    when the true difference is ``effect``: the smallest n at which an
    observed difference at the ``1 - power`` quantile of its distribution
    (effect - z_power * sd) reaches Lambda >= 1/alpha. A lower bound on the
    power at n, since a test that may stop at any earlier look rejects at
    least as often as one that looks only at n."""
    _check(effect, alpha, power)
    z = _NORMAL.inv_cdf(power)
    size = abs(effect)

    def enough(n: int) -> bool:
        variance = (variance_champion + variance_challenger) / n
        observed = size - z * math.sqrt(variance)
        return observed > 0 and likelihood_ratio(observed, variance, tau) >= 1 / alpha

    high = 2
    while not enough(high):
        high *= 2
        if high > _MOST:
            raise ValueError(f"no sample size up to {_MOST} detects an effect of {effect}")
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _check(effect: float, alpha: float, power: float) -> None:
    if effect == 0 or not math.isfinite(effect):
        raise ValueError(f"the minimum detectable effect must be finite and not 0, not {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be within (0, 1): {alpha}, {power}")
