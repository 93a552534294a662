"""Post-deployment truth: do the served answers match the gated predictions?

Sends a sample of the evaluation rows (from the predictions file recorded
at training time, hash-checked) to the deployed model one row per request
through the Open Inference Protocol (v2 REST), so any server that speaks it
(the reference server, MLServer, Triton, a KServe runtime) is verified the
same way, and compares each answer with the offline prediction: labels
equal, scores within a tolerance. What the model takes and answers (its
features, task, positive label and class order) comes from the release's
own metadata.json, not from the server. A mismatch rate above the limit is
train/serve skew (a different model, a different preprocessing, a different
library); a p99 latency above ``max_latency`` fails too. A row the server
refuses counts as a mismatch: the model was gated on rows it now rejects.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from modelgate.serving import oip_client
from modelgate.serving.artifacts import read_artifact, verified
from modelgate.serving.served import Served
from modelgate.trainer.contract import label_string


@dataclass(frozen=True)
class VerifySettings:
    url: str
    predictions_uri: str
    predictions_sha256: str
    metadata_uri: str
    metadata_sha256: str
    # The name the server serves the model under: /v2/models/<model_name>.
    model_name: str
    sample_size: int = 200
    max_mismatch_rate: float = 0.0
    score_tolerance: float = 1e-6
    max_latency_seconds: float | None = None
    ready_timeout_seconds: float = 120.0


@dataclass
class Mismatch:
    row: int
    detail: str


@dataclass
class VerifyResult:
    rows: int
    mismatches: list[Mismatch] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def mismatch_rate(self) -> float:
        return len(self.mismatches) / self.rows if self.rows else 1.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))]

    def passed(self, settings: VerifySettings) -> bool:
        too_slow = (
            settings.max_latency_seconds is not None
            and self.percentile(0.99) > settings.max_latency_seconds
        )
        return self.rows > 0 and self.mismatch_rate <= settings.max_mismatch_rate and not too_slow

    def summary(self, settings: VerifySettings) -> str:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        text = (
            f"{len(self.mismatches)}/{self.rows} served answers differ from the gated "
            f"predictions (rate {self.mismatch_rate:.3f}, limit {settings.max_mismatch_rate:g}); "
            f"latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
        if settings.max_latency_seconds is not None:
            text += f" (limit {settings.max_latency_seconds * 1000:g} ms)"
        if self.mismatches:
            first = self.mismatches[0]
            text += f"; first: row {first.row}: {first.detail}"
        return text


def _table(data: bytes) -> pd.DataFrame:
    if data[:4] == b"PAR1":
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data))


def sample_indices(total: int, size: int) -> list[int]:
    """Evenly spread rows: deterministic, and covering the whole file."""
    if total <= size:
        return list(range(total))
    step = total / size
    return [int(i * step) for i in range(size)]


def compare(
    expected: pd.Series,
    prediction: Any,
    probabilities: dict[str, float] | None,
    served: Served,
    tolerance: float,
) -> str | None:
    """Why one served answer differs from its offline row, or None."""
    if served.task == "regression":
        try:
            number = float(prediction)
        except (TypeError, ValueError):
            return f"predicted {prediction!r}, not a number"
        if not math.isclose(number, float(expected["y_pred"]), rel_tol=0, abs_tol=tolerance):
            return f"predicted {prediction}, gated {expected['y_pred']}"
        return None
    if label_string(prediction) != label_string(expected["y_pred"]):
        return f"label {label_string(prediction)!r}, gated {label_string(expected['y_pred'])!r}"
    if probabilities is None:
        return None
    pairs = (
        [(probabilities.get(served.positive_label), expected.get("y_score"), "score")]
        if served.task == "binary"
        else [(v, expected.get(f"y_score_{k}"), f"score of {k}") for k, v in probabilities.items()]
    )
    for served_score, gated, what in pairs:
        if gated is None or (isinstance(gated, float) and math.isnan(gated)):
            continue
        if served_score is None:
            return f"no {what} in the answer (classes {sorted(probabilities)})"
        if not math.isclose(float(served_score), float(gated), rel_tol=0, abs_tol=tolerance):
            return f"{what} {served_score:.9g}, gated {float(gated):.9g}"
    return None


def verify(settings: VerifySettings) -> VerifyResult:
    url = settings.url.rstrip("/")
    predictions = _table(
        verified(
            read_artifact(settings.predictions_uri), settings.predictions_sha256, "predictions"
        )
    )
    served = Served.from_metadata(
        json.loads(
            verified(read_artifact(settings.metadata_uri), settings.metadata_sha256, "metadata")
        )
    )
    absent = [f for f in served.features if f not in predictions.columns]
    if absent:
        raise RuntimeError(
            f"the model takes {absent}, which the gated predictions file lacks: "
            "the predictions and the metadata are of different models"
        )
    name = settings.model_name
    oip_client.wait_ready(url, name, settings.ready_timeout_seconds)
    status, metadata = oip_client.request(oip_client.model_path(url, name))
    if status != 200:
        raise RuntimeError(f"GET {oip_client.model_path(url, name)} answered {status}: {metadata}")
    outputs = ["predict"] if served.task == "regression" else ["predict", "predict_proba"]
    indices = sample_indices(len(predictions), settings.sample_size)
    result = VerifyResult(
        rows=len(indices),
        model={
            k: metadata[k]
            for k in ("name", "versions", "platform")
            if isinstance(metadata, dict) and k in metadata
        },
    )
    infer = f"{oip_client.model_path(url, name)}/infer"
    for index in indices:
        row = predictions.iloc[index]
        body = oip_client.infer_body({f: [row[f]] for f in served.features}, outputs)
        started = time.perf_counter()
        status, answer = oip_client.request(infer, json.dumps(body).encode())
        result.latencies.append(time.perf_counter() - started)
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else answer
            result.mismatches.append(Mismatch(index, f"the server answered {status}: {error}"))
            continue
        try:
            answers = oip_client.read_answers(answer, 1, served.classes)
        except oip_client.AnswerError as error:
            result.mismatches.append(Mismatch(index, f"the server's answer: {error}"))
            continue
        probabilities = answers.probabilities[0] if answers.probabilities else None
        why = compare(row, answers.predictions[0], probabilities, served, settings.score_tolerance)
        if why is not None:
            result.mismatches.append(Mismatch(index, why))
    return result
