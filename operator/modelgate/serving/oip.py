"""The Open Inference Protocol (v2 REST) for the reference server: tensors in,
tensors out, translated to and from the columns the model takes.

Pure: JSON in, columns (or an error naming the input) out. A tabular model
takes one input tensor per feature column, named as the column, of shape
``[N]`` or ``[N, 1]`` (``BYTES`` for text, a numeric datatype for numbers),
as MLServer's pandas codec sends them. It answers ``predict`` (the labels,
or a regression's numbers) and, for classifiers, ``predict_proba`` (shape
``[N, classes]``, the class order in its ``parameters.classes``).

Tensors may travel as JSON or in the protocol's binary tensor data extension
(what ``tritonclient`` sends by default): the body is the JSON request of
``Inference-Header-Content-Length`` bytes, then each input that says
``parameters.binary_data_size`` as raw bytes, in the order of the inputs:
numbers little-endian in their native size, ``BYTES`` elements each a 4-byte
little-endian length and the bytes. Outputs are answered the same way when
asked (``parameters.binary_data`` on an output, or ``binary_data_output`` on
the request).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
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
# The binary tensor data extension: the JSON part's length, in a header.
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data",)
# struct formats of the numeric datatypes (little-endian, native sizes).
_FORMATS = {
    "BOOL": "?",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
_LENGTH = struct.Struct("<I")


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


@dataclass(frozen=True)
class WantedOutput:
    """An output the request asks for, and whether as binary data."""

    name: str
    binary: bool = False


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part of a request body and the binary tensor data after it."""
    if header_length is None:
        return raw, b""
    if not re.fullmatch(r"[0-9]+", header_length.strip()):  # not isdigit: "²" is one
        raise ProtocolError(f"{HEADER_LENGTH} must be a number of bytes, got {header_length!r}")
    length = int(header_length)
    if length > len(raw):
        raise ProtocolError(
            f"{HEADER_LENGTH} says the JSON part is {length} bytes, but the body has {len(raw)}"
        )
    return raw[:length], raw[length:]


