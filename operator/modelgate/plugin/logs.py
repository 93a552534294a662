"""Which Job's logs ``kubectl modelgate logs`` shows. Pure: it picks from
the Jobs and pods the release's labels select (training and evaluation in
its namespace, verification where it deploys).

A step (``training``, which includes the server's scoring and the import of
a registered model; ``evaluation``; ``verification``) picks that step's
newest Job; ``--environment`` narrows to the verification there (and
implies it). Without either, the newest Job of the release. The Job's
newest pod is shown, each container in the order it ran (init containers
first), as kubectl prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelgate.plugin.verbs import Refused

COMPONENT = "app.kubernetes.io/component"
ENVIRONMENT = "modelgate.dev/environment"
JOB_NAME = "batch.kubernetes.io/job-name"
STEPS = ("training", "evaluation", "verification")


@dataclass(frozen=True)
class LogSource:
    """One container's log to read."""

    namespace: str
    pod: str
    container: str
    job: str


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _created(obj: dict[str, Any]) -> str:
    return str(_meta(obj).get("creationTimestamp") or "")


def pick_sources(
    release: str,
    jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    step: str | None,
    environment: str | None,
) -> list[LogSource]:
    """The containers of the pod to show; refused, naming what there is,
    when the release has no such Job (yet)."""
    if environment is not None:
        step = step or "verification"
        if step != "verification":
            raise Refused(
                f"--environment picks a verification Job; --step {step} runs in the release's "
                "own namespace: leave out --environment"
            )
    wanted = [
        job
        for job in jobs
        if (step is None or (_meta(job).get("labels") or {}).get(COMPONENT) == step)
        and (
            environment is None or (_meta(job).get("labels") or {}).get(ENVIRONMENT) == environment
        )
    ]
    if not wanted:
        there = sorted({str((_meta(j).get("labels") or {}).get(COMPONENT)) for j in jobs})
        what = (f"{step} Job" if step else "Job") + (f" in {environment}" if environment else "")
        raise Refused(
            f"ModelRelease {release} has no {what} (yet): it has "
            + (", ".join(f"{s} Jobs" for s in there) if there else "no Jobs")
            + "; `kubectl modelgate get release` shows where it stands"
        )
    job = max(wanted, key=_created)
    name, namespace = _meta(job).get("name"), _meta(job).get("namespace")
    own = [
        p
        for p in pods
        if _meta(p).get("namespace") == namespace
        and (
            (_meta(p).get("labels") or {}).get(JOB_NAME)
            or (_meta(p).get("labels") or {}).get("job-name")
        )
        == name
    ]
    if not own:
        raise Refused(
            f"Job {namespace}/{name} has no pod (yet, or its pods were removed): "
            "`kubectl modelgate get release` shows its state"
        )
    pod = max(own, key=_created)
    spec = pod.get("spec") or {}
    containers = [
        c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    ]
    return [
        LogSource(str(namespace), str(_meta(pod).get("name")), container, str(name))
        for container in containers
    ]
