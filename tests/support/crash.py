"""Crash trials: release lifecycles with the operator process SIGKILLed at a
random instant and restarted (benchmarks/crash_trials.py; a short CI test).

One S3 server and one GitOps repository serve every trial; each trial gets a
fresh API server (emulator) and controllers, its own namespace and repository
path, so every trial starts from the same state. Staging is Direct;
production is GitOps with a verification Job; every third trial's
verification fails, so rollbacks are crashed into too. The operator is
`python -m modelgate operator` as a child process with JSON logs; its Deploy
and Rollback lines, the Deployments' generations and the repository's commits
are what a trial counts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import yaml
from kubernetes import client

from tests.conftest import EXAMPLES
from tests.support.cluster import (
    SERVER_IMAGE,
    Controllers,
    api_client,
    create,
    get,
    seed_sample_data,
    start_controllers,
)
from tests.support.emulator import RunningEmulator, running_emulator
from tests.support.gitops_agent import GitOpsAgent, bare_repository, git
from tests.support.processes import stop
from tests.support.s3server import CREDENTIALS, S3Server, free_port, running_s3

SAMPLE = EXAMPLES / "credit-risk"
BUCKET = "crash-artifacts"
RELEASE = "credit-risk-1-4-0"
FINAL = {"Released", "RolledBack", "GateFailed", "Failed", "Blocked"}


@dataclass
class TrialResult:
    trial: int
    namespace: str
    killed_after: float
    phase_at_kill: str | None
    expected: str
    final: str | None
    deploys: Counter[str]  # Deploy actions logged, by environment
    # Actions one operator run logged more than once (a kill may interrupt an
    # action before it reaches the API; its restart then rightly tries again).
    repeated: list[str]
    rollouts: int  # staging Deployment generation (1: rolled out once)
    promotion_commits: int
    revert_commits: int
    recovery_seconds: float | None  # restart -> final state

    @property
    def correct(self) -> bool:
        return self.final == self.expected

    @property
    def duplicated(self) -> bool:
        return self.rollouts > 1 or self.promotion_commits > 1 or self.revert_commits > 1

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "killed_after_s": round(self.killed_after, 2),
            "phase_at_kill": self.phase_at_kill,
            "expected": self.expected,
            "final": self.final,
            "deploy_actions": dict(self.deploys),
            "repeated_in_one_run": self.repeated,
            "staging_rollouts": self.rollouts,
            "promotion_commits": self.promotion_commits,
            "revert_commits": self.revert_commits,
            "recovery_s": None
            if self.recovery_seconds is None
            else round(self.recovery_seconds, 2),
        }


@dataclass
class World:
    s3: S3Server
    repository: Path
    workdir: Path
    controller_errors: list[str] = field(default_factory=list)


@contextmanager
def crash_world(workdir: Path) -> Iterator[World]:
    remote = bare_repository(workdir)
    with running_s3(workdir / "moto.log") as s3:
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        yield World(s3, remote, workdir)


@dataclass
class Cluster:
    """One trial's API server (a fresh emulator: its watch history starts
    empty, so every trial sees the same server) and controllers."""

    emulator: RunningEmulator
    api: client.ApiClient
    controllers: Controllers


@contextmanager
def cluster_for(
    world: World, extra: dict[str, kmock.ResourceInfo] | None = None
) -> Iterator[Cluster]:
    with running_emulator(extra) as emulator:
        api = api_client(emulator)
        controllers = start_controllers(api, world.s3)
        try:
            yield Cluster(emulator, api, controllers)
        finally:
            controllers.stop()
            world.controller_errors.extend(controllers.errors)


def _operator_env(world: World, cluster: Cluster) -> dict[str, str]:
    return {
        **os.environ,
        **CREDENTIALS,
        "MODELGATE_API_SERVER": cluster.emulator.url,
        "MODELGATE_S3_BUCKET": BUCKET,
        "MODELGATE_S3_PREFIX": "modelgate",
        "MODELGATE_S3_ENDPOINT": world.s3.endpoint,
        "MODELGATE_S3_PATH_STYLE": "true",
        "MODELGATE_S3_SECRET": "modelgate-s3",
        "MODELGATE_SERVER_IMAGE": SERVER_IMAGE,
        "MODELGATE_RESYNC_SECONDS": "0.5",
        # The clone cache survives a container restart (an emptyDir does).
        "MODELGATE_GIT_CACHE": str(world.workdir / "git-cache"),
        "MODELGATE_GIT_FETCH_SECONDS": "0",
    }


RUN_MARKER = "---- start"  # written to the log before each start (as installation.py does)


def start_operator(
    world: World, cluster: Cluster, log: Path, *options: str
) -> subprocess.Popen[bytes]:
    """`python -m modelgate operator` with JSON logs (standalone unless
    ``options`` are given)."""
    out = log.open("ab")
    out.write(f"{RUN_MARKER} ----\n".encode())
    out.flush()
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelgate",
                "operator",
                "--log-format=json",
                *(options or ("--standalone",)),
                # A port of its own, never the default 8080 another process
                # (a pod of the test node, another operator) may hold.
                *(() if "--liveness" in options else _own_liveness()),
            ],
            env=_operator_env(world, cluster),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def _own_liveness() -> tuple[str, str]:
    return ("--liveness", f"http://127.0.0.1:{free_port()}/healthz")


def stop_operator(process: subprocess.Popen[bytes]) -> None:
    stop(process)


def documents(namespace: str, path: str, remote: Path) -> list[dict[str, Any]]:
    found = []
    for name in ("gate.yaml", "environments.yaml"):
        for document in yaml.safe_load_all((SAMPLE / name).read_text()):
            if not document:
                continue
            spec = document["spec"]
            if document["kind"] == "Environment":
                spec["namespace"] = f"{namespace}-{document['metadata']['name']}"
                # Staging: Direct, unverified; production: GitOps, verified
                # by a Job the test controllers play (every third one fails).
                spec.pop("verification", None)
                if document["metadata"]["name"] == "production":
                    spec["delivery"] = {
                        "mode": "GitOps",
                        "git": {"repository": f"file://{remote}", "path": path},
                    }
                    spec["verification"] = {"image": "verify:1", "command": ["verify"]}
            found.append(document)
    return found


def release_document() -> dict[str, Any]:
    [document] = [d for d in yaml.safe_load_all((SAMPLE / "release.yaml").read_text()) if d]
    data = document["spec"]["training"]["data"]
    data["train"], data["evaluation"] = (
        f"s3://{BUCKET}/data/train.csv",
        f"s3://{BUCKET}/data/eval.csv",
    )
    document["spec"]["training"]["command"] = ["python", "-m", "modelgate.trainer"]
    return document


def _phase(api: client.ApiClient, namespace: str) -> str | None:
    status = get(api, "ModelRelease", namespace, RELEASE).get("status") or {}
    phase: str | None = status.get("phase")
    return phase


def actions(
    log: Path, release: str, kinds: frozenset[str] = frozenset({"Deploy", "Rollback"})
) -> Counter[str]:
    """The side effects the operator logged for a release, by action and environment."""
    return _actions_in(log.read_text(errors="replace"), release, kinds)


def _actions_in(text: str, release: str, kinds: frozenset[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by SIGKILL
        if record.get("release") == release and record.get("action") in kinds:
            found[f"{record['action']}:{record.get('environment')}"] += 1
    return found


def logged_actions(
    log: Path, release: str, kinds: frozenset[str] = frozenset({"Deploy", "Rollback"})
) -> tuple[Counter[str], list[str]]:
    """The side effects logged for a release, and those that one operator run
    (between two start markers) logged more than once: a run must never
    repeat itself."""
    text = log.read_text(errors="replace")
    repeated: list[str] = []
    for number, run in enumerate(text.split(RUN_MARKER)):
        counts = _actions_in(run, release, kinds)
        repeated.extend(f"{what} x{n} in run {number}" for what, n in counts.items() if n > 1)
    return _actions_in(text, release, kinds), repeated


def _commits(remote: Path, release: str) -> tuple[int, int]:
    log = git(remote, "log", "--format=%B%x1e", "main")
    messages = [m for m in log.split("\x1e") if f"Modelgate-Release: {release}" in m]
    promotions = sum("Modelgate-Promotion:" in m for m in messages)
    reverts = sum("Modelgate-Reverts:" in m for m in messages)
    return promotions, reverts


def run_trial(
    world: World, trial: int, rng: random.Random, kill_window: float = 8.0, timeout: float = 120
) -> TrialResult:
    with cluster_for(world) as cluster:
        return _trial(world, cluster, trial, rng, kill_window, timeout)


def _trial(
    world: World,
    cluster: Cluster,
    trial: int,
    rng: random.Random,
    kill_window: float,
    timeout: float,
) -> TrialResult:
    namespace = f"crash-{trial}"
    path = f"clusters/crash-{trial}"
    fails = trial % 3 == 2
    expected = "RolledBack" if fails else "Released"
    if fails:
        cluster.controllers.fail_verifications.add(RELEASE)
    agent = GitOpsAgent(cluster.api, world.repository, path, world.workdir / f"agent-{trial}")
    agent.start()
    for document in documents(namespace, path, world.repository):
        create(cluster.api, document, namespace)
    log = world.workdir / f"operator-{trial}.log"
    operator = start_operator(world, cluster, log)
    killed_after = rng.uniform(0.3, kill_window)
    recovery: float | None = None
    phase_at_kill: str | None = None
    try:
        time.sleep(1.0)  # let it start watching
        create(cluster.api, release_document(), namespace)
        time.sleep(killed_after)
        phase_at_kill = _phase(cluster.api, namespace)
        operator.send_signal(signal.SIGKILL)
        operator.wait(timeout=10)
        operator = start_operator(world, cluster, log)
        restarted = time.monotonic()
        deadline = restarted + timeout
        while time.monotonic() < deadline:
            if _phase(cluster.api, namespace) in FINAL:
                recovery = time.monotonic() - restarted
                break
            time.sleep(0.2)
        # Give a finished operator a moment to show any duplicate it would make.
        time.sleep(1.5)
    finally:
        stop_operator(operator)
        agent.stop()
    staging = cluster.emulator.objects("deployments", f"{namespace}-staging")
    deploys, repeated = logged_actions(log, f"{namespace}/{RELEASE}")
    generations = [int(d["metadata"].get("generation", 1)) for d in staging]
    return _result(
        world,
        TrialResult(
            trial=trial,
            namespace=namespace,
            killed_after=killed_after,
            phase_at_kill=phase_at_kill,
            expected=expected,
            final=_phase(cluster.api, namespace),
            deploys=deploys,
            repeated=repeated,
            rollouts=max(generations, default=0),
            promotion_commits=0,
            revert_commits=0,
            recovery_seconds=recovery,
        ),
    )


def _result(world: World, result: TrialResult) -> TrialResult:
    """The trial's result with its GitOps commits counted."""
    promotions, reverts = _commits(world.repository, f"{result.namespace}/{RELEASE}")
    result.promotion_commits, result.revert_commits = promotions, reverts
    return result


