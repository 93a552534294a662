"""64-bit hashes of values and rows, and a distinct counter that spills to disk.

Exact duplicate checks need every row; the counter keeps only a 64-bit hash
per row, spread over partition files on disk by the hash's top bits, and
counts each partition alone: memory is one partition, 1/256 of the hashes.
Two different rows share a hash with probability about n^2 / 2^65 (under
1e-4 at 50 million rows): a false duplicate, which can only fail a check.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

U64 = npt.NDArray[np.uint64]
PARTITION_BITS = 8
NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def mix(values: U64) -> U64:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        result: U64 = z ^ (z >> np.uint64(31))
    return result


def _text_hashes(names: list[str | None]) -> U64:
    out = np.empty(len(names), np.uint64)
    for index, name in enumerate(names):
        if name is None:
            out[index] = NULL_HASH
        else:
            digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
            out[index] = np.frombuffer(digest, np.uint64)[0]
    return out


def column_hashes(values: pa.Array | pa.ChunkedArray) -> U64:
    """One hash per value: numbers by their float64 value (1 and 1.0 alike,
    every NaN and null alike), text by its UTF-8 bytes, nulls all alike."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        numbers = pc.cast(values, pa.float64()) if not pa.types.is_boolean(kind) else values
        if pa.types.is_boolean(kind):
            numbers = pc.cast(pc.cast(values, pa.int8()), pa.float64())
        filled = np.asarray(pc.fill_null(numbers, np.nan).to_numpy(zero_copy_only=False))
        filled = np.where(np.isnan(filled), np.nan, filled + 0.0)  # one NaN, -0.0 == 0.0
        return mix(filled.view(np.uint64))
    encoded = pc.dictionary_encode(pc.cast(values, pa.string()))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    table = _text_hashes(encoded.dictionary.to_pylist())
    indices = encoded.indices
    result = np.full(len(indices), NULL_HASH, np.uint64)
    valid = np.asarray(pc.is_valid(indices).to_numpy(zero_copy_only=False), dtype=bool)
    codes = np.asarray(pc.fill_null(indices, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    result[valid] = table[codes[valid]]
    return result


def row_hashes(batch: pa.RecordBatch | pa.Table, columns: list[str]) -> U64:
    """A hash of each row over ``columns``, in that order."""
    result = np.zeros(batch.num_rows, np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            result = mix(result * np.uint64(0x100000001B3) ^ column_hashes(batch.column(column)))
    return result


class DistinctCounter:
    """Counts distinct 64-bit hashes, spilling them to partition files."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._files: dict[int, BinaryIO] = {}
        self.total = 0

    def add(self, hashes: U64) -> None:
        if len(hashes) == 0:
            return
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="modelgate-distinct-"))
        self.total += len(hashes)
        part = (hashes >> np.uint64(64 - PARTITION_BITS)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        part, ordered = part[order], hashes[order]
        starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
        ends = np.r_[starts[1:], len(part)]
        for start, end in zip(starts, ends, strict=True):
            key = int(part[start])
            handle = self._files.get(key)
            if handle is None:
                handle = self._files[key] = open(self._folder / f"{key:03d}", "ab")  # noqa: SIM115
            handle.write(ordered[start:end].tobytes())

    def merge(self, other: DistinctCounter) -> None:
        for key, _ in sorted(other._partitions()):
            self.add(other._read(key))
        other.close()

    def _partitions(self) -> list[tuple[int, Path]]:
        if self._folder is None:
            return []
        for handle in self._files.values():
            handle.flush()
        return [(key, self._folder / f"{key:03d}") for key in sorted(self._files)]

    def _read(self, key: int) -> U64:
        assert self._folder is not None
        return np.fromfile(self._folder / f"{key:03d}", dtype=np.uint64)

    def distinct(self) -> int:
        return sum(len(np.unique(self._read(key))) for key, _ in self._partitions())

    def duplicated(self) -> bool:
        """Whether any hash occurs twice (stops at the first partition that has one)."""
        for key, _ in self._partitions():
            values = self._read(key)
            if len(np.unique(values)) != len(values):
                return True
        return False

    def hashes(self) -> U64:
        """Every hash (a shard's partial carries them to the merge step)."""
        parts = [self._read(key) for key, _ in self._partitions()]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files = {}
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __del__(self) -> None:
        self.close()
