"""Environment: one deployment stage (staging, production, ...).

Environments are namespaced: a team's environments, gates and releases live in
the team's namespace, so ordinary namespaced RBAC decides who may define or
change a production stage, and two teams can each have a `production`. The
namespace the model is deployed into is a field (`spec.namespace`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from modelgate.api.analysis import Analysis
from modelgate.api.common import (
    CONFIG_KEY_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    Condition,
    Duration,
    NameValue,
    ResourceModel,
    cel,
    cel_extra,
    duration_millis_cel,
    parse_duration,
    parse_time,
)
from modelgate.api.qualitygate import MIN_NOT_ABOVE_MAX
from modelgate.api.rollout import Rollout
from modelgate.api.schedule import CRON_MESSAGE, CRON_PATTERN, Cron, cron_cel


class Tier(StrEnum):
    PREPRODUCTION = "preproduction"
    PRODUCTION = "production"


class DeliveryMode(StrEnum):
    DIRECT = "Direct"
    GITOPS = "GitOps"


class GitStrategy(StrEnum):
    COMMIT = "commit"
    PULL_REQUEST_BRANCH = "pullRequestBranch"


class GitFormat(StrEnum):
    KUSTOMIZE = "kustomize"
    HELM_VALUES = "helm-values"
    MANIFEST = "manifest"


class SecretKeyRef(ApiModel):
    """A key in a Secret of the Environment's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")
    key: str = Field(default="kubeconfig", min_length=1, description="Key within the Secret.")


class SecretRef(ApiModel):
    """A Secret of the Environment's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret.")


# Repository URLs git can push to without a shell: https, ssh (URL or scp-like
# user@host:path) and file.
GIT_URL_PATTERN = r"^(https?://|ssh://|file://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)\S+$"
GIT_PATH_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
GIT_BRANCH_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"


GIT_PATH_RULES = (
    ("!self.matches('(^|/)[.][.]?(/|$)')", "path must not contain '.' or '..' segments"),
    ("!self.matches('^[.]git(/|$)')", "path must not point into .git"),
)


class GitTarget(ApiModel):
    """Where GitOps promotions are committed."""

    repository: str = Field(
        pattern=GIT_URL_PATTERN,
        description="Clone URL: https://, ssh://, user@host:path or file://.",
    )
    branch: str = Field(
        default="main", pattern=GIT_BRANCH_PATTERN, description="Branch the GitOps agent syncs."
    )
    path: str = Field(
        pattern=GIT_PATH_PATTERN,
        max_length=1024,
        description="Directory of this environment in the repository; each model gets "
        "a subdirectory named after it.",
        json_schema_extra=cel_extra(*GIT_PATH_RULES),
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with `token` (and optional `username`) for HTTPS, or "
        "`sshPrivateKey` (and optional `knownHosts`) for SSH; omit for public or file:// "
        "repositories.",
    )
    strategy: GitStrategy = Field(
        default=GitStrategy.COMMIT,
        description="commit: push to the branch; pullRequestBranch: push a branch "
        "modelgate/<environment>/<release> for review and wait until it is merged.",
    )
    format: GitFormat = Field(
        default=GitFormat.KUSTOMIZE,
        description="kustomize: kustomization images entry and ConfigMap generator; "
        "helm-values: a values file; manifest: plain Deployment, Service and ConfigMap.",
    )

    @field_validator("path")
    @classmethod
    def _path_stays_inside(cls, value: str) -> str:
        if any(part in {".", ".."} for part in value.split("/")):
            raise ValueError(f"path {value!r} must not contain '.' or '..' segments")
        if value.split("/", maxsplit=1)[0] == ".git":
            raise ValueError(GIT_PATH_RULES[1][1])
        return value


class ArgoCDApplication(ApiModel):
    """An Argo CD Application whose sync and health tell when a commit is running."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, description="Application name.")
    namespace: str = Field(
        default="argocd", pattern=DNS_LABEL_PATTERN, description="Namespace of the Application."
    )


GIT_NEEDS_GITOPS = (
    "self.mode == 'GitOps' ? has(self.git) : !has(self.git) && !has(self.argoCD)",
    "mode GitOps needs git (repository, path); git and argoCD are only for mode GitOps",
)


