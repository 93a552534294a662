"""A shadow's comparison: the live model's and the new release's answers to
the same request, counted as Prometheus counters the operator reads per
environment (``modelgate_shadow_*_total``).

Both answer shapes the verification knows are compared: the reference
server's ``{"predictions": [...], "scores": [...]}`` and the Open Inference
Protocol's ``{"outputs": [{"name", "data"}, ...]}`` (the first output holds
the labels; an output whose name has ``proba`` or ``score`` the scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class MirroredAnswer:
    """What the mirror answered to a copy of a request (never returned), and
    what the champion answered to the request itself."""

    path: str
    status: int | None  # None: it could not be reached
    body: bytes
    seconds: float
    error: str | None = None
    champion_status: int | None = None  # None: it could not be reached
    champion_body: bytes = b""
    champion_seconds: float = 0.0


@dataclass(frozen=True)
class Answer:
    labels: list[Any]
    scores: list[float]


@dataclass(frozen=True)
class Compared:
    """One request's two answers, compared."""

    rows: int
    disagreements: int  # rows labelled differently (a row one answer lacks counts)
    score_difference: float  # sum over rows of the absolute difference of scores


def _numbers(values: list[Any]) -> list[float]:
    found: list[float] = []
    for value in values:
        if isinstance(value, int | float):  # bool too: a 0/1 answer
            found.append(float(value))
        elif isinstance(value, list):
            found.extend(_numbers(value))
        elif isinstance(value, dict):
            found.extend(_numbers(list(value.values())))
    return found


def read_answer(body: bytes) -> Answer | None:
    """The labels and scores of an answer, or None when it is neither shape."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("predictions"), list):
        scores = document.get("scores")
        return Answer(document["predictions"], _numbers(scores if isinstance(scores, list) else []))
    outputs = document.get("outputs")
    if isinstance(outputs, list) and outputs and all(isinstance(o, dict) for o in outputs):
        labels = outputs[0].get("data")
        scored = next(
            (
                o
                for o in outputs[1:]
                if any(word in str(o.get("name", "")).lower() for word in ("proba", "score"))
            ),
            None,
        )
        return Answer(
            labels if isinstance(labels, list) else [],
            _numbers(scored.get("data", []) if scored is not None else []),
        )
    return None


def compare(champion: Answer, challenger: Answer) -> Compared:
    rows = len(champion.labels)
    differ = sum(a != b for a, b in zip(champion.labels, challenger.labels, strict=False))
    differ += abs(len(champion.labels) - len(challenger.labels))
    pairs = zip(champion.scores, challenger.scores, strict=False)
    difference = sum(abs(a - b) for a, b in pairs)
    return Compared(rows=rows, disagreements=min(differ, rows), score_difference=difference)


class ShadowMetrics:
    """The counters of one router's shadow: target labels (namespace,
    environment) come from the scrape, the model from the router."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        def counter(name: str, text: str) -> Counter:
            return Counter(name, text, ["model"], registry=registry)

        self.model = model
        self.requests = counter(
            "modelgate_shadow_requests", "Mirrored requests both models answered."
        )
        self.rows = counter("modelgate_shadow_rows", "Rows of those requests.")
        self.disagreements = counter(
            "modelgate_shadow_disagreements", "Of those rows, the ones labelled differently."
        )
        self.score_difference = counter(
            "modelgate_shadow_score_difference",
            "Sum over those rows of the absolute difference of the two scores.",
        )
        self.errors = counter(
            "modelgate_shadow_errors",
            "Mirrored requests the new release failed (no answer, an error status or an answer "
            "of neither shape) while the live model answered.",
        )
        self.champion_seconds = counter(
            "modelgate_shadow_champion_seconds",
            "Seconds the live model took for the compared requests.",
        )
        self.challenger_seconds = counter(
            "modelgate_shadow_challenger_seconds",
            "Seconds the new release took for the compared requests.",
        )

    def record(self, mirrored: MirroredAnswer) -> None:
        if mirrored.champion_status is None or not 200 <= mirrored.champion_status < 300:
            return  # the live model did not answer: nothing to compare with
        champion = read_answer(mirrored.champion_body)
        if champion is None:
            return
        challenger = (
            read_answer(mirrored.body)
            if mirrored.status is not None and 200 <= mirrored.status < 300
            else None
        )
        if challenger is None:
            self.errors.labels(self.model).inc()
            return
        compared = compare(champion, challenger)
        self.requests.labels(self.model).inc()
        self.rows.labels(self.model).inc(compared.rows)
        self.disagreements.labels(self.model).inc(compared.disagreements)
        self.score_difference.labels(self.model).inc(compared.score_difference)
        self.champion_seconds.labels(self.model).inc(mirrored.champion_seconds)
        self.challenger_seconds.labels(self.model).inc(mirrored.seconds)
