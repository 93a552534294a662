"""Alert rules and dashboard: checked with promtool and against the metrics."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from modelgate.metrics import Metrics
from tests.conftest import ROOT

FILES = ROOT / "charts" / "modelgate" / "files"
METRIC = re.compile(r"\bmodelgate_[a-z_]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_alert_rules_are_valid() -> None:
    done = promtool("check", "rules", str(FILES / "alerts.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_alert_rules_fire_as_specified() -> None:
    done = promtool("test", "rules", "tests/monitoring/alerts_test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def exposed_names() -> set[str]:
    """Every sample name the operator can expose (counters as _total, histograms
    as _bucket/_sum/_count, gauges and collector families as they are)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def dashboard_expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads((FILES / "dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_metrics_that_exist() -> None:
    known = exposed_names()
    used = {name for expr in dashboard_expressions() for name in METRIC.findall(expr)}
    assert used
    assert used - known == set()


def test_alerts_query_only_metrics_that_exist() -> None:
    used = set(METRIC.findall((FILES / "alerts.yaml").read_text()))
    used -= {"modelgate"}  # the group name
    assert used - exposed_names() == set()


def test_dashboard_has_the_four_groups() -> None:
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Operator health", "Training", "Model quality", "Delivery (DORA for models)"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