def _parameters(owner: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if "parameters" not in owner:
        return {}
    parameters = owner["parameters"]
    if not isinstance(parameters, Mapping):
        raise ProtocolError(f"{what}: parameters must be an object")
    # The two parameters the protocol's document types (MLServer's codecs).
    if "content_type" in parameters and not isinstance(parameters["content_type"], str):
        raise ProtocolError(f"{what}: parameters.content_type must be a string")
    if "headers" in parameters and not isinstance(parameters["headers"], Mapping):
        raise ProtocolError(f"{what}: parameters.headers must be an object")
    return parameters


def _flag(parameters: Mapping[str, Any], key: str, what: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{what}: parameters.{key} must be true or false")
    return value


def _binary_size(parameters: Mapping[str, Any], name: str) -> int | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"input {name!r}: parameters.binary_data_size must be a byte count")
    return size


def decode_binary(chunk: bytes, datatype: str, count: int, name: str) -> list[Any]:
    """The ``count`` elements of one input's binary data."""
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(chunk) and len(values) < count:
            if offset + _LENGTH.size > len(chunk):
                raise ProtocolError(f"input {name!r}: element {len(values)} has no whole length")
            (length,) = _LENGTH.unpack_from(chunk, offset)
            offset += _LENGTH.size
            if offset + length > len(chunk):
                raise ProtocolError(
                    f"input {name!r}: element {len(values)} says {length} bytes, "
                    f"{len(chunk) - offset} are left"
                )
            try:
                values.append(chunk[offset : offset + length].decode())
            except UnicodeDecodeError:
                raise ProtocolError(
                    f"input {name!r}: element {len(values)} is not UTF-8 text"
                ) from None
            offset += length
        if len(values) != count or offset != len(chunk):
            raise ProtocolError(
                f"input {name!r}: its binary data does not hold exactly the {count} BYTES "
                "elements its shape says (each a 4-byte little-endian length, then the bytes)"
            )
        return values
    code = _FORMATS[datatype]
    expected = count * struct.calcsize(code)
    if len(chunk) != expected:
        raise ProtocolError(
            f"input {name!r}: {count} {datatype} values take {expected} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    numbers = list(struct.unpack(f"<{count}{code}", chunk))
    for index, number in enumerate(numbers):
        if isinstance(number, float) and math.isinf(number):
            raise ProtocolError(
                f"input {name!r}: element {index} is infinite; send finite numbers "
                "(NaN counts as a missing value)"
            )
    return numbers


def request_columns(
    body: Any, binary: bytes = b""
) -> tuple[dict[str, list[Any]], list[WantedOutput]]:
    """The columns an inference request carries (``binary``: the tensor data
    after its JSON part), and the outputs it asks for."""
    if not isinstance(body, Mapping):
        raise ProtocolError('the body must be an inference request: {"inputs": [...]}')
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError('"inputs" must be a non-empty array of tensors')
    columns: dict[str, list[Any]] = {}
    offset = 0
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
        size = _binary_size(_parameters(tensor, f"input {name!r}"), name)
        if size is not None:
            if "data" in tensor:
                raise ProtocolError(
                    f"input {name!r} has both data and binary_data_size: send one of them"
                )
            chunk = binary[offset : offset + size]
            if len(chunk) != size:
                raise ProtocolError(
                    f"input {name!r}: binary_data_size {size} runs past the body's binary "
                    f"data ({len(binary)} bytes after the JSON part)"
                )
            offset += size
            columns[name] = decode_binary(chunk, datatype, math.prod(shape), name)
            continue
        values = _flatten(tensor.get("data"), name)
        if len(values) != math.prod(shape):
            raise ProtocolError(
                f"input {name!r}: shape {shape} holds {math.prod(shape)} values, data has "
                f"{len(values)}"
            )
        columns[name] = values
    if offset != len(binary):
        raise ProtocolError(
            f"the body has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for"
        )
    if "id" in body and not isinstance(body["id"], str):
        raise ProtocolError('"id" must be a string')
    binary_default = _flag(
        _parameters(body, "the request"), "binary_data_output", "the request", False
    )
    if "outputs" not in body:
        return columns, [WantedOutput(name, binary_default) for name in OUTPUTS]
    wanted = body["outputs"]
    if not isinstance(wanted, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise ProtocolError('"outputs" must be an array of {"name": ...}')
    outputs = []
    for output in wanted:
        name = str(output["name"])
        if name not in OUTPUTS:
            raise ProtocolError(f"output {name!r} is not one of {list(OUTPUTS)}")
        what = f"output {name!r}"
        outputs.append(
            WantedOutput(
                name, _flag(_parameters(output, what), "binary_data", what, binary_default)
            )
        )
    return columns, outputs


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


def encode_binary(data: list[Any], datatype: str) -> bytes:
    """Tensor elements as the binary tensor data extension lays them out."""
    if datatype == "BYTES":
        parts = []
        for value in data:
            raw = str(value).encode()
            parts += [_LENGTH.pack(len(raw)), raw]
        return b"".join(parts)
    return struct.pack(f"<{len(data)}{_FORMATS[datatype]}", *data)


def encode_response(found: Mapping[str, Any], binary: set[str]) -> tuple[bytes, int | None]:
    """The response body, with the outputs named in ``binary`` as binary data
    after the JSON part; and the JSON part's length (for the
    Inference-Header-Content-Length header), None when it is all JSON."""
    tensors = []
    chunks = []
    for tensor in found.get("outputs", []):
        if tensor["name"] not in binary:
            tensors.append(tensor)
            continue
        chunk = encode_binary(tensor["data"], tensor["datatype"])
        parameters = {**tensor.get("parameters", {}), "binary_data_size": len(chunk)}
        without_data = {k: v for k, v in tensor.items() if k != "data"}
        tensors.append({**without_data, "parameters": parameters})
        chunks.append(chunk)
    header = json.dumps({**found, "outputs": tensors}).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


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
