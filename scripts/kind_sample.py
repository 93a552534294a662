"""Put the credit-risk sample on a kind cluster running Modelgate (`make sample`).

    python scripts/kind_sample.py [NAMESPACE]

Uploads the sample data to the in-cluster S3 store (through a kubectl
port-forward), creates the training Jobs' S3 Secret and applies the gate, the
environments and the release with s3:// data and the locally built image.
The e2e tests use the same functions.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "credit-risk"
BUCKET = "modelgate-artifacts"
KEYS = {"AWS_ACCESS_KEY_ID": "kind", "AWS_SECRET_ACCESS_KEY": "kind-secret"}
IMAGE = os.environ.get("MODELGATE_IMAGE", "modelgate:dev")


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def port_forward(namespace: str, target: str, port: int) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    process = subprocess.Popen(
        ["kubectl", "-n", namespace, "port-forward", target, f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(local):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port-forward to {target} did not come up")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{local}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def upload_data() -> None:
    with port_forward("modelgate-s3", "svc/s3", 5000) as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
        )
        buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if BUCKET not in buckets:
            s3.create_bucket(Bucket=BUCKET)
        for name in ("train.csv", "eval.csv"):
            s3.put_object(
                Bucket=BUCKET, Key=f"data/{name}", Body=(SAMPLE / "data" / name).read_bytes()
            )


def documents(namespace: str) -> list[dict[str, Any]]:
    """The sample for a kind cluster: target namespaces per team namespace,
    s3:// data, the locally built image for training. The release is served
    by the reference server (the chart's MODELGATE_SERVER_IMAGE, the same
    local image) and verified by the built-in check, as in the sample."""
    found: list[dict[str, Any]] = []
    for name in ("gate.yaml", "environments.yaml", "release.yaml"):
        for document in yaml.safe_load_all((SAMPLE / name).read_text()):
            if not document:
                continue
            document["metadata"]["namespace"] = namespace
            spec = document["spec"]
            if document["kind"] == "Environment":
                spec["namespace"] = f"{namespace}-{document['metadata']['name']}"
                # A locally built image has no registry digest.
                spec.setdefault("policy", {})["requireDigest"] = False
            if document["kind"] == "ModelRelease":
                training = spec["training"]
                training["image"] = IMAGE
                training["data"]["train"] = f"s3://{BUCKET}/data/train.csv"
                training["data"]["evaluation"] = f"s3://{BUCKET}/data/eval.csv"
            found.append(document)
    return found


def ensure_namespace(name: str) -> None:
    manifest = kubectl("create", "namespace", name, "--dry-run=client", "-o", "yaml")
    kubectl("apply", "-f", "-", stdin=manifest)


def apply(
    namespace: str, edit: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Put the sample in ``namespace``; ``edit`` changes each document first
    (the e2e tests' variations)."""
    # The store's keys where training Jobs run (the release's namespace) and
    # where model servers and verification Jobs run (each environment's).
    targets = [namespace] + [
        d["spec"]["namespace"] for d in documents(namespace) if d["kind"] == "Environment"
    ]
    for target in targets:
        ensure_namespace(target)
        secret = kubectl(
            "-n",
            target,
            "create",
            "secret",
            "generic",
            "modelgate-s3",
            *(f"--from-literal={k}={v}" for k, v in KEYS.items()),
            "--dry-run=client",
            "-o",
            "yaml",
        )
        kubectl("apply", "-f", "-", stdin=secret)
    upload_data()
    applied = documents(namespace)
    for document in applied if edit is not None else []:
        edit(document)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(applied))
    return applied


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "team"
    for document in apply(target):
        print(f"applied {document['kind']}/{document['metadata']['name']} in {target}")
    print(f"watch it: kubectl -n {target} get modelreleases -w")
