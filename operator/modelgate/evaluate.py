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
  trainer uses (``MODELGATE_S3_ENDPOINT``, ``AWS_*``);
- sharded (``spec.evaluation.parallelism`` above 1): a pod of the Indexed Job
  has ``MODELGATE_SHARDS=N`` and Kubernetes' ``JOB_COMPLETION_INDEX``; it
  reads only its shard, stores its partial statistics (artifact
  ``gate-partial``) and writes their record to ``partials/<index>.json``
  under the output. The merge Job has ``MODELGATE_MERGE=N``: it reads the N
  records, verifies and merges the partials, and writes the reports and
  ``outputs.json`` as one pod would.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends.base import ArtifactError, ArtifactStore
from modelgate.backends.evaluation import (
    evaluate_action,
    merge_partials,
    shard_partial,
    store_results,
)
from modelgate.backends.evaluation_job import evaluation_from_payload
from modelgate.backends.local import LocalArtifactStore
from modelgate.backends.s3 import (
    S3ArtifactStore,
    S3Settings,
    download_uri,
    make_client,
    read_uri_bounded,
    write_uri,
)
from modelgate.gates.source import Shard
from modelgate.gates.table import TableError

EVALUATION = "MODELGATE_EVALUATION"
RELEASE = "MODELGATE_RELEASE"
OUTPUT_URI = "MODELGATE_OUTPUT_URI"
STORE_DIR = "MODELGATE_STORE_DIR"
S3_BUCKET = "MODELGATE_S3_BUCKET"
S3_PREFIX = "MODELGATE_S3_PREFIX"
SHARDS = "MODELGATE_SHARDS"
MERGE = "MODELGATE_MERGE"
COMPLETION_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in an Indexed Job's pods
OUTPUTS_FILE = "outputs.json"
PARTIAL_NAME = "gate-partial"
RECORD_LIMIT = 64 * 1024


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
    role, count, index = _role(env)
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

        release, when = env.get(RELEASE, ""), now or datetime.now(UTC)
        output = _Output(env[OUTPUT_URI].rstrip("/"), client)
        if role == "shard":
            shard = Shard(index, count)
            data = shard_partial(action, store, fetch, scratch, shard)
            record = store.put_bytes(data, PARTIAL_NAME)
            manifest = {"artifacts": [record.wire()], "shard": index, "shards": count}
            output.write(f"partials/{index}.json", json.dumps(manifest, sort_keys=True).encode())
            return manifest
        if role == "merge":
            partials = [store.get_bytes(output.partial_record(i)) for i in range(count)]
            try:
                result = merge_partials(action, store, partials)
            except ValueError as error:
                raise EvaluatorError(f"cannot merge the shards: {error}") from error
        else:
            result = evaluate_action(action, store, fetch, scratch)
        records = store_results(release, action, result, store, when)
    manifest = {"artifacts": [r.wire() for r in records]}
    output.write(OUTPUTS_FILE, json.dumps(manifest, sort_keys=True).encode())
    return manifest


def _count(env: Mapping[str, str], name: str) -> int:
    try:
        count = int(env[name])
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise EvaluatorError(f"{name} must be a number of shards from 1 to 64, not {env[name]!r}")
    return count


def _role(env: Mapping[str, str]) -> tuple[str, int, int]:
    """("single" | "shard" | "merge", number of shards, this shard's index)."""
    if env.get(SHARDS) and env.get(MERGE):
        raise EvaluatorError(f"set {SHARDS} (a shard) or {MERGE} (the merge step), not both")
    if env.get(MERGE):
        return "merge", _count(env, MERGE), 0
    if not env.get(SHARDS):
        return "single", 1, 0
    count = _count(env, SHARDS)
    raw = env.get(COMPLETION_INDEX, "")
    if not raw.isdigit() or int(raw) >= count:
        raise EvaluatorError(
            f"{COMPLETION_INDEX} must be this pod's index from 0 to {count - 1} "
            f"(an Indexed Job sets it), not {raw!r}"
        )
    return "shard", count, int(raw)


@dataclass
class _Output:
    """The evaluation's output folder: ``s3://bucket/prefix`` or a path."""

    target: str
    client: Any

    def _s3(self) -> Any:
        if self.client is None:
            raise EvaluatorError(f"{OUTPUT_URI} is s3:// and no S3 store is configured")
        return self.client

    def write(self, name: str, data: bytes) -> None:
        uri = f"{self.target}/{name}"
        try:
            if self.target.startswith("s3://"):
                write_uri(self._s3(), uri, data)
            else:
                path = Path(uri)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        except (ArtifactError, OSError) as error:
            raise EvaluatorError(f"cannot write {uri}: {error}") from error

    def read(self, name: str) -> bytes:
        uri = f"{self.target}/{name}"
        try:
            if self.target.startswith("s3://"):
                return read_uri_bounded(self._s3(), uri, RECORD_LIMIT)
            path = Path(uri)
            if path.stat().st_size > RECORD_LIMIT:
                raise EvaluatorError(f"{uri} is over {RECORD_LIMIT} bytes")
            return path.read_bytes()
        except (ArtifactError, OSError) as error:
            raise EvaluatorError(f"cannot read {uri}: {error}") from error

    def partial_record(self, index: int) -> ArtifactRecord:
        """Shard ``index``'s partial, by the record it wrote."""
        data = self.read(f"partials/{index}.json")
        try:
            [record] = json.loads(data)["artifacts"]
            parsed = ArtifactRecord.model_validate(record)
        except (ValueError, KeyError, TypeError) as error:
            raise EvaluatorError(f"shard {index} wrote no partial record: {error}") from error
        if parsed.name != PARTIAL_NAME:
            raise EvaluatorError(f"shard {index}'s record is a {parsed.name}, not a partial")
        return parsed


def main() -> int:
    try:
        manifest = run(os.environ)
    except (EvaluatorError, ArtifactError) as error:
        print(f"modelgate-evaluate: {error}", file=sys.stderr)
        return 2
    if "shard" in manifest:
        print(f"modelgate-evaluate: shard {manifest['shard']} of {manifest['shards']} evaluated")
        return 0
    summary = next(a for a in manifest["artifacts"] if a["name"] == "gate-summary")
    print(f"modelgate-evaluate: evaluated; summary sha256 {summary['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
