"""The CRDs' CEL rules within the API server's cost budget, as kube-apiserver
of the pinned version estimates it (tests/controlplane/celcost uses its
code): every rule under the per-rule limit, every CRD under its total, and
the heaviest rule printed with its share of the limit."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import ROOT
from tests.support.controlplane import BIN


def test_every_rule_and_every_crd_is_within_the_cost_budget() -> None:
    done = subprocess.run(
        [str(BIN / "celcost"), *sorted(str(p) for p in (ROOT / "crds").glob("*.yaml"))],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    estimate = json.loads(done.stdout)
    assert estimate["compileErrors"] is None, estimate["compileErrors"]
    rules, limit = estimate["rules"], estimate["ruleLimit"]
    assert len(rules) >= 60, "a rule went missing from the estimate"
    over = [r for r in rules if r["cost"] > limit]
    assert over == [], over
    assert all(total <= estimate["crdLimit"] for total in estimate["totals"].values())
    assert done.returncode == 0
    heaviest = rules[0]
    print(
        f"heaviest rule: {heaviest['crd']} {heaviest['path']}: {heaviest['cost']:,} "
        f"of {limit:,} ({heaviest['cost'] / limit:.0%}); totals {estimate['totals']}"
    )
