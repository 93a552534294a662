"""Asking any model server through the Open Inference Protocol (v2 REST).

What the verifier (and any step that scores rows through a server) needs:
readiness, the model's metadata, and ``infer`` with one tensor per feature
column and ``parameters.content_type: pd`` (MLServer's pandas codec, which a
scikit-learn pipeline over named columns needs; the reference server reads
the same tensors). Answers are turned back into labels and scores, checking
their shapes: a server that answers the wrong shape is said to, never guessed.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class AnswerError(ValueError):
    """An inference response that cannot be read as the rows' answers."""


@dataclass(frozen=True)
class Answers:
    """Per row: the label (or a regression's number) and, for a classifier
    asked for scores, the probability of each class."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | None


def request(url: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
    """One JSON request: the status and the decoded body (a dict for errors)."""
    sent = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(sent, timeout=timeout) as answer:
            data = answer.read()
            # Readiness may answer 200 with no body (MLServer does).
            return answer.status, json.loads(data) if data.strip() else {}
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, {"error": error.reason}


def model_path(url: str, model: str, version: str | None = None) -> str:
    path = f"{url.rstrip('/')}/v2/models/{urllib.parse.quote(model, safe='')}"
    if version:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    return path


def wait_ready(
    url: str,
    model: str,
    timeout: float,
    version: str | None = None,
    alive: Callable[[], None] | None = None,
) -> None:
    """Until the server says the model is ready; the last answer if it never
    does. ``alive`` raises when the server is known to be gone (a process
    that exited): no use waiting for it then."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    ready = f"{model_path(url, model, version)}/ready"
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            status, body = request(ready, timeout=5)
            if status == 200:
                return
            last = f"{status} {body}"
        except (OSError, ValueError) as error:
            last = str(error)
        time.sleep(0.5)
    raise RuntimeError(
        f"model {model!r} at {url} was not ready within {timeout:g} s (GET {ready}: {last})"
    )


def _json_value(value: Any) -> Any:
    """A value as a JSON tensor holds it: numpy scalars as Python, NaN as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _datatype(values: Sequence[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"


def infer_body(columns: Mapping[str, Sequence[Any]], outputs: Sequence[str]) -> dict[str, Any]:
    """An inference request: one tensor per column, the outputs asked for."""
    rows = {len(v) for v in columns.values()}
    if len(rows) != 1:
        raise ValueError(f"columns of different lengths: {sorted(rows)}")
    data = {name: [_json_value(v) for v in values] for name, values in columns.items()}
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": name, "shape": [len(values)], "datatype": _datatype(values), "data": values}
            for name, values in data.items()
        ],
        "outputs": [{"name": name} for name in outputs],
    }


def _rows_of(tensor: Mapping[str, Any], rows: int, width: int | None) -> list[Any]:
    """The tensor's data, flat, after checking its shape holds ``rows`` rows."""
    name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not isinstance(data, list):
        raise AnswerError(f"output {name!r} has no shape or data")
    expected = [rows] if width is None else [rows, width]
    # A column may also come back as [N, 1].
    if shape != expected and not (width is None and shape == [rows, 1]):
        raise AnswerError(f"output {name!r} has shape {shape}, expected {expected}")
    flat: list[Any] = []
    for value in data:  # some servers nest the rows
        flat.extend(value if isinstance(value, list) else [value])
    if len(flat) != math.prod(shape):
        raise AnswerError(f"output {name!r}: shape {shape} but {len(flat)} values")
    return flat


def read_answers(body: Any, rows: int, classes: Sequence[str] | None) -> Answers:
    """The labels and class probabilities in an inference response.

    ``classes`` is the class order of ``predict_proba`` when the server does
    not name it (scikit-learn's ``classes_``, as MLServer answers); the
    reference server names it in the output's ``parameters.classes``.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("outputs"), list):
        raise AnswerError("the response has no outputs")
    tensors = {t.get("name"): t for t in body["outputs"] if isinstance(t, Mapping)}
    if "predict" not in tensors:
        raise AnswerError(f"the response has no 'predict' output (got {sorted(map(str, tensors))})")
    predictions = _rows_of(tensors["predict"], rows, None)
    proba = tensors.get("predict_proba")
    if proba is None:
        return Answers(predictions, None)
    named = (proba.get("parameters") or {}).get("classes")
    order = [str(c) for c in named] if isinstance(named, list) else list(classes or [])
    if not order:
        raise AnswerError("'predict_proba' came without its class order, and none is known")
    flat = _rows_of(proba, rows, len(order))
    try:
        numbers = [float(v) for v in flat]
    except (TypeError, ValueError) as error:
        raise AnswerError(f"'predict_proba' holds a value that is not a number: {error}") from None
    width = len(order)
    probabilities = [
        dict(zip(order, numbers[i * width : (i + 1) * width], strict=True)) for i in range(rows)
    ]
    return Answers(predictions, probabilities)
