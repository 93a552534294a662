"""Which Job's pod ``kubectl modelgate logs`` reads (the e2e tier reads them
from a real kubelet)."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.plugin.logs import LogSource, pick_sources
from modelgate.plugin.verbs import Refused


def _job(name: str, step: str, created: str, namespace: str = "team", **labels: str) -> Any:
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                         "labels": {"app.kubernetes.io/component": step, **labels}}}  # fmt: skip


def _pod(name: str, job: str, created: str, namespace: str = "team", init: bool = False) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "main"}]}
    if init:
        spec["initContainers"] = [{"name": "fetch"}]
    labels = {"batch.kubernetes.io/job-name": job}
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                         "labels": labels}, "spec": spec}  # fmt: skip


JOBS = [
    _job("m-train-a", "training", "2026-12-07T10:00:00Z"),
    _job("m-train-b", "training", "2026-12-07T11:00:00Z"),  # a retry
    _job("m-eval-c", "evaluation", "2026-12-07T11:10:00Z"),
    _job("m-verify-d", "verification", "2026-12-07T11:20:00Z", "ml-staging",
         **{"modelgate.dev/environment": "staging"}),
    _job("m-verify-e", "verification", "2026-12-07T11:30:00Z", "ml-prod",
         **{"modelgate.dev/environment": "production"}),
]  # fmt: skip
PODS = [
    _pod("m-train-b-1", "m-train-b", "2026-12-07T11:00:01Z"),
    _pod("m-train-b-2", "m-train-b", "2026-12-07T11:02:00Z", init=True),  # the Job's retry
    _pod("m-eval-c-1", "m-eval-c", "2026-12-07T11:10:01Z"),
    _pod("m-verify-d-1", "m-verify-d", "2026-12-07T11:20:01Z", "ml-staging"),
    _pod("m-verify-e-1", "m-verify-e", "2026-12-07T11:30:01Z", "ml-prod"),
]


def test_a_step_shows_its_newest_job_s_newest_pod_init_containers_first() -> None:
    assert pick_sources("team/m", JOBS, PODS, "training", None) == [
        LogSource("team", "m-train-b-2", "fetch", "m-train-b"),
        LogSource("team", "m-train-b-2", "main", "m-train-b"),
    ]


def test_an_environment_picks_its_verification_and_nothing_picks_the_newest_job() -> None:
    [staging] = pick_sources("team/m", JOBS, PODS, None, "staging")
    assert (staging.namespace, staging.pod) == ("ml-staging", "m-verify-d-1")
    [newest] = pick_sources("team/m", JOBS, PODS, None, None)
    assert newest.job == "m-verify-e"


@pytest.mark.parametrize(
    ("jobs", "step", "environment", "message"),
    [
        (JOBS[:2], "evaluation", None,
         r"team/m has no evaluation Job \(yet\): it has training Jobs; `kubectl modelgate get "
         r"release` shows where it stands"),
        ([], None, None, r"has no Job \(yet\): it has no Jobs"),
        (JOBS, "training", "staging", r"--environment picks a verification Job"),
        ([_job("m-train-z", "training", "2026-12-07T12:00:00Z")], "training", None,
         r"Job team/m-train-z has no pod"),
    ],
)  # fmt: skip
def test_nothing_to_show_is_refused_naming_what_there_is(
    jobs: list[Any], step: str | None, environment: str | None, message: str
) -> None:
    with pytest.raises(Refused, match=message):
        pick_sources("team/m", jobs, PODS, step, environment)
