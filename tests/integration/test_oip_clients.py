"""The reference server through clients nobody here wrote: ``tritonclient``
(the usual Open Inference Protocol client, which sends binary tensors by
default) and schemathesis driven by the protocol's own OpenAPI document."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import schemathesis
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tritonclient.utils import InferenceServerException

from modelgate.trainer import contract
from tests.support.mlserver import dataplane_openapi
from tests.support.model_server import ModelServer
from tests.unit.test_trainer import DATA

MODEL = "credit-risk"
NUMERIC = ["age", "income", "debt_ratio", "credit_lines", "late_payments"]
FEATURES = [*NUMERIC, "region"]


@pytest.fixture
def client(server: ModelServer) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


def _rows(trained: Path, count: int) -> pd.DataFrame:
    return pd.read_parquet(trained / contract.PREDICTIONS_FILE).head(count)


def _v1(server: ModelServer, frame: pd.DataFrame) -> dict[str, Any]:
    columns = {c: frame[c].tolist() for c in FEATURES}
    status, answer = server.post("/v1/predict", {"inputs": columns})
    assert status == 200, answer
    return answer


def _inputs(frame: pd.DataFrame, binary: bool, numeric: str = "FP64") -> list[triton.InferInput]:
    inputs = []
    for column in FEATURES:
        if column == "region":
            values = np.array([v.encode() for v in frame[column]], dtype=np.object_)
            tensor = triton.InferInput(column, [len(frame)], "BYTES")
        else:
            dtype = {"FP64": np.float64, "FP32": np.float32}[numeric]
            values = frame[column].to_numpy(dtype=dtype)
            tensor = triton.InferInput(column, [len(frame)], numeric)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_the_server_says_it_speaks_binary_tensors(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    described = client.get_model_metadata(MODEL)
    assert [i["name"] for i in described["inputs"]] == FEATURES


@pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["json", "binary-in", "binary-out", "binary"],
)
def test_tritonclient_gets_the_answers_v1_gives(
    server: ModelServer,
    client: triton.InferenceServerClient,
    trained: Path,
    binary_in: bool,
    binary_out: bool,
) -> None:
    frame = _rows(trained, 25)
    expected = _v1(server, frame)
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=binary_out),
        triton.InferRequestedOutput("predict_proba", binary_data=binary_out),
    ]
    result = client.infer(MODEL, _inputs(frame, binary_in), outputs=outputs, request_id="r-7")
    assert result.get_response()["id"] == "r-7"
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    assert labels == [str(p) for p in expected["predictions"]]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (25, 2)
    classes = result.get_output("predict_proba")["parameters"]["classes"]
    positive = proba[:, classes.index("1")]
    assert positive.tolist() == pytest.approx(expected["scores"], abs=1e-12)
    sent = result.get_output("predict")
    assert ("binary_data_size" in (sent.get("parameters") or {})) == binary_out
    assert ("data" in sent) != binary_out


def test_tritonclient_defaults_binary_both_ways(
    server: ModelServer, client: triton.InferenceServerClient, trained: Path
) -> None:
    """No outputs named: tritonclient asks for binary_data_output, and every
    output comes back binary; FP32 inputs are read in their own size."""
    frame = _rows(trained, 10)
    expected = _v1(server, frame)
    result = client.infer(MODEL, _inputs(frame, True, "FP32"))
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["predict", "predict_proba"]
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    classes = result.get_output("predict_proba")["parameters"]["classes"]
    positive = result.as_numpy("predict_proba")[:, classes.index("1")]
    # The inputs rounded to 32 bits move the scores a little, and no further.
    assert positive.tolist() == pytest.approx(expected["scores"], abs=1e-3)


def test_binary_requests_that_do_not_fit_say_why(server: ModelServer, trained: Path) -> None:
    frame = _rows(trained, 3)
    header = {
        "inputs": [
            {"name": c, "shape": [3], "datatype": "FP64", "parameters": {"binary_data_size": 24}}
            for c in NUMERIC
        ]
        + [{"name": "region", "shape": [3], "datatype": "BYTES", "data": frame["region"].tolist()}]
    }
    numbers = b"".join(frame[c].to_numpy(dtype="<f8").tobytes() for c in NUMERIC)

    def post(body: bytes, length: int | str | None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/octet-stream"}
        if length is not None:
            headers["Inference-Header-Content-Length"] = str(length)
        request = urllib.request.Request(
            f"{server.url}/v2/models/{MODEL}/infer", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    text = json.dumps(header).encode()
    status, answer = post(text + numbers, len(text))
    assert status == 200, answer
    cases = {
        "bytes of binary data that no input": (text + numbers + b"\0", len(text)),
        "runs past the body's binary data": (text + numbers[:-8], len(text)),
        "the body is not JSON": (text + numbers, len(text) + 3),
        "says the JSON part is": (text + numbers, len(text) + len(numbers) + 1),
        "must be a number of bytes": (text + numbers, "many"),
    }
    for message, (body, length) in cases.items():
        status, answer = post(body, length)
        assert status == 400, (message, answer)
        assert message in answer["error"], (message, answer)
    infinite = numbers[:-8] + np.array([np.inf]).astype("<f8").tobytes()
    status, answer = post(text + infinite, len(text))
    assert status == 400
    assert "'late_payments': element 2 is infinite" in answer["error"]


def test_tritonclient_errors_name_the_problem(
    client: triton.InferenceServerClient, trained: Path
) -> None:
    frame = _rows(trained, 4)
    inputs = _inputs(frame, True)[:-1]  # no region
    with pytest.raises(InferenceServerException, match="missing column 'region'"):
        client.infer(MODEL, inputs)
    with pytest.raises(InferenceServerException, match="not served here"):
        client.infer("other-model", _inputs(frame, True))


# ---- fuzzed from the protocol's own OpenAPI document ---------------------------

# MLServer's additions, not the protocol's: streaming and generation.
NOT_THE_PROTOCOL = ("infer_stream", "generate")


def protocol_document() -> dict[str, Any]:
    """The dataplane document MLServer ships, adapted where it is not
    standard OpenAPI 3.0 (or not the protocol):

    - ``$ref: #/components/enums/Datatype``: OpenAPI has no ``enums``
      component section; the enum moves to ``components/schemas``.
    - ``TensorData`` is ``oneOf: [array, {type: bytes}]``; ``bytes`` is not a
      JSON Schema type (binary tensors are not JSON at all): only the array.
    - The streaming and generation paths are MLServer's own, not the protocol's.
    - A model path naming a model the server does not serve: the protocol
      answers 4xx with ``{"error": ...}`` ("model ready" is a 200/4xx
      boolean); the document lists only 200 for some of these paths, so a
      404 with the protocol's error object is added where missing.
    """
    document: dict[str, Any] = json.loads(dataplane_openapi().read_text())
    enums = document["components"].pop("enums")
    document["components"]["schemas"].update(enums)
    text = json.dumps(document).replace("#/components/enums/", "#/components/schemas/")
    document = json.loads(text)
    document["components"]["schemas"]["TensorData"] = {"type": "array"}
    error = {
        "description": "The model is not served here",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/MetadataModelErrorResponse"}
            }
        },
    }
    paths = {}
    for path, item in document["paths"].items():
        if path.rsplit("/", 1)[-1] in NOT_THE_PROTOCOL or path.endswith("_stream"):
            continue
        if "{model_name}" in path:
            for operation in item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation["responses"].setdefault("404", error)
        paths[path] = item
    document["paths"] = paths
    return document


def fuzzed_document() -> dict[str, Any]:
    """The document, with the served model among the names the fuzzer tries
    (a random name only ever meets the 404), and a request the model takes
    as the inference example (answered 200, its body checked)."""
    document = protocol_document()
    frame = pd.read_csv(DATA / "eval.csv").head(3)
    example = {
        "inputs": [
            {
                "name": column,
                "shape": [3],
                "datatype": "BYTES" if column == "region" else "FP64",
                "data": frame[column].tolist(),
            }
            for column in FEATURES
        ]
    }
    for path, item in document["paths"].items():
        if path.endswith("/infer"):
            item["post"]["requestBody"]["content"]["application/json"]["example"] = example
    for item in document["paths"].values():
        for parameter in item.get("parameters", []):
            if parameter["name"] == "model_name":
                parameter["schema"] = {"type": "string", "enum": [MODEL, "not-served"]}
            elif parameter["name"] == "model_version":
                parameter["schema"] = {"type": "string", "enum": ["1.0.0", "9"]}
    return document


PROTOCOL = schemathesis.openapi.from_dict(fuzzed_document())
# One test per operation and mode (xdist runs each by its own id); negative
# cases where there is something to get wrong (path parameters, a body).
OPERATIONS = [result.ok() for result in PROTOCOL.get_all_operations()]
FUZZED = [
    (operation, mode)
    for operation in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or "{" in operation.path or operation.method == "post"
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize(("operation", "mode"), FUZZED, ids=[f"{o.label} {m}" for o, m in FUZZED])
def test_the_protocol_document_holds_for_every_answer(
    operation: Any, mode: GenerationMode, server: ModelServer
) -> None:
    """No 5xx, and every answer as the document says: status, content type,
    headers, body schema; what the document forbids (negative cases) is
    refused.

    Not checked: that every request the document allows is accepted
    (positive_data_acceptance). The document cannot know the model's input
    names, shapes and types, and a request that does not fit the model is
    answered 400 by the protocol."""
    strategy = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:
        strategy = st.one_of(*operation.get_strategies_from_examples(), strategy)

    # The same examples every run (CI fails on a finding, never by chance);
    # MODELGATE_FUZZ_EXAMPLES=2000 MODELGATE_FUZZ_RANDOM=1 for a deep, new search.
    @settings(
        max_examples=int(os.environ.get("MODELGATE_FUZZ_EXAMPLES", "60")),
        derandomize=not os.environ.get("MODELGATE_FUZZ_RANDOM"),
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=server.url, checks=CHECKS)

    fuzz()
