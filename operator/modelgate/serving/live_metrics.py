"""The served model's ML-aware metrics, labelled by model, version and
environment, for analyses to query while a release soaks.

Cardinality is bounded: one series per feature column (at most
MAX_COLUMNS), per predicted class (at most MAX_CLASSES, the rest "other")
and per score bucket; never per request or value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelgate.serving.live import DEFAULT_WINDOW, BinnedReference, SlidingPSI, score_reference
from modelgate.serving.schema import Feature, InputSchema, InvalidInput

MAX_COLUMNS = 100
MAX_CLASSES = 20
IDENTITY = ("model", "version", "environment")


class LiveMetrics:
    """Counters and sliding-window drift of what the model is asked and answers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = self.registry = registry
        self.rows = Counter(
            "modelgate_live_rows", "Rows scored.", IDENTITY, registry=r
        )  # fmt: skip
        self.classes = Counter(
            "modelgate_live_predicted_class", "Rows scored by predicted class.",
            [*IDENTITY, "class"], registry=r,
        )  # fmt: skip
        self.positive = Counter(
            "modelgate_live_positive", "Rows predicted as the positive label (binary).",
            IDENTITY, registry=r,
        )  # fmt: skip
        self.scores = Histogram(
            "modelgate_live_score", "Scores served (binary: of the positive label).",
            IDENTITY, registry=r, buckets=tuple(i / 10 for i in range(1, 11)),
        )  # fmt: skip
        self.score_squares = Counter(
            "modelgate_live_score_squared",
            "Sum of the squares of the scores served (with modelgate_live_score's _sum and "
            "_count: the variance an experiment's Mean metric needs).",
            IDENTITY, registry=r,
        )  # fmt: skip
        self.outside = Counter(
            "modelgate_live_outside_training",
            "Values outside what training saw, by column: kind range (outside the training "
            "min..max, scored within the tolerance or refused beyond it) or category (unknown, "
            "refused).",
            [*IDENTITY, "column", "kind"], registry=r,
        )  # fmt: skip
        self.feature_psi = Gauge(
            "modelgate_live_feature_psi",
            "PSI of the column's last values (window) against the training data.",
            [*IDENTITY, "column"], registry=r,
        )  # fmt: skip
        self.score_psi = Gauge(
            "modelgate_live_score_psi",
            "PSI of the last scores (window) against the gated predictions' scores.",
            IDENTITY, registry=r,
        )  # fmt: skip
        self.window_rows = Gauge(
            "modelgate_live_window_rows", "Rows in the drift window (PSI is noisy when few).",
            IDENTITY, registry=r,
        )  # fmt: skip
        self.identity: tuple[str, str, str] = ("", "", "")
        # The columns followed (at most MAX_COLUMNS: bounded cardinality).
        self.tracked: tuple[Feature, ...] = ()
        self.tracked_names: frozenset[str] = frozenset()
        self.features: dict[str, SlidingPSI] = {}
        self.score: SlidingPSI | None = None
        self.positive_label: str | None = None
        self.known_classes: set[str] = set()

    def start(
        self,
        name: str,
        version: str,
        environment: str,
        schema: InputSchema,
        metadata: Mapping[str, Any],
        positive_label: str | None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        """The model is loaded: its identity and its training references."""
        self.identity = (name, version, environment)
        self.tracked = schema.features[:MAX_COLUMNS]
        self.tracked_names = frozenset(f.name for f in self.tracked)
        self.positive_label = positive_label
        entries = {
            str(e.get("name")): e for e in metadata.get("features") or [] if isinstance(e, Mapping)
        }
        for feature in self.tracked:
            reference = BinnedReference.from_metadata(entries.get(feature.name, {}))
            if reference is not None:
                self.features[feature.name] = SlidingPSI(reference, window)
        scores = score_reference(metadata)
        self.score = SlidingPSI(scores, window) if scores is not None else None

    def refused(self, problem: InvalidInput) -> None:
        if (
            problem.outside is not None
            and problem.column is not None
            and problem.column in self.tracked_names
        ):
            self.outside.labels(*self.identity, problem.column, problem.outside).inc()

    def scored(self, columns: Mapping[str, list[Any]], answer: Mapping[str, Any]) -> None:
        """One answered request: its inputs and what the model said."""
        identity = self.identity
        predictions = answer.get("predictions") or []
        self.rows.labels(*identity).inc(len(predictions))
        for feature in self.tracked:
            values = columns.get(feature.name) or []
            window = self.features.get(feature.name)
            if feature.numeric and feature.minimum is not None and feature.maximum is not None:
                low, high = feature.minimum, feature.maximum
                outside = sum(
                    1
                    for v in values
                    if isinstance(v, int | float) and not math.isnan(v) and not low <= v <= high
                )
                if outside:
                    self.outside.labels(*identity, feature.name, "range").inc(outside)
            if window is not None:
                for value in values:
                    window.add(value)
                drift = window.psi()
                if drift is not None:
                    self.feature_psi.labels(*identity, feature.name).set(drift)
        self._answers(predictions, answer.get("scores") or [])

    def _answers(self, predictions: list[Any], scores: list[Any]) -> None:
        identity = self.identity
        if predictions and isinstance(predictions[0], str):
            for label in predictions:
                if label not in self.known_classes and len(self.known_classes) < MAX_CLASSES:
                    self.known_classes.add(label)
                shown = label if label in self.known_classes else "other"
                self.classes.labels(*identity, shown).inc()
            if self.positive_label is not None:
                self.positive.labels(*identity).inc(
                    sum(1 for label in predictions if label == self.positive_label)
                )
        # The score PSI follows what scoreReference describes: binary scores,
        # or a regression's predictions.
        numbers = [s for s in scores if isinstance(s, float)]
        if not scores and predictions and isinstance(predictions[0], float):
            numbers = list(predictions)
        else:
            for score in numbers:
                self.scores.labels(*identity).observe(score)
                self.score_squares.labels(*identity).inc(score * score)
        if self.score is not None and numbers:
            for number in numbers:
                self.score.add(number)
            drift = self.score.psi()
            if drift is not None:
                self.score_psi.labels(*identity).set(drift)
            self.window_rows.labels(*identity).set(self.score.rows)
