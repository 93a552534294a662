"""Rollout: how a new release takes over from the one live in an environment.

``Replace`` swaps it in at once (the default). The other strategies run the
new release (the challenger) beside the live one (the champion) and judge it
on the same live traffic before it takes over: ``Shadow`` sends it a copy of
every request and compares its answers; ``Canary`` gives it a growing share
in steps, each judged before the next; ``Experiment`` holds a fixed split
until a sequential test decides. Part of an Environment's policy; the
progress is part of a ModelRelease's status."""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from modelgate.api.analysis import (
    PLACEHOLDERS,
    check_unique_names,
    known_placeholders,
    unknown_placeholders,
)
from modelgate.api.common import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    Duration,
    cel,
    cel_extra,
    duration_millis_cel,
    parse_duration,
)

# An experiment's queries name the arm they measure and the window since the
# arms were split (a PromQL range such as 3600s), besides the analysis's names.
ARM_PLACEHOLDERS = (*PLACEHOLDERS, "arm", "window")
CHAMPION, CHALLENGER = "champion", "challenger"
# RFC 9110 token: what an HTTP header name may be.
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
_BLANKS = r"[ \t\n\r\f\v]*"
_ARM = r"\{\{" + _BLANKS + "arm" + _BLANKS + r"\}\}"
ARM_PATTERN = _ARM.replace("\\", "\\\\")


class Strategy(StrEnum):
    """How a new release takes over from the live one."""

    REPLACE = "Replace"
    SHADOW = "Shadow"
    CANARY = "Canary"
    EXPERIMENT = "Experiment"


class Role(StrEnum):
    PRIMARY = "Primary"
    GUARDRAIL = "Guardrail"


class Statistic(StrEnum):
    """What a metric's queries count, per arm."""

    PROPORTION = "Proportion"  # successes out of count (approval rate, errors)
    MEAN = "Mean"  # sum / count, with the sum of squares for its variance (latency, score)


class Better(StrEnum):
    HIGHER = "Higher"
    LOWER = "Lower"


class OnInconclusive(StrEnum):
    ROLL_BACK = "RollBack"
    PROMOTE = "Promote"


def _query(description: str, required: bool = False) -> Any:
    return Field(
        default=... if required else None,
        min_length=1,
        max_length=4000,
        description=description
        + " PromQL returning one number for the arm {{arm}} (champion or challenger) over "
        "{{window}} (the time since the arms were split, as a range such as 3600s); "
        "{{release}}, {{model}}, {{version}}, {{environment}} and {{namespace}} may be used "
        "too.",
        json_schema_extra=cel_extra(
            known_placeholders(ARM_PLACEHOLDERS),
            (
                f"self.matches('{ARM_PATTERN}')",
                "a query must name {{arm}}: without it both arms measure the same series",
            ),
        ),
    )


PROPORTION_QUERIES = (
    "self.statistic != 'Proportion' || (has(self.successes) && !has(self.sum) "
    "&& !has(self.sumOfSquares))",
    "a Proportion metric needs count and successes (and no sum or sumOfSquares)",
)
MEAN_QUERIES = (
    "self.statistic != 'Mean' || (has(self.sum) && has(self.sumOfSquares) && !has(self.successes))",
    "a Mean metric needs count, sum and sumOfSquares (and no successes)",
)
EFFECT_FOR_ROLE = (
    "self.role == 'Primary' ? (has(self.minimumDetectableEffect) && !has(self.margin)) "
    ": (has(self.margin) && !has(self.minimumDetectableEffect))",
    "a Primary metric needs minimumDetectableEffect (the smallest improvement worth "
    "detecting); a Guardrail needs margin (how much worse the challenger may be)",
)


