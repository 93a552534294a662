"""Analysis in local mode against a real Prometheus scraping the real model
servers, with live traffic sent to them while the release soaks."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pytest

from modelgate.cli import main
from tests.integration.test_localmode import GATE, RELEASE, SAMPLE, conditions, items, run_json
from tests.support.prometheus import running_prometheus

ANALYSED = SAMPLE / "analysis" / "environments.yaml"
FEATURES = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"]


class Traffic:
    """Sends batches of ``rows`` to every model server local mode has
    running, until stopped: the live traffic of the soak."""

    def __init__(self, state: Path, rows: list[dict[str, Any]]) -> None:
        self.servers = state / "servers"
        self.body = json.dumps({"instances": rows}).encode()
        self.stopped = threading.Event()
        self.sent: dict[str, int] = {}
        self.thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)

    def _send(self) -> None:
        while not self.stopped.wait(0.1):
            for path in sorted(self.servers.glob("*/*.json")):
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # being written
                if record.get("state") != "ready":
                    continue
                request = urllib.request.Request(
                    f"{record['url']}/v1/predict",
                    data=self.body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        answer.read()
                except OSError:
                    continue  # a server being replaced
                self.sent[path.stem] = self.sent.get(path.stem, 0) + 1


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[FEATURES].to_dict("records")
    ]


def test_live_scores_that_shift_fail_the_analysis_in_staging_and_roll_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The release passes its gate and staging's verification; then staging
    gets traffic of the riskiest applicants only. Prometheus scrapes the
    server's live score PSI and positive rate, the analysis fails on them,
    and the release is rolled back with the query, the values and the
    threshold in its status. Production is never reached."""
    state = tmp_path / "state"
    targets = state / "prometheus" / "targets.json"
    targets.parent.mkdir(parents=True)
    targets.write_text("[]")
    (tmp_path / "prometheus").mkdir()
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    riskiest = evaluation.sort_values(["late_payments", "debt_ratio"]).tail(100)
    with (
        running_prometheus([], tmp_path / "prometheus", target_files=[targets]) as prometheus,
        Traffic(state, _rows(riskiest)) as traffic,
    ):
        code, listing = run_json(
            capsys,
            GATE,
            ANALYSED,
            RELEASE,
            "--state-dir",
            state,
            "--prometheus-url",
            prometheus.url,
        )
        psi = prometheus.value(
            'max(modelgate_live_score_psi{environment="staging",model="credit-risk"})'
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    targets = state / "prometheus" / "targets.json"
    targets.parent.mkdir(parents=True)
    targets.write_text("[]")
    (tmp_path / "prometheus").mkdir()
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    with (
        running_prometheus([], tmp_path / "prometheus", target_files=[targets]) as prometheus,
        Traffic(state, _rows(evaluation.sample(200, random_state=3))),
    ):
        code, listing = run_json(
            capsys,
            GATE,
            ANALYSED,
            RELEASE,
            "--state-dir",
            state,
            "--prometheus-url",
            prometheus.url,
        )
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
