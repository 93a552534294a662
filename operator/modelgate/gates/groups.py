"""Group codes that hold across batches, files and shards.

A batch encodes its own values (``Table.codes``); these registries map them to
codes shared by the whole evaluation and remember where each value was first
seen, so the final order is the one the in-memory engine gives: numbers in
numeric order (missing last), other values in order of first appearance. A
position is ``(file, row group, row)``, the same whichever shard read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from modelgate.gates.table import Table

IntArray = npt.NDArray[np.int64]
Position = tuple[int, int, int]


@dataclass
class ColumnNames:
    """Every value name of one column seen so far."""

    names: list[str] = field(default_factory=list)
    first: list[Position] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    integer_type: bool = False
    float_type: bool = False
    all_integral: bool = True

    def observe_type(self, table: Table, column: str) -> None:
        kind = table.column(column).type
        self.integer_type = bool(pa.types.is_integer(kind))
        self.float_type = bool(pa.types.is_floating(kind))
        if self.float_type and not table.is_integral(column):
            self.all_integral = False

    def ids(self, names: list[str], first_rows: IntArray, at: Position) -> IntArray:
        """Global ids of a batch's value names (registering new ones)."""
        out = np.empty(len(names), np.int64)
        for local, name in enumerate(names):
            found = self.index.get(name)
            if found is None:
                found = self.index[name] = len(self.names)
                self.names.append(name)
                self.first.append((at[0], at[1], at[2] + int(first_rows[local])))
            out[local] = found
        return out

    def merge(self, other: ColumnNames) -> IntArray:
        """Take another registry's names; returns its ids in ours."""
        self.integer_type = self.integer_type or other.integer_type
        self.float_type = self.float_type or other.float_type
        self.all_integral = self.all_integral and other.all_integral
        out = np.empty(len(other.names), np.int64)
        for theirs, name in enumerate(other.names):
            found = self.index.get(name)
            if found is None:
                found = self.index[name] = len(self.names)
                self.names.append(name)
                self.first.append(other.first[theirs])
            elif other.first[theirs] < self.first[found]:
                self.first[found] = other.first[theirs]
            out[theirs] = found
        return out

    def rank(self) -> IntArray:
        """Each id's place in the in-memory engine's order of this column."""
        numeric = self.integer_type or (self.float_type and self.all_integral)

        def key(i: int) -> tuple[Any, ...]:
            name = self.names[i]
            if name == "":
                return (1, 0, ())
            if numeric:
                return (0, int(name), ())
            return (0, 0, self.first[i])

        order = sorted(range(len(self.names)), key=key)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return rank

    def wire(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "first": [list(p) for p in self.first],
            "integerType": self.integer_type,
            "floatType": self.float_type,
            "allIntegral": self.all_integral,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ColumnNames:
        names = [str(n) for n in data["names"]]
        return cls(
            names=names,
            first=[(int(p[0]), int(p[1]), int(p[2])) for p in data["first"]],
            index={n: i for i, n in enumerate(names)},
            integer_type=bool(data["integerType"]),
            float_type=bool(data["floatType"]),
            all_integral=bool(data["allIntegral"]),
        )


def first_rows(codes: IntArray, count: int) -> IntArray:
    """Row of the first occurrence of each code ``0..count-1``."""
    out = np.full(count, len(codes), np.int64)
    present, index = np.unique(codes, return_index=True)
    out[present] = index
    return out


@dataclass
class Grouping:
    """Groups by the value combinations of ``columns`` (no columns: one group)."""

    columns: tuple[str, ...]
    registries: list[ColumnNames] = field(default_factory=list)
    combos: dict[tuple[int, ...], int] = field(default_factory=dict)
    keys: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.registries:
            self.registries = [ColumnNames() for _ in self.columns]

    @property
    def count(self) -> int:
        return len(self.keys) if self.columns else 1

    def encode(self, table: Table, at: Position) -> IntArray | None:
        """Global group code of each row (None: the single overall group)."""
        if not self.columns:
            return None
        per_column: list[IntArray] = []
        for registry, column in zip(self.registries, self.columns, strict=True):
            registry.observe_type(table, column)
            codes, names = table.codes(column)
            ids = registry.ids(names, first_rows(codes, len(names)), at)
            per_column.append(ids[codes] if len(codes) else codes)
        if not per_column[0].size:
            return np.zeros(0, np.int64)
        sizes = [len(r.names) for r in self.registries]
        combined = per_column[0]
        for ids, size in zip(per_column[1:], sizes[1:], strict=True):
            combined = combined * size + ids
        unique, inverse = np.unique(combined, return_inverse=True)
        mapping = np.empty(len(unique), np.int64)
        for local, combined_value in enumerate(unique.tolist()):
            rest, parts = combined_value, []
            for size in reversed(sizes[1:]):
                rest, part = divmod(rest, size)
                parts.append(part)
            key = (rest, *reversed(parts))
            found = self.combos.get(key)
            if found is None:
                found = self.combos[key] = len(self.keys)
                self.keys.append(key)
            mapping[local] = found
        result: IntArray = mapping[inverse.reshape(-1)]
        return result

    def merge(self, other: Grouping) -> IntArray:
        """Take another grouping's groups (a shard's); returns its codes in ours."""
        if not self.columns:
            return np.zeros(1, np.int64)
        maps = [
            mine.merge(theirs)
            for mine, theirs in zip(self.registries, other.registries, strict=True)
        ]
        out = np.empty(len(other.keys), np.int64)
        for theirs, key in enumerate(other.keys):
            mine = tuple(int(maps[c][v]) for c, v in enumerate(key))
            found = self.combos.get(mine)
            if found is None:
                found = self.combos[mine] = len(self.keys)
                self.keys.append(mine)
            out[theirs] = found
        return out

    def ordered(self) -> tuple[IntArray, list[tuple[str, ...]]]:
        """Group codes in the final order and their value names."""
        if not self.columns:
            return np.zeros(1, np.int64), [()]
        ranks = [registry.rank() for registry in self.registries]
        order = sorted(
            range(len(self.keys)),
            key=lambda g: tuple(int(ranks[c][v]) for c, v in enumerate(self.keys[g])),
        )
        labels = [
            tuple(self.registries[c].names[v] for c, v in enumerate(self.keys[g])) for g in order
        ]
        return np.asarray(order, np.int64), labels

    def wire(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "registries": [r.wire() for r in self.registries],
            "keys": [list(k) for k in self.keys],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Grouping:
        keys = [tuple(int(v) for v in k) for k in data["keys"]]
        return cls(
            columns=tuple(str(c) for c in data["columns"]),
            registries=[ColumnNames.from_wire(r) for r in data["registries"]],
            combos={k: i for i, k in enumerate(keys)},
            keys=keys,
        )
