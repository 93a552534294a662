"""The Open Inference Protocol (v2 REST) for the reference server: tensors in,
tensors out, translated to and from the columns the model takes.

Pure: JSON in, columns (or an error naming the input) out. A tabular model
takes one input tensor per feature column, named as the column, of shape
``[N]`` or ``[N, 1]`` (``BYTES`` for text, a numeric datatype for numbers),
as MLServer's pandas codec sends them. It answers ``predict`` (the labels,
or a regression's numbers) and, for classifiers, ``predict_proba`` (shape
``[N, classes]``, the class order in its ``parameters.classes``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

NUMERIC = {
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
}
DATATYPES = NUMERIC | {"BYTES"}
OUTPUTS = ("predict", "predict_proba")


class ProtocolError(ValueError):
    """A request that is not a well-formed inference request (HTTP 400)."""


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: data must be an array")
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested array cannot exhaust the stack
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


_END = object()


def request_columns(body: Any) -> tuple[dict[str, list[Any]], list[str]]:
    """The columns an inference request carries, and the outputs it asks for."""
    if not isinstance(body, Mapping):
        raise ProtocolError('the body must be an inference request: {"inputs": [...]}')
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError('"inputs" must be a non-empty array of tensors')
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise ProtocolError(f"input {index} is not an object")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"input {index} has no name")
        if name in columns:
            raise ProtocolError(f"input {name!r} appears twice")
        datatype = tensor.get("datatype")
        if datatype not in DATATYPES:
            raise ProtocolError(
                f"input {name!r}: datatype {datatype!r} is not one of {sorted(DATATYPES)}"
            )
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ProtocolError(f"input {name!r}: shape must be an array of sizes, e.g. [3]")
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ProtocolError(
                f"input {name!r} has shape {shape}: a column is [N] or [N, 1], one input per "
                "feature column"
            )
        values = _flatten(tensor.get("data"), name)
        if len(values) != math.prod(shape):
            raise ProtocolError(
                f"input {name!r}: shape {shape} holds {math.prod(shape)} values, data has "
                f"{len(values)}"
            )
        columns[name] = values
    wanted = body.get("outputs")
    names = list(OUTPUTS)
    if wanted is not None:
        if not isinstance(wanted, list) or not all(
            isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in wanted
        ):
            raise ProtocolError('"outputs" must be an array of {"name": ...}')
        names = [str(o["name"]) for o in wanted]
        unknown = [n for n in names if n not in OUTPUTS]
        if unknown:
            raise ProtocolError(f"output {unknown[0]!r} is not one of {list(OUTPUTS)}")
    return columns, names


def response(
    answer: Mapping[str, Any],
    outputs: list[str],
    model: str,
    version: str,
    classes: list[str],
    positive_label: str | None = None,
    request_id: Any = None,
) -> dict[str, Any]:
    """The model's answer as an inference response."""
    predictions = list(answer.get("predictions") or [])
    rows = len(predictions)
    tensors: list[dict[str, Any]] = []
    if "predict" in outputs:
        numeric = bool(predictions) and all(isinstance(p, float) for p in predictions)
        tensors.append(
            {
                "name": "predict",
                "shape": [rows],
                "datatype": "FP64" if numeric else "BYTES",
                "data": predictions,
            }
        )
    scores = answer.get("scores")
    if "predict_proba" in outputs and scores is not None and classes:
        data: list[float] = []
        for score in scores:
            if isinstance(score, Mapping):
                data.extend(float(score[c]) for c in classes)
            else:  # binary: the positive label's probability
                p = float(score)
                data.extend(p if c == positive_label else 1.0 - p for c in classes)
        tensors.append(
            {
                "name": "predict_proba",
                "shape": [rows, len(classes)],
                "datatype": "FP64",
                "data": data,
                "parameters": {"classes": classes},
            }
        )
    found: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if isinstance(request_id, str):
        found["id"] = request_id
    return found


def metadata(
    model: str, version: str, features: list[dict[str, Any]], task: str, classes: list[str]
) -> dict[str, Any]:
    """The model metadata response: one input per feature column."""
    outputs: list[dict[str, Any]] = [
        {"name": "predict", "datatype": "FP64" if task == "regression" else "BYTES", "shape": [-1]}
    ]
    if classes:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes)]})
    return {
        "name": model,
        "versions": [version] if version else [],
        "platform": "modelgate-sklearn",
        "inputs": [
            {
                "name": f["name"],
                "datatype": "FP64" if f.get("type") == "number" else "BYTES",
                "shape": [-1],
            }
            for f in features
        ],
        "outputs": outputs,
    }