class Delivery(ApiModel):
    """How a promoted release reaches the environment."""

    model_config = cel(GIT_NEEDS_GITOPS)

    mode: DeliveryMode = Field(
        default=DeliveryMode.DIRECT,
        description="Direct: the operator applies a Deployment, Service and ConfigMap. "
        "GitOps: the operator commits the image and config to Git; a GitOps agent applies them.",
    )
    git: GitTarget | None = Field(default=None, description="Repository for mode GitOps.")
    argo_cd: ArgoCDApplication | None = Field(
        default=None,
        alias="argoCD",
        description="Judge the rollout by this Argo CD Application's sync and health; "
        "omit to watch the model's Deployment in the target namespace.",
    )

    @model_validator(mode="after")
    def _git_only_for_gitops(self) -> Delivery:
        if self.mode == DeliveryMode.GITOPS and self.git is None:
            raise ValueError(
                "delivery.mode GitOps needs delivery.git with at least repository and path"
            )
        if self.mode == DeliveryMode.DIRECT and (self.git is not None or self.argo_cd is not None):
            raise ValueError(
                "delivery.git and delivery.argoCD apply to mode GitOps only; "
                "set mode: GitOps or remove them"
            )
        return self


class ValueType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    URL = "url"
    DURATION = "duration"


class ConfigRule(ApiModel):
    """A rule the merged configuration must satisfy before every deploy."""

    model_config = cel(MIN_NOT_ABOVE_MAX)

    key: str = Field(pattern=CONFIG_KEY_PATTERN, description="Configuration key the rule checks.")
    required: bool = Field(default=False, description="The key must be present and non-empty.")
    type: ValueType | None = Field(default=None, description="The value must parse as this type.")
    pattern: str | None = Field(
        default=None, description="Regular expression the whole value must match."
    )
    forbid: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Substrings (case-insensitive) or /regex/ the value must not contain.",
    )
    allowed: list[str] | None = Field(default=None, description="The only allowed values.")
    min: float | None = Field(default=None, description="Smallest allowed numeric value.")
    max: float | None = Field(default=None, description="Largest allowed numeric value.")
    url_hosts: list[str] | None = Field(
        default=None,
        description="Allowed URL hosts; '*.example.com' allows subdomains of example.com.",
    )
    secret: bool = Field(
        default=False, description="Mask the value in messages, events and reports."
    )

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"pattern {value!r} is not a valid regex: {error}") from error
        return value

    @field_validator("forbid")
    @classmethod
    def _forbid_regexes_compile(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) > 2 and item.startswith("/") and item.endswith("/"):
                try:
                    re.compile(item[1:-1])
                except re.error as error:
                    raise ValueError(
                        f"forbid entry {item!r} is not a valid regex: {error}"
                    ) from error
        return value

    @model_validator(mode="after")
    def _range_is_satisfiable(self) -> ConfigRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"rule for {self.key}: min ({self.min}) is greater than max ({self.max})"
            )
        return self


# RFC 3339 as both Python and the API server's CEL timestamp() read it.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})$"
)
# A recurring window is found by looking back minute by minute: bounded.
MAX_RECURRING_MILLIS = 31 * 86_400_000
FREEZE_WINDOW_RULES = (
    (
        "(has(self.start) || has(self.end)) != (has(self.schedule) || has(self.duration))",
        "set start and end (absolute) or schedule and duration (recurring)",
    ),
    ("has(self.start) == has(self.end)", "set both start and end"),
    ("has(self.schedule) == has(self.duration)", "set both schedule and duration"),
    (
        "!has(self.start) || !has(self.end) || timestamp(self.end) > timestamp(self.start)",
        "end must be after start",
    ),
    (
        f"!has(self.duration) || {duration_millis_cel('self.duration')} <= {MAX_RECURRING_MILLIS}",
        "duration of a recurring window is at most 31d",
        ".duration",
    ),
    (f"!has(self.schedule) || {cron_cel('self.schedule')}", CRON_MESSAGE, ".schedule"),
)


