"""Mergeable partial statistics of predictions, per group.

One batch of predictions is encoded once (:class:`PredictionBatch`); every
grouping (the whole set, each slice spec, each sensitive column) adds it to
its :class:`PredictionStats`: counts, sums and moments, exact, plus a score
sketch per group where a rank metric needs one. Partials of two shards merge
into the partial of both; the metrics are computed from the merged partial by
:mod:`modelgate.gates.group_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from modelgate.api.qualitygate import Task
from modelgate.gates.groups import ColumnNames, Grouping, Position, first_rows
from modelgate.gates.sketch import ValueSketch
from modelgate.gates.table import Table

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SCORE_PREFIX = "y_score_"
EPS = float(np.finfo(np.float64).eps)


@dataclass
class PredictionBatch:
    """One batch of predictions in global codes (see :class:`PredictionEncoder`)."""

    table: Table
    at: Position
    rows: int
    y_true: IntArray | None = None
    y_pred: IntArray | None = None
    truth: BoolArray | None = None
    predicted: BoolArray | None = None
    score: FloatArray | None = None
    chosen: FloatArray | None = None
    off_rows: BoolArray | None = None
    y_num: FloatArray | None = None
    q_num: FloatArray | None = None


@dataclass
class PredictionEncoder:
    """Encodes batches of the contract's prediction columns; remembers what
    the whole file says (classes, missing labels, which columns exist)."""

    task: Task
    positive_label: str
    classes: ColumnNames = field(default_factory=ColumnNames)
    missing_labels: dict[str, int] = field(default_factory=lambda: {"y_true": 0, "y_pred": 0})
    has_score: bool = False
    score_columns: list[str] = field(default_factory=list)

    def encode(self, table: Table, at: Position) -> PredictionBatch:
        out = PredictionBatch(table, at, table.num_rows)
        if self.task == Task.REGRESSION:
            out.y_num = np.nan_to_num(table.numeric("y_true"))
            out.q_num = np.nan_to_num(table.numeric("y_pred"))
            raw_y, raw_q = table.numeric("y_true"), table.numeric("y_pred")
            out.off_rows = ~(np.isfinite(raw_y) & np.isfinite(raw_q))
            return out
        for column in ("y_true", "y_pred"):
            self.missing_labels[column] += int(np.sum(table.null_mask(column)))
        coded: dict[str, IntArray] = {}
        for column in ("y_true", "y_pred"):
            codes, names = table.codes(column)
            ids = self.classes.ids(names, first_rows(codes, len(names)), at)
            coded[column] = ids[codes] if len(codes) else codes
        out.y_true, out.y_pred = coded["y_true"], coded["y_pred"]
        positive = self.classes.index.get(self.positive_label, -1)
        out.truth = out.y_true == positive
        out.predicted = out.y_pred == positive
        if self.task == Task.BINARY and table.has("y_score"):
            self.has_score = True
            out.score = table.numeric("y_score")
        if self.task == Task.MULTICLASS:
            self._class_scores(table, out)
        return out

    def _class_scores(self, table: Table, out: PredictionBatch) -> None:
        columns = [c for c in table.columns if c.startswith(SCORE_PREFIX)]
        self.score_columns = columns
        if not columns or out.y_true is None:
            return
        matrix = np.column_stack([table.numeric(c) for c in columns])
        by_class = {c[len(SCORE_PREFIX) :]: i for i, c in enumerate(columns)}
        lookup = np.array([by_class.get(n, -1) for n in self.classes.names] or [-1], np.int64)
        column = lookup[out.y_true] if len(out.y_true) else out.y_true
        chosen = np.full(len(column), np.nan)
        has = column >= 0
        chosen[has] = matrix[np.flatnonzero(has), column[has]]
        out.chosen = chosen
        finite_rows = np.all(np.isfinite(np.nan_to_num(matrix, nan=0.0)), axis=1)
        sums = np.nansum(matrix, axis=1)
        out.off_rows = ~finite_rows | (np.abs(sums - 1.0) > 1e-6)


def _count(codes: IntArray | None, groups: int, weights: Any = None) -> FloatArray:
    if codes is None:
        if weights is None:
            return np.array([0.0])
        return np.array([np.sum(weights)], dtype=np.float64)
    return np.bincount(codes, weights=weights, minlength=groups).astype(np.float64)


def _grow(array: npt.NDArray[Any], rows: int, columns: int | None = None) -> npt.NDArray[Any]:
    shape = (rows,) if columns is None else (rows, columns)
    if array.shape == shape:
        return array
    grown = np.zeros(shape, array.dtype)
    grown[tuple(slice(0, n) for n in array.shape)] = array
    return grown


SUM_FIELDS = (
    "sizes",
    "bad",
    "loss",
    "brier",
    "abs_error",
    "sq_error",
    "pct_error",
    "off",
)
CLASS_FIELDS = ("class_tp", "class_true", "class_pred")


@dataclass
class PredictionStats:
    """Counts, sums, moments and score sketches per group of one grouping."""

    task: Task
    grouping: Grouping
    ranks: bool = False
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    sketches: list[ValueSketch] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sized(self.grouping.count, 1)

    def _sized(self, groups: int, classes: int) -> None:
        for name in (*SUM_FIELDS, "mean_y", "m2_y"):
            self.arrays[name] = _grow(self.arrays.get(name, np.zeros(0)), groups)
        for name in CLASS_FIELDS:
            self.arrays[name] = _grow(self.arrays.get(name, np.zeros((0, 0))), groups, classes)
        while self.ranks and len(self.sketches) < groups:
            self.sketches.append(ValueSketch.with_defaults(2))

    def add(self, batch: PredictionBatch, classes: int) -> None:
        codes = self.grouping.encode(batch.table, batch.at)
        groups = self.grouping.count
        self._sized(groups, max(classes, 1))
        a = self.arrays
        size = _count(codes, groups) if codes is not None else np.array([float(batch.rows)])
        # Non-finite inputs make their group's metric undefined (counted in
        # "bad"); the sums they overflow are never read.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.task == Task.REGRESSION:
                self._add_regression(batch, codes, groups, size)
            else:
                self._add_classification(batch, codes, groups, classes)
        a["sizes"] += size

    def _add_classification(
        self, batch: PredictionBatch, codes: IntArray | None, groups: int, classes: int
    ) -> None:
        a = self.arrays
        assert batch.y_true is not None
        assert batch.y_pred is not None
        k = max(classes, 1)
        true_key = batch.y_true if codes is None else codes * k + batch.y_true
        pred_key = batch.y_pred if codes is None else codes * k + batch.y_pred
        correct = batch.y_true == batch.y_pred
        cells = groups * k
        a["class_tp"] += np.bincount(true_key[correct], minlength=cells).reshape(groups, k)
        a["class_true"] += np.bincount(true_key, minlength=cells).reshape(groups, k)
        a["class_pred"] += np.bincount(pred_key, minlength=cells).reshape(groups, k)
        if batch.score is not None and batch.truth is not None:
            score, truth = batch.score, batch.truth
            bad = ~np.isfinite(score)
            a["bad"] += _count(codes, groups, bad.astype(np.float64))
            probability_of_truth = np.where(truth, score, 1.0 - score)
            loss = -np.log(np.clip(np.nan_to_num(probability_of_truth), EPS, 1 - EPS))
            a["loss"] += _count(codes, groups, loss)
            a["brier"] += _count(codes, groups, (np.nan_to_num(score) - truth) ** 2)
            if self.ranks:
                self._add_scores(codes, score, truth, bad)
        if batch.chosen is not None and batch.off_rows is not None:
            missing = ~np.isfinite(batch.chosen)
            a["bad"] += _count(codes, groups, missing.astype(np.float64))
            a["off"] += _count(codes, groups, batch.off_rows.astype(np.float64))
            loss = -np.log(np.clip(np.nan_to_num(batch.chosen, nan=0.5), EPS, 1 - EPS))
            a["loss"] += _count(codes, groups, loss)

    def _add_scores(
        self, codes: IntArray | None, score: FloatArray, truth: BoolArray, bad: BoolArray
    ) -> None:
        keep = ~bad
        weights = (~truth).astype(np.int8)  # column 0: positives, 1: negatives
        if codes is None:
            self.sketches[0].add(score[keep], weights[keep])
            return
        kept_codes = codes[keep]
        order = np.argsort(kept_codes, kind="stable")
        sorted_codes = kept_codes[order]
        values, rows = score[keep][order], weights[keep][order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        ends = np.r_[starts[1:], len(sorted_codes)]
        for start, end in zip(starts, ends, strict=True):
            self.sketches[int(sorted_codes[start])].add(values[start:end], rows[start:end])
        # The groups share one budget of unfolded rows, so memory does not
        # grow with the number of slices times the exact limit.
        limit = self.sketches[0].exact_rows if self.sketches else 0
        if sum(s.buffered for s in self.sketches) >= limit:
            for sketch in self.sketches:
                sketch.flush()

    def _add_regression(
        self, batch: PredictionBatch, codes: IntArray | None, groups: int, size: FloatArray
    ) -> None:
        a = self.arrays
        assert batch.y_num is not None
        assert batch.q_num is not None
        assert batch.off_rows is not None
        y, q = batch.y_num, batch.q_num
        error = y - q
        a["bad"] += _count(codes, groups, batch.off_rows.astype(np.float64))
        a["abs_error"] += _count(codes, groups, np.abs(error))
        a["sq_error"] += _count(codes, groups, error**2)
        a["pct_error"] += _count(codes, groups, np.abs(error) / np.maximum(np.abs(y), EPS))
        # Chan et al.'s parallel variance: each batch's (n, mean, M2) merged in.
        batch_mean = _count(codes, groups, y) / np.maximum(size, 1)
        centred = y - (batch_mean[codes] if codes is not None else batch_mean[0])
        batch_m2 = _count(codes, groups, centred**2)
        self._merge_moments(a["sizes"], a["mean_y"], a["m2_y"], size, batch_mean, batch_m2)

    @staticmethod
    def _merge_moments(
        n_a: FloatArray,
        mean_a: FloatArray,
        m2_a: FloatArray,
        n_b: FloatArray,
        mean_b: FloatArray,
        m2_b: FloatArray,
    ) -> None:
        """Into ``mean_a``/``m2_a`` in place (``n_a`` is updated by the caller)."""
        total = n_a + n_b
        delta = mean_b - mean_a
        safe = np.maximum(total, 1)
        mean_a += delta * n_b / safe
        m2_a += m2_b + delta**2 * n_a * n_b / safe

    # -- shards ----------------------------------------------------------------

    def merge(self, other: PredictionStats, class_map: IntArray) -> None:
        """Add a shard's partial; ``class_map`` maps its class ids to ours."""
        mapping = self.grouping.merge(other.grouping)
        classes = int(
            max(
                class_map.max(initial=-1) + 1,
                self.arrays.get("class_tp", np.zeros((0, 1))).shape[1],
            )
        )
        self._sized(self.grouping.count, max(classes, 1))
        mine, theirs = self.arrays, other.arrays
        n_b = np.zeros(self.grouping.count)
        np.add.at(n_b, mapping, theirs["sizes"])
        mean_b = np.zeros(self.grouping.count)
        np.add.at(mean_b, mapping, theirs["mean_y"])
        m2_b = np.zeros(self.grouping.count)
        np.add.at(m2_b, mapping, theirs["m2_y"])
        self._merge_moments(mine["sizes"], mine["mean_y"], mine["m2_y"], n_b, mean_b, m2_b)
        for name in SUM_FIELDS:
            np.add.at(mine[name], mapping, theirs[name])
        for name in CLASS_FIELDS:
            source = theirs[name]
            for their_class in range(source.shape[1]):
                if their_class < len(class_map):
                    np.add.at(
                        mine[name][:, class_map[their_class]], mapping, source[:, their_class]
                    )
        for theirs_group, sketch in enumerate(other.sketches):
            self.sketches[int(mapping[theirs_group])].merge(sketch)

    def to_wire(self, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays = {f"{prefix}.{k}": v for k, v in self.arrays.items()}
        for index, sketch in enumerate(self.sketches):
            arrays.update(sketch.to_arrays(f"{prefix}.sketch{index}"))
        meta = {
            "grouping": self.grouping.wire(),
            "sketches": len(self.sketches),
            "ranks": self.ranks,
        }
        return arrays, meta

    @classmethod
    def from_wire(
        cls, task: Task, arrays: dict[str, Any], meta: dict[str, Any], prefix: str
    ) -> PredictionStats:
        stats = cls(task, Grouping.from_wire(meta["grouping"]), bool(meta["ranks"]))
        names = (*SUM_FIELDS, "mean_y", "m2_y", *CLASS_FIELDS)
        stats.arrays = {
            n: np.asarray(arrays[f"{prefix}.{n}"]) for n in names if f"{prefix}.{n}" in arrays
        }
        stats.sketches = [
            ValueSketch.from_arrays(arrays, f"{prefix}.sketch{i}", 2)
            for i in range(int(meta["sketches"]))
        ]
        return stats
