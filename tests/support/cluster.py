"""Run the real operator against the emulator and play the cluster's controllers.

The emulator stores objects but runs nothing: no Job controller, no pods, no
Deployment controller. Like envtest-based suites, the tests play those parts:
:class:`Controllers` runs each training and evaluation Job's container
command in-process (the reference trainer or the evaluator, with the Job's own
environment, secrets resolved) and marks the Job complete or failed, and marks
Deployments available.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client

from modelgate import evaluate, handlers
from modelgate.backends.s3 import S3Settings, make_client
from modelgate.trainer.train import ContractError, train
from tests.support.emulator import RunningEmulator
from tests.support.faulty_proxy import FaultyProxy
from tests.support.s3server import CREDENTIALS, S3Server, free_port

GROUP, VERSION = "modelgate.dev", "v1alpha1"
PLURALS = {
    "ModelRelease": "modelreleases",
    "QualityGate": "qualitygates",
    "Environment": "environments",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_client(emulator: RunningEmulator) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = emulator.url
    return client.ApiClient(configuration)


@dataclass
class Controllers:
    """The Job and Deployment controllers, played by the test."""

    api: client.ApiClient
    secrets: dict[str, str]
    s3_env: dict[str, str]
    # Jobs to fail instead of run: job name -> (reason, message)
    fail_jobs: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Releases whose verification Jobs fail.
    fail_verifications: set[str] = field(default_factory=set)
    # Releases whose evaluation Jobs fail: release -> (reason, message)
    fail_evaluations: dict[str, tuple[str, str]] = field(default_factory=dict)
    jobs_run: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _job_env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "valueFrom" in item:
                key = item["valueFrom"]["secretKeyRef"]["key"]
                env[item["name"]] = self.secrets[key]
        return env

    def _finish_job(self, job: dict[str, Any], failed: tuple[str, str] | None) -> None:
        batch = client.BatchV1Api(self.api)
        condition = {
            "type": "Failed" if failed else "Complete",
            "status": "True",
            "lastTransitionTime": _now(),
        }
        if failed:
            condition["reason"], condition["message"] = failed
        status = {"startTime": _now(), "conditions": [condition]}
        status["failed" if failed else "succeeded"] = 1
        if not failed:
            status["completionTime"] = _now()
        batch.patch_namespaced_job_status(
            job["metadata"]["name"], job["metadata"]["namespace"], {"status": status}
        )

    def _run_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        self.jobs_run.append(name)
        if name in self.fail_jobs:
            self._finish_job(job, self.fail_jobs[name])
            return
        labels = job["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/component") == "verification":
            release = labels.get("modelgate.dev/release", "")
            failure = (
                "BackoffLimitExceeded",
                "3 of 200 served answers differ from the offline predictions",
            )
            self._finish_job(job, failure if release in self.fail_verifications else None)
            return
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = self._job_env(container)
        if labels.get("app.kubernetes.io/component") == "evaluation":
            failed = self.fail_evaluations.get(labels.get("modelgate.dev/release", ""))
            if failed is not None:
                self._finish_job(job, failed)
                return
            spec = job["spec"]
            # An Indexed Job: one run per index, as its pods would (in turn here).
            indexes = range(int(spec.get("completions") or 1))
            indexed = spec.get("completionMode") == "Indexed"
            with patched_environ(self.s3_env):
                for index in indexes:
                    extra = {evaluate.COMPLETION_INDEX: str(index)} if indexed else {}
                    try:
                        evaluate.run({**env, **extra})
                    except evaluate.EvaluatorError as error:
                        failed = ("BackoffLimitExceeded", f"evaluator exited 2: {error}")
                        break
            self._finish_job(job, failed)
            return
        env["MODELGATE_OUTPUT_DIR"] = ""  # the pod's emptyDir: a temp dir here
        failure = None
        with patched_environ(self.s3_env):
            try:
                train(env)
            except ContractError as error:
                failure = ("BackoffLimitExceeded", f"trainer exited 2: {error}")
        self._finish_job(job, failure)

    def step(self) -> None:
        batch, apps = client.BatchV1Api(self.api), client.AppsV1Api(self.api)
        sanitize = self.api.sanitize_for_serialization
        for job in sanitize(batch.list_job_for_all_namespaces()).get("items", []):
            if not (job.get("status") or {}).get("conditions"):
                self._run_job(job)
        for deployment in sanitize(apps.list_deployment_for_all_namespaces()).get("items", []):
            metadata, spec = deployment["metadata"], deployment.get("spec") or {}
            status = deployment.get("status") or {}
            generation = int(metadata.get("generation", 1))
            if int(status.get("observedGeneration") or 0) < generation:
                replicas = int(spec.get("replicas", 1))
                apps.patch_namespaced_deployment_status(
                    metadata["name"],
                    metadata["namespace"],
                    {
                        "status": {
                            "observedGeneration": generation,
                            "replicas": replicas,
                            "readyReplicas": replicas,
                            "availableReplicas": replicas,
                            "updatedReplicas": replicas,
                        }
                    },
                )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except client.exceptions.NotFoundException:
                pass  # deleted while we looked at it, as on a real cluster
            except Exception as error:  # keep playing; the test reports it
                self.errors.append(repr(error))
            self._stop.wait(0.2)

    def start(self) -> Controllers:
        self._thread = threading.Thread(target=self._loop, name="controllers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class OperatorThread:
    """kopf's operator, in-process, in its own thread and event loop."""

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=True,
                    standalone=True,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            )
        except BaseException as error:
            self.error = error

    def start(self) -> OperatorThread:
        self._thread.start()
        if not self.ready_flag.wait(timeout=60):
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self._thread.join(timeout=60)


