"""The binary tensor data extension of the Open Inference Protocol, as the
reference server reads and writes it (pure functions of serving/oip.py)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from modelgate.serving.oip import (
    ProtocolError,
    WantedOutput,
    decode_binary,
    encode_binary,
    encode_response,
    request_columns,
    split_body,
)


@pytest.mark.parametrize(
    ("datatype", "dtype", "values"),
    [
        ("BOOL", "?", [True, False, True]),
        ("INT8", "<i1", [-128, 0, 127]),
        ("UINT8", "<u1", [0, 7, 255]),
        ("INT16", "<i2", [-32768, 1, 32767]),
        ("UINT16", "<u2", [0, 1, 65535]),
        ("INT32", "<i4", [-(2**31), 5, 2**31 - 1]),
        ("UINT32", "<u4", [0, 5, 2**32 - 1]),
        ("INT64", "<i8", [-(2**63), 5, 2**63 - 1]),
        ("UINT64", "<u8", [0, 5, 2**64 - 1]),
        ("FP16", "<f2", [0.5, -2.0, 65504.0]),
        ("FP32", "<f4", [0.25, -1.5, 3.0e38]),
        ("FP64", "<f8", [0.1, -1e300, 42.0]),
    ],
)
def test_numbers_read_as_numpy_lays_them_out(datatype: str, dtype: str, values: list) -> None:
    raw = np.array(values, dtype=dtype).tobytes()
    assert decode_binary(raw, datatype, 3, "x") == pytest.approx(values)
    assert encode_binary(values, datatype) == raw


def test_bytes_elements_are_length_prefixed_utf8() -> None:
    values = ["north", "", "Zürich"]
    raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    assert decode_binary(raw, "BYTES", 3, "region") == values
    assert encode_binary(values, "BYTES") == raw


def test_nan_is_a_missing_value_and_infinity_is_refused() -> None:
    nan = decode_binary(np.array([math.nan, 1.0]).tobytes(), "FP64", 2, "age")
    assert math.isnan(nan[0])
    with pytest.raises(ProtocolError, match="'age': element 1 is infinite"):
        decode_binary(np.array([1.0, -math.inf]).tobytes(), "FP64", 2, "age")


@pytest.mark.parametrize(
    ("raw", "datatype", "count", "message"),
    [
        (b"\0" * 15, "FP64", 2, "2 FP64 values take 16 bytes, binary_data_size is 15"),
        (b"\x05\0\0\0abc", "BYTES", 1, "element 0 says 5 bytes, 3 are left"),
        (b"\x01\0", "BYTES", 1, "element 0 has no whole length"),
        (b"\x02\0\0\0\xff\xfe", "BYTES", 1, "element 0 is not UTF-8 text"),
        (b"\x01\0\0\0a\x01\0\0\0b", "BYTES", 1, "does not hold exactly the 1 BYTES"),
        (b"\x01\0\0\0a", "BYTES", 2, "does not hold exactly the 2 BYTES"),
    ],
)
def test_binary_data_that_does_not_fit_says_how(
    raw: bytes, datatype: str, count: int, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_binary(raw, datatype, count, "x")


def _request(*tensors: dict, **extra: object) -> dict:
    return {"inputs": list(tensors), **extra}


def test_a_request_mixes_json_and_binary_inputs_in_order() -> None:
    ages = np.array([30.0, 40.0]).tobytes()
    regions = encode_binary(["north", "south"], "BYTES")
    body = _request(
        {"name": "age", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
        {"name": "lines", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
        {
            "name": "region",
            "shape": [2],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(regions)},
        },
        outputs=[{"name": "predict", "parameters": {"binary_data": True}}],
    )
    columns, outputs = request_columns(body, ages + regions)
    assert columns == {"age": [30.0, 40.0], "lines": [1, 2], "region": ["north", "south"]}
    assert outputs == [WantedOutput("predict", binary=True)]


def test_binary_data_output_is_the_default_an_output_may_override() -> None:
    tensor = {"name": "age", "shape": [1], "datatype": "FP64", "data": [1.0]}
    _, outputs = request_columns(_request(tensor, parameters={"binary_data_output": True}))
    assert outputs == [WantedOutput("predict", True), WantedOutput("predict_proba", True)]
    _, outputs = request_columns(
        _request(
            tensor,
            parameters={"binary_data_output": True},
            outputs=[{"name": "predict_proba", "parameters": {"binary_data": False}}],
        )
    )
    assert outputs == [WantedOutput("predict_proba", False)]


@pytest.mark.parametrize(
    ("body", "binary", "message"),
    [
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0],
                      "parameters": {"binary_data_size": 8}}),
            b"\0" * 8,
            "has both data and binary_data_size",
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64",
                      "parameters": {"binary_data_size": 8}}),
            b"\0" * 4,
            "runs past the body's binary data",
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}),
            b"\0",
            "1 bytes of binary data that no input",
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64",
                      "parameters": {"binary_data_size": -1}}),
            b"",
            "binary_data_size must be a byte count",
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                     parameters={"binary_data_output": "yes"}),
            b"",
            "binary_data_output must be true or false",
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                     outputs=None),
            b"",
            '"outputs" must be an array',
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}, id=7),
            b"",
            '"id" must be a string',
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0],
                      "parameters": None}),
            b"",
            "parameters must be an object",
        ),
        (
            _request({"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                     parameters={"headers": []}),
            b"",
            "parameters.headers must be an object",
        ),
    ],
)  # fmt: skip
def test_requests_that_do_not_fit_the_extension_say_why(
    body: dict, binary: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        request_columns(body, binary)


def test_the_header_length_splits_the_body() -> None:
    assert split_body(b'{"a": 1}xyz', "8") == (b'{"a": 1}', b"xyz")
    assert split_body(b'{"a": 1}', None) == (b'{"a": 1}', b"")
    with pytest.raises(ProtocolError, match="says the JSON part is 9 bytes, but the body has 8"):
        split_body(b'{"a": 1}', "9")
    for length in ("-1", "²", "8 bytes"):
        with pytest.raises(ProtocolError, match="must be a number of bytes"):
            split_body(b'{"a": 1}', length)


def test_binary_outputs_follow_the_json_part() -> None:
    found = {
        "model_name": "m",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["1", "0"]},
            {
                "name": "predict_proba",
                "shape": [2, 2],
                "datatype": "FP64",
                "data": [0.2, 0.8, 0.9, 0.1],
                "parameters": {"classes": ["0", "1"]},
            },
        ],
    }
    body, length = encode_response(found, {"predict_proba"})
    assert length is not None
    header = json.loads(body[:length])
    predict, proba = header["outputs"]
    assert predict["data"] == ["1", "0"]
    assert "data" not in proba
    assert proba["parameters"] == {"classes": ["0", "1"], "binary_data_size": 32}
    assert np.frombuffer(body[length:], "<f8").tolist() == [0.2, 0.8, 0.9, 0.1]
    plain, none = encode_response(found, set())
    assert none is None
    assert json.loads(plain) == found
