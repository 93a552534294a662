"""Drift statistics between a reference (training) and a current table.

Binning, stated once: numeric columns use the reference's quantile edges
(``bins`` quantiles, duplicates merged, open-ended first and last bin);
categorical columns use one bin per category seen in either table. Missing
values are dropped. PSI and Jensen-Shannon floor empty-bin proportions at
1e-4 (then renormalise) so that a category present on one side only counts as
a large, finite shift instead of an infinite or undefined one.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from modelgate.api.qualitygate import DriftCheck, DriftMethod
from modelgate.gates.metrics import Undefined
from modelgate.gates.table import Table

EMPTY_BIN_FLOOR = 1e-4
FloatArray = npt.NDArray[np.float64]


def _numeric_values(table: Table, column: str) -> FloatArray:
    values = table.numeric(column)
    return values[np.isfinite(values)]


def _edge(value: float) -> str:
    """An edge as a reader writes it: 27,340 rather than 2.734e+04."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def bin_labels(inner: FloatArray) -> list[str]:
    """What each bin of ``inner`` edges holds (a value goes to the bin of the
    edges at or below it): ``< a``, ``[a, b)``, ..., ``>= z``."""
    if inner.size == 0:
        return ["all values"]
    edges = [_edge(float(edge)) for edge in inner]
    middle = [f"[{low}, {high})" for low, high in itertools.pairwise(edges)]
    return [f"< {edges[0]}", *middle, f">= {edges[-1]}"]


def proportions(
    reference: Table, current: Table, column: str, bins: int
) -> tuple[FloatArray, FloatArray]:
    ref, cur, _ = binned_shares(reference, current, column, bins)
    return ref, cur


def binned_shares(
    reference: Table, current: Table, column: str, bins: int
) -> tuple[FloatArray, FloatArray, list[str]]:
    """Both sides' shares per bin (quantile bins of the reference for a
    numeric column, categories otherwise) and what each bin holds."""
    if reference.is_numeric(column) and current.is_numeric(column):
        ref = _numeric_values(reference, column)
        cur = _numeric_values(current, column)
        if ref.size == 0 or cur.size == 0:
            raise Undefined(f"column {column!r} has no values on one side")
        inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        ref_counts = np.bincount(
            np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1
        )
        cur_counts = np.bincount(
            np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1
        )
        labels = bin_labels(inner)
    else:
        ref_labels = reference.labels(column)[~reference.null_mask(column)]
        cur_labels = current.labels(column)[~current.null_mask(column)]
        if ref_labels.size == 0 or cur_labels.size == 0:
            raise Undefined(f"column {column!r} has no values on one side")
        categories = np.unique(np.concatenate([ref_labels, cur_labels]))
        ref_counts = np.bincount(np.searchsorted(categories, ref_labels), minlength=categories.size)
        cur_counts = np.bincount(np.searchsorted(categories, cur_labels), minlength=categories.size)
        labels = [str(c) for c in categories]
    return ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), labels


def _floored(p: FloatArray) -> FloatArray:
    q = np.maximum(p, EMPTY_BIN_FLOOR)
    result: FloatArray = q / q.sum()
    return result


def psi(reference: FloatArray, current: FloatArray) -> float:
    r, c = _floored(reference), _floored(current)
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon(reference: FloatArray, current: FloatArray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint)."""
    r, c = _floored(reference), _floored(current)
    m = (r + c) / 2
    return float(0.5 * np.sum(r * np.log2(r / m)) + 0.5 * np.sum(c * np.log2(c / m)))


def ks_statistic(reference: FloatArray, current: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: largest gap between the ECDFs."""
    ref, cur = np.sort(reference), np.sort(current)
    grid = np.concatenate([ref, cur])
    ref_cdf = np.searchsorted(ref, grid, side="right") / ref.size
    cur_cdf = np.searchsorted(cur, grid, side="right") / cur.size
    return float(np.max(np.abs(ref_cdf - cur_cdf)))


def statistic(spec: DriftCheck, reference: Table, current: Table) -> float:
    column = spec.column
    if spec.method == DriftMethod.KS:
        if not (reference.is_numeric(column) and current.is_numeric(column)):
            raise Undefined(f"ks needs a numeric column; {column!r} is categorical (use psi)")
        ref, cur = _numeric_values(reference, column), _numeric_values(current, column)
        if ref.size == 0 or cur.size == 0:
            raise Undefined(f"column {column!r} has no values on one side")
        return ks_statistic(ref, cur)
    ref_p, cur_p = proportions(reference, current, column, spec.bins)
    if spec.method == DriftMethod.PSI:
        return psi(ref_p, cur_p)
    return jensen_shannon(ref_p, cur_p)
