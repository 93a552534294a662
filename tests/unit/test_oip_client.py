"""Reading inference requests and answers the verifier exchanges with any
Open Inference Protocol server."""

from __future__ import annotations

import pandas as pd
import pytest

from modelgate.serving.oip_client import AnswerError, infer_body, read_answers
from modelgate.serving.served import Served
from modelgate.serving.verify import compare


def test_a_request_has_one_typed_tensor_per_column_and_asks_for_pandas() -> None:
    body = infer_body(
        {"age": [41], "income": [5200.5], "region": ["north"], "member": [True], "gap": [None]},
        ["predict", "predict_proba"],
    )
    assert body["parameters"] == {"content_type": "pd"}
    assert [(t["name"], t["datatype"], t["shape"]) for t in body["inputs"]] == [
        ("age", "INT64", [1]),
        ("income", "FP64", [1]),
        ("region", "BYTES", [1]),
        ("member", "BOOL", [1]),
        ("gap", "BYTES", [1]),
    ]
    assert body["outputs"] == [{"name": "predict"}, {"name": "predict_proba"}]
    with pytest.raises(ValueError, match="different lengths"):
        infer_body({"a": [1, 2], "b": [1]}, ["predict"])


def test_answers_in_mlservers_shapes_read_with_the_known_class_order() -> None:
    answer = {
        "outputs": [
            {"name": "predict", "shape": [2, 1], "datatype": "BYTES", "data": ["0", "1"]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64",
             "data": [0.7, 0.3, 0.2, 0.8]},
        ]
    }  # fmt: skip
    read = read_answers(answer, 2, ["0", "1"])
    assert read.predictions == ["0", "1"]
    assert read.probabilities == [{"0": 0.7, "1": 0.3}, {"0": 0.2, "1": 0.8}]


def test_the_servers_own_class_order_wins_and_nested_rows_are_read() -> None:
    answer = {
        "outputs": [
            {"name": "predict", "shape": [1], "data": ["b"]},
            {"name": "predict_proba", "shape": [1, 2], "data": [[0.9, 0.1]],
             "parameters": {"classes": ["b", "a"]}},
        ]
    }  # fmt: skip
    assert read_answers(answer, 1, ["a", "b"]).probabilities == [{"b": 0.9, "a": 0.1}]


@pytest.mark.parametrize(
    ("answer", "rows", "classes", "problem"),
    [
        ({}, 1, ["0", "1"], "no outputs"),
        ({"outputs": [{"name": "predict_proba"}]}, 1, ["0", "1"], "no 'predict' output"),
        ({"outputs": [{"name": "predict", "shape": [2], "data": ["0", "1"]}]}, 1, [],
         r"shape \[2\], expected \[1\]"),
        ({"outputs": [{"name": "predict", "shape": [1], "data": ["0", "1"]}]}, 1, [],
         r"shape \[1\] but 2 values"),
        ({"outputs": [{"name": "predict", "shape": [1], "data": ["0"]},
                      {"name": "predict_proba", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}]},
         1, ["0", "1"], r"shape \[1, 3\], expected \[1, 2\]"),
        ({"outputs": [{"name": "predict", "shape": [1], "data": ["0"]},
                      {"name": "predict_proba", "shape": [1, 2], "data": [0.1, 0.9]}]},
         1, [], "without its class order"),
        ({"outputs": [{"name": "predict", "shape": [1], "data": ["0"]},
                      {"name": "predict_proba", "shape": [1, 2], "data": ["x", 0.9]}]},
         1, ["0", "1"], "not a number"),
    ],
)  # fmt: skip
def test_an_answer_of_the_wrong_shape_is_said_to_be(
    answer: dict[str, object], rows: int, classes: list[str], problem: str
) -> None:
    with pytest.raises(AnswerError, match=problem):
        read_answers(answer, rows, classes)


BINARY = Served(features=["x"], task="binary", positive_label="1", classes=["0", "1"])


def test_a_served_answer_is_compared_with_the_gated_row() -> None:
    gated = pd.Series({"x": 1.0, "y_pred": "1", "y_score": 0.8})
    assert compare(gated, "1", {"0": 0.2, "1": 0.8}, BINARY, 1e-6) is None
    assert compare(gated, 1, None, BINARY, 1e-6) is None  # an integer label, no scores asked
    assert compare(gated, "0", {"0": 0.6, "1": 0.4}, BINARY, 1e-6) == "label '0', gated '1'"
    assert compare(gated, "1", {"0": 0.1, "1": 0.9}, BINARY, 1e-6) == "score 0.9, gated 0.8"
    assert "no score in the answer" in str(compare(gated, "1", {"a": 1.0}, BINARY, 1e-6))
    regression = Served(features=["x"], task="regression", positive_label="1", classes=[])
    assert compare(pd.Series({"y_pred": 2.5}), 2.5, None, regression, 1e-6) is None
    assert compare(pd.Series({"y_pred": 2.5}), "high", None, regression, 1e-6) == (
        "predicted 'high', not a number"
    )
