"""The analysis' Prometheus client against a real Prometheus: one number per
query, no data, refused queries, answers that are not one number, and a
Prometheus that is down or asks for credentials."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelgate.backends.prometheus import NO_PROMETHEUS, PrometheusClient
from modelgate.promotion.analysis import AnalysisQuery
from modelgate.settings import PrometheusSettings
from tests.support.prometheus import Prometheus, running_prometheus
from tests.support.s3server import free_port


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with running_prometheus([], tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def ask(client: PrometheusClient, promql: str) -> tuple[float | None, str | None, bool]:
    seen = client.measure(AnalysisQuery("staging", "m", promql), datetime.now(UTC))
    return seen.value, seen.error, seen.invalid


def test_one_number_from_a_scalar_or_a_one_series_vector(prometheus: Prometheus) -> None:
    client = PrometheusClient(PrometheusSettings(url=prometheus.url))
    assert ask(client, "scalar(vector(0.25))") == (0.25, None, False)
    assert ask(client, 'vector(0.5) * on() group_left label_replace(vector(1), "a", "b", "", "")')[
        0
    ] == pytest.approx(0.5)
    assert ask(client, "sum(vector(3))") == (3.0, None, False)


def test_nothing_matched_is_no_data(prometheus: Prometheus) -> None:
    client = PrometheusClient(PrometheusSettings(url=prometheus.url))
    assert ask(client, 'up{job="no-such-job"}') == (None, None, False)
    assert ask(client, "scalar(vector(0) / 0)") == (None, None, False)  # NaN


def test_a_query_prometheus_refuses_is_invalid_with_its_reason(prometheus: Prometheus) -> None:
    client = PrometheusClient(PrometheusSettings(url=prometheus.url))
    value, error, invalid = ask(client, "sum(rate(x[5m]")
    assert (value, invalid) == (None, True)
    assert error is not None
    assert error.startswith("Prometheus refused the query:")
    assert "unclosed" in error or "parse error" in error


def test_answers_that_are_not_one_number_are_invalid(prometheus: Prometheus) -> None:
    client = PrometheusClient(PrometheusSettings(url=prometheus.url))
    two = 'label_replace(vector(1), "s", "a", "", "") or label_replace(vector(2), "s", "b", "", "")'
    _, error, invalid = ask(client, two)
    assert invalid
    assert error is not None
    assert "returned 2 series" in error
    assert "aggregate it" in error
    _, error, invalid = ask(client, "prometheus_build_info[1m]")
    assert invalid
    assert error is not None
    assert "matrix" in error


def test_a_prometheus_that_is_down_or_missing_is_asked_again() -> None:
    down = PrometheusClient(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}"))
    value, error, invalid = ask(down, "vector(1)")
    assert (value, invalid) == (None, False)
    assert error is not None
    assert "did not answer" in error
    assert ask(PrometheusClient(None), "vector(1)") == (None, NO_PROMETHEUS, False)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        status = 401 if self.headers.get("Authorization") is None else 503
        body = b'{"status":"error","errorType":"unavailable","error":"try later"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


def test_credentials_are_sent_and_a_failing_answer_is_asked_again(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        password = tmp_path / "password"
        password.write_text("pw")
        bearer = PrometheusClient(PrometheusSettings(url=url, bearer_token_file=str(token)))
        basic = PrometheusClient(
            PrometheusSettings(url=url, username="ops", password_file=str(password))
        )
        _, error, invalid = ask(bearer, "vector(1)")
        assert not invalid
        assert error == f"Prometheus at {url} answered 503: try later"
        ask(basic, "vector(1)")
        _, error, _ = ask(PrometheusClient(PrometheusSettings(url=url)), "vector(1)")
        assert error is not None
        assert "answered 401" in error
        assert _Recorder.seen == ["Bearer s3cret", "Basic b3BzOnB3", None]
    finally:
        server.shutdown()
        server.server_close()