# ---- the same trials on the real control plane --------------------------------


@dataclass
class RealWorld:
    """One real control plane, test node, S3 server, Git repository and the
    chart's installation (peering off: one replica, killed and restarted)
    for every trial; each trial has namespaces of its own."""

    world: World
    plane: Any
    installation: Any
    node: Any


@contextmanager
def real_crash_world(workdir: Path) -> Iterator[RealWorld]:
    from tests.support.controlplane import running_control_plane  # noqa: PLC0415
    from tests.support.installation import chart_values, install  # noqa: PLC0415
    from tests.support.node import running_node  # noqa: PLC0415

    with (
        crash_world(workdir) as world,
        running_control_plane(workdir / "controlplane") as plane,
        running_node(plane.api_client(), workdir / "node") as node,
    ):
        values = chart_values(
            world.s3, BUCKET, peering={"enabled": False}, webhook={"enabled": False}
        )
        installation = install(plane, values, workdir / "chart")
        try:
            yield RealWorld(world, plane, installation, node)
        finally:
            installation.stop()
            world.controller_errors.extend(node.errors)


def _real_documents(namespace: str, path: str, remote: Path, fails: bool) -> list[dict[str, Any]]:
    """As on the emulator, but production is verified by the built-in check
    against the served model; a failing trial asks for a latency no server
    gives (1 ms), so the real verifier fails it."""
    found = documents(namespace, path, remote)
    for document in found:
        if document["kind"] == "Environment" and document["metadata"]["name"] == "production":
            document["spec"]["verification"] = {
                "servedPredictions": {"sampleSize": 50, "maxLatency": "1ms" if fails else "5s"}
            }
    return found


