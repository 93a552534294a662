"""Columnar tables for the gate: CSV or Parquet, read with pyarrow, no pickles."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


class TableError(ValueError):
    """A table that cannot be read or lacks what a check needs."""


@dataclass
class Table:
    """A named, read-only table with numpy views of its columns."""

    name: str
    data: pa.Table
    _cache: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict, repr=False)
    _codes: dict[str, tuple[npt.NDArray[np.int64], list[str]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def columns(self) -> list[str]:
        return list(self.data.column_names)

    @property
    def num_rows(self) -> int:
        return int(self.data.num_rows)

    def has(self, column: str) -> bool:
        return column in self.data.column_names

    def column(self, column: str) -> pa.ChunkedArray:
        if not self.has(column):
            raise TableError(
                f"{self.name} has no column {column!r} (columns: {', '.join(self.columns)})"
            )
        return self.data.column(column)

    def is_numeric(self, column: str) -> bool:
        kind = self.column(column).type
        return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))

    def numeric(self, column: str) -> npt.NDArray[np.float64]:
        """The column as float64, nulls as NaN; raises if it is not numeric."""
        if column not in self._cache:
            values = self.column(column)
            if pa.types.is_boolean(values.type):
                values = pc.cast(values, pa.int8())
            if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                raise TableError(f"{self.name}: column {column!r} is {values.type}, not numeric")
            if pa.types.is_float64(values.type) and values.null_count == 0:
                # Zero-copy view of Arrow's buffer (read-only, never mutated).
                self._cache[column] = np.asarray(values.combine_chunks().to_numpy())
            else:
                filled = pc.fill_null(pc.cast(values, pa.float64()), float("nan"))
                self._cache[column] = np.asarray(filled.to_numpy(), dtype=np.float64)
        return self._cache[column]

    def labels(self, column: str) -> npt.NDArray[np.str_]:
        """The column as strings; integral floats print as integers (1.0 -> '1')."""
        values = self.column(column)
        if pa.types.is_floating(values.type):
            numbers = self.numeric(column)
            finite = np.isfinite(numbers)
            if np.all(np.equal(np.mod(numbers[finite], 1), 0)):
                text = np.where(finite, np.nan_to_num(numbers).astype(np.int64).astype(str), "")
                return np.asarray(text, dtype=np.str_)
        filled = pc.fill_null(pc.cast(values, pa.string()), "")
        return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.str_)

    def is_integral(self, column: str) -> bool:
        """Integers, or floats whose finite values are all whole numbers."""
        kind = self.column(column).type
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            return True
        if pa.types.is_floating(kind):
            numbers = self.numeric(column)
            finite = numbers[np.isfinite(numbers)]
            return bool(np.all(np.equal(np.mod(finite, 1), 0)))
        return False

    def codes(self, column: str) -> tuple[npt.NDArray[np.int64], list[str]]:
        """Dense integer codes of the column's values and the value names.

        Missing values get their own code named ''. Strings are hashed by
        pyarrow (no Python objects per row); small-range integers are mapped
        in O(n) with a bincount, other numbers through numpy's unique.
        Cached: every check on the same column shares one encoding.
        """
        if column not in self._codes:
            self._codes[column] = self._encode(column)
        return self._codes[column]

    def _encode(self, column: str) -> tuple[npt.NDArray[np.int64], list[str]]:
        values = self.column(column)
        if pa.types.is_integer(values.type) and values.null_count == 0:
            numbers = np.asarray(values.to_numpy(), dtype=np.int64)
            if numbers.size == 0:
                return numbers, []
            low, high = int(numbers.min()), int(numbers.max())
            if high - low <= max(2 * numbers.size, 1 << 16):
                shifted = numbers - low if low else numbers
                present = np.bincount(shifted, minlength=high - low + 1) > 0
                names = [str(v + low) for v in np.flatnonzero(present)]
                if low == 0 and present.all():
                    return numbers, names  # already dense codes: no copy
                mapping = np.cumsum(present) - 1
                return mapping[shifted].astype(np.int64), names
        if self.is_integral(column) and not pa.types.is_boolean(values.type):
            numbers_f = self.numeric(column)
            missing = ~np.isfinite(numbers_f)
            uniques, inverse = np.unique(np.where(missing, 0, numbers_f), return_inverse=True)
            names = [str(int(u)) for u in uniques]
            if missing.any():
                inverse = np.where(missing, len(names), inverse)
                names.append("")
            return inverse.astype(np.int64), names
        encoded = pc.dictionary_encode(pc.cast(values, pa.string())).combine_chunks()
        names = [str(v) for v in encoded.dictionary.to_pylist()]
        indices = encoded.indices
        if indices.null_count:
            indices = pc.fill_null(indices, len(names))
            names.append("")
        return np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64), names

    def null_mask(self, column: str) -> npt.NDArray[np.bool_]:
        """True where the value is missing (null, NaN or empty string)."""
        values = self.column(column)
        mask = np.asarray(pc.is_null(values, nan_is_null=True).to_numpy(zero_copy_only=False))
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), False)
            mask = mask | np.asarray(empty.to_numpy(zero_copy_only=False))
        return mask.astype(bool)


def read_table(source: Path | bytes, name: str, fmt: str | None = None) -> Table:
    """Read CSV or Parquet (by suffix, or by magic bytes when given bytes)."""
    try:
        if isinstance(source, Path):
            fmt = fmt or ("parquet" if source.suffix in {".parquet", ".pq"} else "csv")
            data = pq.read_table(source) if fmt == "parquet" else pacsv.read_csv(source)
        else:
            fmt = fmt or ("parquet" if source[:4] == b"PAR1" else "csv")
            buffer = io.BytesIO(source)
            data = pq.read_table(buffer) if fmt == "parquet" else pacsv.read_csv(buffer)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
        raise TableError(f"cannot read {name} as {fmt}: {error}") from error
    try:
        _ = data.column_names  # pyarrow decodes names lazily
    except UnicodeDecodeError as error:
        raise TableError(
            f"cannot read {name} as {fmt}: its column names are not UTF-8 text "
            "(a binary file given as CSV?)"
        ) from error
    return Table(name=name, data=data)
