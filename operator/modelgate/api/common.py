"""Shapes shared by the three custom resources (Kubernetes API conventions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic.alias_generators import to_camel

# A DNS-1123 label: what Kubernetes accepts for most object names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A DNS-1123 subdomain: names of Secrets, Jobs and other objects.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A time as Kubernetes writes one (RFC 3339), to the second or finer, with
# Z or an offset.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"  # date and time
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"  # fraction and zone
)
# Durations are strings, as in Kubernetes and Argo: 30s, 15m, 1h30m, 2d. At
# most six digits a part and 32 characters: no sum overflows a timedelta or
# the API server's 64-bit CEL integers.
DURATION_PATTERN = r"^([0-9]{1,6}(ms|s|m|h|d))+$"
DURATION_MAX_LENGTH = 32
# Object names: a DNS subdomain, and short enough for the names derived from
# them (Jobs, Deployments, labels).
NAME_MAX_LENGTH = 63
# Config keys follow environment-variable naming: they end up as env vars.
CONFIG_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``1h30m`` (units ms, s, m, h, d)."""
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(
            f"invalid duration {text!r}: use digits (at most six a part) followed by ms, s, "
            "m, h or d, e.g. '30m' or '1h30m'"
        )
    total = timedelta()
    for amount, unit in _DURATION_PART.findall(text):
        total += int(amount) * _DURATION_UNITS[unit]
    return total


# Milliseconds per unit, for CEL rules that compare durations.
_UNIT_MILLIS = (("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000))


def duration_millis_cel(field: str) -> str:
    """A CEL expression: the duration in the string ``field`` (a pattern-valid
    Duration) in milliseconds, as :func:`parse_duration` reads it."""
    value = "int(p.substring(0, size(p) - {n}))"
    choice = ""
    for unit, millis in _UNIT_MILLIS[:-1]:
        choice += f"p.endsWith('{unit}') ? {value.format(n=len(unit))} * {millis} : "
    choice += f"{value.format(n=1)} * {_UNIT_MILLIS[-1][1]}"
    return f"{field}.findAll('[0-9]+(ms|s|m|h|d)').map(p, {choice}).sum()"


Rule = tuple[str, str] | tuple[str, str, str]  # (rule, message[, fieldPath])


def cel(*rules: Rule) -> ConfigDict:
    """Server-side validation (CEL) on a model, mirroring its validators, so
    the API server refuses the same input even without the admission webhook."""
    return ConfigDict(json_schema_extra=cel_extra(*rules))


def cel_extra(*rules: Rule) -> dict[str, JsonValue]:
    """The same on one field: its ``json_schema_extra``."""
    entries: list[JsonValue] = []
    for rule, message, *path in rules:
        entry: dict[str, JsonValue] = {"rule": rule, "message": message}
        if path:
            entry["fieldPath"] = path[0]
        entries.append(entry)
    return {"x-kubernetes-validations": entries}


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp such as ``2026-11-22T10:00:00Z``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiModel(BaseModel):
    """Base of every API shape: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=DURATION_MAX_LENGTH,
        description="A duration: digits followed by ms, s, m, h or d, e.g. '30m', '1h30m' "
        "(at most six digits a part).",
    ),
]


class NameValue(ApiModel):
    """One configuration entry: lists of named items rather than maps."""

    name: str = Field(
        pattern=CONFIG_KEY_PATTERN,
        max_length=253,
        description="Configuration key, delivered to the model as an environment variable.",
    )
    value: str = Field(description="Configuration value (always a string, like an env var).")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition: one observation of one aspect of the object's state."""

    type: str = Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
        description="Type of condition in CamelCase, e.g. Ready, Trained, GatePassed.",
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="Status of the condition: True, False or Unknown."
    )
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        min_length=1,
        max_length=1024,
        description="Programmatic identifier in CamelCase for the last transition.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable message with details about the transition and how to fix it.",
    )
    last_transition_time: str = Field(
        description="When the condition last changed status (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was set from.",
    )


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the operator reads; the rest passes through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Name of the object."
    )
    namespace: str | None = Field(
        default=None, pattern=DNS_LABEL_PATTERN, description="Namespace of the object."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    generation: int | None = Field(default=None, description="Generation of the spec.")
    uid: str | None = Field(default=None, description="Unique id set by the API server.")
    creation_timestamp: str | None = Field(default=None, description="Creation time.")

    @field_validator("name")
    @classmethod
    def _name_fits_derived_names(cls, value: str) -> str:
        # Mirrored by the CRDs' metadata.name maxLength (api/crdgen.py).
        if len(value) > NAME_MAX_LENGTH:
            raise ValueError(
                f"{value!r} is {len(value)} characters long: use at most {NAME_MAX_LENGTH} so "
                "that derived Job and Deployment names stay valid"
            )
        return value


class ResourceModel(BaseModel):
    """Base of the three top-level kinds: apiVersion, kind, metadata, spec, status."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    api_version: Literal["modelgate.dev/v1alpha1"] = Field(
        default="modelgate.dev/v1alpha1", description="API version: modelgate.dev/v1alpha1."
    )
    metadata: ObjectMeta = Field(description="Standard object metadata.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def generation(self) -> int:
        return self.metadata.generation or 1

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
