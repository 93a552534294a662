"""The API models accept the documented shapes and reject bad input clearly."""

# ruff: noqa: E501  (ISSUE_SHAPES is the YAML from the issue, kept exactly as written)

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from modelgate.api import (
    Environment,
    ManifestError,
    ModelRelease,
    QualityGate,
    load_documents,
    parse_duration,
    parse_resource,
)

DIGEST = "0123456789abcdef" * 4

ISSUE_SHAPES = textwrap.dedent(
    f"""
    apiVersion: modelgate.dev/v1alpha1
    kind: QualityGate
    metadata: {{name: credit-gate}}
    spec:
      task: binary            # binary | multiclass | regression
      checks:
      - {{name: auc, metric: {{name: roc_auc, min: 0.8}}}}
      - {{name: recall-by-region, metric: {{name: recall, min: 0.6}}, slice: {{columns: [region], minSize: 50}}}}
      - {{name: parity, fairness: {{metric: demographic_parity_difference, sensitiveColumn: gender, max: 0.1}}}}
      - {{name: age-range, data: {{column: age, min: 0, max: 120, maxMissingRate: 0.0}}}}
      - {{name: no-regression, metric: {{name: f1}}, baseline: {{environment: production, maxDrop: 0.02}}, severity: warning}}
    ---
    apiVersion: modelgate.dev/v1alpha1
    kind: Environment
    metadata: {{name: production}}
    spec:
      tier: production        # preproduction | production
      promotesFrom: staging
      namespace: ml-prod
      config: [{{name: FEATURE_STORE_URL, value: "https://features.prod.example.com"}}]
      configRules: [{{key: FEATURE_STORE_URL, required: true, pattern: "^https://[a-z.]+\\\\.prod\\\\.example\\\\.com$", forbid: [backtest, staging]}}]
      policy: {{requireApproval: false, requireDigest: true}}
    ---
    apiVersion: modelgate.dev/v1alpha1
    kind: ModelRelease
    metadata: {{name: credit-risk-1-4-0}}
    spec:
      model: {{name: credit-risk, version: "1.4.0"}}
      image: registry.example.com/credit-risk@sha256:{DIGEST}
      training:
        image: modelgate-trainer:latest
        params: {{estimator: sklearn.ensemble.RandomForestClassifier, n_estimators: 100}}
        data: {{train: data/train.csv, evaluation: data/eval.csv, target: default}}
      gate: {{name: credit-gate}}
      promotion:
        environments: [staging, production]
        config: [{{environment: production, values: [{{name: FEATURE_STORE_URL, value: "https://features.prod.example.com"}}]}}]
    """
)


def documents() -> list[dict[str, Any]]:
    return load_documents(ISSUE_SHAPES)


def test_issue_shapes_are_accepted_as_written() -> None:
    gate, env, release = (parse_resource(d) for d in documents())
    assert isinstance(gate, QualityGate)
    assert [c.kind for c in gate.spec.checks] == ["metric", "slice", "fairness", "data", "baseline"]
    assert gate.spec.checks[1].slice is not None
    assert gate.spec.checks[1].slice.min_size == 50
    assert gate.spec.checks[4].severity == "warning"
    assert isinstance(env, Environment)
    assert env.spec.promotes_from == "staging"
    assert env.spec.requires_digest is True
    assert env.spec.config_rules[0].forbid == ["backtest", "staging"]
    assert isinstance(release, ModelRelease)
    assert release.spec.training.params["n_estimators"] == 100
    assert release.overrides_for("production")[0].value == "https://features.prod.example.com"
    assert release.overrides_for("staging") == []


def test_wire_form_round_trips_in_camel_case() -> None:
    release = parse_resource(documents()[2])
    wire = release.wire()
    assert wire["spec"]["training"]["backoffLimit"] == 1
    assert "backoff_limit" not in str(wire)
    assert parse_resource(wire) == release


def test_production_requires_digest_by_default() -> None:
    env = documents()[1]
    del env["spec"]["policy"]
    assert parse_resource(env).spec.requires_digest is True  # type: ignore[union-attr]
    env["spec"]["tier"] = "preproduction"
    assert parse_resource(env).spec.requires_digest is False  # type: ignore[union-attr]


def test_fairness_ratio_defaults_to_four_fifths_rule() -> None:
    gate = documents()[0]
    gate["spec"]["checks"] = [
        {"name": "di", "fairness": {"metric": "disparate_impact", "sensitiveColumn": "g"}}
    ]
    parsed = parse_resource(gate)
    assert isinstance(parsed, QualityGate)
    assert parsed.spec.checks[0].fairness is not None
    assert parsed.spec.checks[0].fairness.min == 0.8


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    target: Any = document
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is _DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value


_DELETE = object()