class ExperimentMetric(ApiModel):
    """One metric measured per arm from Prometheus and compared between them.

    The operator looks at it repeatedly, so it is judged by an always-valid
    sequential test (mSPRT): however often it looks, a challenger no better
    than the champion is promoted at most ``alpha`` of the time.
    """

    model_config = cel(PROPORTION_QUERIES, MEAN_QUERIES, EFFECT_FOR_ROLE)

    name: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="Name, unique in the rollout."
    )
    role: Role = Field(
        description="Primary: decides an experiment (the challenger must be better by a "
        "significant amount; exactly one per experiment). Guardrail: must not be worse than "
        "the champion's by more than margin; a guardrail proven worse rolls back at once."
    )
    statistic: Statistic = Field(
        description="Proportion: successes out of count per arm (a rate). Mean: sum / count "
        "per arm, with sumOfSquares for its variance."
    )
    better: Better = Field(description="Which way is better: Higher or Lower values.")
    count: str = _query("Observations in the arm (requests).", required=True)
    successes: str | None = _query(
        "Proportion: observations that count as a success (an approval, an error)."
    )
    sum: str | None = _query("Mean: the sum of the observed values.")
    sum_of_squares: str | None = _query("Mean: the sum of the squares of the observed values.")
    minimum_detectable_effect: float | None = Field(
        default=None,
        gt=0,
        description="Primary: the smallest difference between the arms' values worth "
        "detecting, in the metric's units (0.02 is two points of a rate). It sets the sample "
        "size shown before the split and tunes the test.",
    )
    margin: float | None = Field(
        default=None,
        gt=0,
        description="Guardrail: how much worse than the champion's the challenger's value may "
        "be, in the metric's units, and still pass.",
    )

    @field_validator("count", "successes", "sum", "sum_of_squares")
    @classmethod
    def _names_the_arm(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = unknown_placeholders(value, ARM_PLACEHOLDERS)
        if problem is not None:
            raise ValueError(problem)
        if not _names_arm(value):
            raise ValueError(
                "a query must name {{arm}}: without it both arms measure the same series"
            )
        return value

    @model_validator(mode="after")
    def _queries_and_effect(self) -> ExperimentMetric:
        if self.statistic == Statistic.PROPORTION and (
            self.successes is None or self.sum is not None or self.sum_of_squares is not None
        ):
            raise ValueError(PROPORTION_QUERIES[1])
        if self.statistic == Statistic.MEAN and (
            self.sum is None or self.sum_of_squares is None or self.successes is not None
        ):
            raise ValueError(MEAN_QUERIES[1])
        primary = self.role == Role.PRIMARY
        if primary != (self.minimum_detectable_effect is not None) or primary == (
            self.margin is not None
        ):
            raise ValueError(EFFECT_FOR_ROLE[1])
        return self

    @property
    def effect(self) -> float:
        """The primary's minimum detectable effect or the guardrail's margin."""
        value = self.minimum_detectable_effect if self.role == Role.PRIMARY else self.margin
        assert value is not None
        return value


def _names_arm(query: str) -> bool:
    return re.search(_ARM, query) is not None


class Split(ApiModel):
    """Shares of the traffic, in percent."""

    model_config = cel(
        ("self.champion + self.challenger == 100", "champion and challenger must add up to 100")
    )

    champion: int = Field(ge=1, le=99, description="The live model's share.")
    challenger: int = Field(ge=1, le=99, description="The new release's share.")

    @model_validator(mode="after")
    def _adds_up(self) -> Split:
        if self.champion + self.challenger != 100:
            raise ValueError(
                f"champion and challenger must add up to 100, not "
                f"{self.champion} + {self.challenger} = {self.champion + self.challenger}"
            )
        return self


class ExperimentSettings(ApiModel):
    """A fixed split until the sequential test decides or the deadline passes."""

    split: Split = Field(description="The traffic each arm gets while the experiment runs.")
    sticky_header: str | None = Field(
        default=None,
        pattern=HEADER_NAME_PATTERN,
        max_length=256,
        description="A request header (a user or session id) whose value keeps a caller in "
        "one arm; omit to assign each request afresh.",
    )
    deadline: Duration = Field(
        description="How long the experiment may run; undecided by then, it is Inconclusive."
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        le=0.2,
        description="The false promotion rate the test allows: the chance of promoting a "
        "challenger no better than the champion, however often the operator looks.",
    )
    power: float = Field(
        default=0.8,
        ge=0.5,
        lt=1,
        description="The chance of detecting an improvement of the primary metric's minimum "
        "detectable effect; with alpha it sets the sample size shown before the split.",
    )
    min_samples: int = Field(
        default=100,
        ge=10,
        le=10_000_000,
        description="Observations an arm needs before any of its metrics is judged: fewer, "
        "and the normal approximation is not trusted. An arm short of them at the deadline "
        "makes the experiment Inconclusive, never a pass.",
    )
    on_inconclusive: OnInconclusive = Field(
        default=OnInconclusive.ROLL_BACK,
        description="What an experiment undecided at its deadline does: RollBack (the champion "
        "keeps the traffic; the default) or Promote (no guardrail failed, so the challenger "
        "takes over).",
    )


class CanaryStep(ApiModel):
    """One step of a canary: a share of traffic, judged for a while."""

    weight: int = Field(
        ge=1, le=99, description="The new release's share of traffic in this step, in percent."
    )
    duration: Duration = Field(
        description="How long the step runs; its guardrails are judged throughout, and the "
        "next step starts when it ends with none failed."
    )


INCREASING_STEPS = (
    "self.map(s, s.weight).isSorted() && self.all(s, self.exists_one(t, t.weight == s.weight))",
    "canary steps must give the new release more traffic each step (weights increasing)",
)


class CanarySettings(ApiModel):
    """Traffic moves to the new release in steps; it takes all of it after the last."""

    steps: list[CanaryStep] = Field(
        min_length=1,
        max_length=10,
        description="The steps, in order, with increasing weights.",
        json_schema_extra=cel_extra(INCREASING_STEPS),
    )
    sticky_header: str | None = Field(
        default=None,
        pattern=HEADER_NAME_PATTERN,
        max_length=256,
        description="A request header whose value keeps a caller in one arm within a step.",
    )
    min_samples: int = Field(
        default=100,
        ge=10,
        le=10_000_000,
        description="Observations each arm needs in a step before the step may end: an arm "
        "short of them makes the canary Inconclusive, which rolls back.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, value: list[CanaryStep]) -> list[CanaryStep]:
        weights = [s.weight for s in value]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise ValueError(f"{INCREASING_STEPS[1]}, not {weights}")
        return value


class ShadowSettings(ApiModel):
    """The new release answers a copy of live requests; only the live model's
    answers reach callers. The two answers to each request are compared."""

    duration: Duration = Field(description="How long live traffic is mirrored.")
    min_rows: int = Field(
        default=100,
        ge=10,
        le=10_000_000,
        description="Rows both models must have answered by the end; fewer makes the "
        "shadow Inconclusive, which rolls back.",
    )
    max_disagreement: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="The largest share of rows whose predicted labels may differ.",
    )
    max_score_difference: float | None = Field(
        default=None,
        ge=0,
        description="The largest mean absolute difference of the two models' scores of a row; "
        "omit to not compare scores.",
    )
    max_latency_ratio: float | None = Field(
        default=None,
        gt=0,
        description="The largest ratio of the new release's mean latency to the live model's "
        "(1.2: at most 20 % slower); omit to not compare latency.",
    )
    max_errors: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="The largest share of mirrored requests the new release may fail (of the "
        "requests compared and failed).",
    )


