"""The operator's analysis on the real control plane: a real Prometheus
scrapes the model server pods the test node runs, live traffic goes to them,
and the operator asks Prometheus while the release soaks in staging."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml
from kubernetes import client

from tests.realcluster.conftest import SAMPLE, PrometheusWorld, Team, conditions
from tests.support.cluster import wait_for
from tests.support.traffic import Traffic, feature_rows, riskiest

ANALYSED = SAMPLE / "analysis" / "environments.yaml"


class PodTargets:
    """While running: lists the ready model server pods of ``namespace`` for
    Prometheus (file discovery, labelled with their namespace and
    environment), as a pod monitor would, and says where they answer."""

    def __init__(self, api: client.ApiClient, namespace: str, targets: Path) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.targets = namespace, targets

    def __call__(self) -> dict[str, str]:
        pods: dict[str, str] = {}
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            environment = (pod.metadata.labels or {}).get("modelgate.dev/environment")
            if ready and pod.status.pod_ip and environment:
                pods[environment] = f"{pod.status.pod_ip}:8080"
        groups = [
            {"targets": [address], "labels": {"namespace": self.namespace, "environment": env}}
            for env, address in pods.items()
        ]
        self.targets.write_text(json.dumps(groups))
        return {env: f"http://{address}" for env, address in pods.items()}


def test_a_shifted_live_score_fails_the_analysis_and_the_operator_rolls_staging_back(
    new_team: Callable[..., Team], prometheus: PrometheusWorld
) -> None:
    """Passed gate, passed verification, then traffic of the riskiest
    applicants only: the operator measures the server's live score PSI and
    positive rate in Prometheus, the analysis fails, staging is rolled back
    (nothing was live there before: its Deployment goes) and the status names
    the query, the values and the threshold."""
    environments = [d for d in yaml.safe_load_all(ANALYSED.read_text()) if d]
    team = new_team(environments=copy.deepcopy(environments))
    staging = team.targets["staging"]
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    pods = PodTargets(team.api, staging, prometheus.targets)
    with Traffic(pods, feature_rows(riskiest(evaluation))) as traffic:
        team.create(team.release_document())
        release = team.wait_phase("credit-risk-1-4-0", "RolledBack", timeout=300)
        # What the operator measured is what Prometheus holds, labelled by the
        # server (model, version, environment) and by the scrape (namespace).
        # The rolled-back pod is gone (its series stale): what it exported.
        psi = prometheus.server.value(
            f'max(max_over_time(modelgate_live_score_psi{{namespace="{staging}",'
            'model="credit-risk",version="1.4.0",environment="staging"}[10m]))'
        )
    prometheus.targets.write_text("[]")
    assert traffic.sent.get("staging", 0) > 0
    assert psi is not None
    assert psi > 0.25
    found = conditions(release)
    assert found["GatePassed"]["status"] == "True"
    assert (found["Verified"]["status"], found["Verified"]["message"]) == (
        "True",
        "verified in staging",
    )
    analyzed = found["Analyzed"]
    assert (analyzed["status"], analyzed["reason"]) == ("False", "AnalysisFailed")
    assert "metric score-psi Failed" in analyzed["message"]
    assert "passes when value <= 0.25" in analyzed["message"]
    assert (
        'max(modelgate_live_score_psi{model="credit-risk",version="1.4.0",environment="staging"})'
        in analyzed["message"]
    )
    [entry] = [e for e in release["status"]["environments"] if e["name"] == "staging"]
    assert entry["phase"] == "RolledBack"
    score = next(m for m in entry["analysis"]["metrics"] if m["name"] == "score-psi")
    assert score["measurements"][-1]["value"] > 0.25
    # Nothing was live in staging before: the rollback removes the Deployment.
    wait_for(
        lambda: not client.AppsV1Api(team.api).list_namespaced_deployment(staging).items,
        60,
        "the staging Deployment to be removed",
    )
    assert [e["name"] for e in release["status"]["environments"] if e["phase"] == "Deployed"] == []
    assert team.environment("production").get("status", {}).get("liveRelease") is None
