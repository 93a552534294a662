"""Analysis in local mode against a real Prometheus scraping the real model
servers, with live traffic sent to them while the release soaks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from modelgate.cli import main
from tests.integration.test_localmode import GATE, RELEASE, SAMPLE, conditions, items, run_json
from tests.support.prometheus import Prometheus
from tests.support.s3server import free_port
from tests.support.traffic import Traffic, feature_rows, riskiest

ANALYSED = SAMPLE / "analysis" / "environments.yaml"


def local_servers(state: Path) -> Callable[[], dict[str, str]]:
    """The model servers local mode has running: environment -> URL."""

    def ready() -> dict[str, str]:
        found = {}
        for path in sorted((state / "servers").glob("*/*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being written
            if record.get("state") == "ready":
                found[path.stem] = str(record["url"])
        return found

    return ready


def run_analysed(
    capsys: pytest.CaptureFixture[str],
    state: Path,
    prometheus: Prometheus,
    environments: Path = ANALYSED,
) -> tuple[int, dict[str, Any]]:
    """``modelgate run`` of the sample release through ``environments``,
    its analyses asking ``prometheus``."""
    return run_json(
        capsys, GATE, environments, RELEASE, "--state-dir", state,
        "--prometheus-url", prometheus.url,
    )  # fmt: skip


def test_live_scores_that_shift_fail_the_analysis_in_staging_and_roll_it_back(
    scraped: tuple[Path, Prometheus], capsys: pytest.CaptureFixture[str]
) -> None:
    """The release passes its gate and staging's verification; then staging
    gets traffic of the riskiest applicants only. Prometheus scrapes the
    server's live score PSI and positive rate, the analysis fails on them,
    and the release is rolled back with the query, the values and the
    threshold in its status. Production is never reached."""
    state, prometheus = scraped
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    rows = feature_rows(riskiest(evaluation))
    with Traffic(local_servers(state), rows) as traffic:
        code, listing = run_analysed(capsys, state, prometheus)
        # The rolled-back server is gone (its series stale): what it exported.
        psi = prometheus.value(
            'max(max_over_time(modelgate_live_score_psi{environment="staging",'
            'model="credit-risk"}[10m]))'
        )
    assert code == 1
    assert traffic.sent.get("staging", 0) > 0
    assert psi is not None
    assert psi > 0.25  # what Prometheus holds agrees with the verdict
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    status = release["status"]
    assert status["gate"]["outcome"] == "Passed"
    assert status["phase"] == "RolledBack"
    [staging] = [e for e in status["environments"] if e["name"] == "staging"]
    assert staging["verifiedAt"]  # it passed its verification first
    assert staging["phase"] == "RolledBack"
    analysis = staging["analysis"]
    assert analysis["phase"] == "Failed"
    by_name = {m["name"]: m for m in analysis["metrics"]}
    score = by_name["score-psi"]
    assert score["phase"] == "Failed"
    assert score["query"] == (
        'max(modelgate_live_score_psi{model="credit-risk",version="1.4.0",environment="staging"})'
    )
    assert score["measurements"][0]["value"] > 0.25
    assert score["max"] == 0.25
    verified = conditions(release)["Verified"]
    assert (verified["status"], verified["message"]) == ("True", "verified in staging")
    analyzed = conditions(release)["Analyzed"]
    assert (analyzed["status"], analyzed["reason"]) == ("False", "AnalysisFailed")
    assert "metric score-psi Failed" in analyzed["message"]
    assert "passes when value <= 0.25" in analyzed["message"]
    assert "modelgate_live_score_psi{" in analyzed["message"]
    assert all(e["phase"] != "Deployed" for e in status["environments"])
    assert items(listing, "Environment")["staging"]["status"].get("liveRelease") is None
    assert items(listing, "Environment")["production"]["status"].get("liveRelease") is None


def test_traffic_like_the_evaluation_data_passes_the_analysis_and_production_follows(
    scraped: tuple[Path, Prometheus], capsys: pytest.CaptureFixture[str]
) -> None:
    state, prometheus = scraped
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    with Traffic(local_servers(state), feature_rows(evaluation.sample(200, random_state=3))):
        code, listing = run_analysed(capsys, state, prometheus)
    assert code == 0
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    assert release["status"]["phase"] == "Released"
    [staging, _] = release["status"]["environments"]
    analysis = staging["analysis"]
    assert analysis["phase"] == "Passed"
    assert {m["name"]: (m["phase"], m["taken"]) for m in analysis["metrics"]} == {
        "score-psi": ("Passed", 3),
        "positive-rate": ("Passed", 3),
        "outside-training-rate": ("Passed", 3),
    }
    assert all(
        m["value"] is not None for metric in analysis["metrics"] for m in metric["measurements"]
    )
    analyzed = conditions(release)["Analyzed"]
    assert (analyzed["status"], analyzed["reason"]) == ("True", "AnalysisPassed")
    assert items(listing, "Environment")["production"]["status"]["liveRelease"] == (
        "credit-risk-1-4-0"
    )


def test_an_analysis_without_prometheus_says_so_and_waits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", str(GATE), str(ANALYSED), str(RELEASE), "--state-dir", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 1  # not released: it waits in staging, as the table says
    assert "analysis staging score-psi: analysis is configured and there is no Prometheus" in out
    assert "run again with --prometheus-url" in out
    assert "staging: analysis running: score-psi 0/3" in out


def _environments_querying(tmp_path: Path, query: str) -> Path:
    """The sample environments with staging's analysis asking one query."""
    documents = [d for d in yaml.safe_load_all(ANALYSED.read_text()) if d]
    staging = next(d for d in documents if d["metadata"]["name"] == "staging")
    staging["spec"]["policy"]["analysis"]["metrics"] = [
        {"name": "missing", "query": query, "initialDelay": "1s", "interval": "1s", "max": 1}
    ]
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_no_data_from_a_real_prometheus_is_inconclusive_and_blocks(
    scraped: tuple[Path, Prometheus], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, prometheus = scraped
    environments = _environments_querying(
        tmp_path, 'max(modelgate_no_such_metric{environment="{{environment}}"})'
    )
    code, listing = run_analysed(capsys, state, prometheus, environments)
    assert code == 1
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    assert release["status"]["phase"] == "Blocked"
    [staging, production] = release["status"]["environments"]
    assert staging["phase"] == "Analyzing"  # live, and promotion blocked
    [measured] = staging["analysis"]["metrics"][0]["measurements"]
    assert "value" not in measured  # no sample: no value, and Inconclusive
    assert measured["outcome"] == "Inconclusive"
    analyzed = conditions(release)["Analyzed"]
    assert (analyzed["status"], analyzed["reason"]) == ("False", "AnalysisInconclusive")
    assert "values no data" in analyzed["message"]
    assert "edit the Environment's analysis" in conditions(release)["Ready"]["message"]
    assert production["phase"] != "Deployed"
    assert items(listing, "Environment")["staging"]["status"]["liveRelease"] == (
        "credit-risk-1-4-0"
    )


def test_a_prometheus_that_is_down_is_asked_again_and_the_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    code = main(
        ["run", str(GATE), str(ANALYSED), str(RELEASE), "--state-dir", str(tmp_path / "s"),
         "--prometheus-url", down]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert out.count(f"analysis staging score-psi: Prometheus at {down} did not answer") == 3
    assert f"Prometheus at {down} did not answer 3 times in a row" in out
    assert "not measured, asking again" in out  # the table's message