class GatewayReference(ApiModel):
    """The Gateway (Gateway API) whose HTTPRoute carries the model's traffic."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Gateway name.")
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Its namespace; default: the environment's namespace.",
    )
    section_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="The Gateway's listener to attach to; default: all that allow the route.",
    )


class Traffic(ApiModel):
    """How the split reaches callers."""

    gateway: GatewayReference | None = Field(
        default=None,
        description="Split through an HTTPRoute attached to this Gateway (backendRefs weights; "
        "exact). Without one, the split is by replicas behind the model's Service: coarse "
        "(a share is the challenger's replicas out of all), and status says so.",
    )
    hostnames: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Host names the HTTPRoute answers for; empty: all the Gateway allows.",
    )


# The strategy as the rules read it: the API server applies the default
# before it validates, but a rule that does not rely on it holds anywhere.
_STRATEGY = "(has(self.strategy) ? self.strategy : 'Replace')"
LOOK_AT_LEAST_A_SECOND = (
    f"{duration_millis_cel('self')} >= 1000",
    "interval is shorter than 1s: Prometheus scrapes are not that fast",
)
STRATEGY_BLOCK = (
    f"({_STRATEGY} == 'Shadow') == has(self.shadow) && ({_STRATEGY} == 'Canary') == "
    f"has(self.canary) && ({_STRATEGY} == 'Experiment') == has(self.experiment)",
    "set the settings of the strategy chosen and no other: shadow for Shadow, canary for "
    "Canary, experiment for Experiment, none for Replace",
)
METRICS_FOR_STRATEGY = (
    f"{_STRATEGY} == 'Experiment' ? (has(self.metrics) "
    "&& self.metrics.exists_one(m, m.role == 'Primary')) "
    f": {_STRATEGY} == 'Canary' ? (has(self.metrics) && size(self.metrics) > 0 "
    "&& self.metrics.all(m, m.role == 'Guardrail')) "
    ": (!has(self.metrics) || size(self.metrics) == 0)",
    "an Experiment needs exactly one Primary metric (and any guardrails); a Canary needs "
    "guardrails and no Primary; Shadow and Replace take no metrics (a shadow compares the "
    "two answers to each request)",
)


class Rollout(ApiModel):
    """How a new release takes over from the one live here."""

    model_config = cel(STRATEGY_BLOCK, METRICS_FOR_STRATEGY)

    strategy: Strategy = Field(
        default=Strategy.REPLACE,
        description="Replace (at once; the default), Shadow, Canary or Experiment. The first "
        "release in an environment always replaces: there is nothing to compare it with.",
    )
    shadow: ShadowSettings | None = Field(default=None, description="Shadow's settings.")
    canary: CanarySettings | None = Field(default=None, description="Canary's settings.")
    experiment: ExperimentSettings | None = Field(
        default=None, description="Experiment's settings."
    )
    metrics: list[ExperimentMetric] = Field(
        default_factory=list,
        max_length=10,
        description="What is compared between the arms, per arm from Prometheus.",
    )
    interval: Duration = Field(
        default="1m",
        description="Time between looks at the arms. Looking more often never raises the "
        "false promotion rate (the test is always valid); it decides sooner.",
        json_schema_extra=cel_extra(LOOK_AT_LEAST_A_SECOND),
    )
    traffic: Traffic | None = Field(
        default=None,
        description="How the split reaches callers; default: by replicas behind the model's "
        "Service.",
    )

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[ExperimentMetric]) -> list[ExperimentMetric]:
        check_unique_names([m.name for m in value])
        return value

    @model_validator(mode="after")
    def _settings_fit_strategy(self) -> Rollout:
        blocks = {
            Strategy.SHADOW: self.shadow,
            Strategy.CANARY: self.canary,
            Strategy.EXPERIMENT: self.experiment,
        }
        if any((self.strategy == s) != (block is not None) for s, block in blocks.items()):
            raise ValueError(STRATEGY_BLOCK[1])
        primaries = sum(m.role == Role.PRIMARY for m in self.metrics)
        if self.strategy == Strategy.EXPERIMENT:
            fits = primaries == 1
        elif self.strategy == Strategy.CANARY:
            fits = bool(self.metrics) and primaries == 0
        else:
            fits = not self.metrics
        if not fits:
            raise ValueError(METRICS_FOR_STRATEGY[1])
        if parse_duration(self.interval).total_seconds() < 1:
            raise ValueError(LOOK_AT_LEAST_A_SECOND[1])
        return self

    @property
    def sticky_header(self) -> str | None:
        if self.experiment is not None:
            return self.experiment.sticky_header
        if self.canary is not None:
            return self.canary.sticky_header
        return None


# -- status --------------------------------------------------------------------


class RolloutPhase(StrEnum):
    WAITING = "Waiting"  # the challenger is being deployed and verified; no traffic yet
    RUNNING = "Running"  # the arms are split (or mirrored) and measured
    PROMOTED = "Promoted"  # the challenger took all traffic
    ROLLED_BACK = "RolledBack"  # the champion kept it
    INCONCLUSIVE = "Inconclusive"  # undecided at the deadline (onInconclusive followed)


class ArmValue(ApiModel):
    """One arm's measurement of one metric, over the window."""

    samples: int = Field(ge=0, description="Observations (count).")
    value: float = Field(description="The arm's mean (for a Proportion, its rate).")


