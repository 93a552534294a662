"""A mergeable sketch of weighted values: exact while it fits, bounded after.

Rank statistics (roc_auc, pr_auc, KS) and quantile bin edges need the order
of every value. The sketch keeps, per distinct value, a row of integer weights
(e.g. positives and negatives). Rows are buffered as they arrive; when the
buffer holds ``exact_rows`` rows it is folded into sorted *entries*. An entry
is a point ``lo == hi`` or, once more than ``capacity`` entries exist, a range
``lo < hi`` made by joining neighbours of about equal mass (down to
``capacity / 2`` entries). A value that falls in a range adds to it.

So a sketch is exact (every entry a point) when it saw at most
``exact_rows`` rows or at most ``capacity`` distinct values; otherwise every
range holds about ``2 / capacity`` of the mass when it is made, and the
statistics report how far their value can be from the exact one (see
``error bound`` in the README). Memory is ``O(exact_rows + capacity)`` per
sketch, whatever the number of rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EXACT_ROWS_ENV = "MODELGATE_SKETCH_EXACT_ROWS"
CAPACITY_ENV = "MODELGATE_SKETCH_CAPACITY"
DEFAULT_EXACT_ROWS = 1 << 20
DEFAULT_CAPACITY = 1 << 16


def default_limits() -> tuple[int, int]:
    """(exact_rows, capacity), overridable by the environment (tests shrink them)."""
    exact = int(os.environ.get(EXACT_ROWS_ENV, DEFAULT_EXACT_ROWS))
    capacity = int(os.environ.get(CAPACITY_ENV, DEFAULT_CAPACITY))
    return max(exact, 1), max(capacity, 4)


def _coalesce(
    lo: FloatArray, hi: FloatArray, counts: IntArray
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Sort entries and join those that touch or overlap (equal points too)."""
    order = np.lexsort((hi, lo))
    lo, hi, counts = lo[order], hi[order], counts[order]
    if len(lo) == 0:
        return lo, hi, counts
    reach = np.maximum.accumulate(hi)
    starts = np.flatnonzero(np.r_[True, lo[1:] > reach[:-1]])
    ends = np.r_[starts[1:], len(lo)] - 1
    return lo[starts], reach[ends], np.asarray(np.add.reduceat(counts, starts, axis=0), np.int64)


