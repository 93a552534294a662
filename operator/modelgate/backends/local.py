"""Local-mode backends: files under a state directory and local processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from modelgate.api.common import format_time
from modelgate.api.environment import VERIFICATION_FAILED_EXIT_CODE
from modelgate.api.modelrelease import ArtifactRecord
from modelgate.api.rollout import CHALLENGER, CHAMPION
from modelgate.backends.base import (
    HASH_CHUNK,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    verify_file,
)
from modelgate.backends.manifests import verification_env
from modelgate.backends.outputs import ingest_outputs
from modelgate.promotion import (
    Deploy,
    DeploymentObservation,
    Rollback,
    StartTraining,
    StartVerification,
    TrainingObservation,
)
from modelgate.promotion.keys import serves_artifact
from modelgate.promotion.plan import parse_rollout
from modelgate.serving import oip_client
from modelgate.serving.artifacts import ModelLoadError, read_artifact, verified
from modelgate.serving.router import OWN_PREFIX
from modelgate.serving.runtime import (
    INHERITED_ENV,
    ModelServerCommand,
    ModelServerError,
    expand,
    free_port,
    server_environment,
)
from modelgate.trainer import contract

# A server's record file: <environment>.json for the live model (the
# champion), <environment>@challenger.json and <environment>@router.json
# beside it while a new release is judged against it.
ARM_SEPARATOR = "@"
ROUTER = "router"
ROUTER_MARKER = "modelgate.serving.router"
ROUTER_METRICS = OWN_PREFIX + "metrics"
ROUTER_READY = OWN_PREFIX + "ready"

# Seconds before a verification that could not check runs again (doubling):
# a Job's pods wait 10 s, a laptop need not.
LOCAL_RETRY_PAUSE = 1.0


def _write_json(path: Path, value: Any) -> None:
    """Write atomically: a crash never leaves half a state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(value, out, indent=2, sort_keys=True)
    os.replace(temporary, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


class LocalArtifactStore:
    """Content-addressed files: ``ROOT/sha256/ab/abcdef...``, never overwritten."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def put_bytes(self, data: bytes, name: str) -> ArtifactRecord:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(temporary, 0o444)
            os.replace(temporary, path)
        return ArtifactRecord(name=name, uri=path.resolve().as_uri(), sha256=digest, size=len(data))

    def put_file(self, path: Path, name: str) -> ArtifactRecord:
        return self.put_bytes(path.read_bytes(), name)

    def put_uri(self, uri: str, name: str) -> ArtifactRecord:
        """A local file (``file://`` or a path), copied in chunks."""
        source = Path(uri.removeprefix("file://"))
        if not source.is_file():
            raise ArtifactNotFoundError(f"{uri} does not exist")
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.root)
        digest, size = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, source.open("rb") as data:
            while chunk := data.read(HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        path = self._path(digest.hexdigest())
        if path.exists():
            os.unlink(temporary)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temporary, 0o444)
            os.replace(temporary, path)
        return ArtifactRecord(
            name=name, uri=path.resolve().as_uri(), sha256=digest.hexdigest(), size=size
        )

    def get_path(self, record: ArtifactRecord, scratch: Path) -> Path:
        """The stored file itself (read-only, content-addressed), verified."""
        if not record.uri.startswith("file://"):
            raise ArtifactNotFoundError(f"{record.uri} is not a local artifact")
        path = Path(record.uri.removeprefix("file://"))
        if not path.exists():
            raise ArtifactNotFoundError(f"artifact {record.name} is missing at {path}")
        return verify_file(path, record)

    def get_bytes(self, record: ArtifactRecord) -> bytes:
        if not record.uri.startswith("file://"):
            raise ArtifactNotFoundError(f"{record.uri} is not a local artifact")
        path = Path(record.uri.removeprefix("file://"))
        if not path.exists():
            raise ArtifactNotFoundError(f"artifact {record.name} is missing at {path}")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != record.sha256:
            raise ArtifactIntegrityError(
                f"artifact {record.name} at {path} has SHA-256 {actual}, "
                f"recorded {record.sha256}: refusing to use it"
            )
        return data


class LocalProcessRunner:
    """Runs a training job as a local process, synchronously, then records it.

    The training image is not used locally: the job runs ``command`` + ``args``
    when the release gives a command, else the reference trainer in this
    Python. Data paths are resolved by the caller.
    """

    def __init__(self, state_dir: Path, store: LocalArtifactStore, python: str = sys.executable):
        self.runs = state_dir / "runs"
        self.store = store
        self.python = python

    def _result_path(self, job_name: str) -> Path:
        return self.runs / job_name / "result.json"

    def _run_process(
        self,
        job_name: str,
        command: list[str],
        env: dict[str, str],
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one job as a local process; the result a Job's status would give."""
        work = self.runs / job_name
        work.mkdir(parents=True, exist_ok=True)
        full_env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        full_env.update(env)
        if command and command[0] in {"python", "python3"}:
            command = [self.python, *command[1:]]  # the same interpreter as local mode
        started = format_time(datetime.now().astimezone())
        log = work / "log.txt"
        code: int | None
        try:
            with log.open("w") as out:
                code = subprocess.run(
                    command,
                    env=full_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=timeout,
                ).returncode
        except (OSError, subprocess.TimeoutExpired) as error:
            code = None
            log.write_text(f"{log.read_text() if log.exists() else ''}{error}\n")
        result: dict[str, Any] = {
            "jobName": job_name,
            "startedAt": started,
            "completedAt": format_time(datetime.now().astimezone()),
            "exitCode": code,
            "state": "Succeeded" if code == 0 else "Failed",
        }
        if code != 0:
            tail = log.read_text().strip().splitlines()[-3:]
            result["message"] = f"exit code {code}: {' | '.join(tail) or 'no output'}"
        return result

    def start(self, action: StartTraining) -> None:
        if self._result_path(action.job_name).exists():
            return  # already ran: starting twice is a no-op, like creating a Job twice
        output = self.runs / action.job_name / "output"
        output.mkdir(parents=True, exist_ok=True)
        command = [*action.command] if action.command else [self.python, "-m", "modelgate.trainer"]
        env = {**action.env, contract.OUTPUT_DIR: str(output)}
        # A Secret's variables: in local mode, as this process's environment has them.
        env.update({n: os.environ[n] for n, _, _ in action.secret_env if n in os.environ})
        result = self._run_process(action.job_name, [*command, *action.args], env)
        if result["state"] == "Succeeded":
            result["artifacts"] = [a.wire() for a in ingest_outputs(self.store, str(output))]
        _write_json(self._result_path(action.job_name), result)

    def start_verification(self, action: StartVerification, endpoint: str) -> None:
        """Run the verification command as a local process (no ingestion)."""
        if self._result_path(action.job_name).exists():
            return
        env = verification_env(action, endpoint)
        command = [*action.command, *action.args]
        # As the Job's pod failure policy does: exit code 1 (the model
        # failed) is final; a run that could not check is tried again, within
        # the one timeout of all attempts.
        deadline = time.monotonic() + action.timeout.total_seconds()
        attempt = 1
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            result = self._run_process(action.job_name, command, env, left)
            code = result["exitCode"]
            if code in (0, VERIFICATION_FAILED_EXIT_CODE) or attempt >= action.attempts:
                break
            pause = min(LOCAL_RETRY_PAUSE * 2 ** (attempt - 1), deadline - time.monotonic())
            if pause <= 0:
                break
            time.sleep(pause)
            attempt += 1
        if attempt > 1 and result["state"] == "Failed":
            result["message"] = f"{result['message']} (after {attempt} attempts)"
        _write_json(self._result_path(action.job_name), result)

    def record_failure(self, job_name: str, message: str) -> None:
        """A run that could not start, recorded as failed with the reason."""
        now = format_time(datetime.now().astimezone())
        _write_json(
            self._result_path(job_name),
            {
                "jobName": job_name,
                "startedAt": now,
                "completedAt": now,
                "exitCode": None,
                "state": "Failed",
                "message": message,
            },
        )

    def observe(self, job_name: str) -> TrainingObservation | None:
        result = _read_json(self._result_path(job_name))
        if result is None:
            return None
        return TrainingObservation(
            job_name=job_name,
            state=result["state"],
            started_at=result.get("startedAt"),
            completed_at=result.get("completedAt"),
            message=result.get("message"),
            artifacts=tuple(ArtifactRecord.model_validate(a) for a in result.get("artifacts", [])),
        )


REFERENCE_MARKER = "modelgate.server"  # the reference server's module, on its command line
SERVER_SOURCES = ("server.py", "serving/__init__.py", "serving/model.py", "serving/schema.py")


def local_server_image() -> str:
    """Local mode's stand-in for the reference server image: no image runs
    here, the installed code does, so its identity is the SHA-256 of that
    code (a digest, as production's requireDigest asks)."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in SERVER_SOURCES:
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return f"local/modelgate-server@sha256:{digest.hexdigest()}"


class LocalServers:
    """Reference model servers as local processes, one per environment.

    They outlive ``modelgate run`` (so ``curl`` works against a local
    release) and are stopped by ``modelgate stop``, ``--reset`` or the next
    deploy to the same environment; each one's pid, port and log are
    recorded under ``servers/``.
    """

    def __init__(self, state_dir: Path, python: str = sys.executable) -> None:
        self.root = state_dir / "servers"
        self.python = python

    def _record_path(self, namespace: str, environment: str, arm: str = CHAMPION) -> Path:
        # The live model's file keeps the name it had before arms were.
        stem = environment if arm == CHAMPION else f"{environment}{ARM_SEPARATOR}{arm}"
        return self.root / namespace / f"{stem}.json"

    @property
    def targets_file(self) -> Path:
        """The running servers as Prometheus file-based discovery reads them
        (``file_sd_configs``): point a Prometheus at it to scrape local mode."""
        return self.root.parent / "prometheus" / "targets.json"

    def _write_targets(self) -> None:
        groups = []
        for path in sorted(self.root.glob("*/*.json")) if self.root.exists() else []:
            record = _read_json(path)
            if record is not None and record.get("state") == "ready":
                environment, _, arm = path.stem.partition(ARM_SEPARATOR)
                labels = {
                    "namespace": str(record.get("namespace") or path.parent.name),
                    "environment": environment,
                }
                if arm == ROUTER:
                    labels["__metrics_path__"] = ROUTER_METRICS
                else:
                    # As the pod label the cluster's scrape config copies.
                    labels["arm"] = arm or CHAMPION
                groups.append({"targets": [f"127.0.0.1:{record['port']}"], "labels": labels})
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        _write_json(self.targets_file, groups)

    def record(
        self, namespace: str, environment: str, arm: str = CHAMPION
    ) -> dict[str, Any] | None:
        found: dict[str, Any] | None = _read_json(self._record_path(namespace, environment, arm))
        return found

    def _serving(
        self, namespace: str, environment: str, arm: str = CHAMPION
    ) -> dict[str, Any] | None:
        """The record of a server that got ready and still runs."""
        record = self.record(namespace, environment, arm)
        if record is None or record.get("state") != "ready" or not _is_ours(record):
            return None
        return record

    def url(self, namespace: str, environment: str, arm: str | None = None) -> str | None:
        """Where ``arm``'s server answers; without one, where callers of the
        environment go: the router while one splits its traffic, else the
        live model."""
        if arm is None:
            router = self._serving(namespace, environment, ROUTER)
            if router is not None:
                return str(router["url"])
            arm = CHAMPION
        record = self._serving(namespace, environment, arm)
        return None if record is None else str(record["url"])

    def running(self, namespace: str, environment: str, sha256: str, arm: str = CHAMPION) -> bool:
        record = self._serving(namespace, environment, arm)
        return record is not None and record.get("modelSha256") == sha256

    def start(
        self,
        namespace: str,
        environment: str,
        config: dict[str, str],
        timeout: float = 60,
        arm: str = CHAMPION,
        target_namespace: str | None = None,
    ) -> dict[str, Any]:
        """Serve the artifact ``config`` names (MODELGATE_MODEL_URI, ...): with
        the reference server, or with the release's own model server.
        ``target_namespace`` is the environment's namespace (as a cluster's
        metrics are labelled); default: the objects' namespace."""
        self.stop(namespace, environment, arm)
        path = self._record_path(namespace, environment, arm)
        path.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        record: dict[str, Any] = {
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "log": str(path.with_suffix(".log")),
            "modelSha256": config[contract.SERVER_MODEL_SHA256],
            "state": "starting",
            "namespace": target_namespace or namespace,
        }
        own = contract.MODEL_SERVER in config
        try:
            if own:
                command, env, ready = self._own_server(path, config, port)
            else:
                command, env, ready = self._reference_server(environment, config, port)
            # What its command line holds, so a recycled pid is never taken for it.
            record["marker"] = command[0] if own else REFERENCE_MARKER
            record["pid"] = _spawn(command, env, Path(record["log"]))
        except (ValueError, ModelLoadError, ModelServerError, ArtifactError, OSError) as error:
            # As a pod that cannot start: the rollout waits, saying why.
            record.update(pid=0, state="failed", message=f"the model server cannot start: {error}")
            _write_json(path, record)
            return record
        _wait_until_ready(record, ready, timeout)
        _write_json(path, record)
        self._write_targets()
        return record

    def start_router(
        self,
        namespace: str,
        environment: str,
        model: str,
        split: tuple[int, bool, str | None],
        timeout: float = 30,
    ) -> dict[str, Any]:
        """The router in front of the environment's champion and challenger:
        ``split`` is the challenger's weight, whether it mirrors, and the
        sticky header. Restarted on the port it had, so callers keep theirs."""
        weight, mirror, sticky = split
        champion = self.url(namespace, environment, CHAMPION)
        challenger = self.url(namespace, environment, CHALLENGER)
        path = self._record_path(namespace, environment, ROUTER)
        before = self.record(namespace, environment, ROUTER)
        self.stop(namespace, environment, ROUTER)
        port = int(before["port"]) if before is not None else free_port()
        record: dict[str, Any] = {
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "log": str(path.with_suffix(".log")),
            "marker": ROUTER_MARKER,
            "weight": weight,
            "mirror": mirror,
            "state": "starting",
            # Labelled as the live model's metrics are.
            "namespace": (self.record(namespace, environment) or {}).get("namespace", namespace),
        }
        if champion is None or challenger is None:
            missing = "the live model" if champion is None else "the challenger"
            record.update(pid=0, state="failed", message=f"{missing} is not serving")
            _write_json(path, record)
            return record
        command = [
            self.python, "-m", ROUTER_MARKER, "--host", "127.0.0.1", "--port", str(port),
            "--champion", champion, "--model", model,
        ]  # fmt: skip
        if mirror:
            command += ["--mirror", challenger]
        else:
            command += ["--challenger", challenger, "--weight", str(weight)]
        if sticky:
            command += ["--sticky-header", sticky]
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        path.parent.mkdir(parents=True, exist_ok=True)
        record["pid"] = _spawn(command, env, Path(record["log"]))
        _wait_until_ready(record, f"{record['url']}{ROUTER_READY}", timeout)
        _write_json(path, record)
        self._write_targets()
        return record

    def _reference_server(
        self, environment: str, config: dict[str, str], port: int
    ) -> tuple[list[str], dict[str, str], str]:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        command = [
            self.python, "-m", "modelgate.server",
            "--model", config[contract.SERVER_MODEL_URI],
            "--model-sha256", config[contract.SERVER_MODEL_SHA256],
            "--metadata", config[contract.SERVER_METADATA_URI],
            "--metadata-sha256", config[contract.SERVER_METADATA_SHA256],
            "--host", "127.0.0.1", "--port", str(port),
            "--environment", environment,
        ]  # fmt: skip
        return command, env, f"http://127.0.0.1:{port}/readyz"

    def _own_server(
        self, path: Path, config: dict[str, str], port: int
    ) -> tuple[list[str], dict[str, str], str]:
        """The release's own model server on its model file, laid out as the
        serving contract says (the file name the import recorded)."""
        served_by = ModelServerCommand.from_wire(config[contract.MODEL_SERVER], "spec.server")
        metadata = json.loads(
            verified(
                read_artifact(config[contract.SERVER_METADATA_URI]),
                config[contract.SERVER_METADATA_SHA256],
                "the metadata artifact",
            )
        )
        recorded = (metadata.get("servedBy") or {}).get("modelFile")
        name = Path(str(recorded or served_by.model_file)).name
        model_file = path.with_suffix(".model") / name
        model_file.parent.mkdir(parents=True, exist_ok=True)
        model_file.write_bytes(
            verified(
                read_artifact(config[contract.SERVER_MODEL_URI]),
                config[contract.SERVER_MODEL_SHA256],
                "the model artifact",
            )
        )
        env = server_environment(served_by, model_file, (port, free_port(), free_port()))
        command = [expand(part, env) for part in served_by.local_command()]
        command[0] = shutil.which(command[0], path=env.get("PATH")) or command[0]
        url = f"http://127.0.0.1:{port}"
        return command, env, f"{oip_client.model_path(url, served_by.model_name)}/ready"

    def stop(self, namespace: str, environment: str, arm: str = CHAMPION) -> None:
        record = self.record(namespace, environment, arm)
        if record is None:
            return
        pid = int(record["pid"])
        if _is_ours(record):
            # The whole session: a server may have forked workers.
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _is_ours(record) and time.monotonic() < deadline:
                _exited(pid, record.get("marker", REFERENCE_MARKER))
                time.sleep(0.05)
            if _is_ours(record):
                os.killpg(pid, signal.SIGKILL)
        if pid > 0:
            _exited(pid, record.get("marker", REFERENCE_MARKER))  # reap it if ours
        path = self._record_path(namespace, environment, arm)
        shutil.rmtree(path.with_suffix(".model"), ignore_errors=True)
        path.unlink(missing_ok=True)
        self._write_targets()

    def stop_all(self) -> int:
        stopped = 0
        for path in sorted(self.root.glob("*/*.json")) if self.root.exists() else []:
            environment, _, arm = path.stem.partition(ARM_SEPARATOR)
            self.stop(path.parent.name, environment, arm or CHAMPION)
            stopped += 1
        return stopped


def _spawn(command: list[str], env: dict[str, str], log: Path) -> int:
    """Spawned, not Popen'd: the server outlives this process by design, in a
    session of its own, and nothing here waits for it."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return os.posix_spawn(
            command[0],
            command,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)],
            setsid=True,
        )
    finally:
        os.close(out)


def _wait_until_ready(record: dict[str, Any], ready: str, timeout: float) -> None:
    """Until ``ready`` answers 200 (``record`` says ready) or the server exits
    or the time is up (``record`` says failed, and why)."""
    pid, log = int(record["pid"]), Path(record["log"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid, record["marker"]):
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            record.update(state="failed", message=f"the model server exited: {tail[0]}")
            return
        try:
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    record["state"] = "ready"
                    return
        except OSError:
            pass
        time.sleep(0.1)
    record.update(state="failed", message=f"not ready within {timeout:g} s; see {log}")


def _is_ours(record: dict[str, Any]) -> bool:
    return _is_our_server(int(record["pid"]), record.get("marker", REFERENCE_MARKER))


def _is_our_server(pid: int, marker: str = REFERENCE_MARKER) -> bool:
    """A model server, still running (a recycled pid is someone else's): its
    command line holds ``marker`` (the module or the executable it runs)."""
    if pid <= 0:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in command


def _exited(pid: int, marker: str = REFERENCE_MARKER) -> bool:
    """Whether a server this process spawned has ended (and reap it); one
    started by an earlier run is not our child: ask /proc instead."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _is_our_server(pid, marker)
    return done == pid


class LocalDeployer:
    """Simulated environments: what is live is a JSON record per environment,
    and the merged config is written as the ConfigMap would carry it. A
    release served by the reference server really serves: a local process."""

    def __init__(self, state_dir: Path, servers: LocalServers | None = None) -> None:
        self.root = state_dir / "environments"
        self.servers = servers or LocalServers(state_dir)

    def serve(
        self,
        namespace: str,
        environment: str,
        config: dict[str, str],
        target_namespace: str | None = None,
    ) -> None:
        """Make the environment's server match its live config."""
        if not serves_artifact(config):
            self.servers.stop(namespace, environment)
        elif not self.servers.running(namespace, environment, config[contract.SERVER_MODEL_SHA256]):
            self.servers.start(namespace, environment, config, target_namespace=target_namespace)

    def ensure_servers(self, namespace: str) -> None:
        """After a restart (or a reboot): serve what each environment has live."""
        folder = self.root / namespace
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            live = (_read_json(path) or {}).get("live")
            if live is not None:
                self.serve(namespace, path.stem, live["config"], live.get("namespace"))

    def _record_path(self, namespace: str, environment: str) -> Path:
        return self.root / namespace / f"{environment}.json"

    def deploy(self, action: Deploy, now: datetime) -> None:
        namespace = action.release.split("/")[0]
        path = self._record_path(namespace, action.environment)
        record = _read_json(path) or {"history": []}
        live = record.get("live")
        if (
            live is not None
            and live["release"] == action.release
            and live["image"] == action.image
            and live["configHash"] == action.config_hash
        ):
            self.serve(namespace, action.environment, action.config, action.namespace)
            return  # already live: deploying is idempotent
        entry = {
            "release": action.release,
            "image": action.image,
            "namespace": action.namespace,
            "config": action.config,
            "configHash": action.config_hash,
            "deployedAt": format_time(now),
            "predictions": action.predictions.wire() if action.predictions else None,
            "rollout": action.rollout,
            "judged": action.judged,
        }
        record["live"] = entry
        record["history"] = [entry, *record["history"]][:50]
        _write_json(path, record)
        config_file = path.with_suffix(".env")
        config_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(action.config.items())))
        self.serve(namespace, action.environment, action.config, action.namespace)

    def rollback(self, action: Rollback, now: datetime) -> str | None:
        """Put back the entry that was live before ``action.release``."""
        namespace = action.release.split("/")[0]
        path = self._record_path(namespace, action.environment)
        record = _read_json(path) or {"history": []}
        live = record.get("live")
        if live is None or live["release"] != action.release:
            return None if live is None else str(live["release"])
        before: dict[str, Any] | None = None
        if action.config_hash is not None:
            # A failed config change: this release's earlier config comes back.
            if live["configHash"] == action.config_hash:
                return str(live["release"])  # already back
            before = next(
                (
                    h
                    for h in record["history"]
                    if h["release"] == action.release and h["configHash"] == action.config_hash
                ),
                None,
            )
        if before is None:
            before = next(
                (
                    h
                    for h in record["history"]
                    if h["release"] != action.release and not h.get("rolledBack")
                ),
                None,
            )
        if before is None:
            record["live"] = None
            _write_json(path, record)
            self.servers.stop(namespace, action.environment)
            return None
        restored = {
            **before,
            "deployedAt": format_time(now),
            "rolledBack": True,
            "reason": action.reason,
        }
        record["live"] = restored
        record["history"] = [restored, *record["history"]][:50]
        _write_json(path, record)
        path.with_suffix(".env").write_text(
            "".join(f"{k}={v}\n" for k, v in sorted(restored["config"].items()))
        )
        self.serve(namespace, action.environment, restored["config"], restored.get("namespace"))
        return str(restored["release"])

    def observe(self, namespace: str) -> dict[str, DeploymentObservation]:
        found: dict[str, DeploymentObservation] = {}
        folder = self.root / namespace
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            live = (_read_json(path) or {}).get("live")
            if live is None:
                continue
            predictions = live.get("predictions")
            server = self.servers.record(namespace, path.stem)
            failed = serves_artifact(live["config"]) and (
                server is None or server.get("state") != "ready"
            )
            found[path.stem] = DeploymentObservation(
                environment=path.stem,
                release=live["release"],
                image=live["image"],
                config_hash=live["configHash"],
                deployed_at=live["deployedAt"],
                rollout=parse_rollout(live.get("rollout")),
                # As a Deployment whose pods never get ready: the rollout waits.
                ready=not failed,
                predictions=ArtifactRecord.model_validate(predictions) if predictions else None,
                message=(server or {}).get("message", "the model server is not running")
                if failed
                else None,
            )
        return found

    def history(self, namespace: str, environment: str) -> list[dict[str, Any]]:
        record = _read_json(self._record_path(namespace, environment)) or {}
        history: list[dict[str, Any]] = record.get("history", [])
        return history


class LocalStatusStore:
    """Release statuses and spec generations, as the API server would keep them."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "objects"

    def _path(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / kind / namespace / f"{name}.json"

    def load(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = _read_json(self._path(kind, namespace, name))
        return value

    def save(self, kind: str, namespace: str, name: str, value: dict[str, Any]) -> None:
        _write_json(self._path(kind, namespace, name), value)
