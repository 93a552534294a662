"""Calibration of the experiment test (modelgate.experiments): simulated
champion-against-challenger experiments on an approval rate, each looked at
repeatedly as the operator looks, stopped at the first verdict.

    python benchmarks/experiment_calibration.py [--null 10000] [--lift 5000] [--looks 20]

Prints, for the mSPRT the operator uses and, side by side, the peer most
teams start from — the fixed-horizon two-proportion z-test
(statsmodels' proportions_ztest) read at every look ("peeking"):

- false_promotion: the share of experiments with no difference that
  promoted the challenger (at most alpha is the promise);
- power: the share with the minimum detectable lift that promoted it by the
  sample size `modelgate.experiments.sizing` states;
- the samples per arm each needs.

The last line is the figure the issue asks for:
`calibration: false_promotion <x> power <y> alpha <a>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from statsmodels.stats.proportion import proportions_ztest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from modelgate.experiments.sequential import (
    Direction,
    Verdict,
    compare,
    proportion,
    superiority,
)
from modelgate.experiments.sizing import (
    fixed_horizon_samples,
    sequential_samples,
)

BASELINE, LIFT, ALPHA, POWER = 0.30, 0.03, 0.05, 0.80


def msprt_verdict(champion: int, challenger: int, n: int) -> Verdict:
    comparison = compare(proportion(champion, n), proportion(challenger, n), alpha=ALPHA, tau=LIFT)
    return superiority(comparison, Direction.HIGHER)


def peeking_verdict(champion: int, challenger: int, n: int) -> Verdict:
    _, p_value = proportions_ztest([challenger, champion], [n, n])
    if p_value >= ALPHA:
        return Verdict.UNDECIDED
    return Verdict.BETTER if challenger > champion else Verdict.WORSE


def run(rate: float, experiments: int, samples: int, looks: int, seed: int) -> dict[str, float]:
    """The share of experiments each test promoted, looking ``looks`` times."""
    rng = np.random.default_rng(seed)
    step = samples // looks
    champion = rng.binomial(step, BASELINE, size=(experiments, looks)).cumsum(axis=1)
    challenger = rng.binomial(step, rate, size=(experiments, looks)).cumsum(axis=1)
    promoted = {"msprt": 0, "peeking": 0}
    for name, verdict_of in (("msprt", msprt_verdict), ("peeking", peeking_verdict)):
        for row in range(experiments):
            for look in range(looks):
                verdict = verdict_of(
                    int(champion[row, look]), int(challenger[row, look]), step * (look + 1)
                )
                if verdict != Verdict.UNDECIDED:
                    promoted[name] += verdict == Verdict.BETTER
                    break
    return {name: count / experiments for name, count in promoted.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null", type=int, default=10_000, help="experiments with no difference")
    parser.add_argument("--lift", type=int, default=5_000, help="experiments with the lift")
    parser.add_argument("--looks", type=int, default=20)
    options = parser.parse_args()
    # Each arm's variance at its own rate: the challenger's is at the lift.
    variances = (BASELINE * (1 - BASELINE), (BASELINE + LIFT) * (1 - BASELINE - LIFT))
    sequential = sequential_samples(*variances, LIFT, ALPHA, POWER, tau=LIFT)
    fixed = fixed_horizon_samples(*variances, LIFT, ALPHA, POWER)
    print(
        f"approval rate {BASELINE:.2f}, lift {LIFT:.2f}, alpha {ALPHA}, power {POWER}, "
        f"{options.looks} looks"
    )
    print(f"samples per arm: mSPRT {sequential}, fixed horizon {fixed} "
          f"(ratio {sequential / fixed:.2f})")  # fmt: skip
    started = time.monotonic()
    null = run(BASELINE, options.null, sequential, options.looks, seed=11)
    lift = run(BASELINE + LIFT, options.lift, sequential, options.looks, seed=12)
    # The peer's own power at its own size, read once at the end (no peeking).
    once = run(BASELINE + LIFT, options.lift, fixed, 1, seed=13)["peeking"]
    print(f"{'test':<34}{'false_promotion':>16}{'power':>8}")
    print(f"{'mSPRT, every look':<34}{null['msprt']:>16.4f}{lift['msprt']:>8.4f}")
    print(f"{'z-test, read at every look':<34}{null['peeking']:>16.4f}{lift['peeking']:>8.4f}")
    print(f"{'z-test, once at its own size':<34}{'':>16}{once:>8.4f}")
    print(
        f"false promotions: the peeking z-test {null['peeking'] / max(null['msprt'], 1e-9):.1f}x "
        f"the mSPRT's; {time.monotonic() - started:.1f} s"
    )
    false_promotion, power = null["msprt"], lift["msprt"]
    print(f"calibration: false_promotion {false_promotion:.4f} power {power:.4f} alpha {ALPHA}")
    # The promise, checked (fixed seeds: the same figures every run).
    broken = []
    if false_promotion > ALPHA:
        broken.append(f"false promotions {false_promotion:.4f} above alpha {ALPHA}")
    if power < POWER:
        broken.append(f"power {power:.4f} below the stated {POWER} at the stated size")
    if broken:
        print("calibration broken: " + "; ".join(broken), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
