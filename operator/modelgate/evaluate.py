"""The gate evaluator, ``python -m modelgate.evaluate``: the operator runs it
as a Job sized for the data, local mode as a process, so the controller never
opens a dataset or a predictions file.

Configured by the environment:

- ``MODELGATE_EVALUATION``: what to evaluate (the EvaluateGate action as JSON);
- ``MODELGATE_RELEASE``: namespace/name, for the reports;
- ``MODELGATE_OUTPUT_URI``: where ``outputs.json`` goes (``s3://bucket/prefix``
  or a folder): the records of the stored reports and summary;
- the store: ``MODELGATE_STORE_DIR`` (a local content-addressed store) or
  ``MODELGATE_S3_BUCKET`` and ``MODELGATE_S3_PREFIX`` with the S3 settings the
  trainer uses (``MODELGATE_S3_ENDPOINT``, ``AWS_*``).

Exit 0 when the gate was evaluated, whatever its outcome (unreadable inputs
are Inconclusive checks, not a failure); 2 when it could not run (the reason
on stderr, and in the Job's termination message).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelgate.backends.base import ArtifactError, ArtifactStore
from modelgate.backends.evaluation import evaluate_and_store, evaluation_from_payload
from modelgate.backends.local import LocalArtifactStore
from modelgate.backends.s3 import (
    S3ArtifactStore,
    S3Settings,
    download_uri,
    make_client,
    write_uri,
)
from modelgate.gates import TableError

EVALUATION = "MODELGATE_EVALUATION"
RELEASE = "MODELGATE_RELEASE"
OUTPUT_URI = "MODELGATE_OUTPUT_URI"
STORE_DIR = "MODELGATE_STORE_DIR"
S3_BUCKET = "MODELGATE_S3_BUCKET"
S3_PREFIX = "MODELGATE_S3_PREFIX"
OUTPUTS_FILE = "outputs.json"


class EvaluatorError(Exception):
    """The evaluator cannot run as configured (exit 2)."""


def _store(env: Mapping[str, str]) -> tuple[ArtifactStore, Any]:
    if env.get(STORE_DIR):
        return LocalArtifactStore(Path(env[STORE_DIR])), None
    if not env.get(S3_BUCKET):
        raise EvaluatorError(f"set {STORE_DIR} (a local store) or {S3_BUCKET} (S3)")
    settings = S3Settings.from_env(env[S3_BUCKET], env.get(S3_PREFIX) or "modelgate")
    client = make_client(settings)
    return S3ArtifactStore(settings, client), client


def run(env: Mapping[str, str], now: datetime | None = None) -> dict[str, Any]:
    """Evaluate as configured by ``env``; returns the outputs manifest written."""
    for name in (EVALUATION, OUTPUT_URI):
        if not env.get(name):
            raise EvaluatorError(f"{name} is not set")
    try:
        action = evaluation_from_payload(json.loads(env[EVALUATION]))
    except ValueError as error:
        raise EvaluatorError(f"{EVALUATION} is not an evaluation: {error}") from error
    store, client = _store(env)

    with tempfile.TemporaryDirectory(prefix="modelgate-evaluate-") as temporary:
        scratch = Path(temporary)

        def fetch(uri: str, name: str) -> Path:
            """A dataset on local disk: S3 objects stream to the scratch folder."""
            if uri.startswith("s3://"):
                if client is None:
                    raise TableError(f"cannot read {name} data {uri}: no S3 store configured")
                try:
                    return download_uri(client, uri, scratch / f"{name}-{Path(uri).name}")
                except ArtifactError as error:
                    raise TableError(f"cannot read {name} data: {error}") from error
            path = Path(uri.removeprefix("file://"))
            if not path.exists():
                raise TableError(f"cannot read {name} data: {path} does not exist")
            return path

        records = evaluate_and_store(
            env.get(RELEASE, ""), action, store, fetch, scratch, now or datetime.now(UTC)
        )
    manifest = {"artifacts": [r.wire() for r in records]}
    data = json.dumps(manifest, sort_keys=True).encode()
    target = env[OUTPUT_URI].rstrip("/")
    try:
        if target.startswith("s3://"):
            if client is None:
                raise EvaluatorError(f"{OUTPUT_URI} is s3:// and no S3 store is configured")
            write_uri(client, f"{target}/{OUTPUTS_FILE}", data)
        else:
            folder = Path(target)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / OUTPUTS_FILE).write_bytes(data)
    except (ArtifactError, OSError) as error:
        raise EvaluatorError(f"cannot write {target}/{OUTPUTS_FILE}: {error}") from error
    return manifest


def main() -> int:
    try:
        manifest = run(os.environ)
    except (EvaluatorError, ArtifactError) as error:
        print(f"modelgate-evaluate: {error}", file=sys.stderr)
        return 2
    summary = next(a for a in manifest["artifacts"] if a["name"] == "gate-summary")
    print(f"modelgate-evaluate: evaluated; summary sha256 {summary['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
