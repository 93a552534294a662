"""Tables read in record batches: CSV or Parquet files, one or many, or a shard.

Memory is one batch at a time. The schema is fixed by the first file (for
CSV, by the types pyarrow infers from its first block); a column whose type
changes in a later batch or file is an error naming the column, the file and
both types, never a silent conversion.

A shard is ``(index, count)``: shard ``i`` of ``n`` reads the Parquet row
groups (and the CSV files, which cannot be split) whose position in the
sequence of all row groups of all files is ``i`` modulo ``n``. Every row is in
exactly one shard; a shard may be empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from modelgate.gates.table import TableError

Position = tuple[int, int, int]

DEFAULT_BATCH_ROWS = 1 << 17
PARQUET_SUFFIXES = {".parquet", ".pq"}


def _format(path: Path) -> str:
    if path.suffix in PARQUET_SUFFIXES:
        return "parquet"
    if path.suffix == ".csv":
        return "csv"
    with path.open("rb") as handle:
        return "parquet" if handle.read(4) == b"PAR1" else "csv"


def files_of(path: Path) -> list[Path]:
    """A file, or every CSV/Parquet file of a folder (sorted by name)."""
    if path.is_dir():
        found = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in PARQUET_SUFFIXES | {".csv"}
        )
        if not found:
            raise TableError(f"{path} holds no .csv or .parquet file")
        return found
    return [path]


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")


WHOLE = Shard(0, 1)


@dataclass
class Source:
    """A named table on local disk, read in batches."""

    name: str
    paths: list[Path]
    batch_rows: int = DEFAULT_BATCH_ROWS
    _schema: pa.Schema | None = field(default=None, repr=False)

    def _open_error(self, path: Path, error: Exception) -> TableError:
        return TableError(f"cannot read {self.name} ({path.name}) as a table: {error}")

    def schema(self) -> pa.Schema:
        """The first file's schema (what every batch must match)."""
        if self._schema is None:
            path = self.paths[0]
            try:
                if _format(path) == "parquet":
                    self._schema = pq.ParquetFile(path).schema_arrow
                else:
                    with pacsv.open_csv(path, read_options=self._csv_options()) as reader:
                        self._schema = reader.schema
            except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
                raise self._open_error(path, error) from error
            try:
                _ = list(self._schema.names)
            except UnicodeDecodeError as error:
                raise TableError(
                    f"cannot read {self.name} as a table: its column names are not UTF-8 "
                    "text (a binary file given as CSV?)"
                ) from error
        return self._schema

    def _csv_options(self) -> pacsv.ReadOptions:
        return pacsv.ReadOptions(block_size=1 << 22)

    @property
    def columns(self) -> list[str]:
        return list(self.schema().names)

    def has(self, column: str) -> bool:
        return column in self.schema().names

    def type_of(self, column: str) -> pa.DataType:
        return self.schema().field(column).type

    def _check(self, batch: pa.RecordBatch, path: Path) -> pa.RecordBatch:
        expected = self.schema()
        if batch.schema.names != expected.names:
            raise TableError(
                f"{self.name}: {path.name} has columns {batch.schema.names}, "
                f"the first file has {expected.names}: every file needs the same columns"
            )
        for name, got in zip(batch.schema.names, batch.schema.types, strict=True):
            want = expected.field(name).type
            if got != want and not (pa.types.is_null(got) or pa.types.is_null(want)):
                raise TableError(
                    f"{self.name}: column {name!r} is {want} in the first rows but {got} "
                    f"in {path.name}: a column's type must not change between batches or "
                    "files (write it with one type)"
                )
        return batch

    def _pieces(self, shard: Shard) -> Iterator[tuple[int, Path, str, list[int]]]:
        position = 0
        for number, path in enumerate(self.paths):
            try:
                fmt = _format(path)
                groups = pq.ParquetFile(path).num_row_groups if fmt == "parquet" else 1
            except (pa.ArrowInvalid, OSError) as error:
                raise self._open_error(path, error) from error
            mine = [g for g in range(groups) if (position + g) % shard.count == shard.index]
            position += groups
            if mine:
                yield number, path, fmt, mine

    def _piece_rows(self) -> dict[tuple[int, int], int]:
        """Rows of every piece (a Parquet row group, a CSV file), for the
        global row number of a shard's batches: metadata for Parquet, a
        count for CSV."""
        rows: dict[tuple[int, int], int] = {}
        for number, path in enumerate(self.paths):
            try:
                if _format(path) == "parquet":
                    meta = pq.ParquetFile(path).metadata
                    for group in range(meta.num_row_groups):
                        rows[(number, group)] = meta.row_group(group).num_rows
                else:
                    with pacsv.open_csv(path, read_options=self._csv_options()) as reader:
                        rows[(number, 0)] = sum(batch.num_rows for batch in reader)
            except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
                raise self._open_error(path, error) from error
        return rows

    def positioned_batches(
        self, shard: Shard = WHOLE
    ) -> Iterator[tuple[Position, int, pa.RecordBatch]]:
        """This shard's rows, batch by batch, each with its position
        ``(file, row group, row in the group)`` and its global first row."""
        self.schema()
        starts: dict[tuple[int, int], int] | None = None
        if shard.count > 1:
            starts, total = {}, 0
            for key, count in sorted(self._piece_rows().items()):
                starts[key] = total
                total += count
        done = 0
        for number, path, fmt, groups in self._pieces(shard):
            try:
                if fmt == "parquet":
                    parquet = pq.ParquetFile(path)
                    for group in groups or []:
                        row = 0
                        first = starts[(number, group)] if starts is not None else done
                        for batch in parquet.iter_batches(self.batch_rows, row_groups=[group]):
                            yield (number, group, row), first + row, self._check(batch, path)
                            row += batch.num_rows
                        done = first + row
                else:
                    first = starts[(number, 0)] if starts is not None else done
                    row = 0
                    with pacsv.open_csv(path, read_options=self._csv_options()) as reader:
                        for batch in reader:
                            yield (number, 0, row), first + row, self._check(batch, path)
                            row += batch.num_rows
                    done = first + row
            except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as error:
                raise TableError(
                    f"cannot read {self.name} ({path.name}): {error} "
                    "(a CSV column's type is inferred from its first rows: a later value of "
                    "another type needs the column written with one type, or Parquet)"
                    if fmt == "csv"
                    else f"cannot read {self.name} ({path.name}): {error}"
                ) from error


def source_of(path: Path, name: str, batch_rows: int = DEFAULT_BATCH_ROWS) -> Source:
    return Source(name, files_of(path), batch_rows)
