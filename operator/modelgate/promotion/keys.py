"""Deterministic keys and names: a change in what they hash means new work."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modelgate.api.modelrelease import (
    ArtifactRecord,
    Evaluation,
    ModelRelease,
    Serving,
)
from modelgate.api.qualitygate import Check, QualityGate, Task
from modelgate.serving.runtime import ModelServerCommand
from modelgate.trainer import contract

JOB_NAME_MAX = 63


# -- keys and names -----------------------------------------------------------


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def gate_training_inputs(release: ModelRelease, gate: QualityGate | None) -> dict[str, str]:
    """Contract variables that come from the gate: the task, the positive label
    and the behaviour tests, which must run where the model is."""
    task = gate.spec.task if gate is not None else release.spec.gate.task
    behavior = [
        {"name": c.name, **c.behavior.wire()}
        for c in effective_checks(release, gate)
        if c.behavior is not None
    ]
    inputs = {
        contract.TASK: str(task),
        contract.POSITIVE_LABEL: gate.spec.positive_label if gate is not None else "1",
    }
    if behavior:
        inputs[contract.BEHAVIOR_TESTS] = json.dumps(behavior, sort_keys=True)
    return inputs


def training_key(
    release: ModelRelease, gate: QualityGate | None, registered: str | None = None, attempt: int = 0
) -> str:
    """Changes exactly when the training inputs change (then it retrains); for
    a registered model, when what is imported changes (its resolved version);
    and when a retry asks for another ``attempt``."""
    spec = release.spec
    source: dict[str, Any]
    if spec.training is not None:
        source = {"training": spec.training.wire()}
    elif spec.artifact is not None:
        source = {"artifact": spec.artifact.wire()}
    else:
        source = {"mlflow": spec.mlflow.wire() if spec.mlflow else None, "version": registered}
    return canonical_hash(
        {
            **source,
            "model": release.spec.model.wire(),
            "gate": gate_training_inputs(release, gate),
            **_attempt(attempt),
        }
    )[:16]


def _attempt(attempt: int) -> dict[str, int]:
    """A retry's part of a key; none for the first run, so keys recorded
    before retries existed still match."""
    return {"attempt": attempt} if attempt else {}


def retried(release: ModelRelease, step: str) -> int:
    """How many times spec.retry ran ``step`` (training, scoring, evaluation) again."""
    record = release.status.retry if release.status is not None else None
    return int(getattr(record, step)) if record is not None else 0


def training_job_name(release: ModelRelease, key: str) -> str:
    suffix = f"-train-{key[:8]}"
    return release.name[: JOB_NAME_MAX - len(suffix)].rstrip("-") + suffix


def scoring_job_name(release: ModelRelease, key: str) -> str:
    suffix = f"-score-{key[:8]}"
    return release.name[: JOB_NAME_MAX - len(suffix)].rstrip("-") + suffix


def effective_checks(release: ModelRelease, gate: QualityGate | None) -> list[Check]:
    checks = list(gate.spec.checks) if gate is not None else []
    names = {c.name for c in checks}
    checks.extend(c for c in release.spec.gate.checks if c.name not in names)
    return checks


def gate_inputs_hash(
    task: Task,
    positive_label: str,
    checks: list[Check],
    predictions: ArtifactRecord,
    attempt: int = 0,
) -> str:
    return canonical_hash(
        {
            "task": str(task),
            "positiveLabel": positive_label,
            "checks": [c.wire() for c in checks],
            "predictions": predictions.sha256,
            **_attempt(attempt),
        }
    )[:16]


def evaluation_key(evaluation: Evaluation) -> str:
    """Hash of how the evaluation Job runs (resources, deadline, parallelism)."""
    return canonical_hash(evaluation.wire())[:12]


def release_key(release: ModelRelease) -> str:
    return f"{release.namespace}/{release.name}"


SERVER_COMMAND = ("python", "-m", "modelgate.server")
VERIFY_COMMAND = ("python", "-m", "modelgate.verify")
IMPORT_COMMAND = ("python", "-m", "modelgate.importer")


def serves_artifact(config: Mapping[str, str]) -> bool:
    """A deployed config that names a complete artifact for the reference server."""
    return all(key in config for key in contract.SERVER_INPUTS)


def model_server_command(release: ModelRelease) -> ModelServerCommand | None:
    """How a release served by a model server of its own runs it: as a local
    process (its local command; none named, an empty one) and in a pod."""
    server = release.spec.server
    if release.spec.serving != Serving.MODEL_SERVER or server is None:
        return None
    return ModelServerCommand(
        command=tuple(server.local.command) if server.local is not None else (),
        model_name=release.spec.served_model_name,
        env=tuple((item.name, item.value) for item in server.env),
        model_file=server.model_file,
        container_command=tuple(server.command),
        container_args=tuple(server.args),
    )


def serving_config(release: ModelRelease, artifacts: list[ArtifactRecord]) -> dict[str, str]:
    """What the server is told to load: the reference server, or a model
    server of the release's own (empty for serving Image)."""
    if release.spec.serving == Serving.IMAGE:
        return {}
    found = {a.name: a for a in artifacts}
    config: dict[str, str] = {}
    for name, uri_key, sha_key in (
        ("model", contract.SERVER_MODEL_URI, contract.SERVER_MODEL_SHA256),
        ("metadata", contract.SERVER_METADATA_URI, contract.SERVER_METADATA_SHA256),
    ):
        if name in found:
            config[uri_key], config[sha_key] = found[name].uri, found[name].sha256
    command = model_server_command(release)
    if command is not None:
        config[contract.MODEL_SERVER] = command.wire()
    return config


def verification_job_name(
    release: ModelRelease,
    environment: str,
    digest: str,
    image: str | None = None,
    salt: str | None = None,
) -> str:
    """Deterministic per release, environment, config and image (a new config,
    or a new reference server image, re-verifies). ``image``: what is deployed,
    when it is not ``spec.image`` (serving ReferenceServer); ``salt``: the
    request that asked for a verification again."""
    served = image or release.spec.image
    parts = [release_key(release), served, environment, digest]
    key = canonical_hash([*parts, salt] if salt else parts)[:8]
    suffix = f"-verify-{key}"
    return release.name[: JOB_NAME_MAX - len(suffix)].rstrip("-") + suffix
