"""`python -m modelgate.server` as a child process, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import stop
from tests.support.s3server import free_port


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class ModelServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        return call(f"{self.url}{path}", json.dumps(body).encode())

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def call(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def server_command(model: Path | str, metadata: Path | str, port: int, *extra: str) -> list[str]:
    model_sha = sha256(Path(model)) if isinstance(model, Path) else ""
    metadata_sha = sha256(Path(metadata)) if isinstance(metadata, Path) else ""
    return [
        sys.executable,
        "-m",
        "modelgate.server",
        "--model",
        str(model),
        "--model-sha256",
        model_sha,
        "--metadata",
        str(metadata),
        "--metadata-sha256",
        metadata_sha,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


@contextmanager
def running_model_server(
    command_args: list[str], log: Path, env: dict[str, str] | None = None, ready: bool = True
) -> Iterator[ModelServer]:
    """Start the server with ``command_args`` (``--port`` included) and wait
    for /readyz (or, with ``ready=False``, only for /healthz)."""
    port = command_args[command_args.index("--port") + 1]
    out = log.open("ab")
    process = subprocess.Popen(
        command_args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    server = ModelServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        probe = "/readyz" if ready else "/healthz"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if server.get(probe)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the model server did not answer {probe}: {log.read_text()}")
        yield server
    finally:
        stop(process, grace=10)


def start_args(model: Path, metadata: Path, *extra: str) -> list[str]:
    return server_command(model, metadata, free_port(), *extra)
