"""A real Prometheus scrapes the operator while a release goes to production.

The operator runs on the emulator with its /metrics endpoint on; the Debian
Prometheus server scrapes it every second; the assertions are PromQL.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import ROOT
from tests.integration.test_operator import BUCKET, SAMPLE, _documents, release_document
from tests.support.cluster import (
    Controllers,
    api_client,
    create,
    get,
    operator_environment,
    patched_environ,
    running_operator,
    seed_sample_data,
    start_controllers,
    wait_for,
)
from tests.support.emulator import running_emulator
from tests.support.prometheus import Prometheus, running_prometheus
from tests.support.s3server import free_port, running_s3

NAMESPACE = "team-metrics"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[client.ApiClient, Controllers, Prometheus, str]]:
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_port()
    with running_s3(tmp / "moto.log") as s3:
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        with (
            running_emulator() as emulator,
            operator_environment(emulator, s3, BUCKET),
            patched_environ({"MODELGATE_METRICS_PORT": str(port)}),
        ):
            api = api_client(emulator)
            controllers = start_controllers(api, s3)
            try:
                with (
                    running_operator(),
                    running_prometheus([f"127.0.0.1:{port}"], tmp) as prometheus,
                ):
                    for document in _documents("gate.yaml") + _documents("environments.yaml"):
                        create(api, document, NAMESPACE)
                    yield api, controllers, prometheus, f"http://127.0.0.1:{port}/metrics"
            finally:
                controllers.stop()
                assert controllers.errors == []


@pytest.fixture(scope="module")
def released(
    world: tuple[client.ApiClient, Controllers, Prometheus, str],
) -> tuple[client.ApiClient, Controllers, Prometheus, str]:
    """The story both tests read: the sample release, gated and in production."""
    api = world[0]
    create(api, release_document(), NAMESPACE)
    wait_for(
        lambda: (
            (get(api, "ModelRelease", NAMESPACE, "credit-risk-1-4-0").get("status") or {}).get(
                "phase"
            )
            == "Released"
        ),
        90,
        "Released",
    )
    return world


def test_prometheus_sees_the_release_story(
    released: tuple[client.ApiClient, Controllers, Prometheus, str],
) -> None:
    _, _, prometheus, endpoint = released
    selector = f'namespace="{NAMESPACE}"'

    def scraped(promql: str, expected: float) -> bool:
        return prometheus.value(promql) == expected

    wait_for(
        lambda: scraped(f'modelgate_deployments_total{{{selector},environment="production"}}', 1),
        30,
        "Prometheus to scrape one production deployment",
        lambda: prometheus.query(f"modelgate_deployments_total{{{selector}}}"),
    )
    assert prometheus.value(f'modelgate_deployments_total{{{selector},environment="staging"}}') == 1
    assert (
        prometheus.value(
            f'modelgate_lead_time_seconds_count{{{selector},environment="production"}}'
        )
        == 1
    )
    assert (
        prometheus.value(
            f'modelgate_gate_evaluations_total{{{selector},gate="credit-gate",outcome="Passed"}}'
        )
        == 1
    )
    checks = prometheus.query(f"modelgate_gate_check_outcomes_total{{{selector}}}")
    assert {(c["metric"]["check"], c["metric"]["outcome"]) for c in checks} >= {
        ("auc", "Passed"),
        ("no-regression", "Inconclusive"),
    }
    auc = prometheus.value(f'modelgate_gate_check_value{{{selector},check="auc"}}')
    assert auc is not None
    assert 0.8 <= auc <= 1
    assert (
        prometheus.value(f'modelgate_gate_check_threshold{{{selector},check="auc",bound="min"}}')
        == 0.8
    )
    assert prometheus.value(f'modelgate_training_runs_total{{{selector},outcome="Succeeded"}}') == 1
    live = prometheus.query(f'modelgate_live_release_info{{{selector},environment="production"}}')
    assert [(s["metric"]["release"], s["metric"]["version"]) for s in live] == [
        ("credit-risk-1-4-0", "1.4.0")
    ]
    assert prometheus.value(f'modelgate_releases{{{selector},phase="Released"}}') == 1
    ok = prometheus.value('sum(modelgate_reconcile_total{kind="ModelRelease",result="ok"})')
    assert ok is not None
    assert ok >= 1
    assert prometheus.value("modelgate_build_info") == 1
    # The exposition passes Prometheus' own linter.
    with urllib.request.urlopen(endpoint, timeout=10) as answer:
        exposition = answer.read()
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()


def test_every_dashboard_query_runs_on_the_scraped_data(
    released: tuple[client.ApiClient, Controllers, Prometheus, str],
) -> None:
    """After the release story: each panel's PromQL is valid, and the panels
    that describe it show data."""
    _, _, prometheus, _ = released
    # Rates and increases need two samples of a series; the live release is
    # recorded as the release finishes, so a scrape may not have it yet.
    wait_for(
        lambda: (
            (prometheus.value("count_over_time(modelgate_gate_evaluations_total[1m])") or 0) >= 2
            and bool(prometheus.query(f'modelgate_live_release_info{{namespace="{NAMESPACE}"}}'))
        ),
        30,
        "two scrapes of the gate counter and one of the live release",
    )
    dashboard = json.loads((ROOT / "charts/modelgate/files/dashboard.json").read_text())
    answers: dict[str, list[dict[str, object]]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$namespace", NAMESPACE)
            answers[panel["title"]] = prometheus.query(expr)
    for title in (
        "Releases by phase",
        "Gate outcomes (24h)",
        "Latest check values vs thresholds",
        "Live release per environment",
        "Build",
    ):
        assert answers[title], title
