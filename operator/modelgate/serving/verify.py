"""Post-deployment truth: do the served answers match the gated predictions?

Sends a sample of the evaluation rows (from the predictions file recorded
at training time, hash-checked) to the deployed model one row per request,
and compares each answer with the offline prediction: labels equal, scores
within a tolerance. A mismatch rate above the limit is train/serve skew
(a different model, a different preprocessing, a different library); a p99
latency above ``max_latency`` fails too. A row the server refuses (422)
counts as a mismatch: the model was gated on rows it now rejects.
"""

from __future__ import annotations

import io
import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from modelgate.serving.artifacts import read_artifact, verified
from modelgate.trainer.contract import label_string


@dataclass(frozen=True)
class VerifySettings:
    url: str
    predictions_uri: str
    predictions_sha256: str
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


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def sample_indices(total: int, size: int) -> list[int]:
    """Evenly spread rows: deterministic, and covering the whole file."""
    if total <= size:
        return list(range(total))
    step = total / size
    return [int(i * step) for i in range(size)]


def compare(expected: pd.Series, answer: dict[str, Any], task: str, tolerance: float) -> str | None:
    """Why one served answer differs from its offline row, or None."""
    [served] = answer["predictions"]
    if task == "regression":
        if not math.isclose(float(served), float(expected["y_pred"]), rel_tol=0, abs_tol=tolerance):
            return f"predicted {served}, gated {expected['y_pred']}"
        return None
    if str(served) != label_string(expected["y_pred"]):
        return f"label {served!r}, gated {label_string(expected['y_pred'])!r}"
    scores = answer.get("scores")
    if not scores:
        return None
    score = scores[0]
    pairs = (
        [(score, expected.get("y_score"), "score")]
        if isinstance(score, float)
        else [(v, expected.get(f"y_score_{k}"), f"score of {k}") for k, v in score.items()]
    )
    for served_score, gated, what in pairs:
        if gated is None or (isinstance(gated, float) and math.isnan(gated)):
            continue
        if not math.isclose(float(served_score), float(gated), rel_tol=0, abs_tol=tolerance):
            return f"{what} {served_score:.9g}, gated {float(gated):.9g}"
    return None


def _request(url: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST" if body else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, {"error": error.reason}


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = _request(f"{url}/readyz", timeout=5)
            if status == 200:
                return
            last = f"{status} {body}"
        except (OSError, ValueError) as error:
            last = str(error)
        time.sleep(0.5)
    raise RuntimeError(f"the model at {url} was not ready within {timeout:g} s ({last})")


def verify(settings: VerifySettings) -> VerifyResult:
    url = settings.url.rstrip("/")
    predictions = _table(
        verified(
            read_artifact(settings.predictions_uri), settings.predictions_sha256, "predictions"
        )
    )
    wait_ready(url, settings.ready_timeout_seconds)
    status, metadata = _request(f"{url}/v1/metadata")
    if status != 200:
        raise RuntimeError(f"GET {url}/v1/metadata answered {status}: {metadata}")
    features = [f["name"] for f in metadata["features"]]
    absent = [f for f in features if f not in predictions.columns]
    if absent:
        raise RuntimeError(
            f"the served model takes {absent}, which the gated predictions file lacks: "
            "a different model is being served"
        )
    task = str(metadata.get("task", "binary"))
    indices = sample_indices(len(predictions), settings.sample_size)
    result = VerifyResult(rows=len(indices), model=dict(metadata.get("model") or {}))
    for index in indices:
        row = predictions.iloc[index]
        body = json.dumps({"instances": [{f: _plain(row[f]) for f in features}]}).encode()
        started = time.perf_counter()
        status, answer = _request(f"{url}/v1/predict", body)
        result.latencies.append(time.perf_counter() - started)
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else answer
            result.mismatches.append(Mismatch(index, f"the server answered {status}: {error}"))
            continue
        why = compare(row, answer, task, settings.score_tolerance)
        if why is not None:
            result.mismatches.append(Mismatch(index, why))
    return result
