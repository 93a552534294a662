"""Parse manifests (YAML files, folders, dicts) into typed resources.

Every error names the document, the field path in the manifest's own spelling
(``spec.checks[0].metric.name``) and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelgate import API_VERSION
from modelgate.api.common import DURATION_PATTERN
from modelgate.api.environment import RFC3339_PATTERN, Environment
from modelgate.api.modelrelease import ModelRelease
from modelgate.api.qualitygate import QualityGate
from modelgate.api.schedule import CRON_MESSAGE, CRON_PATTERN

Resource = Environment | QualityGate | ModelRelease

KINDS: dict[str, type[Environment] | type[QualityGate] | type[ModelRelease]] = {
    "Environment": Environment,
    "QualityGate": QualityGate,
    "ModelRelease": ModelRelease,
}

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be accepted, with every problem spelled out."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class LoadedResource:
    """A parsed resource and where it came from (relative paths resolve there)."""

    resource: Resource
    source: str
    base_dir: Path


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")) or part in {"str", "int", "float"}:
            # pydantic's internal validator steps, not fields the user wrote.
            continue
        else:
            path += f".{part}" if path else part
    return path or "(document)"


# What a value refused by one of these patterns should look like.
PATTERN_HINTS = {
    DURATION_PATTERN: "a duration is digits (at most six a part) followed by ms, s, m, h or d, "
    "e.g. '30m' or '1h30m'",
    CRON_PATTERN: CRON_MESSAGE,
    RFC3339_PATTERN: "a time is RFC 3339 in UTC or with an offset, e.g. 2026-12-24T00:00:00Z",
}


def format_validation_error(error: ValidationError) -> list[str]:
    """One readable line per problem: ``field.path: message``."""
    problems = []
    for item in error.errors():
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        hint = PATTERN_HINTS.get(str((item.get("ctx") or {}).get("pattern")))
        if item["type"] == "string_pattern_mismatch" and hint is not None:
            message = f"{item['input']!r} does not fit: {hint}"
        elif item["type"] == "extra_forbidden":
            message = (
                "unknown field: remove it or check its spelling (kubectl explain shows fields)"
            )
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(f"{_field_path(tuple(item['loc']))}: {message}")
    return problems


def parse_resource(document: dict[str, Any], source: str = "<manifest>") -> Resource:
    """Validate one manifest dictionary into its typed resource."""
    if not isinstance(document, dict):
        raise ManifestError(source, ["a manifest must be a mapping with apiVersion and kind"])
    kind = document.get("kind")
    api_version = document.get("apiVersion")
    if kind not in KINDS:
        raise ManifestError(
            source,
            [f"kind: {kind!r} is not a Modelgate kind; use one of {', '.join(KINDS)}"],
        )
    if api_version != API_VERSION:
        raise ManifestError(
            source, [f"apiVersion: {api_version!r} is not supported; use {API_VERSION}"]
        )
    name = (document.get("metadata") or {}).get("name", "?")
    where = f"{source} ({kind} {name})"
    try:
        return KINDS[kind].model_validate(document)
    except ValidationError as error:
        raise ManifestError(where, format_validation_error(error)) from None


def load_documents(text: str, source: str = "<manifest>") -> list[dict[str, Any]]:
    """The YAML documents of one stream, skipping empty ones."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise ManifestError(source, [f"not valid YAML: {error}"]) from None
    for document in documents:
        if not isinstance(document, dict):
            raise ManifestError(source, ["every YAML document must be a mapping"])
    return documents


def iter_manifest_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
        elif path.exists():
            yield path
        else:
            raise ManifestError(str(path), ["no such file or directory"])


def load_paths(paths: Iterable[Path], skip_foreign: bool = True) -> list[LoadedResource]:
    """Load every Modelgate resource from files and folders.

    Documents of other API groups (a Namespace, a Secret) are skipped when
    ``skip_foreign``; every invalid Modelgate document is reported together.
    """
    loaded: list[LoadedResource] = []
    problems: list[str] = []
    for file in iter_manifest_files(paths):
        for index, document in enumerate(load_documents(file.read_text(), str(file))):
            group = str(document.get("apiVersion", "")).split("/")[0]
            if skip_foreign and group != API_VERSION.split("/")[0]:
                continue
            source = f"{file}#{index}"
            try:
                loaded.append(LoadedResource(parse_resource(document, source), source, file.parent))
            except ManifestError as error:
                problems.extend(f"{error.source}: {p}" for p in error.problems)
    if problems:
        raise ManifestError("manifests", problems)
    return loaded
