"""A new release judged against the live one on live traffic, in local mode:
the worked experiment of examples/credit-risk/experiment with a real
Prometheus scraping the real model servers and the router, and users sending
requests to production's URL while the run decides.

- a challenger that approves more applicants, as fast, takes over;
- a slower one is removed by the latency guardrail, the champion untouched;
- a shadow whose answers differ from the champion's is caught;
- each user stays in the arm the sticky header put them in.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pytest
import yaml

from modelgate.cli import main
from modelgate.serving.router import ARM_HEADER
from tests.integration.test_localmode import SAMPLE, items, run_json
from tests.support.gitops_agent import bare_repository, git, kustomize_build
from tests.support.prometheus import Prometheus
from tests.support.traffic import feature_rows

EXPERIMENT = SAMPLE / "experiment"
GATE, CHAMPION = SAMPLE / "gate.yaml", SAMPLE / "release.yaml"
ENVIRONMENTS, CHALLENGER = EXPERIMENT / "environments.yaml", EXPERIMENT / "release-challenger.yaml"


def public_url(state: Path, environment: str) -> str | None:
    """Where production's callers go: the router while one runs, else the live model."""
    for name in (f"{environment}@router", environment):
        try:
            record = json.loads((state / "servers" / "default" / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue  # not there, or being written
        if record.get("state") == "ready":
            return str(record["url"])
    return None


class Users:
    """Users with ids sending requests of 20 applicants each to production,
    from two threads, until the context ends; what arm answered each user
    (the router's header) is recorded."""

    def __init__(self, state: Path, rows: list[dict[str, Any]], users: int = 300) -> None:
        self.state, self.rows, self.users = state, rows, users
        self.stopped = threading.Event()
        self.arms: dict[str, set[str]] = {}
        self.answered = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in (1, 2)]

    def __enter__(self) -> Users:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _send(self, seed: int) -> None:
        draw = random.Random(seed)
        while not self.stopped.is_set():
            url = public_url(self.state, "production")
            if url is None:
                self.stopped.wait(0.2)
                continue
            user = f"user-{draw.randrange(self.users)}"
            body = json.dumps({"instances": draw.sample(self.rows, 20)}).encode()
            request = urllib.request.Request(
                f"{url}/v1/predict", data=body,
                headers={"Content-Type": "application/json", "x-user-id": user},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    answer.read()
                    arm = answer.headers.get(ARM_HEADER)
            except OSError:
                continue  # a server or the router starting or going away
            with self.lock:
                self.answered += 1
                if arm is not None:
                    self.arms.setdefault(user, set()).add(arm)


@pytest.fixture
def world(scraped: tuple[Path, Prometheus]) -> Iterator[tuple[Path, Prometheus]]:
    """A state directory whose servers (and router) a real Prometheus
    scrapes; the servers are stopped after the test."""
    try:
        yield scraped
    finally:
        main(["stop", "--state-dir", str(scraped[0])])


def champion_live(capsys: pytest.CaptureFixture[str], state: Path, prometheus: Prometheus) -> None:
    code, listing = run_json(
        capsys, GATE, ENVIRONMENTS, CHAMPION, "--state-dir", state,
        "--prometheus-url", prometheus.url,
    )  # fmt: skip
    assert code == 0, listing
    status = items(listing, "ModelRelease")["credit-risk-1-4-0"]["status"]
    # The first release of an environment replaces: nothing to judge it against.
    assert [e.get("judged") for e in status["environments"]] == [None, None]


def challenge(
    capsys: pytest.CaptureFixture[str],
    state: Path,
    prometheus: Prometheus,
    challenger: Path,
    environments: Path = ENVIRONMENTS,
) -> tuple[int, dict[str, Any], Users]:
    evaluation = pd.read_csv(SAMPLE / "data" / "eval.csv")
    with Users(state, feature_rows(evaluation)) as users:
        code, listing = run_json(
            capsys, GATE, environments, challenger, "--state-dir", state,
            "--prometheus-url", prometheus.url, "--max-wait", "30s",
        )  # fmt: skip
    return code, listing, users


def variant(tmp_path: Path, source: Path, name: str, **changes: Any) -> Path:
    """``source`` (one document) with ``changes`` merged into its spec, named ``name``."""
    document = yaml.safe_load(source.read_text())
    document["metadata"]["name"] = name
    for path, value in changes.items():
        node = document["spec"]
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    for key in ("train", "evaluation"):
        data = document["spec"]["training"]["data"]
        data[key] = str((source.parent / data[key]).resolve())
    target = tmp_path / f"{name}.yaml"
    target.write_text(yaml.safe_dump(document))
    return target


def production(listing: dict[str, Any], name: str) -> dict[str, Any]:
    status = items(listing, "ModelRelease")[name]["status"]
    found = [e for e in status["environments"] if e["name"] == "production"]
    assert len(found) == 1, (
        status.get("phase"),
        [
            (c["name"], c["outcome"], c["message"])
            for c in status["gate"]["checks"]
            if c["outcome"] != "Passed"
        ],
    )
    [found] = found
    return dict(found)


def live_in_production(listing: dict[str, Any]) -> str | None:
    found = items(listing, "Environment")["production"]["status"].get("liveRelease")
    return None if found is None else str(found)


def through_git(tmp_path: Path) -> tuple[Path, Path]:
    """The experiment's environments, production delivered through Git (a
    kustomize directory in a bare repository) with its route on a Gateway:
    local mode serves and routes as before, and commits what a cluster's
    agent would apply. Returns (environments file, repository)."""
    remote = bare_repository(tmp_path)
    documents = list(yaml.safe_load_all(ENVIRONMENTS.read_text()))
    spec = documents[1]["spec"]
    spec["delivery"] = {"mode": "GitOps", "git": {"repository": f"file://{remote}",
                                                  "path": "production"}}  # fmt: skip
    spec["policy"]["rollout"]["traffic"] = {
        "gateway": {"name": "public"}, "hostnames": ["credit.example.com"],
    }  # fmt: skip
    target = tmp_path / "environments-gitops.yaml"
    target.write_text(yaml.safe_dump_all(documents))
    return target, remote


def test_a_challenger_that_approves_more_takes_over_and_users_keep_their_arm(
    world: tuple[Path, Prometheus], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Production is delivered through Git here: the challenger, the router,
    the split and the removal are commits, then the promotion."""
    state, prometheus = world
    environments, remote = through_git(tmp_path)
    code, listing = run_json(
        capsys, GATE, environments, CHAMPION, "--state-dir", state,
        "--prometheus-url", prometheus.url,
    )  # fmt: skip
    assert code == 0, listing
    code, listing, users = challenge(capsys, state, prometheus, CHALLENGER, environments)
    entry = production(listing, "credit-risk-1-6-0")
    judged = entry["judged"]
    assert code == 0, judged
    assert judged["phase"] == "Promoted"
    assert judged["champion"] == "default/credit-risk-1-4-0"
    assert judged["requiredSamples"] > 0  # sized from the champion before the split
    assert judged["traffic"] == (
        "Modelgate's router (local mode), sticky by x-user-id; each split committed to Git "
        "as the model's HTTPRoute"
    )
    metrics = {m["name"]: m for m in judged["metrics"]}
    approval = metrics["approval-rate"]
    assert approval["verdict"] == "Better"
    assert approval["pValue"] < 0.05
    assert approval["low"] > 0
    assert approval["challenger"]["value"] > approval["champion"]["value"]
    assert min(approval["challenger"]["samples"], approval["champion"]["samples"]) >= 200
    assert metrics["latency"]["verdict"] == "Better"  # within its margin
    assert entry["phase"] == "Deployed"
    assert live_in_production(listing) == "credit-risk-1-6-0"
    # Users answered by the router kept their arm for the whole experiment.
    routed = {user: arms for user, arms in users.arms.items() if arms}
    assert len(routed) > 100
    assert all(len(arms) == 1 for arms in routed.values()), routed
    assert {next(iter(a)) for a in routed.values()} == {"champion", "challenger"}
    # Each step of the judgement is a commit a cluster's agent would apply.
    subjects = git(remote, "log", "--format=%s", "main").splitlines()
    assert subjects[:6] == [
        "Promote credit-risk 1.6.0 to production",
        "Remove the challenger of credit-risk from production",
        "Give the challenger 50% of credit-risk in production",
        "Start Modelgate's router for credit-risk in production",
        "Run credit-risk 1.6.0 beside the live one in production",
        "Promote credit-risk 1.4.0 to production",
    ]
    split = git(remote, "rev-parse", "main~2").strip()
    checkout = tmp_path / "at-split"
    git(tmp_path, "clone", "--quiet", f"file://{remote}", str(checkout))
    git(checkout, "checkout", "--quiet", split)
    built = {
        (d["kind"], d["metadata"]["name"]): d for d in kustomize_build(checkout / "production")
    }
    route = built[("HTTPRoute", "credit-risk-production")]
    assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == [
        "credit-risk-production-router"
    ]
    router = built[("Deployment", "credit-risk-production-router")]
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--sticky-header") + 1] == "x-user-id"
    assert args[args.index("--weight") + 1] == "50"
    # After the removal only the route is left, to the live model alone.
    git(checkout, "checkout", "--quiet", "origin/main")
    final = {(d["kind"], d["metadata"]["name"]) for d in kustomize_build(checkout / "production")}
    assert ("Deployment", "credit-risk-production-challenger") not in final
    assert ("HTTPRoute", "credit-risk-production") in final


def test_a_slower_challenger_is_removed_by_the_latency_guardrail(
    world: tuple[Path, Prometheus], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state, prometheus = world
    champion_live(capsys, state, prometheus)
    slow = variant(
        tmp_path, CHAMPION, "credit-risk-1-4-1",
        model__version="1.4.1", training__params__n_estimators=800,
    )  # fmt: skip
    code, listing, _ = challenge(capsys, state, prometheus, slow)
    assert code == 1
    judged = production(listing, "credit-risk-1-4-1")["judged"]
    assert judged["phase"] == "RolledBack"
    latency = {m["name"]: m for m in judged["metrics"]}["latency"]
    assert latency["verdict"] == "Worse"
    assert latency["effect"] > 0.01
    assert "guardrail failed: latency" in judged["message"]
    assert live_in_production(listing) == "credit-risk-1-4-0"
    assert public_url(state, "production") is not None
    assert not (state / "servers" / "default" / "production@challenger.json").exists()
    assert not (state / "servers" / "default" / "production@router.json").exists()


def test_a_shadow_that_answers_differently_is_caught(
    world: tuple[Path, Prometheus], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state, prometheus = world
    champion_live(capsys, state, prometheus)
    documents = list(yaml.safe_load_all(ENVIRONMENTS.read_text()))
    rollout = documents[1]["spec"]["policy"]["rollout"]
    documents[1]["spec"]["policy"]["rollout"] = {
        "strategy": "Shadow", "interval": "2s",
        "shadow": {"duration": "20s", "minRows": 200, "maxDisagreement": 0.05},
    }  # fmt: skip
    assert rollout["strategy"] == "Experiment"
    shadowed = tmp_path / "environments.yaml"
    shadowed.write_text(yaml.safe_dump_all(documents))
    code, listing, users = challenge(capsys, state, prometheus, CHALLENGER, shadowed)
    assert code == 1
    judged = production(listing, "credit-risk-1-6-0")["judged"]
    assert judged["phase"] == "RolledBack", (judged["message"], judged.get("shadow"))
    assert judged["shadow"]["rows"] >= 200
    # 20 applicants a request (increase() extrapolates: nearly).
    assert judged["shadow"]["rows"] == pytest.approx(20 * judged["shadow"]["requests"], rel=0.02)
    # The tree labels 14.75 % of the evaluation rows differently from the forest.
    rate = judged["shadow"]["disagreements"] / judged["shadow"]["rows"]
    assert 0.10 < rate < 0.20
    assert "the shadow disagrees" in judged["message"]
    # Only the champion answered callers.
    assert all(arms == {"champion"} for arms in users.arms.values() if arms)
    assert live_in_production(listing) == "credit-risk-1-4-0"
