"""QualityGate: a named, reusable set of checks a candidate model must pass."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from modelgate.api.common import (
    DNS_LABEL_PATTERN,
    ApiModel,
    Condition,
    ResourceModel,
    cel,
)


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class Severity(StrEnum):
    BLOCKING = "blocking"
    WARNING = "warning"


class MetricName(StrEnum):
    ACCURACY = "accuracy"
    BALANCED_ACCURACY = "balanced_accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"
    ROC_AUC = "roc_auc"
    PR_AUC = "pr_auc"
    LOG_LOSS = "log_loss"
    BRIER = "brier"
    MAE = "mae"
    RMSE = "rmse"
    R2 = "r2"
    MAPE = "mape"


METRICS_BY_TASK: dict[Task, frozenset[MetricName]] = {
    Task.BINARY: frozenset(
        {
            MetricName.ACCURACY,
            MetricName.BALANCED_ACCURACY,
            MetricName.PRECISION,
            MetricName.RECALL,
            MetricName.F1,
            MetricName.ROC_AUC,
            MetricName.PR_AUC,
            MetricName.LOG_LOSS,
            MetricName.BRIER,
        }
    ),
    Task.MULTICLASS: frozenset(
        {
            MetricName.ACCURACY,
            MetricName.BALANCED_ACCURACY,
            MetricName.PRECISION,
            MetricName.RECALL,
            MetricName.F1,
            MetricName.LOG_LOSS,
        }
    ),
    Task.REGRESSION: frozenset({MetricName.MAE, MetricName.RMSE, MetricName.R2, MetricName.MAPE}),
}

# Metrics where a smaller value is better: a regression is an increase.
LOWER_IS_BETTER: frozenset[MetricName] = frozenset(
    {MetricName.LOG_LOSS, MetricName.BRIER, MetricName.MAE, MetricName.RMSE, MetricName.MAPE}
)


class Average(StrEnum):
    MACRO = "macro"
    MICRO = "micro"
    WEIGHTED = "weighted"


def _cel_list(values: frozenset[str] | set[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in sorted(values)) + "]"


MIN_NOT_ABOVE_MAX = (
    "!has(self.min) || !has(self.max) || self.min <= self.max",
    "min is greater than max: no value can pass; swap them or widen the range",
)


class Bounds(ApiModel):
    """Inclusive bounds shared by threshold checks."""

    model_config = cel(MIN_NOT_ABOVE_MAX)

    min: float | None = Field(default=None, description="Smallest acceptable value (inclusive).")
    max: float | None = Field(default=None, description="Largest acceptable value (inclusive).")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Bounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"min ({self.min}) is greater than max ({self.max}): no value can pass; "
                "swap them or widen the range"
            )
        return self


class MetricCheck(Bounds):
    """A model-quality metric computed on the evaluation predictions."""

    name: MetricName = Field(description="Metric to compute on the evaluation predictions.")
    average: Average = Field(
        default=Average.MACRO,
        description="Averaging for precision/recall/f1 on multiclass tasks.",
    )


class SliceSpec(ApiModel):
    """Compute the metric separately on each value combination of some columns."""

    columns: list[str] = Field(
        min_length=1, description="Columns whose value combinations define the slices."
    )
    min_size: int = Field(
        default=30,
        ge=1,
        description="Slices with fewer rows are Inconclusive (or skipped with skipSmall).",
    )
    skip_small: bool = Field(
        default=False, description="Skip slices smaller than minSize instead of Inconclusive."
    )


class OnMissing(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class BaselineSpec(ApiModel):
    """Compare the metric with the model currently live in an environment."""

    environment: str = Field(
        pattern=DNS_LABEL_PATTERN,
        description="Environment whose live release is the baseline, e.g. production.",
    )
    max_drop: float = Field(
        default=0.0,
        ge=0,
        description="Largest allowed regression against the baseline "
        "(absolute, or a fraction of the baseline with relative: true).",
    )
    relative: bool = Field(
        default=False, description="Interpret maxDrop as a fraction of the baseline value."
    )
    on_missing: OnMissing = Field(
        default=OnMissing.INCONCLUSIVE,
        description="Outcome when no baseline can be compared fairly. Never a silent pass.",
    )


class FairnessMetric(StrEnum):
    DEMOGRAPHIC_PARITY_DIFFERENCE = "demographic_parity_difference"
    DEMOGRAPHIC_PARITY_RATIO = "demographic_parity_ratio"
    EQUALIZED_ODDS_DIFFERENCE = "equalized_odds_difference"
    EQUAL_OPPORTUNITY_DIFFERENCE = "equal_opportunity_difference"
    DISPARATE_IMPACT = "disparate_impact"


# Ratio metrics: 1 is perfect, smaller is worse; the others are differences.
FAIRNESS_RATIOS = frozenset(
    {FairnessMetric.DEMOGRAPHIC_PARITY_RATIO, FairnessMetric.DISPARATE_IMPACT}
)


DIFFERENCE_NEEDS_MAX = (
    "has(self.min) || has(self.max) || self.metric in " + _cel_list(set(FAIRNESS_RATIOS)),
    "a fairness metric that is a difference needs max (e.g. max: 0.1); only the ratios "
    "demographic_parity_ratio and disparate_impact default to min: 0.8 (the four-fifths rule)",
)


class FairnessCheck(Bounds):
    """A group-fairness measure over a sensitive column (binary tasks)."""

    model_config = cel(MIN_NOT_ABOVE_MAX, DIFFERENCE_NEEDS_MAX)

    metric: FairnessMetric = Field(description="Fairness measure to compute.")
    sensitive_column: str = Field(
        min_length=1, description="Column holding the sensitive attribute, e.g. gender."
    )
    min_group_size: int = Field(
        default=30, ge=1, description="Groups with fewer rows make the check Inconclusive."
    )

    @model_validator(mode="after")
    def _default_bounds(self) -> FairnessCheck:
        if self.min is None and self.max is None:
            if self.metric in FAIRNESS_RATIOS:
                # The four-fifths rule.
                self.min = 0.8
            else:
                raise ValueError(
                    f"fairness metric {self.metric} is a difference: set max, e.g. max: 0.1"
                )
        return self


class Dataset(StrEnum):
    TRAINING = "training"
    EVALUATION = "evaluation"


class ColumnType(StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    STRING = "string"
    BOOLEAN = "boolean"


class ColumnSpec(ApiModel):
    """A column a table must have."""

    name: str = Field(min_length=1, description="Column name.")
    type: ColumnType | None = Field(default=None, description="Expected type, if any.")


COLUMN_CHECKS = ("type", "maxMissingRate", "allowed", "min", "max")
TABLE_CHECKS = ("minRows", "maxRows", "requiredColumns", "maxDuplicateRate")
COLUMN_CHECKS_NEED_A_COLUMN = (
    "has(self.column) || !(" + " || ".join(f"has(self.{f})" for f in COLUMN_CHECKS) + ")",
    "type, maxMissingRate, allowed, min and max need a column: set column",
)
SOMETHING_TO_CHECK = (
    " || ".join(f"has(self.{f})" for f in (*COLUMN_CHECKS, *TABLE_CHECKS)),
    "nothing to check: set at least one of type, maxMissingRate, allowed, min, max, minRows, "
    "maxRows, requiredColumns or maxDuplicateRate",
)


class DataCheck(Bounds):
    """Data-quality expectations on one column (or the table) of the datasets."""

    model_config = cel(MIN_NOT_ABOVE_MAX, COLUMN_CHECKS_NEED_A_COLUMN, SOMETHING_TO_CHECK)

    column: str | None = Field(
        default=None, description="Column checked; omit for table-level checks (rows)."
    )
    datasets: list[Dataset] = Field(
        default_factory=lambda: [Dataset.TRAINING, Dataset.EVALUATION],
        min_length=1,
        description="Datasets the check runs on.",
    )
    type: ColumnType | None = Field(default=None, description="Expected column type.")
    max_missing_rate: float | None = Field(
        default=None, ge=0, le=1, description="Largest allowed fraction of missing values."
    )
    allowed: list[str] | None = Field(
        default=None, description="Allowed values of a categorical column."
    )
    min_rows: int | None = Field(default=None, ge=0, description="Smallest allowed row count.")
    max_rows: int | None = Field(default=None, ge=0, description="Largest allowed row count.")
    required_columns: list[ColumnSpec] | None = Field(
        default=None,
        max_length=1000,
        description="Columns the table must have, optionally with their type.",
    )
    max_duplicate_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Largest allowed fraction of rows that repeat an earlier row exactly.",
    )

    @model_validator(mode="after")
    def _something_to_check(self) -> DataCheck:
        column_checks = (
            self.type,
            self.max_missing_rate,
            self.allowed,
            self.min,
            self.max,
        )
        if self.column is None and any(c is not None for c in column_checks):
            raise ValueError(COLUMN_CHECKS_NEED_A_COLUMN[1])
        table_checks = (
            self.min_rows,
            self.max_rows,
            self.required_columns,
            self.max_duplicate_rate,
        )
        if all(c is None for c in (*column_checks, *table_checks)):
            raise ValueError(SOMETHING_TO_CHECK[1])
        return self


class DriftMethod(StrEnum):
    PSI = "psi"
    KS = "ks"
    JENSEN_SHANNON = "jensen_shannon"


class DriftCheck(ApiModel):
    """Distribution shift of a column between the training and evaluation data."""

    column: str = Field(min_length=1, description="Column compared.")
    method: DriftMethod = Field(
        default=DriftMethod.PSI, description="Drift statistic: psi, ks or jensen_shannon."
    )
    max: float = Field(
        ge=0, description="Largest allowed statistic (PSI 0.2 and JS 0.1 are common choices)."
    )
    bins: int = Field(
        default=10, ge=2, le=100, description="Quantile bins of the training data (numeric)."
    )


IMPORTANCE_TO_CHECK = (
    "has(self.notInTopK) || has(self.min) || has(self.max)",
    "set notInTopK, min or max (bounds on the importance)",
)


class ExplainabilityCheck(Bounds):
    """Expectations on the permutation importance the training job recorded."""

    model_config = cel(MIN_NOT_ABOVE_MAX, IMPORTANCE_TO_CHECK)

    column: str = Field(min_length=1, description="Feature whose importance is checked.")
    not_in_top_k: int | None = Field(
        default=None, ge=1, description="The feature must not be among the k most important."
    )

    @model_validator(mode="after")
    def _something_to_check(self) -> ExplainabilityCheck:
        if self.not_in_top_k is None and self.min is None and self.max is None:
            raise ValueError(IMPORTANCE_TO_CHECK[1])
        return self


class Expectation(StrEnum):
    INVARIANT = "invariant"
    INCREASE = "increase"
    DECREASE = "decrease"


class BehaviorCheck(ApiModel):
    """Perturb one input column and state how the prediction may move.

    Evaluated where the model is (the training job); the gate judges the
    recorded outcome. The prediction is the positive-class score (binary), the
    predicted value (regression) or the predicted label (multiclass, invariance
    only).
    """

    model_config = cel(
        (
            "has(self.add) != has(self.set)",
            "set exactly one perturbation: add (a number) or set (a value)",
        ),
    )

    column: str = Field(min_length=1, description="Input column perturbed.")
    add: float | None = Field(default=None, description="Add this number to the column.")
    set: str | None = Field(default=None, description="Replace the column with this value.")
    expect: Expectation = Field(
        description="invariant: |change| <= tolerance; increase: change >= -tolerance; "
        "decrease: change <= tolerance."
    )
    tolerance: float = Field(default=1e-6, ge=0, description="Allowed change the other way.")
    max_failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="Largest allowed fraction of rows that break it."
    )

    @model_validator(mode="after")
    def _one_perturbation(self) -> BehaviorCheck:
        if (self.add is None) == (self.set is None):
            raise ValueError("set exactly one perturbation: add (a number) or set (a value)")
        return self


CHECK_KINDS = ("metric", "fairness", "data", "drift", "explainability", "behavior")


class Check(ApiModel):
    """One named check: exactly one of metric, fairness, data, drift,
    explainability or behavior is set."""

    model_config = cel(
        (
            "[has(self.metric), has(self.fairness), has(self.data), has(self.drift), "
            "has(self.explainability), has(self.behavior)].filter(x, x).size() == 1",
            "set exactly one of metric, fairness, data, drift, explainability or behavior",
        ),
        (
            "has(self.metric) || !(has(self.slice) || has(self.baseline))",
            "slice and baseline apply to a metric check",
        ),
        (
            "!(has(self.slice) && has(self.baseline))",
            "combine either slice or baseline with a metric, not both",
        ),
        (
            "!has(self.metric) || has(self.baseline) || has(self.metric.min) "
            "|| has(self.metric.max)",
            "a metric check needs min or max (or a baseline to compare with)",
        ),
    )

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Name of the check.")
    severity: Severity = Field(
        default=Severity.BLOCKING,
        description="blocking checks stop the release; warning checks are advisory.",
    )
    metric: MetricCheck | None = Field(default=None, description="Metric threshold check.")
    slice: SliceSpec | None = Field(
        default=None, description="Evaluate the metric per slice (with metric only)."
    )
    baseline: BaselineSpec | None = Field(
        default=None, description="Compare the metric with a live baseline (with metric only)."
    )
    fairness: FairnessCheck | None = Field(default=None, description="Fairness check.")
    data: DataCheck | None = Field(default=None, description="Data-quality check.")
    drift: DriftCheck | None = Field(default=None, description="Data-drift check.")
    explainability: ExplainabilityCheck | None = Field(
        default=None, description="Permutation-importance check."
    )
    behavior: BehaviorCheck | None = Field(
        default=None, description="Invariance or directional expectation."
    )

    @property
    def kind(self) -> str:
        for kind in CHECK_KINDS[1:]:
            if getattr(self, kind) is not None:
                return kind
        if self.baseline is not None:
            return "baseline"
        if self.slice is not None:
            return "slice"
        return "metric"

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Check:
        kinds = [k for k in CHECK_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"check {self.name!r} must set exactly one of metric, fairness, data, drift, "
                f"explainability or behavior "
                f"(found: {found})"
            )
        if (self.slice is not None or self.baseline is not None) and self.metric is None:
            raise ValueError(f"check {self.name!r}: slice and baseline apply to a metric check")
        if self.slice is not None and self.baseline is not None:
            raise ValueError(
                f"check {self.name!r}: combine either slice or baseline with a metric, not both; "
                "split it into two checks"
            )
        if (
            self.metric is not None
            and self.baseline is None
            and self.metric.min is None
            and self.metric.max is None
        ):
            raise ValueError(
                f"check {self.name!r}: metric {self.metric.name} needs min or max "
                "(or a baseline to compare with)"
            )
        return self


def checks_fit_task(task: str) -> tuple[tuple[str, str, str], ...]:
    """The CEL rules of :func:`validate_checks_for_task`, on an object whose
    ``checks`` are judged against the task in the CEL expression ``task``."""
    metrics = (
        " : ".join(
            f"{task} == '{t}' ? {_cel_list(set(METRICS_BY_TASK[t]))}" for t in list(Task)[:-1]
        )
        + f" : {_cel_list(set(METRICS_BY_TASK[list(Task)[-1]]))}"
    )
    guard = "!has(self.checks) || "
    return (
        (
            guard + f"self.checks.all(c, !has(c.metric) || c.metric.name in ({metrics}))",
            "checks[].metric.name: a metric that is not defined for the task; "
            + "; ".join(f"{t}: {', '.join(sorted(METRICS_BY_TASK[t]))}" for t in Task),
            ".checks",
        ),
        (
            guard + f"{task} != 'multiclass' || self.checks.all(c, !has(c.behavior) "
            "|| c.behavior.expect == 'invariant')",
            "checks[].behavior.expect: multiclass predictions are labels; only invariant "
            "expectations apply",
            ".checks",
        ),
        (
            guard + f"{task} == 'binary' || self.checks.all(c, !has(c.fairness))",
            "checks[].fairness: fairness checks need task binary",
            ".checks",
        ),
    )


def validate_checks_for_task(task: Task, checks: list[Check]) -> None:
    """Cross-field rules between the task and its checks (shared with inline gates)."""
    seen: set[str] = set()
    for index, check in enumerate(checks):
        if check.name in seen:
            raise ValueError(
                f"checks[{index}].name: duplicate check name {check.name!r}; names must be unique"
            )
        seen.add(check.name)
        if check.metric is not None:
            allowed = METRICS_BY_TASK[task]
            if check.metric.name not in allowed:
                raise ValueError(
                    f"checks[{index}].metric.name: {check.metric.name} is not defined for "
                    f"task {task}; use one of {', '.join(sorted(allowed))}"
                )
        if (
            check.behavior is not None
            and task == Task.MULTICLASS
            and check.behavior.expect != Expectation.INVARIANT
        ):
            raise ValueError(
                f"checks[{index}].behavior.expect: multiclass predictions are labels; "
                "only invariant expectations apply"
            )
        if check.fairness is not None and task != Task.BINARY:
            raise ValueError(
                f"checks[{index}].fairness: fairness checks need task binary (got {task})"
            )


class QualityGateSpec(ApiModel):
    """Desired state of a QualityGate."""

    model_config = cel(*checks_fit_task("self.task"))

    task: Task = Field(description="Prediction task: binary, multiclass or regression.")
    positive_label: str = Field(
        default="1", description="Label of the positive class for binary tasks."
    )
    checks: list[Check] = Field(
        min_length=1, max_length=100, description="Checks a candidate must pass."
    )

    @model_validator(mode="after")
    def _checks_fit_task(self) -> QualityGateSpec:
        validate_checks_for_task(self.task, self.checks)
        return self


class QualityGateStatus(ApiModel):
    """Observed state of a QualityGate."""

    observed_generation: int | None = Field(
        default=None, description="Generation the status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready when the gate's checks are valid."
    )
    check_count: int | None = Field(default=None, description="Number of checks in the gate.")


class QualityGate(ResourceModel):
    """A reusable set of quality checks for model candidates."""

    kind: Literal["QualityGate"] = Field(default="QualityGate", description="QualityGate.")
    spec: QualityGateSpec = Field(description="The checks.")
    status: QualityGateStatus | None = Field(default=None, description="Observed state.")
