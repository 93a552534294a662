"""What the served model sees, as numbers Prometheus can judge: the drift of
each feature and of the scores against training, over a sliding window.

Pure: the training reference comes from metadata.json (``features[].reference``
and ``scoreReference``, written by the reference trainer); each scored row
moves one bin count in and, once the window is full, the oldest one out, so
the cost per row is constant and the memory is the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The gate's PSI uses the same floor for an empty bin (gates/drift.py), so a
# live PSI and a gated PSI of the same data agree.
EMPTY_BIN_FLOOR = 1e-4
DEFAULT_WINDOW = 1000
OTHER = "__other__"


@dataclass
class BinnedReference:
    """Training shares over bins: numeric edges (bins between them, and
    below the first and above the last), or categories (plus "other")."""

    shares: list[float]
    edges: list[float] | None = None
    categories: dict[str, int] | None = None

    @classmethod
    def from_metadata(cls, entry: Mapping[str, Any]) -> BinnedReference | None:
        reference = entry.get("reference")
        if not isinstance(reference, Mapping):
            return None
        shares = [float(s) for s in reference.get("shares") or []]
        if "edges" in reference:
            edges = [float(e) for e in reference["edges"]]
            if len(shares) != len(edges) + 1:
                return None
            return cls(shares=shares, edges=edges)
        names = [str(c) for c in reference.get("categories") or []]
        if len(shares) != len(names) + 1:  # the last share is "other"
            return None
        return cls(shares=shares, categories={c: i for i, c in enumerate(names)})

    def bin(self, value: Any) -> int | None:
        """The bin of one value; None for a missing one (not part of the PSI)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if self.edges is not None:
            number = float(value)
            low, high = 0, len(self.edges)
            while low < high:  # bisect_right on the edges
                middle = (low + high) // 2
                if number < self.edges[middle]:
                    high = middle
                else:
                    low = middle + 1
            return low
        assert self.categories is not None
        return self.categories.get(str(value), len(self.categories))


@dataclass
class SlidingPSI:
    """PSI of the last ``window`` values against a reference."""

    reference: BinnedReference
    window: int = DEFAULT_WINDOW
    counts: list[int] = field(default_factory=list)
    recent: deque[int] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.reference.shares)

    def add(self, value: Any) -> None:
        index = self.reference.bin(value)
        if index is None:
            return
        self.recent.append(index)
        self.counts[index] += 1
        if len(self.recent) > self.window:
            self.counts[self.recent.popleft()] -= 1

    @property
    def rows(self) -> int:
        return len(self.recent)

    def psi(self) -> float | None:
        """None until a value arrived (no data, not zero drift)."""
        total = len(self.recent)
        if total == 0:
            return None
        live = _floored([c / total for c in self.counts])
        trained = _floored(self.reference.shares)
        return sum((c - r) * math.log(c / r) for c, r in zip(live, trained, strict=True))


def _floored(shares: Sequence[float]) -> list[float]:
    floored = [max(s, EMPTY_BIN_FLOOR) for s in shares]
    total = sum(floored)
    return [s / total for s in floored]


def score_reference(metadata: Mapping[str, Any]) -> BinnedReference | None:
    reference = metadata.get("scoreReference")
    if not isinstance(reference, Mapping):
        return None
    return BinnedReference.from_metadata({"reference": reference})