@dataclass
class ValueSketch:
    """Values with ``width`` integer weights each; see the module docstring."""

    width: int
    exact_rows: int = DEFAULT_EXACT_ROWS
    capacity: int = DEFAULT_CAPACITY
    lo: FloatArray = field(default_factory=lambda: np.zeros(0))
    hi: FloatArray = field(default_factory=lambda: np.zeros(0))
    counts: IntArray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    _values: list[FloatArray] = field(default_factory=list, repr=False)
    _weights: list[IntArray] = field(default_factory=list, repr=False)
    _buffered: int = 0

    def __post_init__(self) -> None:
        if self.counts.shape[1:] != (self.width,):
            self.counts = np.zeros((0, self.width), np.int64)

    @classmethod
    def with_defaults(cls, width: int) -> ValueSketch:
        exact, capacity = default_limits()
        return cls(width, exact, capacity)

    def add(self, values: FloatArray, weights: IntArray) -> None:
        """Finite ``values`` with an ``(n, width)`` weight row each."""
        if len(values) == 0:
            return
        self._values.append(np.asarray(values, dtype=np.float64))
        self._weights.append(np.asarray(weights, dtype=np.int64).reshape(len(values), self.width))
        self._buffered += len(values)
        if self._buffered >= self.exact_rows:
            self._fold(compact=True)

    def add_column(self, values: FloatArray, column: int) -> None:
        """Each value with weight 1 in ``column`` and 0 elsewhere."""
        weights = np.zeros((len(values), self.width), np.int64)
        weights[:, column] = 1
        self.add(values, weights)

    def _fold(self, compact: bool) -> None:
        if self._values:
            values = np.concatenate(self._values)
            weights = np.concatenate(self._weights)
            self._values, self._weights, self._buffered = [], [], 0
            order = np.argsort(values, kind="stable")
            values, weights = values[order], weights[order]
            starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
            points = values[starts]
            summed = np.asarray(np.add.reduceat(weights, starts, axis=0), np.int64)
            if len(self.lo):
                self.lo, self.hi, self.counts = _coalesce(
                    np.r_[self.lo, points], np.r_[self.hi, points], np.r_[self.counts, summed]
                )
            else:
                self.lo, self.hi, self.counts = points, points.copy(), summed
        if compact and len(self.lo) > self.capacity:
            self._compact(self.capacity // 2)

    def _compact(self, target: int) -> None:
        mass = self.counts.sum(axis=1)
        total = int(mass.sum())
        before = np.cumsum(mass) - mass
        # Equal-mass groups of neighbours; a heavy point stays alone.
        group = np.minimum((before * target) // max(total, 1), target - 1)
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        ends = np.r_[starts[1:], len(group)] - 1
        self.lo, self.hi = self.lo[starts], self.hi[ends]
        self.counts = np.asarray(np.add.reduceat(self.counts, starts, axis=0), np.int64)

    def merge(self, other: ValueSketch) -> None:
        """Add another sketch's values (a shard's); exact stays exact."""
        other._fold(compact=False)
        self._fold(compact=False)
        if len(other.lo):
            self.lo, self.hi, self.counts = _coalesce(
                np.r_[self.lo, other.lo], np.r_[self.hi, other.hi], np.r_[self.counts, other.counts]
            )
        if len(self.lo) > self.capacity and not self.exact:
            self._compact(self.capacity // 2)

    def entries(self) -> tuple[FloatArray, FloatArray, IntArray]:
        """Sorted entries ``(lo, hi, counts)``: every buffered row included."""
        self._fold(compact=False)
        return self.lo, self.hi, self.counts

    @property
    def exact(self) -> bool:
        self._fold(compact=False)
        return bool(np.all(self.lo == self.hi))

    def totals(self) -> IntArray:
        lo, _, counts = self.entries()
        result: IntArray = counts.sum(axis=0) if len(lo) else np.zeros(self.width, np.int64)
        return result

    # -- shards ------------------------------------------------------------------

    def to_arrays(self, prefix: str) -> dict[str, Any]:
        lo, hi, counts = self.entries()
        return {f"{prefix}.lo": lo, f"{prefix}.hi": hi, f"{prefix}.counts": counts}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], prefix: str, width: int) -> ValueSketch:
        exact, capacity = default_limits()
        counts = np.asarray(arrays[f"{prefix}.counts"], dtype=np.int64).reshape(-1, width)
        return cls(
            width,
            exact,
            capacity,
            np.asarray(arrays[f"{prefix}.lo"], dtype=np.float64),
            np.asarray(arrays[f"{prefix}.hi"], dtype=np.float64),
            counts,
        )


# -- statistics on sketches ------------------------------------------------------


def roc_auc(sketch: ValueSketch) -> tuple[float, float]:
    """Mann-Whitney AUC from (positive, negative) weights and its error bound.

    Pairs inside one entry count one half (ties, as scikit-learn counts
    them); in a range they could be anything from 0 to 1, so the bound is
    half the share of positive-negative pairs inside ranges.
    """
    lo, hi, counts = sketch.entries()
    pos, neg = counts[:, 0], counts[:, 1]
    positives, negatives = int(pos.sum()), int(neg.sum())
    below = np.cumsum(neg) - neg
    # Integers all the way: 2U fits in int64 for any table that fits a disk.
    twice_u = int(np.dot(pos, 2 * below + neg))
    pairs = positives * negatives
    inside = int(np.dot(pos[lo < hi], neg[lo < hi]))
    return twice_u / (2 * pairs), inside / (2 * pairs)


def average_precision(sketch: ValueSketch) -> tuple[float, float]:
    """Average precision (sum of recall steps times precision, thresholds at
    distinct scores, descending, as scikit-learn) and its error bound: inside
    a range the precision at each positive lies between the range's lowest
    and highest possible precision."""
    lo, hi, counts = sketch.entries()
    pos, neg = counts[::-1, 0], counts[::-1, 1]
    ranged = (lo < hi)[::-1]
    positives = int(pos.sum())
    true_pos = np.cumsum(pos)
    seen = np.cumsum(pos + neg)
    precision = true_pos / seen
    recall = true_pos / positives
    step = np.diff(np.r_[0.0, recall])
    contribution = step * precision
    if not ranged.any():
        return float(np.sum(contribution)), 0.0
    tp_before, seen_before = true_pos - pos, seen - pos - neg
    # Inside a range the order is unknown: take positives spread evenly among
    # its rows, the j-th at precision (a + j) / (c + j r) with r the expected
    # gap between positives (n + 1) / (pos + 1), and sum over j by
    # the integral from 1/2 to pos + 1/2 (closed form).
    inside = ranged & (pos > 0)
    a, c = tp_before[inside].astype(np.float64), seen_before[inside].astype(np.float64)
    p_b = pos[inside].astype(np.float64)
    r = (pos[inside] + neg[inside] + 1) / (p_b + 1)  # mean gap between positives

    def primitive(x: FloatArray) -> FloatArray:
        result: FloatArray = x / r + (a * r - c) / r**2 * np.log(c + r * x)
        return result

    contribution[inside] = (primitive(p_b + 0.5) - primitive(np.full_like(p_b, 0.5))) / positives
    value = float(np.sum(contribution))
    with np.errstate(divide="ignore", invalid="ignore"):
        highest = (tp_before + pos) / np.maximum(seen_before + pos, 1)
        lowest = (tp_before + 1) / np.maximum(seen, 1)
    spread = np.where(ranged & (pos > 0), np.abs(highest - lowest), 0.0)
    return value, float(np.sum(step * spread))


def ecdf_gap(sketch: ValueSketch) -> tuple[float, float]:
    """Two-sample KS statistic from (reference, current) weights: the largest
    gap between the two ECDFs at the entries' ends, and its bound (inside a
    range either ECDF may move by that range's share)."""
    lo, hi, counts = sketch.entries()
    first, second = counts[:, 0], counts[:, 1]
    n_first, n_second = int(first.sum()), int(second.sum())
    gap = np.abs(np.cumsum(first) / n_first - np.cumsum(second) / n_second)
    value = float(np.max(gap)) if len(gap) else 0.0
    ranged = lo < hi
    if not ranged.any():
        return value, 0.0
    share = np.maximum(first[ranged] / n_first, second[ranged] / n_second)
    return value, float(np.max(share))


def _lerp(a: FloatArray, b: FloatArray, t: FloatArray) -> FloatArray:
    # numpy.quantile's own interpolation, so exact sketches give its edges bit for bit.
    diff = b - a
    result: FloatArray = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return result


def quantiles(sketch: ValueSketch, column: int, q: FloatArray) -> tuple[FloatArray, float]:
    """``numpy.quantile`` (linear) of the values weighted by ``column``, and
    the largest share of that column inside one range (the rank error)."""
    lo, hi, counts = sketch.entries()
    weight = counts[:, column]
    keep = weight > 0
    lo, hi, weight = lo[keep], hi[keep], weight[keep]
    total = int(weight.sum())
    cumulative = np.cumsum(weight)

    def at(rank: IntArray) -> FloatArray:
        index = np.searchsorted(cumulative, rank, side="right")
        start = cumulative[index] - weight[index]
        within = (rank - start + 0.5) / weight[index]
        result: FloatArray = np.where(
            lo[index] == hi[index], lo[index], lo[index] + (hi[index] - lo[index]) * within
        )
        return result

    virtual = (total - 1) * q
    below = np.floor(virtual).astype(np.int64)
    above = np.minimum(below + 1, total - 1)
    edges = _lerp(at(below), at(above), virtual - below)
    ranged = lo < hi
    error = float(weight[ranged].max() / total) if ranged.any() else 0.0
    return edges, error


def binned(sketch: ValueSketch, inner: FloatArray) -> IntArray:
    """Weights per bin of ``inner`` edges (bin = searchsorted right); a range
    counts in the bin of its middle."""
    lo, hi, counts = sketch.entries()
    bins = np.searchsorted(inner, (lo + hi) / 2, side="right")
    result = np.zeros((len(inner) + 1, sketch.width), np.int64)
    np.add.at(result, bins, counts)
    return result
