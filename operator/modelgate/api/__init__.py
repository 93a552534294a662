"""Pydantic models of the three custom resources: the one source of truth."""

from modelgate.api.common import Condition, NameValue, ObjectMeta, parse_duration
from modelgate.api.environment import Environment, EnvironmentSpec, EnvironmentStatus
from modelgate.api.loader import (
    KINDS,
    ManifestError,
    Resource,
    format_validation_error,
    load_documents,
    load_paths,
    parse_resource,
)
from modelgate.api.modelrelease import ModelRelease, ModelReleaseSpec, ModelReleaseStatus
from modelgate.api.qualitygate import QualityGate, QualityGateSpec, QualityGateStatus

__all__ = [
    "KINDS",
    "Condition",
    "Environment",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "ManifestError",
    "ModelRelease",
    "ModelReleaseSpec",
    "ModelReleaseStatus",
    "NameValue",
    "ObjectMeta",
    "QualityGate",
    "QualityGateSpec",
    "QualityGateStatus",
    "Resource",
    "format_validation_error",
    "load_documents",
    "load_paths",
    "parse_duration",
    "parse_resource",
]
