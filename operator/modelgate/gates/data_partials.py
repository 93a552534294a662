"""Mergeable partial statistics of datasets: data checks, drift, baselines.

Each is fed batch by batch, merges with a shard's partial of the same kind,
and gives the facts the in-memory engine reads from whole tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from modelgate.api.qualitygate import DataCheck, DriftCheck, DriftMethod
from modelgate.gates.drift import bin_labels, jensen_shannon, psi
from modelgate.gates.engine import UNKNOWN_VALUES_KEPT, DataFacts, is_numeric_type
from modelgate.gates.hashing import U64, DistinctCounter, column_hashes, mix, row_hashes
from modelgate.gates.metrics import Undefined
from modelgate.gates.sketch import ValueSketch, binned, ks_statistic, quantiles
from modelgate.gates.table import Table, TableError

FloatArray = npt.NDArray[np.float64]


@dataclass
class DataProfile:
    """One data check's facts about one dataset, accumulated over batches."""

    spec: DataCheck
    types: dict[str, pa.DataType]
    rows: int = 0
    missing: int = 0
    values: int = 0
    low: float = math.inf
    high: float = -math.inf
    below: int = 0
    above: int = 0
    unknown: set[str] = field(default_factory=set)
    unknown_overflow: bool = False
    duplicates: DistinctCounter | None = None

    def __post_init__(self) -> None:
        if self.spec.max_duplicate_rate is not None and self.duplicates is None:
            self.duplicates = DistinctCounter()

    @property
    def _column(self) -> str | None:
        column = self.spec.column
        return column if column is not None and column in self.types else None

    def add(self, table: Table) -> None:
        self.rows += table.num_rows
        if self.duplicates is not None and table.columns:
            self.duplicates.add(row_hashes(table.data, table.columns))
        column = self._column
        if column is None:
            return
        missing = table.null_mask(column)
        self.missing += int(missing.sum())
        spec = self.spec
        if (spec.min is not None or spec.max is not None) and is_numeric_type(self.types[column]):
            values = table.numeric(column)[~missing]
            self.values += int(values.size)
            if values.size:
                self.low = min(self.low, float(values.min()))
                self.high = max(self.high, float(values.max()))
                if spec.min is not None:
                    self.below += int(np.sum(values < spec.min))
                if spec.max is not None:
                    self.above += int(np.sum(values > spec.max))
        if spec.allowed is not None and not self.unknown_overflow:
            codes, names = table.codes(column)
            present = {names[c] for c in np.unique(codes[~missing])}
            self._unknown(present - set(spec.allowed))

    def _unknown(self, values: set[str]) -> None:
        self.unknown |= values
        if len(self.unknown) > UNKNOWN_VALUES_KEPT:
            self.unknown = set(sorted(self.unknown)[:UNKNOWN_VALUES_KEPT])
            self.unknown_overflow = True

    def merge(self, other: DataProfile) -> None:
        self.rows += other.rows
        self.missing += other.missing
        self.values += other.values
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.below += other.below
        self.above += other.above
        self.unknown_overflow = self.unknown_overflow or other.unknown_overflow
        self._unknown(other.unknown)
        if self.duplicates is not None and other.duplicates is not None:
            self.duplicates.merge(other.duplicates)

    def facts(self) -> DataFacts:
        rate = None
        if self.duplicates is not None and self.rows:
            rate = (self.rows - self.duplicates.distinct()) / self.rows
        return DataFacts(
            rows=self.rows,
            types=self.types,
            duplicate_rate=rate,
            missing=self.missing,
            values=self.values,
            low=self.low,
            high=self.high,
            below=self.below,
            above=self.above,
            unknown=self.unknown,
            unknown_overflow=self.unknown_overflow,
        )

    def wire(self) -> tuple[dict[str, Any], dict[str, Any]]:
        schema = pa.schema([pa.field(n, t) for n, t in self.types.items()])
        arrays: dict[str, Any] = {"schema": np.frombuffer(schema.serialize(), np.uint8)}
        if self.duplicates is not None:
            arrays["hashes"] = self.duplicates.hashes()
        meta = {
            "rows": self.rows,
            "missing": self.missing,
            "values": self.values,
            "low": self.low,
            "high": self.high,
            "below": self.below,
            "above": self.above,
            "unknown": sorted(self.unknown),
            "unknownOverflow": self.unknown_overflow,
        }
        return arrays, meta

    def load(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        """Fill an empty profile from a shard's wire form."""
        schema = pa.ipc.read_schema(pa.py_buffer(np.asarray(arrays["schema"]).tobytes()))
        self.types = {f.name: f.type for f in schema}
        self.rows, self.missing, self.values = (
            int(meta["rows"]),
            int(meta["missing"]),
            int(meta["values"]),
        )
        self.low, self.high = float(meta["low"]), float(meta["high"])
        self.below, self.above = int(meta["below"]), int(meta["above"])
        self.unknown = {str(u) for u in meta["unknown"]}
        self.unknown_overflow = bool(meta["unknownOverflow"])
        if self.duplicates is not None and "hashes" in arrays:
            self.duplicates.add(np.asarray(arrays["hashes"], dtype=np.uint64))


REFERENCE, CURRENT = 0, 1


def _one_sided() -> list[ValueSketch]:
    return [ValueSketch.with_defaults(1), ValueSketch.with_defaults(1)]


@dataclass
class DriftStats:
    """One column's distribution on both sides: a sketch per side when both
    are numeric, category counts otherwise."""

    column: str
    numeric: bool
    sides: list[ValueSketch] = field(default_factory=_one_sided)
    categories: dict[str, list[int]] = field(default_factory=dict)
    missing_from: list[str] = field(default_factory=list)
    _proportions: dict[int, tuple[FloatArray, FloatArray, float]] = field(
        default_factory=dict, repr=False
    )
    _labels: dict[int, list[str]] = field(default_factory=dict, repr=False)

    def add(self, side: int, table: Table) -> None:
        self._proportions.clear()
        if self.numeric:
            values = table.numeric(self.column)
            self.sides[side].add(values[np.isfinite(values)])
            return
        labels = table.labels(self.column)[~table.null_mask(self.column)]
        names, counts = np.unique(labels, return_counts=True)
        for name, count in zip(names.tolist(), counts.tolist(), strict=True):
            self.categories.setdefault(str(name), [0, 0])[side] += int(count)

    def merge(self, other: DriftStats) -> None:
        self._proportions.clear()
        for mine, theirs in zip(self.sides, other.sides, strict=True):
            mine.merge(theirs)
        for name, counts in other.categories.items():
            mine_counts = self.categories.setdefault(name, [0, 0])
            mine_counts[0] += counts[0]
            mine_counts[1] += counts[1]

    def _non_empty(self) -> None:
        if self.missing_from:
            raise TableError(self.missing_from[0])
        if self.numeric:
            empty = any(int(side.totals()[0]) == 0 for side in self.sides)
        else:
            empty = not all(
                any(c[side] for c in self.categories.values()) for side in (REFERENCE, CURRENT)
            )
        if empty:
            raise Undefined(f"column {self.column!r} has no values on one side")

    def proportions(self, bins: int) -> tuple[FloatArray, FloatArray, float]:
        """Both sides' bin shares (the in-memory engine's bins) and the largest
        rank error of a quantile edge (0 when exact)."""
        if bins not in self._proportions:
            self._proportions[bins] = self._compute_proportions(bins)
        return self._proportions[bins]

    def bin_labels(self, bins: int) -> list[str]:
        """What each bin of :meth:`proportions` holds."""
        self.proportions(bins)
        return self._labels[bins]

    def _compute_proportions(self, bins: int) -> tuple[FloatArray, FloatArray, float]:
        self._non_empty()
        if self.numeric:
            reference, current = self.sides
            edges, error = quantiles(reference, np.linspace(0, 1, bins + 1)[1:-1])
            inner = np.unique(edges)
            ref, cur = binned(reference, inner), binned(current, inner)
            self._labels[bins] = bin_labels(inner)
        else:
            names = sorted(self.categories)
            counts = np.array([self.categories[n] for n in names], np.int64).reshape(-1, 2)
            ref, cur, error = counts[:, 0], counts[:, 1], 0.0
            self._labels[bins] = [str(n) for n in names]
        return ref / ref.sum(), cur / cur.sum(), error

    def statistic(self, spec: DriftCheck) -> tuple[float, float]:
        """The check's statistic and how far it can be from the exact one."""
        if spec.method == DriftMethod.KS:
            if self.missing_from:
                raise TableError(self.missing_from[0])
            if not self.numeric:
                raise Undefined(
                    f"ks needs a numeric column; {self.column!r} is categorical (use psi)"
                )
            self._non_empty()
            return ks_statistic(*self.sides)
        ref_p, cur_p, error = self.proportions(spec.bins)
        if spec.method == DriftMethod.PSI:
            return psi(ref_p, cur_p), error
        return jensen_shannon(ref_p, cur_p), error

    def wire(self, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays = {
            **self.sides[REFERENCE].to_arrays(f"{prefix}.reference"),
            **self.sides[CURRENT].to_arrays(f"{prefix}.current"),
        }
        meta = {
            "categories": self.categories,
            "numeric": self.numeric,
            "missingFrom": self.missing_from,
        }
        return arrays, meta

    def load(self, arrays: dict[str, Any], meta: dict[str, Any], prefix: str) -> None:
        self.sides = [
            ValueSketch.from_arrays(arrays, f"{prefix}.reference", 1),
            ValueSketch.from_arrays(arrays, f"{prefix}.current", 1),
        ]
        self.categories = {str(k): [int(v[0]), int(v[1])] for k, v in meta["categories"].items()}


def _sums(hashes: U64) -> tuple[int, int]:
    # Order-free fingerprints of a multiset: sums (mod 2^64) of two mixes.
    with np.errstate(over="ignore"):
        first = int(np.sum(mix(hashes), dtype=np.uint64))
        second = int(np.sum(mix(mix(hashes) ^ np.uint64(0x5851F42D4C957F2D)), dtype=np.uint64))
    return first, second


def _add(a: list[int], b: tuple[int, int] | list[int]) -> list[int]:
    return [(a[0] + b[0]) % (1 << 64), (a[1] + b[1]) % (1 << 64)]


@dataclass
class Fingerprint:
    """What comparing a baseline's predictions row for row needs, without the
    rows: their number, y_true in row order, and with an id column the ids
    and (id, y_true) pairs as multisets (and whether an id repeats)."""

    id_column: str | None
    rows: int = 0
    ordered: list[int] = field(default_factory=lambda: [0, 0])
    ids: list[int] = field(default_factory=lambda: [0, 0])
    pairs: list[int] = field(default_factory=lambda: [0, 0])
    id_missing: bool = False
    seen_ids: DistinctCounter | None = None

    def add(self, table: Table, start_row: int, count_ids: bool) -> None:
        self.rows += table.num_rows
        labels = column_hashes(pa.array(table.labels("y_true")))
        with np.errstate(over="ignore"):
            row = mix(np.arange(start_row, start_row + table.num_rows, dtype=np.uint64))
            self.ordered = _add(self.ordered, _sums(row ^ labels))
        if self.id_column is None:
            return
        if not table.has(self.id_column):
            self.id_missing = True
            return
        ids = column_hashes(pa.array(table.labels(self.id_column)))
        self.ids = _add(self.ids, _sums(ids))
        with np.errstate(over="ignore"):
            self.pairs = _add(self.pairs, _sums(mix(ids) ^ labels))
        if count_ids:
            if self.seen_ids is None:
                self.seen_ids = DistinctCounter()
            self.seen_ids.add(ids)

    def merge(self, other: Fingerprint) -> None:
        self.rows += other.rows
        self.ordered = _add(self.ordered, other.ordered)
        self.ids = _add(self.ids, other.ids)
        self.pairs = _add(self.pairs, other.pairs)
        self.id_missing = self.id_missing or other.id_missing
        if other.seen_ids is not None:
            if self.seen_ids is None:
                self.seen_ids = DistinctCounter()
            self.seen_ids.merge(other.seen_ids)

    def wire(self) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays = {"ids": self.seen_ids.hashes()} if self.seen_ids is not None else {}
        meta = {
            "rows": self.rows,
            "ordered": [str(v) for v in self.ordered],
            "ids": [str(v) for v in self.ids],
            "pairs": [str(v) for v in self.pairs],
            "idMissing": self.id_missing,
        }
        return arrays, meta

    def load(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        self.rows = int(meta["rows"])
        self.ordered = [int(v) for v in meta["ordered"]]
        self.ids = [int(v) for v in meta["ids"]]
        self.pairs = [int(v) for v in meta["pairs"]]
        self.id_missing = bool(meta["idMissing"])
        if "ids" in arrays:
            self.seen_ids = DistinctCounter()
            self.seen_ids.add(np.asarray(arrays["ids"], dtype=np.uint64))


def not_comparable(candidate: Fingerprint, baseline: Fingerprint) -> str | None:
    """Why a baseline's predictions cannot be compared with the candidate's
    (the in-memory engine's reasons, in its order), or None."""
    id_column = candidate.id_column
    if id_column is not None:
        if candidate.id_missing or baseline.id_missing:
            return f"id column {id_column!r} is missing from one of the prediction files"
        if candidate.seen_ids is not None and candidate.seen_ids.duplicated():
            return f"id column {id_column!r} has duplicate values"
        if candidate.rows != baseline.rows or candidate.ids != baseline.ids:
            return f"the rows differ (matched by {id_column})"
        if candidate.pairs != baseline.pairs:
            return "y_true differs for the same ids: not the same evaluation data"
        return None
    if baseline.rows != candidate.rows:
        return f"{baseline.rows} baseline rows vs {candidate.rows} candidate rows"
    if baseline.ordered != candidate.ordered:
        return "y_true differs row by row: not the same evaluation data (set idColumn)"
    return None
