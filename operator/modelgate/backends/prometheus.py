"""Analysis queries against Prometheus' HTTP API: one instant query per
measurement, a bounded answer, nothing else read."""

from __future__ import annotations

import base64
import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from modelgate.api.common import format_time
from modelgate.promotion.analysis import AnalysisQuery
from modelgate.promotion.plan import MeasurementObservation
from modelgate.promotion.rollout import ArmQuery
from modelgate.settings import PrometheusSettings

MAX_ANSWER_BYTES = 1 << 20  # an instant query for one number is a few hundred bytes

NO_PROMETHEUS = (
    "analysis is configured and there is no Prometheus to ask: set MODELGATE_PROMETHEUS_URL "
    "(the chart's prometheus.url; in local mode --prometheus-url)"
)


class PrometheusClient:
    """Takes the measurements the core asks for."""

    def __init__(self, settings: PrometheusSettings | None) -> None:
        self.settings = settings

    def measure(self, query: AnalysisQuery | ArmQuery, now: datetime) -> MeasurementObservation:
        at = format_time(now)
        if self.settings is None:
            return MeasurementObservation(at=at, error=NO_PROMETHEUS)
        try:
            status, body = self._get(query.query, now)
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return MeasurementObservation(
                at=at, error=f"Prometheus at {self.settings.url} did not answer: {reason}"
            )
        return read_answer(status, body, at, self.settings.url)

    def _get(self, query: str, now: datetime) -> tuple[int, bytes]:
        assert self.settings is not None
        settings = self.settings
        params = urllib.parse.urlencode({"query": query, "time": f"{now.timestamp():.3f}"})
        request = urllib.request.Request(
            f"{settings.url.rstrip('/')}/api/v1/query?{params}",
            headers={"Accept": "application/json", **self._auth()},
        )
        context = ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else None
        try:
            with urllib.request.urlopen(
                request, timeout=settings.timeout_seconds, context=context
            ) as answer:
                return int(answer.status), answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), error.read(MAX_ANSWER_BYTES + 1)

    def _auth(self) -> dict[str, str]:
        assert self.settings is not None
        settings = self.settings
        if settings.bearer_token_file:
            token = Path(settings.bearer_token_file).read_text().strip()
            return {"Authorization": f"Bearer {token}"}
        if settings.username:
            password = (
                Path(settings.password_file).read_text().strip() if settings.password_file else ""
            )
            pair = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {}


def read_answer(status: int, body: bytes, at: str, url: str) -> MeasurementObservation:
    """One number from an instant query's answer, or why there is none:
    Prometheus failing or overloaded is asked again; a query it refuses, or
    one that does not come down to one number, is an Inconclusive
    measurement (the spec must change)."""
    if len(body) > MAX_ANSWER_BYTES:
        return _invalid(at, f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return MeasurementObservation(
            at=at, error=f"Prometheus at {url} answered {status} with no JSON"
        )
    if status in (400, 422) or answer.get("errorType") in ("bad_data", "execution"):
        return _invalid(at, f"Prometheus refused the query: {answer.get('error', status)}")
    if status != 200 or answer.get("status") != "success":
        detail = answer.get("error") or answer.get("status")
        return MeasurementObservation(
            at=at, error=f"Prometheus at {url} answered {status}: {detail}"
        )
    data: dict[str, Any] = answer.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar" and isinstance(result, list):
            return MeasurementObservation(at=at, value=_number(result[1]))
        if kind == "vector" and isinstance(result, list):
            if not result:
                return MeasurementObservation(at=at, value=None)  # no data
            if len(result) > 1:
                labels = [s.get("metric", {}) for s in result[:3]]
                return _invalid(
                    at,
                    f"the query returned {len(result)} series ({labels}...): aggregate it to "
                    "one number (sum, max, avg by nothing)",
                )
            return MeasurementObservation(at=at, value=_number(result[0]["value"][1]))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        return _invalid(at, f"the answer is not a sample: {error!r}")
    return _invalid(at, f"the query returned a {kind}, not one number: use an instant query")


def _number(text: Any) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value


def _invalid(at: str, message: str) -> MeasurementObservation:
    return MeasurementObservation(at=at, error=message, invalid=True)
