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
    """Values counted in ``width`` columns (e.g. positives and negatives);
    see the module docstring."""

    width: int
    exact_rows: int = DEFAULT_EXACT_ROWS
    capacity: int = DEFAULT_CAPACITY
    lo: FloatArray = field(default_factory=lambda: np.zeros(0))
    hi: FloatArray = field(default_factory=lambda: np.zeros(0))
    counts: IntArray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    # Rows not folded yet: values and the column each counts in (one byte).
    _values: list[FloatArray] = field(default_factory=list, repr=False)
    _columns: list[npt.NDArray[np.int8]] = field(default_factory=list, repr=False)
    _buffered: int = 0
    _buffer_counts: IntArray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def __post_init__(self) -> None:
        if self.counts.shape[1:] != (self.width,):
            self.counts = np.zeros((0, self.width), np.int64)
        self._buffer_counts = np.zeros(self.width, np.int64)

    @classmethod
    def with_defaults(cls, width: int) -> ValueSketch:
        exact, capacity = default_limits()
        return cls(width, exact, capacity)

    def add(self, values: FloatArray, columns: npt.ArrayLike = 0) -> None:
        """Finite ``values``, each counted once in its column (or all in one)."""
        if len(values) == 0:
            return
        self._values.append(np.asarray(values, dtype=np.float64))
        self._columns.append(np.broadcast_to(np.asarray(columns, np.int8), len(values)))
        self._buffered += len(values)
        if self.width == 1:
            self._buffer_counts[0] += len(values)
        else:
            self._buffer_counts += np.bincount(self._columns[-1], minlength=self.width)[
                : self.width
            ]
        if self._buffered >= self.exact_rows:
            self._fold(compact=True)

    @property
    def buffered(self) -> int:
        return self._buffered

    def flush(self) -> None:
        """Fold the buffered rows now (compacting if over capacity)."""
        self._fold(compact=True)

    def raw(self, column: int = 0) -> FloatArray | None:
        """The values of ``column`` as they came, while nothing is folded
        (what the in-memory engine would see), else None."""
        if len(self.lo):
            return None
        if not self._values:
            return np.zeros(0)
        if len(self._values) > 1:  # one array from now on: later calls are free
            self._values = [np.concatenate(self._values)]
            self._columns = [np.concatenate(self._columns)]
        values = self._values[0]
        if self.width == 1:
            return values
        result: FloatArray = values[self._columns[0] == column]
        return result

    def _fold(self, compact: bool) -> None:
        if self._values:
            values = np.concatenate(self._values)
            columns = np.concatenate(self._columns)
            self._values, self._columns, self._buffered = [], [], 0
            self._buffer_counts = np.zeros(self.width, np.int64)
            order = np.argsort(values)  # ties in any order: their counts are summed
            values, columns = values[order], columns[order]
            starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
            points = values[starts]
            summed = np.empty((len(points), self.width), np.int64)
            for column in range(self.width):
                summed[:, column] = (
                    np.add.reduceat((columns == column).astype(np.int64), starts)
                    if len(points)
                    else 0
                )
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
        return bool(np.all(self.lo == self.hi))

    def totals(self) -> IntArray:
        """Rows counted in each column (without folding the buffer)."""
        result: IntArray = self.counts.sum(axis=0).astype(np.int64) + self._buffer_counts
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


def _ecdf(sketch: ValueSketch, grid: FloatArray) -> FloatArray:
    """Share of the values <= each grid point, counting a range once past it."""
    _, hi, counts = sketch.entries()
    cumulative = np.cumsum(counts[:, 0])
    index = np.searchsorted(hi, grid, side="right") - 1
    result: FloatArray = np.where(index >= 0, cumulative[np.maximum(index, 0)], 0) / max(
        int(cumulative[-1]) if len(cumulative) else 0, 1
    )
    return result


def _largest_range_share(sketch: ValueSketch) -> float:
    lo, hi, counts = sketch.entries()
    ranged = lo < hi
    total = int(counts[:, 0].sum())
    return float(counts[ranged, 0].max() / total) if ranged.any() and total else 0.0


def ks_statistic(reference: ValueSketch, current: ValueSketch) -> tuple[float, float]:
    """Two-sample KS statistic (largest gap between the ECDFs) and its bound:
    inside a range an ECDF may move by that range's share."""
    ref_raw, cur_raw = reference.raw(), current.raw()
    if ref_raw is not None and cur_raw is not None:
        ref, cur = np.sort(ref_raw), np.sort(cur_raw)
        grid = np.concatenate([ref, cur])
        ref_cdf = np.searchsorted(ref, grid, side="right") / ref.size
        cur_cdf = np.searchsorted(cur, grid, side="right") / cur.size
        return float(np.max(np.abs(ref_cdf - cur_cdf))), 0.0
    grid = np.union1d(reference.entries()[1], current.entries()[1])
    gap = float(np.max(np.abs(_ecdf(reference, grid) - _ecdf(current, grid))))
    return gap, _largest_range_share(reference) + _largest_range_share(current)


def _lerp(a: FloatArray, b: FloatArray, t: FloatArray) -> FloatArray:
    # numpy.quantile's own interpolation, so exact sketches give its edges bit for bit.
    diff = b - a
    result: FloatArray = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return result


def quantiles(sketch: ValueSketch, q: FloatArray) -> tuple[FloatArray, float]:
    """``numpy.quantile`` (linear) of the values, and the largest share of
    them inside one range (the rank error of an edge; 0 when exact)."""
    raw = sketch.raw()
    if raw is not None:
        exact: FloatArray = np.quantile(raw, q)
        return exact, 0.0
    lo, hi, counts = sketch.entries()
    weight = counts[:, 0]
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
    return edges, _largest_range_share(sketch)


def binned(sketch: ValueSketch, inner: FloatArray) -> IntArray:
    """Values per bin of ``inner`` edges (bin = searchsorted right); a range
    counts in the bin of its middle."""
    raw = sketch.raw()
    if raw is not None:
        # searchsorted(right) counts, from one comparison pass per edge: a
        # value is past edge k when value >= edge k (few edges, many rows).
        past = np.array([np.count_nonzero(raw >= edge) for edge in inner], np.int64)
        exact: IntArray = -np.diff(np.r_[len(raw), past, 0])
        return exact
    lo, hi, counts = sketch.entries()
    bins = np.searchsorted(inner, (lo + hi) / 2, side="right")
    result: IntArray = np.bincount(bins, weights=counts[:, 0], minlength=len(inner) + 1).astype(
        np.int64
    )
    return result
