"""The operator at scale on the real control plane: N releases at rest, an
edit amid them, and many releases trained at once.

    python benchmarks/operator_scale.py [--sizes 100,1000] [--namespaces 20]
        [--concurrent 100] [--rest-seconds 300] [--peer-seconds 150]
        [--edits 20] [--json out.json]

The world: the real etcd, kube-apiserver and kube-controller-manager (`make
controlplane`), the test node running the pods (tests/support/node.py), a
moto S3 server, and the operator as the chart installs it (its defaults:
`operator.cache: true`, `resyncSeconds: 15`), authenticated as the chart's
ServiceAccount so that the API server's audit log tells its requests apart.
Each of ``--namespaces`` teams has the credit-risk sample's gate and one
Environment (staging, in a namespace of its own).

1. Concurrent: ``--concurrent`` releases (each its own model, spread over
   the teams) are created at once, trained on the sample's 4,000 rows, gated
   (evaluation Jobs) and deployed: time until all are Released and each
   one's wait (the longest: no starvation). They serve with `serving: Image`
   and a stand-in server image answering readiness (tests/support/standin,
   about 10 MB a pod): this machine cannot hold a hundred reference servers
   (about 195 MB each) beside the rest, and what is measured is the operator.
2. At rest, for each N of ``--sizes``: the releases of step 1, plus the
   earlier releases of those models (N - concurrent of them, created with
   the status their release had, as the history a team accumulates). The
   operator first sees the new ones (reported: "first sight", all at once),
   then is restarted on the N releases at rest, as a rollout or a rescheduled
   pod restarts it: time from its start until it made N release
   reconciles (its own `modelgate_reconcile_total`, which counts a release
   looked at twice twice: a proxy for "all judged"), its RSS, then the requests
   the API server received from it over ``--rest-seconds`` (the audit log,
   by the operator's identity) and ``--edits`` spec edits of releases picked
   at random (time until `status.observedGeneration` says it was acted on).
3. The peer, side by side: the same operator with `MODELGATE_CACHE=false`,
   the design before issue 19 (every reconcile reads from the API server,
   releases at rest re-read every 10 resyncs), over ``--peer-seconds``.

Targets (issue 19): requests per minute at rest for the largest N at most
1.2x those for the smallest; RSS at the largest N under 300 MB; edit p99
under 2 s; no release starved among the concurrent ones. The last line:
``scale: rest_req_per_min N=100 <x> N=1000 <y>; rss_mb N=1000 <z>; edit_p99_s <w>``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from tests.support.cluster import seed_sample_data  # noqa: E402
from tests.support.controlplane import ControlPlane, running_control_plane  # noqa: E402
from tests.support.installation import (  # noqa: E402
    Installation,
    OperatorProcess,
    chart_values,
    install,
    s3_secret,
)
from tests.support.node import ForeignImage, running_node  # noqa: E402
from tests.support.s3server import running_s3  # noqa: E402

from modelgate.api.modelrelease import ModelRelease  # noqa: E402
from modelgate.api.qualitygate import QualityGate  # noqa: E402
from modelgate.promotion.training import training_job  # noqa: E402

SAMPLE = ROOT / "examples" / "credit-risk"
BUCKET = "scale-artifacts"
GROUP, VERSION = "modelgate.dev", "v1alpha1"
FINAL = {"Released", "GateFailed", "Failed", "RolledBack", "Blocked"}
# The releases serve with a model server image of their own: a stand-in that
# answers readiness (tests/support/standin), about 10 MB a pod; the node could
# not hold a hundred reference servers (about 195 MB each).
STANDIN_REPOSITORY = "registry.example.com/team/standin-server"
STANDIN_IMAGE = f"{STANDIN_REPOSITORY}@sha256:{'5a' * 32}"
STANDIN = ForeignImage(bin=ROOT / "tests" / "support" / "standin", entrypoint=("standin-server",))


def sample(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLE / name).read_text()) if d]


@dataclass
class Team:
    namespace: str
    target: str
    models: list[str] = field(default_factory=list)


@dataclass
class World:
    plane: ControlPlane
    installation: Installation
    teams: list[Team]
    custom: client.CustomObjectsApi
    operator: OperatorProcess | None = None

    def releases(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_cluster_custom_object(
            GROUP, VERSION, "modelreleases"
        )["items"]
        return items

    def start_operator(self, extra_env: dict[str, str] | None = None) -> OperatorProcess:
        self.stop_operator()
        self.operator = self.installation.operator(extra_env).start().wait_ready(timeout=300)
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None


# -- the teams and their releases ---------------------------------------------------


def make_teams(plane: ControlPlane, count: int) -> list[Team]:
    core = client.CoreV1Api(plane.api_client())
    custom = client.CustomObjectsApi(plane.api_client())
    gate = sample("gate.yaml")[0]
    staging = next(e for e in sample("environments.yaml") if e["metadata"]["name"] == "staging")
    # The built-in verification is a pod per release; it is not what is measured here.
    staging["spec"].pop("verification", None)
    teams = [Team(f"scale-{i:02d}", f"scale-{i:02d}-staging") for i in range(count)]
    for team in teams:
        for name in (team.namespace, team.target):
            core.create_namespace({"metadata": {"name": name}})
            core.create_namespaced_secret(name, s3_secret(name))
    for team in teams:
        for name in (team.namespace, team.target):
            deadline = time.monotonic() + 60
            while not core.list_namespaced_service_account(name).items:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no default service account in {name}")
                time.sleep(0.2)
        environment = copy.deepcopy(staging)
        environment["spec"]["namespace"] = team.target
        for document, plural in ((gate, "qualitygates"), (environment, "environments")):
            custom.create_namespaced_custom_object(
                GROUP, VERSION, team.namespace, plural, copy.deepcopy(document)
            )
    return teams


def release_document(model: str) -> dict[str, Any]:
    document = copy.deepcopy(sample("release.yaml")[0])
    document["metadata"]["name"] = f"{model}-1"
    spec = document["spec"]
    spec["model"]["name"] = model
    spec["promotion"] = {"environments": ["staging"]}
    spec["serving"] = "Image"
    spec["image"] = STANDIN_IMAGE
    data = spec["training"]["data"]
    data["train"] = f"s3://{BUCKET}/data/train.csv"
    data["evaluation"] = f"s3://{BUCKET}/data/eval.csv"
    return document


def run_concurrent(world: World, count: int, timeout: float) -> dict[str, Any]:
    """Create ``count`` releases at once; wait until each reaches a final phase."""
    for index in range(count):
        team = world.teams[index % len(world.teams)]
        model = f"risk-{index:03d}"
        team.models.append(model)
        world.custom.create_namespaced_custom_object(
            GROUP, VERSION, team.namespace, "modelreleases", release_document(model)
        )
    started = time.monotonic()
    done: dict[str, tuple[str, float]] = {}
    while len(done) < count and time.monotonic() - started < timeout:
        for item in world.releases():
            key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
            phase = (item.get("status") or {}).get("phase")
            if key not in done and phase in FINAL:
                done[key] = (str(phase), time.monotonic() - started)
        time.sleep(2)
    waits = sorted(seconds for _, seconds in done.values())
    phases: dict[str, int] = {}
    for phase, _ in done.values():
        phases[phase] = phases.get(phase, 0) + 1
    return {
        "releases": count,
        "finished": len(done),
        "phases": phases,
        "all_released_s": round(waits[-1], 1) if len(waits) == count else None,
        "wait_p50_s": round(statistics.median(waits), 1) if waits else None,
        "longest_wait_s": round(waits[-1], 1) if waits else None,
        "shortest_wait_s": round(waits[0], 1) if waits else None,
    }


_NAME = re.compile(r"^(?P<model>.+)-1$")


def add_history(world: World, total: int) -> int:
    """Earlier releases of the models, until the cluster holds ``total``: each
    a copy of its model's latest release (same spec: the same training, so
    the same evidence) with the status it had when it was the live one (the
    operator finds another release live now and records that, once)."""
    gate = QualityGate.model_validate(sample("gate.yaml")[0])
    latest = [r for r in world.releases() if _NAME.match(r["metadata"]["name"])]
    existing = len(world.releases())
    added = 0
    generation = 0
    while existing + added < total:
        generation += 1
        for source in latest:
            if existing + added >= total:
                break
            added += 1
            metadata = source["metadata"]
            model = _NAME.match(metadata["name"])["model"]  # type: ignore[index]
            name = f"{model}-0-{generation}"
            document = {
                "apiVersion": source["apiVersion"],
                "kind": source["kind"],
                "metadata": {"name": name, "namespace": metadata["namespace"]},
                "spec": copy.deepcopy(source["spec"]),
            }
            created = world.custom.create_namespaced_custom_object(
                GROUP, VERSION, metadata["namespace"], "modelreleases", document
            )
            status = _renamed(source["status"], metadata["name"], name)
            status["observedGeneration"] = created["metadata"]["generation"]
            # The training the operator would name for it is the one recorded.
            release = ModelRelease.model_validate({**created, "status": status})
            if status["training"]["jobName"] != training_job(release, gate):
                raise RuntimeError(f"{name}: its recorded training is not the one it names")
            world.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, metadata["namespace"], "modelreleases", name, {"status": status}
            )
    return added


def _renamed(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    if isinstance(value, str):
        return value.replace(f"/{old}", f"/{new}").replace(f"{old}-", f"{new}-")
    return value


# -- measuring the operator -----------------------------------------------------------


def metric(operator: OperatorProcess, name: str, labels: dict[str, str]) -> float:
    """The sum of a counter's samples with these labels, from /metrics."""
    port = next(a.split("=", 1)[1] for a in operator.args if a.startswith("--metrics-port="))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def memory_mb(operator: OperatorProcess) -> tuple[float, float]:
    """(current, peak) resident set size of the operator process."""
    assert operator.process is not None
    fields = {}
    for line in Path(f"/proc/{operator.process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def wait_judged(world: World, count: int, started: float, timeout: float) -> float:
    """Seconds from the operator's start until it made ``count`` release
    reconciles (a release looked at twice counts twice)."""
    assert world.operator is not None
    while time.monotonic() - started < timeout:
        try:
            done = metric(world.operator, "modelgate_reconcile_total", {"kind": "ModelRelease"})
        except OSError:
            done = 0
        if done >= count:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the operator did not judge {count} releases in {timeout} s")


class AuditReader:
    """The operator's requests as the API server recorded them, read from an
    offset of its audit log (the log grows by every client's requests)."""

    def __init__(self, plane: ControlPlane, username: str) -> None:
        self.path = plane.audit_log
        self.username = username

    def offset(self) -> int:
        return self.path.stat().st_size

    def requests(self, start: int, since: datetime) -> list[dict[str, Any]]:
        events: dict[str, dict[str, Any]] = {}
        with self.path.open("rb") as log:
            log.seek(start)
            for line in log:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if (event.get("user") or {}).get("username") != self.username:
                    continue
                received = datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00")
                )
                if received < since:
                    continue
                if event.get("stage") in ("ResponseComplete", "ResponseStarted"):
                    events.setdefault(event["auditID"], event)
        return list(events.values())