# (document index, path, new value, exact problem line)
INVALID = [
    (
        0,
        "spec.checks.0.metric.name",
        "rmse",
        "spec: checks[0].metric.name: rmse is not defined for task binary; use one of "
        "accuracy, balanced_accuracy, brier, f1, log_loss, pr_auc, precision, recall, roc_auc",
    ),
    (
        0,
        "spec.checks.0.mertic",
        {"name": "f1", "min": 0.5},
        "spec.checks[0].mertic: unknown field: remove it or check its spelling "
        "(kubectl explain shows fields)",
    ),
    (
        0,
        "spec.checks.1.name",
        "auc",
        "spec: checks[1].name: duplicate check name 'auc'; names must be unique",
    ),
    (
        0,
        "spec.checks.0.metric",
        {"name": "roc_auc"},
        "spec.checks[0]: check 'auc': metric roc_auc needs min or max "
        "(or a baseline to compare with)",
    ),
    (
        0,
        "spec.checks.0.fairness",
        {"metric": "demographic_parity_ratio", "sensitiveColumn": "g"},
        "spec.checks[0]: check 'auc' must set exactly one of metric, fairness, data, drift, "
        "explainability or behavior (found: metric, fairness)",
    ),
    (
        0,
        "spec.checks.0.metric",
        {"name": "roc_auc", "min": 0.9, "max": 0.8},
        "spec.checks[0].metric: min (0.9) is greater than max (0.8): no value can pass; "
        "swap them or widen the range",
    ),
    (
        0,
        "spec.checks.2.fairness",
        {"metric": "equalized_odds_difference", "sensitiveColumn": "gender"},
        "spec.checks[2].fairness: fairness metric equalized_odds_difference is a difference: "
        "set max, e.g. max: 0.1",
    ),
    (
        0,
        "spec.task",
        "ranking",
        "spec.task: Input should be 'binary', 'multiclass' or 'regression'",
    ),
    (
        1,
        "spec.configRules.0.pattern",
        "^https://(",
        "spec.configRules[0].pattern: pattern '^https://(' is not a valid regex: "
        "missing ), unterminated subpattern at position 9",
    ),
    (
        1,
        "spec.tier",
        "prod",
        "spec.tier: Input should be 'preproduction' or 'production'",
    ),
    (
        1,
        "spec.namespace",
        _DELETE,
        "spec.namespace: required field is missing",
    ),
    (
        1,
        "spec.policy.soak",
        "1 hour",
        "spec.policy.soak: '1 hour' does not fit: a duration is digits (at most six a part) "
        "followed by ms, s, m, h or d, e.g. '30m' or '1h30m'",
    ),
    (
        1,
        "spec.delivery",
        {"mode": "GitOps"},
        "spec.delivery: delivery.mode GitOps needs delivery.git with at least repository and path",
    ),
    (
        1,
        "spec.delivery",
        {"git": {"repository": "https://git.example.com/deploy.git", "path": "prod"}},
        "spec.delivery: delivery.git and delivery.argoCD apply to mode GitOps only; "
        "set mode: GitOps or remove them",
    ),
    (
        1,
        "spec.delivery",
        {
            "mode": "GitOps",
            "git": {"repository": "https://git.example.com/d.git", "path": "a/../b"},
        },
        "spec.delivery.git.path: path 'a/../b' must not contain '.' or '..' segments",
    ),
    (
        1,
        "spec.delivery",
        {"mode": "GitOps", "git": {"repository": "-uupload-pack=evil", "path": "prod"}},
        "spec.delivery.git.repository: String should match pattern "
        "'^(https?://|ssh://|file://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)\\S+$'",
    ),
    (
        2,
        "spec.promotion.environments",
        ["staging", "staging"],
        "spec.promotion.environments: environment 'staging' is listed twice; list each once",
    ),
    (
        2,
        "spec.promotion.config.0.environment",
        "prod",
        "spec.promotion: config[0].environment: 'prod' is not in environments "
        "['staging', 'production']; add it there or fix the name",
    ),
    (
        2,
        "spec.gate",
        {"checks": [{"name": "auc", "metric": {"name": "roc_auc", "min": 0.8}}]},
        "spec.gate: inline checks without a named gate need task",
    ),
    (
        2,
        "spec.model.version",
        "1.4.0 beta",
        "spec.model.version: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._+-]*$'",
    ),
    (
        2,
        "metadata.name",
        "a" * 64,
        "metadata.name: '" + "a" * 64 + "' is 64 characters long: use at most 63 so that "
        "derived Job and Deployment names stay valid",
    ),
]


@pytest.mark.parametrize(("index", "path", "value", "expected"), INVALID)
def test_invalid_manifest_names_the_field_and_the_fix(
    index: int, path: str, value: Any, expected: str
) -> None:
    document = documents()[index]
    _set(document, path, value)
    with pytest.raises(ManifestError) as caught:
        parse_resource(document, "test.yaml")
    assert caught.value.problems == [expected]


def test_wrong_kind_and_api_version_are_rejected() -> None:
    with pytest.raises(ManifestError, match="kind: 'Deployment' is not a Modelgate kind"):
        parse_resource({"apiVersion": "apps/v1", "kind": "Deployment"})
    with pytest.raises(ManifestError, match=r"apiVersion: 'modelgate\.dev/v1' is not supported"):
        parse_resource({"apiVersion": "modelgate.dev/v1", "kind": "QualityGate"})


def test_broken_yaml_is_reported_not_raised_raw() -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_documents("kind: [unclosed", "bad.yaml")
    with pytest.raises(ManifestError, match="every YAML document must be a mapping"):
        load_documents("- a\n- b\n", "list.yaml")


def test_every_field_has_a_description() -> None:
    missing: list[str] = []

    def walk(model: type[Any], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{prefix}.{name}")
            for arg in getattr(field.annotation, "__args__", ()) or (field.annotation,):
                inner = getattr(arg, "__args__", None)
                candidates = inner if inner else (arg,)
                for candidate in candidates:
                    if (
                        isinstance(candidate, type)
                        and hasattr(candidate, "model_fields")
                        and candidate.__module__.startswith("modelgate")
                        and candidate is not model
                    ):
                        walk(candidate, f"{prefix}.{name}")

    for kind in (QualityGate, Environment, ModelRelease):
        walk(kind, kind.__name__)
    assert missing == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid duration '1 hour'"):
        parse_duration("1 hour")


def test_manifest_yaml_in_examples_round_trips() -> None:
    assert yaml.safe_load(ISSUE_SHAPES.split("---")[0])["kind"] == "QualityGate"
