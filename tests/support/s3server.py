"""A real S3-compatible server (moto) as a separate process on loopback."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "modelgate-test",
    "AWS_SECRET_ACCESS_KEY": "modelgate-test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


_HANDED_OUT: set[int] = set()


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port() -> int:
    """A port nobody uses right now, below the kernel's ephemeral range.

    A port the kernel picked (bind to 0) is one it may also pick as the local
    port of an outgoing connection before the server binds it: seen as a
    webhook server's "address already in use" while the test talked to the
    API server. Ports below that range are only ever chosen on purpose."""
    # Below Services' NodePorts too (30000-32767): kube-proxy on a real node
    # redirects connections to them, on loopback as well.
    pool = range(20_000, min(30_000, _ephemeral_ports().start))
    chooser = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = chooser.choice(pool)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))  # as the servers bind: on every address
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {pool.start}-{pool.stop - 1}")


def start_moto(log: Path, environment: dict[str, str] | None = None) -> S3Server:
    binary = Path(sys.executable).parent / "moto_server"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CREDENTIALS, **(environment or {})},
        )
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", process=process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.endpoint + "/moto-api/", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto_server did not answer within 30 s")


@contextmanager
def running_s3(log: Path, environment: dict[str, str] | None = None) -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = start_moto(log, environment)
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# moto checks signatures and IAM policies once this many requests have been
# served without (the requests that set up the allowed user below).
AUTH_AFTER = {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}


def allowed_user(server: S3Server, name: str = "trainer") -> dict[str, str]:
    """Credentials of a new IAM user that may do anything on S3; on a server
    started with AUTH_AFTER, every other key (CREDENTIALS included) is refused.
    Must be the first three requests to that server."""
    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint,
        region_name=CREDENTIALS["AWS_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    return {
        **CREDENTIALS,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
