"""A model server of the release's own (MLServer, Triton, a KServe runtime)
run as a local process on the release's model files.

What it is told is the serving contract a pod gets too: the model's files
in ``MODELGATE_MODEL_DIR`` (the file itself in ``MODELGATE_MODEL_FILE``), and
the ports to listen on (``MODELGATE_HTTP_PORT`` for the Open Inference
Protocol's REST API, ``MODELGATE_GRPC_PORT`` and ``MODELGATE_METRICS_PORT``
for the listeners such servers open besides). The command and the values of
its environment may name them as Kubernetes lets a container do:
``$(MODELGATE_HTTP_PORT)``, with ``$$`` for a literal ``$``.

Modelgate never loads such a model itself: the server does, in its own
process (a pickle is the server's business, not the operator's).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelgate.serving import oip_client

MODEL_DIR = "MODELGATE_MODEL_DIR"
MODEL_FILE = "MODELGATE_MODEL_FILE"
HTTP_PORT = "MODELGATE_HTTP_PORT"
GRPC_PORT = "MODELGATE_GRPC_PORT"
METRICS_PORT = "MODELGATE_METRICS_PORT"
# Of this process's environment, what a server process gets (nothing else leaks).
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class ModelServerError(RuntimeError):
    """The server could not be started or never became ready; the message says why."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, an
    undefined reference is left as written, ``$$`` is a literal ``$``."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(substitute, value)


DEFAULT_MODEL_FILE = "model.pkl"
NO_LOCAL_COMMAND = (
    "the release names no command to run its model server on this machine: set "
    "spec.server.local.command (how local mode runs its model server)"
)


@dataclass(frozen=True)
class ModelServerCommand:
    """How a release's model server runs: locally its command (and
    arguments), in a pod its image's command and arguments; the environment
    it adds (in order: a value may name an earlier one), the name it serves
    the model under in the protocol's paths and the model file's name in
    its model directory."""

    command: tuple[str, ...]
    model_name: str
    env: tuple[tuple[str, str], ...] = ()
    model_file: str = DEFAULT_MODEL_FILE
    container_command: tuple[str, ...] = ()
    container_args: tuple[str, ...] = ()

    def wire(self) -> str:
        return json.dumps(
            {"command": list(self.command), "modelName": self.model_name,
             "env": [{"name": n, "value": v} for n, v in self.env],
             "modelFile": self.model_file,
             "containerCommand": list(self.container_command),
             "containerArgs": list(self.container_args)},
            sort_keys=True,
        )  # fmt: skip

    def local_command(self) -> tuple[str, ...]:
        """The local command; none named is a clear error, not a crash."""
        if not self.command:
            raise ModelServerError(NO_LOCAL_COMMAND)
        return self.command

    @classmethod
    def from_wire(cls, text: str, where: str) -> ModelServerCommand:
        """Read :meth:`wire`'s form; a bad one names ``where`` and what is wrong."""
        try:
            found: Any = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not JSON: {error}") from None
        if not isinstance(found, dict):
            raise ValueError(f"{where} must be a JSON object with command and modelName")
        name, env = found.get("modelName"), found.get("env", [])
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("command", "containerCommand", "containerArgs"):
            value = found.get(key, [])
            if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
                raise ValueError(f"{where}.{key} must be a list of non-empty strings")
            lists[key] = tuple(value)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.modelName must name the model the server serves")
        model_file = found.get("modelFile", DEFAULT_MODEL_FILE)
        if not isinstance(model_file, str) or not model_file or "/" in model_file:
            raise ValueError(f"{where}.modelFile must be a file name (no folder)")
        pairs: list[tuple[str, str]] = []
        for index, item in enumerate(env if isinstance(env, list) else [None]):
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str)
            ):
                raise ValueError(f"{where}.env[{index}] must be {{name: ..., value: ...}}")
            pairs.append((item["name"], item["value"]))
        return cls(
            lists["command"], name, tuple(pairs), model_file,
            lists["containerCommand"], lists["containerArgs"],
        )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(
    spec: ModelServerCommand, model_file: Path, ports: tuple[int, int, int]
) -> dict[str, str]:
    """The server process's environment: the contract's variables, then the
    command's own values expanded against what precedes them."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    http, grpc, metrics = ports
    env.update(
        {
            MODEL_DIR: str(model_file.parent),
            MODEL_FILE: str(model_file),
            HTTP_PORT: str(http),
            GRPC_PORT: str(grpc),
            METRICS_PORT: str(metrics),
        }
    )
    for name, value in spec.env:
        env[name] = expand(value, env)
    return env


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return "no log"
    return " | ".join(tail) or "no output"


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, model: str, log: Path, timeout: float
) -> None:
    def alive() -> None:
        if process.poll() is not None:
            raise ModelServerError(
                f"the model server exited with code {process.returncode} before it was "
                f"ready: {_log_tail(log)}"
            )

    try:
        oip_client.wait_ready(url, model, timeout, alive=alive)
    except RuntimeError as error:
        if isinstance(error, ModelServerError):
            raise
        raise ModelServerError(f"{error}; its log: {_log_tail(log)}") from None


def stop(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM to the server's process group (servers fork workers), then SIGKILL."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def running_model_server(
    spec: ModelServerCommand, model_file: Path, log: Path, ready_timeout: float = 120
) -> Iterator[str]:
    """The server on ``model_file`` (its folder is the model directory), on
    loopback, until the model is ready; its URL, and it is stopped after."""
    ports = (free_port(), free_port(), free_port())
    env = server_environment(spec, model_file, ports)
    command = [expand(part, env) for part in spec.local_command()]
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
    except OSError as error:
        raise ModelServerError(
            f"the model server command {command[0]!r} cannot run: {error}"
        ) from None
    try:
        url = f"http://127.0.0.1:{ports[0]}"
        _wait_ready(process, url, spec.model_name, log, ready_timeout)
        yield url
    finally:
        stop(process)