class FreezeWindow(ApiModel):
    """A time when promotions into the environment are held (UTC).

    Either an absolute range (``start``/``end``, RFC 3339) or a recurring one:
    a five-field cron ``schedule`` with a ``duration``, e.g. every Friday
    18:00 for 64h: ``{schedule: "0 18 * * 5", duration: 64h}``.
    """

    model_config = cel(*FREEZE_WINDOW_RULES)

    name: str = Field(min_length=1, max_length=63, description="Name shown when it holds.")
    start: str | None = Field(
        default=None,
        pattern=RFC3339_PATTERN,
        description="Start of an absolute window (RFC 3339, e.g. 2026-12-24T00:00:00Z).",
    )
    end: str | None = Field(
        default=None, pattern=RFC3339_PATTERN, description="End of an absolute window (RFC 3339)."
    )
    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        max_length=128,
        description="Cron schedule of a recurring one: five fields (minute hour "
        "day-of-month month day-of-week, UTC) separated by single spaces.",
    )
    duration: Duration | None = Field(
        default=None, description="Length of a recurring one (at most 31d)."
    )

    @model_validator(mode="after")
    def _absolute_or_recurring(self) -> FreezeWindow:
        absolute = self.start is not None or self.end is not None
        recurring = self.schedule is not None or self.duration is not None
        if absolute == recurring:
            raise ValueError(
                f"freeze window {self.name!r}: set start and end (absolute) or schedule "
                "and duration (recurring)"
            )
        if absolute:
            if self.start is None or self.end is None:
                raise ValueError(f"freeze window {self.name!r}: set both start and end")
            try:
                start, end = parse_time(self.start), parse_time(self.end)
            except ValueError as error:
                raise ValueError(
                    f"freeze window {self.name!r}: start and end must be RFC 3339 times, "
                    "e.g. 2026-12-24T00:00:00Z"
                ) from error
            if end <= start:
                raise ValueError(f"freeze window {self.name!r}: end must be after start")
        else:
            if self.schedule is None or self.duration is None:
                raise ValueError(f"freeze window {self.name!r}: set both schedule and duration")
            if parse_duration(self.duration).total_seconds() * 1000 > MAX_RECURRING_MILLIS:
                raise ValueError(
                    f"freeze window {self.name!r}: duration of a recurring window is at most 31d"
                )
            try:
                Cron.parse(self.schedule)
            except ValueError as error:
                raise ValueError(f"freeze window {self.name!r}: {error}; {CRON_MESSAGE}") from None
        return self

    def holds(self, now: datetime) -> datetime | None:
        """When the window ends if ``now`` is inside it, else None."""
        if self.start is not None and self.end is not None:
            start, end = parse_time(self.start), parse_time(self.end)
            return end if start <= now < end else None
        assert self.schedule is not None
        assert self.duration is not None
        length = parse_duration(self.duration)
        fired = Cron.parse(self.schedule).last_fire(now.astimezone(UTC), length)
        if fired is None or now >= fired + length:
            return None
        return fired + length


class Policy(ApiModel):
    """What a release must satisfy before it is promoted into this environment."""

    require_approval: bool = Field(
        default=False,
        description="A release needs a recorded approval for this environment before deploy.",
    )
    require_digest: bool | None = Field(
        default=None,
        description="The image must be pinned by digest (@sha256:...). "
        "Default: true for production, false otherwise.",
    )
    soak: Duration | None = Field(
        default=None,
        description="Minimum time a release must have been live here before it is "
        "promoted to the next environment.",
    )
    analysis: Analysis | None = Field(
        default=None,
        description="Prometheus metrics the live model must satisfy while it soaks here, "
        "before promotion to the next environment; a failure rolls back like a failed "
        "verification.",
    )
    rollout: Rollout | None = Field(
        default=None,
        description="How a new release takes over from the one live here: at once (Replace, "
        "the default), or judged against it on live traffic first (Shadow, Canary, "
        "Experiment).",
    )
    freeze_windows: list[FreezeWindow] = Field(
        default_factory=list,
        max_length=20,
        description="Times when promotions into this environment are held.",
    )
    auto_rollback: bool = Field(
        default=True,
        description="When post-deployment verification fails, put the previous release back.",
    )
    allowed_registries: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Image registries (and optional path prefixes) releases may deploy from, "
        "e.g. registry.example.com/ml; empty: any.",
    )
    approvers: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Who may approve promotions into this environment: user names, or "
        "group:<name>. Enforced by the admission webhook (the only place that knows who "
        "asks); empty: anyone RBAC lets edit the release.",
    )


# The name the built-in verification asks the server for.
SERVED_MODEL_NAME = "MODELGATE_VERIFY_MODEL_NAME"