def run_real_trial(
    real: RealWorld, trial: int, rng: random.Random, kill_window: float = 20.0, timeout: float = 240
) -> TrialResult:
    from tests.support.installation import s3_secret  # noqa: PLC0415

    world, api = real.world, real.plane.api_client()
    namespace = f"crash-{trial}"
    path = f"clusters/crash-{trial}"
    fails = trial % 3 == 2
    expected = "RolledBack" if fails else "Released"
    core = client.CoreV1Api(api)
    for name in (namespace, f"{namespace}-staging", f"{namespace}-production"):
        core.create_namespace({"metadata": {"name": name}})
        core.create_namespaced_secret(name, s3_secret(name))
    for name in (namespace, f"{namespace}-staging", f"{namespace}-production"):
        deadline = time.monotonic() + 60
        while not core.list_namespaced_service_account(name).items:
            assert time.monotonic() < deadline, f"no default service account in {name}"
            time.sleep(0.2)
    agent = GitOpsAgent(api, world.repository, path, world.workdir / f"agent-{trial}")
    agent.start()
    for document in _real_documents(namespace, path, world.repository, fails):
        create(api, document, namespace)
    operator = real.installation.operator({"MODELGATE_GIT_FETCH_SECONDS": "0"})
    operator.start().wait_ready()
    killed_after = rng.uniform(0.3, kill_window)
    recovery: float | None = None
    phase_at_kill: str | None = None
    try:
        create(api, release_document(), namespace)
        time.sleep(killed_after)
        phase_at_kill = _phase(api, namespace)
        operator.kill()
        operator.start()
        restarted = time.monotonic()
        deadline = restarted + timeout
        while time.monotonic() < deadline:
            if _phase(api, namespace) in FINAL:
                recovery = time.monotonic() - restarted
                break
            time.sleep(0.2)
        time.sleep(1.5)
    finally:
        operator.stop()
        agent.stop()
    staging = client.AppsV1Api(api).list_namespaced_deployment(f"{namespace}-staging").items
    deploys, repeated = logged_actions(operator.log, f"{namespace}/{RELEASE}")
    return _result(
        world,
        TrialResult(
            trial=trial,
            namespace=namespace,
            killed_after=killed_after,
            phase_at_kill=phase_at_kill,
            expected=expected,
            final=_phase(api, namespace),
            deploys=deploys,
            repeated=repeated,
            rollouts=max((int(d.metadata.generation or 1) for d in staging), default=0),
            promotion_commits=0,
            revert_commits=0,
            recovery_seconds=recovery,
        ),
    )