def count_at_rest(world: World, audit: AuditReader, seconds: float) -> dict[str, Any]:
    start, since = audit.offset(), datetime.now(UTC)
    time.sleep(seconds)
    found = audit.requests(start, since)
    verbs: dict[str, int] = {}
    for event in found:
        verbs[event["verb"]] = verbs.get(event["verb"], 0) + 1
    minutes = seconds / 60
    return {
        "seconds": seconds,
        "requests": len(found),
        "per_min": round(len(found) / minutes, 2),
        "non_watch_per_min": round(sum(n for v, n in verbs.items() if v != "watch") / minutes, 2),
        "verbs": verbs,
    }


def settle(world: World, audit: AuditReader, quiet: float = 15, timeout: float = 600) -> float:
    """Wait until the operator wrote nothing for ``quiet`` seconds (the
    status writes of judging behind it); returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        start, since = audit.offset(), datetime.now(UTC)
        time.sleep(quiet)
        writes = [
            e
            for e in audit.requests(start, since)
            if e["verb"] in ("create", "update", "patch", "delete")
        ]
        if not writes:
            return time.monotonic() - started
    raise RuntimeError("the operator kept writing")


def edit_latencies(world: World, edits: int, rng: random.Random) -> list[float]:
    """Spec edits of releases at random: seconds until the status says the
    operator acted on the new generation."""
    releases = world.releases()
    found = []
    for index in range(edits):
        target = rng.choice(releases)["metadata"]
        namespace, name = target["namespace"], target["name"]
        # An approval: what people edit on a release at rest (spec.model,
        # .training and .image are immutable).
        approval = {"environment": "staging", "approvedBy": "bench", "comment": f"edit {index}"}
        body = {"spec": {"promotion": {"approvals": [approval]}}}
        sent = time.monotonic()
        edited = world.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelreleases", name, body
        )
        generation = edited["metadata"]["generation"]
        while True:
            current = world.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelreleases", name
            )
            if (current.get("status") or {}).get("observedGeneration") == generation:
                found.append(time.monotonic() - sent)
                break
            if time.monotonic() - sent > 120:
                raise RuntimeError(f"edit {index} of {namespace}/{name} not acted on in 120 s")
            time.sleep(0.02)
        time.sleep(rng.uniform(0.5, 1.5))
    return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def first_sight(world: World, audit: AuditReader, size: int) -> dict[str, Any]:
    """The operator started on releases it never saw (the history just
    created): how long judging them all takes, and its memory after."""
    started = time.monotonic()
    operator = world.start_operator()
    judged = wait_judged(world, size, started, timeout=900)
    settled = settle(world, audit)
    rss, peak = memory_mb(operator)
    return {
        "judged_s": round(judged, 1),
        "settled_s": round(settled, 1),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }


def measure_at_rest(
    world: World,
    audit: AuditReader,
    size: int,
    rest_seconds: float,
    edits: int,
    rng: random.Random,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    operator = world.start_operator(extra_env)
    judged = wait_judged(world, size, started, timeout=900)
    settled = settle(world, audit)
    rest = count_at_rest(world, audit, rest_seconds)
    rss, peak = memory_mb(operator)
    result = {
        "releases": len(world.releases()),
        "judged_s": round(judged, 1),
        "settled_s": round(settled, 1),
        "rest": rest,
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }
    if edits:
        latencies = edit_latencies(world, edits, rng)
        result["edit_p50_s"] = round(percentile(latencies, 0.5), 3)
        result["edit_p99_s"] = round(percentile(latencies, 0.99), 3)
        result["edit_max_s"] = round(max(latencies), 3)
        settle(world, audit)
    return result


@contextmanager
def scale_world(workdir: Path, namespaces: int) -> Iterator[World]:
    with (
        running_s3(workdir / "moto.log") as s3,
        running_control_plane(workdir / "controlplane") as plane,
        running_node(
            plane.api_client(), workdir / "node", foreign={STANDIN_REPOSITORY: STANDIN}
        ) as node,
    ):
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        # The chart's defaults but what the local process needs; no webhook
        # and no peering: a single operator, its reconciles measured.
        values = chart_values(s3, BUCKET, peering={"enabled": False}, webhook={"enabled": False})
        values["operator"] = {"logFormat": "json"}
        installation = install(plane, values, workdir / "chart")
        teams = make_teams(plane, namespaces)
        world = World(plane, installation, teams, client.CustomObjectsApi(plane.api_client()))
        try:
            yield world
        finally:
            world.stop_operator()
            installation.stop()
            if node.errors:
                print(f"test node errors: {node.errors[:5]}", file=sys.stderr)


def report(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--rest-seconds", type=float, default=300)
    parser.add_argument("--peer-seconds", type=float, default=150)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[0] < args.concurrent:
        parser.error("the smallest size must hold the concurrent releases")
    # SIGTERM unwinds like Ctrl-C: the servers, the node's pods and the operator stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"sizes": {}, "peer": {}, "first_sight": {}}
    begun = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="modelgate-scale-") as tmp,
        scale_world(Path(tmp), args.namespaces) as world,
    ):
        audit = AuditReader(world.plane, world.installation.username)
        report(
            f"control plane: real etcd + kube-apiserver + kube-controller-manager; "
            f"{args.namespaces} teams; operator with the chart's defaults"
        )
        world.start_operator()
        concurrent = run_concurrent(world, args.concurrent, timeout=3600)
        results["concurrent"] = concurrent
        report(f"concurrent {json.dumps(concurrent)}")
        for size in sizes:
            # Stopped: the history is created with its status, never seen without it.
            world.stop_operator()
            added = add_history(world, size)
            report(f"N={size}: {added} earlier releases added")
            if added:
                seen = first_sight(world, audit, size)
                results["first_sight"][size] = {"new": added, **seen}
                report(f"N={size} first sight of {added} new releases {json.dumps(seen)}")
            measured = measure_at_rest(world, audit, size, args.rest_seconds, args.edits, rng)
            results["sizes"][size] = measured
            report(f"N={size} operator {json.dumps(measured)}")
            peer = measure_at_rest(
                world, audit, size, args.peer_seconds, 0, rng, {"MODELGATE_CACHE": "false"}
            )
            results["peer"][size] = peer
            report(f"N={size} peer (MODELGATE_CACHE=false) {json.dumps(peer)}")
        world.stop_operator()
    results["seconds"] = round(time.monotonic() - begun)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print_summary(results, sizes)
    return 0


def growth(small: float, large: float) -> float:
    """large / small; none at either size is no growth."""
    if small:
        return large / small
    return 1.0 if not large else float("inf")


def print_summary(results: dict[str, Any], sizes: list[int]) -> None:
    small, large = results["sizes"][sizes[0]], results["sizes"][sizes[-1]]
    peer_small, peer_large = results["peer"][sizes[0]], results["peer"][sizes[-1]]
    concurrent = results["concurrent"]
    print()
    print(f"{'':34}{'operator (watches)':>20}{'peer (cache off)':>20}")
    for size, mine, peer in ((sizes[0], small, peer_small), (sizes[-1], large, peer_large)):
        print(
            f"{f'requests/min at rest, N={size}':34}"
            f"{mine['rest']['per_min']:>20}{peer['rest']['per_min']:>20}"
        )
    for size, mine, peer in ((sizes[0], small, peer_small), (sizes[-1], large, peer_large)):
        print(f"{f'RSS MB at rest, N={size}':34}{mine['rss_mb']:>20}{peer['rss_mb']:>20}")
        label = f"peak RSS MB, N={size}"
        print(f"{label:34}{mine['peak_rss_mb']:>20}{peer['peak_rss_mb']:>20}")
    for size, mine, peer in ((sizes[0], small, peer_small), (sizes[-1], large, peer_large)):
        label = f"start to N reconciles s, N={size}"
        print(f"{label:34}{mine['judged_s']:>20}{peer['judged_s']:>20}")
    ratio = growth(small["rest"]["per_min"], large["rest"]["per_min"])
    peer_ratio = growth(peer_small["rest"]["per_min"], peer_large["rest"]["per_min"])
    print(f"{'requests at rest, large/small':34}{ratio:>19.2f}x{peer_ratio:>19.2f}x")
    print(f"edit acted on, N={sizes[-1]}: p50 {large['edit_p50_s']} s, p99 {large['edit_p99_s']} s")
    for size, seen in results["first_sight"].items():
        print(
            f"first sight of {seen['new']} new releases (N={size}): {size} reconciles in "
            f"{seen['judged_s']} s, then 15 s without a write by {seen['settled_s']} s later; "
            f"RSS {seen['rss_mb']} MB (peak {seen['peak_rss_mb']} MB); "
            "then restarted for the figures above"
        )
    print(
        f"{concurrent['releases']} concurrent releases: {concurrent['phases']}, all in "
        f"{concurrent['all_released_s']} s, waits p50 {concurrent['wait_p50_s']} s, "
        f"longest {concurrent['longest_wait_s']} s"
    )
    targets = {
        "rest ratio <= 1.2x": ratio <= 1.2,
        "RSS < 300 MB": large["rss_mb"] < 300,
        "edit p99 < 2 s": large["edit_p99_s"] < 2,
        "no starvation": concurrent["finished"] == concurrent["releases"]
        and concurrent["phases"].get("Released") == concurrent["releases"],
    }
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(
        f"scale: rest_req_per_min N={sizes[0]} {small['rest']['per_min']} "
        f"N={sizes[-1]} {large['rest']['per_min']}; rss_mb N={sizes[-1]} {large['rss_mb']}; "
        f"edit_p99_s {large['edit_p99_s']}"
    )


if __name__ == "__main__":
    sys.exit(main())