class ServedPredictions(ApiModel):
    """The built-in verification: the deployed model must answer like the one
    that passed the gate (train/serve skew) and fast enough. It asks through
    the Open Inference Protocol (v2 REST), so any server that speaks it is
    verified the same way."""

    model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        alias="modelName",
        description="The name the server serves the model under (its "
        "/v2/models/<name>); omit for the release's model name, as the reference "
        "server serves it.",
    )

    sample_size: int = Field(
        default=200,
        ge=1,
        le=100_000,
        alias="sampleSize",
        description="Evaluation rows sent to the deployed model, one request each.",
    )
    max_mismatch_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        alias="maxMismatchRate",
        description="Share of rows whose served answer may differ from the gated prediction.",
    )
    score_tolerance: float = Field(
        default=1e-6,
        ge=0.0,
        alias="scoreTolerance",
        description="Largest difference between a served and a gated score that still matches.",
    )
    max_latency: Duration | None = Field(
        default=None,
        alias="maxLatency",
        description="Limit on the p99 latency of those requests, e.g. 200ms; omit for none.",
    )

    def env(self) -> dict[str, str]:
        """The variables `python -m modelgate.verify` reads."""
        found = {
            "MODELGATE_VERIFY_SAMPLE": str(self.sample_size),
            "MODELGATE_VERIFY_MAX_MISMATCH_RATE": repr(self.max_mismatch_rate),
            "MODELGATE_VERIFY_SCORE_TOLERANCE": repr(self.score_tolerance),
        }
        if self.model_name is not None:
            found[SERVED_MODEL_NAME] = self.model_name
        if self.max_latency is not None:
            found["MODELGATE_VERIFY_MAX_LATENCY"] = self.max_latency
        return found


VERIFICATION_ONE_KIND = (
    "has(self.image) != has(self.servedPredictions)",
    "set either image (your own test) or servedPredictions (the built-in check), not both",
)
COMMAND_FOR_AN_IMAGE = (
    "!has(self.servedPredictions) || ((!has(self.command) || size(self.command) == 0) "
    "&& (!has(self.args) || size(self.args) == 0))",
    "command and args belong to an image verification; servedPredictions runs the built-in check",
)


# A verification's exit code when the model failed the check: final, never
# tried again (any other non-zero code: the check could not run).
VERIFICATION_FAILED_EXIT_CODE = 1


class Verification(ApiModel):
    """A post-deployment test run as a Job against the freshly deployed model.

    Either your own container (``image``): it gets MODELGATE_VERIFY_URL (the
    model's Service), MODELGATE_ENVIRONMENT, MODELGATE_RELEASE,
    MODELGATE_MODEL_NAME, MODELGATE_PREDICTIONS_URI/_SHA256 and
    MODELGATE_METADATA_URI/_SHA256; exit code 0 means verified, 1 that the
    model failed the check, any other that the check could not run (tried
    again, up to ``attempts``); or ``servedPredictions``: the operator's own
    check compares the served answers (Open Inference Protocol) with the
    gated predictions, with the same exit codes.
    """

    model_config = cel(VERIFICATION_ONE_KIND, COMMAND_FOR_AN_IMAGE)

    image: str | None = Field(
        default=None, min_length=1, description="Verification container image."
    )
    served_predictions: ServedPredictions | None = Field(
        default=None,
        alias="servedPredictions",
        description="The built-in check of served answers against the gated predictions.",
    )
    command: list[str] = Field(default_factory=list, description="Container command.")
    args: list[str] = Field(default_factory=list, description="Container arguments.")
    timeout: Duration = Field(
        default="10m", description="Longest a verification may run, all its attempts together."
    )
    attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description=(
            "How many times a verification that could not run is tried before it counts "
            "as failed: a run that exits with a code other than 0 and 1 (a server it could "
            "not reach, a store that did not answer) or whose pod was lost with its node. "
            "Exit code 1, the model failing the check, is final at once."
        ),
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Verification:
        if (self.image is None) == (self.served_predictions is None):
            raise ValueError(VERIFICATION_ONE_KIND[1])
        if self.served_predictions is not None and (self.command or self.args):
            raise ValueError(COMMAND_FOR_AN_IMAGE[1])
        return self