# The reference server image the chart would set (pinned: production requires it).
SERVER_IMAGE = "ghcr.io/modelgate/modelgate@sha256:" + "5e" * 32


@contextlib.contextmanager
def operator_environment(
    emulator: RunningEmulator, s3: S3Server | FaultyProxy, bucket: str
) -> Iterator[None]:
    """Settings the operator reads at import and start-up (S3 directly or
    through a proxy that injects faults)."""
    values = {
        "MODELGATE_API_SERVER": emulator.url,
        "MODELGATE_S3_BUCKET": bucket,
        "MODELGATE_S3_PREFIX": "modelgate",
        "MODELGATE_S3_ENDPOINT": s3.endpoint,
        "MODELGATE_S3_PATH_STYLE": "true",
        "MODELGATE_S3_SECRET": "modelgate-s3",
        "MODELGATE_SERVER_IMAGE": SERVER_IMAGE,
        **CREDENTIALS,
    }
    with patched_environ(values):
        yield


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a while, then put the old values back."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def running_operator() -> Iterator[OperatorThread]:

    # Clients of an earlier emulator must not be reused. (The resync interval
    # is read at import; tests/conftest.py sets it before any import.)
    handlers.reset_runtime()
    operator = OperatorThread().start()
    try:
        yield operator
    finally:
        operator.stop()
        collect_quietly()


def operator_command(*extra: str) -> list[str]:
    """``python -m modelgate operator`` as a process, on a free liveness port."""
    liveness = f"--liveness=http://127.0.0.1:{free_port()}/healthz"
    return [sys.executable, "-m", "modelgate", "operator", "--standalone", liveness, *extra]


def collect_quietly() -> None:
    """Collect what a stopped event loop left behind (kopf's and aiohttp's
    sessions to a server that is gone) now, with their ResourceWarnings
    silenced, instead of letting them surface in whichever test runs next."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def create(api: client.ApiClient, document: dict[str, Any], namespace: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    result: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[document["kind"]], document
    )
    return result


def get(api: client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    result: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name
    )
    return result


def wait_for(
    check: Callable[[], Any],
    timeout: float = 60,
    what: str = "condition",
    explain: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``check`` until truthy; on timeout say what was awaited and the state."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    detail = explain() if explain is not None else last
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; state: {detail!r}")


def seed_sample_data(s3: S3Server, bucket: str, data: Path) -> None:
    """Create ``bucket`` and upload the sample's train/eval CSVs under data/."""
    s3_client = make_client(S3Settings(bucket=bucket, endpoint_url=s3.endpoint, path_style=True))
    s3_client.create_bucket(Bucket=bucket)
    for name in ("train.csv", "eval.csv"):
        s3_client.put_object(Bucket=bucket, Key=f"data/{name}", Body=(data / name).read_bytes())


def start_controllers(
    api: client.ApiClient, s3: S3Server, credentials: dict[str, str] | None = None
) -> Controllers:
    """The Job and Deployment controllers; training pods get ``credentials``
    (the test's S3 credentials unless others are given)."""
    keys = credentials or CREDENTIALS
    return Controllers(
        api=api,
        secrets=keys,
        s3_env={
            "MODELGATE_S3_ENDPOINT": s3.endpoint,
            "MODELGATE_S3_PATH_STYLE": "true",
            **keys,
        },
    ).start()
