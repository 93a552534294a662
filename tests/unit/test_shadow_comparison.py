"""A shadow's comparison of two answers to one request, in both answer shapes,
and its counters."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from modelgate.serving.shadow import MirroredAnswer, ShadowMetrics, compare, read_answer


def _reference(labels: list[str], scores: list[float]) -> bytes:
    return json.dumps({"predictions": labels, "scores": scores}).encode()


def _oip(labels: list[str], scores: list[float]) -> bytes:
    return json.dumps(
        {
            "model_name": "m",
            "outputs": [
                {"name": "predict", "datatype": "BYTES", "shape": [len(labels)], "data": labels},
                {"name": "predict_proba", "datatype": "FP64", "shape": [len(scores)],
                 "data": scores},
            ],
        }
    ).encode()  # fmt: skip


@pytest.mark.parametrize("make", [_reference, _oip])
def test_answers_are_compared_by_label_and_score(
    make: Callable[[list[str], list[float]], bytes],
) -> None:
    champion = read_answer(make(["approve", "deny"], [0.8, 0.3]))
    same = read_answer(make(["approve", "deny"], [0.7, 0.3]))
    other = read_answer(make(["approve", "approve"], [0.8, 0.6]))
    assert champion is not None
    assert same is not None
    assert other is not None
    agreed = compare(champion, same)
    assert (agreed.rows, agreed.disagreements) == (2, 0)
    assert agreed.score_difference == pytest.approx(0.1)
    differed = compare(champion, other)
    assert (differed.rows, differed.disagreements) == (2, 1)
    assert differed.score_difference == pytest.approx(0.3)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"error": "boom"}', b"\xff\xfe"])
def test_an_answer_of_neither_shape_is_none(body: bytes) -> None:
    assert read_answer(body) is None


def _value(registry: CollectorRegistry, name: str) -> float:
    found = registry.get_sample_value(name, {"model": "credit-risk"})
    return 0.0 if found is None else found


def test_the_counters_count_agreement_disagreement_and_failures() -> None:
    registry = CollectorRegistry()
    shadow = ShadowMetrics(registry, "credit-risk")
    champion = _reference(["approve"], [0.9])

    def mirrored(body: bytes, status: int | None = 200, champion_status: int = 200) -> None:
        shadow.record(
            MirroredAnswer("/v1/predict", status, body, 0.02, None, champion_status, champion, 0.01)
        )

    mirrored(_reference(["approve"], [0.8]))
    mirrored(_reference(["deny"], [0.4]))
    mirrored(b"", status=None)  # the new release did not answer
    mirrored(_reference(["approve"], [0.9]), status=500)
    mirrored(_reference(["deny"], [0.1]), champion_status=503)  # nothing to compare with
    assert _value(registry, "modelgate_shadow_requests_total") == 2
    assert _value(registry, "modelgate_shadow_rows_total") == 2
    assert _value(registry, "modelgate_shadow_disagreements_total") == 1
    assert _value(registry, "modelgate_shadow_errors_total") == 2
    assert _value(registry, "modelgate_shadow_score_difference_total") == pytest.approx(0.6)
    assert _value(registry, "modelgate_shadow_champion_seconds_total") == pytest.approx(0.02)
    assert _value(registry, "modelgate_shadow_challenger_seconds_total") == pytest.approx(0.04)