class LeakageCheck(ApiModel):
    """Cross-environment leakage detection: no rule needed.

    A config value destined for this environment must not name another
    environment of the namespace: its name, namespace, the hosts and buckets
    in its config, its ``identifiers`` and ``markers``. Identifiers shared by
    both environments do not count.
    """

    enabled: bool = Field(default=True, description="Check this environment's config.")
    ignore_keys: list[str] = Field(
        default_factory=list, description="Config keys allowed to name other environments."
    )


class EnvironmentSpec(ApiModel):
    """Desired state of an Environment."""

    tier: Tier = Field(description="preproduction or production.")
    promotes_from: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        description="Environment a release must have reached before this one.",
    )
    namespace: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace the model is deployed to."
    )
    kubeconfig_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Kubeconfig of another cluster; omit for this cluster."
    )
    delivery: Delivery = Field(default_factory=Delivery, description="Delivery mode.")
    config: list[NameValue] = Field(
        default_factory=list, description="Configuration of this environment."
    )
    config_rules: list[ConfigRule] = Field(
        default_factory=list,
        max_length=200,
        description="Rules checked on the merged config before deploy.",
    )
    policy: Policy = Field(default_factory=Policy, description="Promotion policy.")
    identifiers: list[str] = Field(
        default_factory=list,
        description="Hosts, buckets or other names that belong to this environment only "
        "(those in its own config are derived automatically).",
    )
    markers: list[str] = Field(
        default_factory=list,
        description="Words that mark this environment, e.g. backtest: a value for another "
        "environment containing one is a leak.",
    )
    leakage: LeakageCheck = Field(
        default_factory=LeakageCheck, description="Cross-environment leakage detection."
    )
    verification: Verification | None = Field(
        default=None, description="Post-deployment test; omit to trust the rollout alone."
    )
    history_limit: int = Field(
        default=10, ge=1, le=100, description="Promotions kept in status.history."
    )

    @field_validator("config")
    @classmethod
    def _unique_config_keys(cls, value: list[NameValue]) -> list[NameValue]:
        _reject_duplicate_names([item.name for item in value], "config")
        return value

    @property
    def requires_digest(self) -> bool:
        if self.policy.require_digest is None:
            return self.tier == Tier.PRODUCTION
        return self.policy.require_digest


def _reject_duplicate_names(names: list[str], field: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{field}: key {name!r} appears twice; keep one entry per key")
        seen.add(name)


class Promotion(ApiModel):
    """One promotion into the environment, kept in its history."""

    release: str = Field(description="ModelRelease name.")
    model_version: str | None = Field(default=None, description="Model version.")
    image: str = Field(description="Image deployed.")
    config_hash: str = Field(description="SHA-256 of the merged config.")
    deployed_at: str = Field(description="When it went live (RFC 3339).")
    rolled_back: bool = Field(
        default=False, description="True for an entry that put a previous release back."
    )
    reason: str | None = Field(
        default=None,
        max_length=2000,
        description="Why a rollback put it back: the failed verification, or the failed "
        "analysis with its queries, values and thresholds.",
    )
    revision: str | None = Field(
        default=None, description="GitOps: the commit of this promotion or rollback."
    )
    rollout: int | None = Field(
        default=None,
        ge=1,
        description="Which deployment of the release here: 1 for its first, more for the "
        "config changes rolled out after it.",
    )
    judged: str | None = Field(
        default=None,
        max_length=2000,
        description="How it was judged against the release it replaced on live traffic "
        "(policy.rollout): the strategy, the verdict and its numbers.",
    )


class EnvironmentStatus(ApiModel):
    """Observed state of an Environment."""

    observed_generation: int | None = Field(default=None, description="Generation observed.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready and others.")
    live_release: str | None = Field(default=None, description="ModelRelease live here.")
    live_image: str | None = Field(default=None, description="Image live here.")
    live_since: str | None = Field(default=None, description="Since when (RFC 3339).")
    config_hash: str | None = Field(default=None, description="SHA-256 of the live config.")
    history: list[Promotion] = Field(
        default_factory=list, description="The last promotions, newest first."
    )


class Environment(ResourceModel):
    """A deployment stage with its target, configuration, rules and policy."""

    kind: Literal["Environment"] = Field(default="Environment", description="Environment.")
    spec: EnvironmentSpec = Field(description="Target, config, rules and policy.")
    status: EnvironmentStatus | None = Field(default=None, description="Observed state.")