class MetricComparison(ApiModel):
    """One metric, the challenger against the champion, at the latest look."""

    name: str = Field(description="Metric name.")
    role: Role = Field(description="Primary or Guardrail.")
    better: Better = Field(description="Higher or Lower.")
    threshold: float = Field(
        description="The primary's minimum detectable effect or the guardrail's margin."
    )
    champion: ArmValue | None = Field(default=None, description="The live model's arm.")
    challenger: ArmValue | None = Field(default=None, description="The new release's arm.")
    effect: float | None = Field(
        default=None, description="Challenger minus champion, in the metric's units."
    )
    low: float | None = Field(
        default=None, description="Lower end of the effect's always-valid interval (1 - alpha)."
    )
    high: float | None = Field(default=None, description="Its upper end.")
    p_value: float | None = Field(
        default=None,
        description="The always-valid p-value, the smallest over the looks so far (a primary: "
        "against no difference; a guardrail: against harm of exactly the margin).",
    )
    e_value: float | None = Field(
        default=None, description="The mixture likelihood ratio at the latest look."
    )
    verdict: str = Field(
        description="Better, Worse or Undecided (a guardrail's Better: within its margin)."
    )
    error: str | None = Field(
        default=None, description="Why the latest look could not measure it (asked again)."
    )


class ShadowComparison(ApiModel):
    """The two models' answers to the same mirrored requests, so far."""

    rows: int = Field(ge=0, description="Rows both models answered.")
    disagreements: int = Field(ge=0, description="Of them, rows given different labels.")
    score_difference: float | None = Field(
        default=None, description="Mean absolute difference of the two models' scores of a row."
    )
    latency_ratio: float | None = Field(
        default=None, description="The new release's mean latency over the live model's."
    )
    requests: int = Field(default=0, ge=0, description="Mirrored requests compared.")
    errors: int = Field(default=0, ge=0, description="Mirrored requests the new release failed.")


