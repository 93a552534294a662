"""Generate the credit-risk sample data deterministically.

    python examples/credit-risk/generate_data.py [OUTPUT_DIR]

The label depends on income, debt ratio, late payments and age, never on
gender, so a good model passes the fairness check; region changes the base
rate a little so that slices differ. The same seed always writes the same
bytes (a test regenerates the files and compares them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 20261122
REGIONS = ("north", "south", "east", "west")
COLUMNS = (
    "id",
    "age",
    "income",
    "debt_ratio",
    "credit_lines",
    "late_payments",
    "region",
    "gender",
    "default",
)


def generate(rows: int, rng: np.random.Generator, first_id: int) -> list[tuple[object, ...]]:
    age = rng.integers(21, 75, rows)
    income = np.round(rng.lognormal(mean=10.6, sigma=0.45, size=rows), -2)
    debt_ratio = np.round(rng.beta(2.0, 5.0, rows), 3)
    credit_lines = rng.poisson(4, rows)
    late_payments = rng.poisson(0.6, rows)
    region = rng.choice(REGIONS, rows, p=(0.3, 0.3, 0.2, 0.2))
    gender = rng.choice(("F", "M"), rows)
    region_shift = np.select([region == "south", region == "west"], [0.3, -0.2], 0.0)
    logit = (
        -0.6
        + 9.0 * (debt_ratio - 0.28)
        + 1.8 * late_payments
        - 3.2 * (np.log(income) - 10.6)
        - 0.05 * (age - 45)
        + region_shift
    )
    default = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return [
        (
            first_id + i,
            age[i],
            f"{income[i]:.0f}",
            f"{debt_ratio[i]:.3f}",
            credit_lines[i],
            late_payments[i],
            region[i],
            gender[i],
            default[i],
        )
        for i in range(rows)
    ]


def write_csv(path: Path, rows: list[tuple[object, ...]]) -> None:
    lines = [",".join(COLUMNS)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def main(output: Path) -> None:
    rng = np.random.default_rng(SEED)
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "train.csv", generate(4000, rng, 1))
    write_csv(output / "eval.csv", generate(2000, rng, 100001))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data")
