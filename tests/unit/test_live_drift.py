"""The model server's live drift: a sliding-window PSI that agrees with the gate's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelgate.api.qualitygate import DriftCheck
from modelgate.gates.drift import statistic
from modelgate.gates.table import Table
from modelgate.serving.live import BinnedReference, SlidingPSI
from modelgate.trainer.train import binned_reference, category_reference


def gate_psi(reference: dict[str, list[object]], current: dict[str, list[object]]) -> float:
    check = DriftCheck.model_validate({"column": "x", "method": "psi", "max": 1, "bins": 10})
    return statistic(
        check, Table("training", pa.table(reference)), Table("live", pa.table(current))
    )


def test_a_full_window_gives_the_gates_psi_for_numbers() -> None:
    rng = np.random.default_rng(7)
    training = rng.normal(50, 10, 5000)
    live = rng.normal(55, 12, 800)
    reference = BinnedReference.from_metadata({"reference": binned_reference(training)})
    assert reference is not None
    window = SlidingPSI(reference, 800)
    for value in live:
        window.add(float(value))
    assert window.rows == 800
    expected = gate_psi({"x": list(training)}, {"x": list(live)})
    assert expected > 0.1
    assert window.psi() == pytest.approx(expected, rel=1e-9)


def test_categories_unseen_in_training_fall_in_other() -> None:
    training = pd.Series(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    reference = BinnedReference.from_metadata({"reference": category_reference(training, top=2)})
    assert reference is not None
    assert reference.categories == {"a": 0, "b": 1}
    assert reference.shares == pytest.approx([0.6, 0.3, 0.1])
    assert [reference.bin(v) for v in ("a", "b", "c", "zzz", None)] == [0, 1, 2, 2, None]


def test_the_window_slides_and_missing_values_are_left_out() -> None:
    training = [-1.0, -0.5, 0.5, 1.0]
    reference = BinnedReference.from_metadata({"reference": binned_reference(np.array(training))})
    assert reference is not None
    window = SlidingPSI(reference, window=4)
    assert window.psi() is None  # nothing yet: no data, not zero drift
    for value in training:
        window.add(value)
    assert window.psi() == pytest.approx(0.0)
    for value in (1.0, 1.0, None, float("nan"), 0.5, 1.0):
        window.add(value)
    assert window.rows == 4
    assert sum(window.counts) == 4
    expected = gate_psi({"x": training}, {"x": [1.0, 1.0, 0.5, 1.0]})
    assert window.psi() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "reference",
    [
        {"edges": [1.0], "shares": [1.0]},
        {"categories": ["a"], "shares": [1.0]},
        {"edges": [1.0, 2.0], "shares": [0.5, 0.5]},
    ],
)
def test_a_reference_whose_shares_do_not_fit_its_bins_is_not_used(
    reference: dict[str, object],
) -> None:
    assert BinnedReference.from_metadata({"reference": reference}) is None
    assert BinnedReference.from_metadata({"name": "x"}) is None  # written before references
