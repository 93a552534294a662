"""Analysis: what the live model's metrics in Prometheus must show while a
release soaks in an environment, before it is promoted on (and what makes it
roll back). Part of an Environment's policy; its progress is part of a
ModelRelease's status."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from modelgate.api.common import (
    DNS_LABEL_PATTERN,
    ApiModel,
    Duration,
    cel,
    cel_extra,
    duration_millis_cel,
    parse_duration,
)
from modelgate.api.qualitygate import MIN_NOT_ABOVE_MAX

# What a query may name, each replaced by the release's value before it runs.
PLACEHOLDERS = ("release", "model", "version", "environment", "namespace")
# ASCII blanks, not \s: the API server's regexes (RE2) and Python's differ on
# Unicode whitespace, and the CEL mirror must find the same placeholders.
_BLANKS = r"[ \t\n\r\f\v]*"
PLACEHOLDER_PATTERN = re.compile(r"\{\{" + _BLANKS + r"([A-Za-z_]+)" + _BLANKS + r"\}\}")
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"


def _ranges(chars: list[str]) -> str:
    """A character class's body for ``chars`` (in _NAME_CHARS order): runs as a-z."""
    runs: list[list[str]] = []
    for char in chars:
        if runs and ord(char) == ord(runs[-1][-1]) + 1:
            runs[-1].append(char)
        else:
            runs.append([char])
    return "".join(run[0] if len(run) < 3 else f"{run[0]}-{run[-1]}" for run in runs)


def _other_names(words: tuple[str, ...], prefix: str = "") -> str:
    """A regex (no lookahead: RE2 has none) for the names of [A-Za-z_]+ that
    start after ``prefix`` and are not one of ``words``."""
    children = sorted({w[len(prefix)] for w in words if w.startswith(prefix) and w != prefix})
    others = _ranges([c for c in _NAME_CHARS if c not in children])
    options = [f"[{others}][A-Za-z_]*"] if others else []
    options += [re.escape(c) + _other_names(words, prefix + c) for c in children]
    if prefix and prefix not in words:
        options.append("")  # the name ends before it is one of the words
    return "(" + "|".join(options) + ")"


def _listed(names: tuple[str, ...]) -> str:
    marked = ["{{" + name + "}}" for name in names]
    return ", ".join(marked[:-1]) + " and " + marked[-1]


def known_placeholders(names: tuple[str, ...]) -> tuple[str, str]:
    """The CEL rule refusing a query with a placeholder not in ``names``: a
    placeholder of any other name is one linear regex, not a costly loop per
    match."""
    unknown = r"\{\{" + _BLANKS + _other_names(names) + _BLANKS + r"\}\}"
    return (
        "!self.matches('" + unknown.replace("\\", "\\\\") + "')",
        f"a query may name only {_listed(names)}",
    )


def unknown_placeholders(query: str, names: tuple[str, ...]) -> str | None:
    """Why ``query`` may not run (a placeholder not in ``names``), or None."""
    unknown = sorted({m.group(1) for m in PLACEHOLDER_PATTERN.finditer(query)} - set(names))
    if not unknown:
        return None
    return (
        f"query names {', '.join('{{' + u + '}}' for u in unknown)}; a query may name only "
        f"{_listed(names)}"
    )


KNOWN_PLACEHOLDERS = known_placeholders(PLACEHOLDERS)
INTERVAL_AT_LEAST_A_SECOND = (
    f"!has(self.interval) || {duration_millis_cel('self.interval')} >= 1000",
    "interval is shorter than 1s: Prometheus scrapes are not that fast",
    ".interval",
)

ONE_BOUND = (
    "has(self.min) || has(self.max)",
    "a metric needs min, max or both: the success condition is min <= value <= max",
)
COUNT_OR_DURATION = (
    "!(has(self.count) && has(self.duration))",
    "set count (measurements) or duration (how long to measure), not both",
)


class NoData(StrEnum):
    """What a query that returns no sample (an empty result, NaN) counts as."""

    INCONCLUSIVE = "Inconclusive"
    PASSED = "Passed"
    FAILED = "Failed"