class RolloutProgress(ApiModel):
    """The new release against the live one in one environment."""

    strategy: Strategy = Field(description="Shadow, Canary or Experiment.")
    phase: RolloutPhase = Field(
        description="Waiting, Running, Promoted, RolledBack or Inconclusive."
    )
    spec_hash: str = Field(
        description="SHA-256 of the rollout spec it runs: an edit before a verdict starts it again."
    )
    champion: str = Field(description="The release live here when it started (namespace/name).")
    weight: int = Field(
        default=0, ge=0, le=100, description="The new release's share of traffic now, in percent."
    )
    mirror: bool = Field(default=False, description="The new release gets a copy of traffic.")
    step: int | None = Field(default=None, ge=1, description="Canary: the step running (1-based).")
    split_at: str | None = Field(
        default=None,
        description="When the traffic of the current step (or experiment, or shadow) was split: "
        "the start of the window measured (RFC 3339).",
    )
    deadline: str | None = Field(
        default=None, description="When the experiment, step or shadow ends (RFC 3339)."
    )
    looks: int = Field(default=0, ge=0, description="Looks taken so far.")
    looked_at: str | None = Field(default=None, description="The latest look (RFC 3339).")
    required_samples: int | None = Field(
        default=None,
        ge=1,
        description="Experiment: observations per arm by which the test detects the primary "
        "metric's minimum detectable effect with the stated power, from the champion's "
        "variance (shown before the split).",
    )
    traffic: str | None = Field(
        default=None,
        description="How the split reaches callers (an HTTPRoute: exact; replicas: coarse).",
    )
    metrics: list[MetricComparison] = Field(default_factory=list, description="Per metric.")
    shadow: ShadowComparison | None = Field(default=None, description="Shadow: the comparison.")
    message: str | None = Field(default=None, description="The verdict, or what it waits for.")
    decided_at: str | None = Field(default=None, description="When it was decided (RFC 3339).")
