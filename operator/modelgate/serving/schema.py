"""Request validation against the training schema recorded in metadata.json.

Pure: JSON in, a column table or an error naming the column out. A request
the model was not trained for (an unknown or missing column, a string where
a number belongs, a missing value the training data never had, a negative
age, a category never seen) is refused, never silently scored: a one-hot
encoder would quietly score an unknown region as "no region", and an
imputer would fill a missing age with the median.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 10_000


class InvalidInput(ValueError):
    """The request does not fit the training schema; ``column`` says where."""

    def __init__(
        self,
        message: str,
        column: str | None = None,
        row: int | None = None,
        outside: str | None = None,
    ) -> None:
        super().__init__(message)
        self.column = column
        self.row = row
        # "range" or "category": the value lies outside what training saw.
        self.outside = outside

    def body(self) -> dict[str, Any]:
        found: dict[str, Any] = {"error": str(self)}
        if self.column is not None:
            found["column"] = self.column
        if self.row is not None:
            found["row"] = self.row
        return found


@dataclass(frozen=True)
class Feature:
    name: str
    numeric: bool
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    categories: frozenset[str] | None = None  # None: not known completely

    @classmethod
    def from_metadata(cls, entry: Mapping[str, Any]) -> Feature:
        categories = entry.get("categories")
        # Schemas written before categoriesComplete existed listed at most
        # 1000 categories: complete only when shorter than that.
        complete = entry.get(
            "categoriesComplete", categories is not None and len(categories) < 1000
        )
        return cls(
            name=str(entry["name"]),
            numeric=entry.get("type") == "number",
            # Older schemas did not say: then missing values are the model's business.
            nullable=bool(entry.get("nullable", True)),
            minimum=_number_or_none(entry.get("min")),
            maximum=_number_or_none(entry.get("max")),
            categories=frozenset(str(c) for c in categories) if categories and complete else None,
        )


def _number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# How far beyond the training range a number may lie, as a share of the
# range's width: fresh data is never exactly inside the training sample's
# extremes (the sample's own evaluation rows are not), a sign flip or a
# unit mistake is far outside.
RANGE_TOLERANCE = 0.1


@dataclass(frozen=True)
class InputSchema:
    features: tuple[Feature, ...]
    check_ranges: bool = True
    range_tolerance: float = RANGE_TOLERANCE

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, Any],
        check_ranges: bool = True,
        range_tolerance: float = RANGE_TOLERANCE,
    ) -> InputSchema:
        entries = metadata.get("features")
        if not isinstance(entries, list) or not entries:
            raise ValueError("metadata.json has no 'features' schema to validate requests with")
        return cls(tuple(Feature.from_metadata(e) for e in entries), check_ranges, range_tolerance)

    def accepted_range(self, feature: Feature) -> tuple[float, float] | None:
        """The numbers a feature accepts: its training range widened by the
        tolerance, and never negative when training saw no negative value."""
        low, high = feature.minimum, feature.maximum
        if low is None or high is None:
            return None
        margin = (high - low) * self.range_tolerance
        lowest = low - margin
        if low >= 0:
            lowest = max(lowest, 0.0)
        return lowest, high + margin

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def describe(self) -> list[dict[str, Any]]:
        """The schema as the server publishes it (GET /v1/metadata)."""
        described = []
        for feature in self.features:
            entry: dict[str, Any] = {
                "name": feature.name,
                "type": "number" if feature.numeric else "string",
                "nullable": feature.nullable,
            }
            if feature.minimum is not None:
                entry["min"] = feature.minimum
            if feature.maximum is not None:
                entry["max"] = feature.maximum
            if feature.categories is not None:
                entry["categories"] = sorted(feature.categories)
            described.append(entry)
        return described

    def columns(self, body: Any) -> dict[str, list[Any]]:
        """Validated columns (feature order) from ``{"instances": [row, ...]}``
        or ``{"inputs": {column: [value, ...]}}``."""
        if not isinstance(body, Mapping):
            raise InvalidInput(
                'the body must be a JSON object: {"instances": [{...}, ...]} '
                'or {"inputs": {"column": [...], ...}}'
            )
        if "instances" in body:
            columns = self._from_rows(body["instances"])
        elif "inputs" in body:
            columns = self._from_columns(body["inputs"])
        else:
            raise InvalidInput('the body needs "instances" (rows) or "inputs" (columns)')
        for feature in self.features:
            for row, value in enumerate(columns[feature.name]):
                columns[feature.name][row] = self._checked(feature, value, row)
        return columns

    def _from_rows(self, rows: Any) -> dict[str, list[Any]]:
        if not isinstance(rows, list) or not rows:
            raise InvalidInput('"instances" must be a non-empty list of objects')
        _limit(len(rows))
        known = set(self.names)
        columns: dict[str, list[Any]] = {name: [] for name in self.names}
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InvalidInput(f"instance {index} is not an object", row=index)
            unknown = [key for key in row if key not in known]
            if unknown:
                raise InvalidInput(_unknown(unknown[0], self.names), column=unknown[0], row=index)
            for name in self.names:
                if name not in row:
                    raise InvalidInput(f"missing column {name!r}", column=name, row=index)
                columns[name].append(row[name])
        return columns

    def _from_columns(self, inputs: Any) -> dict[str, list[Any]]:
        if not isinstance(inputs, Mapping) or not inputs:
            raise InvalidInput('"inputs" must be an object of column -> list of values')
        unknown = [key for key in inputs if key not in set(self.names)]
        if unknown:
            raise InvalidInput(_unknown(unknown[0], self.names), column=unknown[0])
        missing = [name for name in self.names if name not in inputs]
        if missing:
            raise InvalidInput(f"missing column {missing[0]!r}", column=missing[0])
        lengths = set()
        for name in self.names:
            if not isinstance(inputs[name], list):
                raise InvalidInput(f"column {name!r} must be a list of values", column=name)
            lengths.add(len(inputs[name]))
        if len(lengths) != 1 or 0 in lengths:
            raise InvalidInput("all columns need the same, non-zero number of values")
        _limit(lengths.pop())
        return {name: list(inputs[name]) for name in self.names}

    def _checked(self, feature: Feature, value: Any, row: int) -> Any:
        name = feature.name
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing:
            if not feature.nullable:
                raise InvalidInput(
                    f"{name!r} is missing, and the training data always had it", name, row
                )
            return None
        if feature.numeric:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{name!r} must be a number, got {value!r}", name, row)
            if math.isinf(value):
                raise InvalidInput(f"{name!r} must be finite, got {value!r}", name, row)
            accepted = self.accepted_range(feature) if self.check_ranges else None
            if accepted is not None and not accepted[0] <= value <= accepted[1]:
                raise InvalidInput(
                    f"{name!r} = {value!r} is outside the range seen in training "
                    f"[{feature.minimum:g}, {feature.maximum:g}] (accepted: "
                    f"{accepted[0]:g} to {accepted[1]:g})",
                    name,
                    row,
                    outside="range",
                )
            return value
        if not isinstance(value, str):
            raise InvalidInput(f"{name!r} must be a string, got {value!r}", name, row)
        if feature.categories is not None and value not in feature.categories:
            known = ", ".join(sorted(feature.categories)[:20])
            raise InvalidInput(
                f"{name!r} = {value!r} is not a category seen in training ({known})",
                name,
                row,
                outside="category",
            )
        return value


def _unknown(column: str, names: Sequence[str]) -> str:
    return f"unknown column {column!r}; the model takes {', '.join(names)}"


def _limit(rows: int) -> None:
    if rows > MAX_ROWS:
        raise InvalidInput(f"{rows} rows in one request; send at most {MAX_ROWS}")