class AnalysisMetric(ApiModel):
    """One PromQL query, measured at intervals while the release soaks here.

    A measurement passes when ``min <= value <= max``. More than
    ``failureLimit`` failed measurements fail the analysis (the release is
    rolled back); more than ``inconclusiveLimit`` inconclusive ones make it
    Inconclusive, which blocks promotion; once every measurement is taken
    and neither limit was passed, the metric has passed.
    """

    model_config = cel(MIN_NOT_ABOVE_MAX, ONE_BOUND, COUNT_OR_DURATION, INTERVAL_AT_LEAST_A_SECOND)

    name: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="Name, unique in the analysis."
    )
    query: str = Field(
        min_length=1,
        max_length=4000,
        description="PromQL returning one number (a scalar, or the first sample of an instant "
        "vector). {{release}}, {{model}}, {{version}}, {{environment}} and {{namespace}} are "
        "replaced by the release's values.",
        json_schema_extra=cel_extra(KNOWN_PLACEHOLDERS),
    )
    interval: Duration = Field(default="1m", description="Time between measurements.")
    count: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Measurements to take; default 1 unless duration is set.",
    )
    duration: Duration | None = Field(
        default=None,
        description="Measure for this long instead of a count (one measurement per interval).",
    )
    initial_delay: Duration | None = Field(
        default=None,
        description="Wait this long after the release went live before the first measurement "
        "(give rate() windows live data).",
    )
    min: float | None = Field(default=None, description="Smallest passing value (inclusive).")
    max: float | None = Field(default=None, description="Largest passing value (inclusive).")
    failure_limit: int = Field(
        default=0, ge=0, le=1000, description="Failed measurements tolerated."
    )
    inconclusive_limit: int = Field(
        default=0, ge=0, le=1000, description="Inconclusive measurements tolerated."
    )
    no_data: NoData = Field(
        default=NoData.INCONCLUSIVE,
        description="What a query with no sample counts as: Inconclusive (default: it blocks, "
        "fail closed), Passed or Failed.",
    )

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        problem = unknown_placeholders(value, PLACEHOLDERS)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _bounds_and_length(self) -> AnalysisMetric:
        if self.min is None and self.max is None:
            raise ValueError(ONE_BOUND[1])
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(MIN_NOT_ABOVE_MAX[1])
        if self.count is not None and self.duration is not None:
            raise ValueError(COUNT_OR_DURATION[1])
        if parse_duration(self.interval).total_seconds() < 1:
            raise ValueError(INTERVAL_AT_LEAST_A_SECOND[1])
        return self

    @property
    def measurements(self) -> int:
        """How many measurements the metric takes."""
        if self.count is not None:
            return self.count
        if self.duration is not None:
            span = parse_duration(self.duration) / parse_duration(self.interval)
            return max(1, min(1000, int(span)))
        return 1


class Analysis(ApiModel):
    """Metrics the live model must satisfy while it soaks in this environment."""

    metrics: list[AnalysisMetric] = Field(
        min_length=1, max_length=20, description="The metrics; all must pass."
    )

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[AnalysisMetric]) -> list[AnalysisMetric]:
        check_unique_names([m.name for m in value])
        return value


def check_unique_names(names: list[str]) -> None:
    """Refuse a list of metrics that names one twice, naming the repeats."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"metric names repeat: {', '.join(repeated)}; give each its own")


# -- status --------------------------------------------------------------------


class AnalysisPhase(StrEnum):
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class Measurement(ApiModel):
    """One measurement of one metric."""

    at: str = Field(description="When it was taken (RFC 3339).")
    value: float | None = Field(default=None, description="The value; none when no data.")
    outcome: AnalysisPhase = Field(description="Passed, Failed or Inconclusive.")


class MetricProgress(ApiModel):
    """Where one metric of the analysis stands."""

    name: str = Field(description="Metric name.")
    query: str = Field(description="The query as it ran (placeholders replaced).")
    phase: AnalysisPhase = Field(description="Running, Passed, Failed or Inconclusive.")
    min: float | None = Field(default=None, description="Smallest passing value.")
    max: float | None = Field(default=None, description="Largest passing value.")
    taken: int = Field(default=0, ge=0, description="Measurements taken.")
    wanted: int = Field(default=1, ge=1, description="Measurements the metric takes.")
    failed: int = Field(default=0, ge=0, description="Failed measurements.")
    inconclusive: int = Field(default=0, ge=0, description="Inconclusive measurements.")
    measurements: list[Measurement] = Field(
        default_factory=list, description="The latest measurements (at most 10), oldest first."
    )
    error: str | None = Field(
        default=None, description="Why the last query could not be answered (retried)."
    )


class AnalysisProgress(ApiModel):
    """The analysis of a release in one environment."""

    phase: AnalysisPhase = Field(description="Running, Passed, Failed or Inconclusive.")
    spec_hash: str = Field(
        description="SHA-256 of the analysis spec it runs: an edited analysis starts again."
    )
    started_at: str = Field(description="When the release went live here (RFC 3339).")
    metrics: list[MetricProgress] = Field(default_factory=list, description="Per metric.")
    message: str | None = Field(default=None, description="The verdict, or what it waits for.")
