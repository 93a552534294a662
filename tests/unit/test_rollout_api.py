"""An Environment's rollout strategy: what the model accepts and refuses, and
that the CRD's schema and CEL rules refuse the same (the real API server and
the webhook are in tests/realcluster/test_validation_parity_on_apiserver.py)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from modelgate.api.environment import Environment
from modelgate.api.rollout import (
    EFFECT_FOR_ROLE,
    INCREASING_STEPS,
    MEAN_QUERIES,
    METRICS_FOR_STRATEGY,
    PROPORTION_QUERIES,
    STRATEGY_BLOCK,
    Role,
    Strategy,
)
from tests.unit.test_crd_cel import schema_of, violations
from tests.unit.test_crds import EXAMPLE_DOCUMENTS, jsonschema_from_crd

APPROVALS = 'sum(increase(modelgate_predictions_total{arm="{{arm}}",label="approve"}[{{window}}]))'
REQUESTS = 'sum(increase(modelgate_predictions_total{arm="{{arm}}"}[{{window}}]))'
APPROVAL_RATE = {
    "name": "approval-rate",
    "role": "Primary",
    "statistic": "Proportion",
    "better": "Higher",
    "count": REQUESTS,
    "successes": APPROVALS,
    "minimumDetectableEffect": 0.02,
}
LATENCY = {
    "name": "latency",
    "role": "Guardrail",
    "statistic": "Mean",
    "better": "Lower",
    "count": 'sum(increase(modelgate_request_seconds_count{arm="{{arm}}"}[{{window}}]))',
    "sum": 'sum(increase(modelgate_request_seconds_sum{arm="{{arm}}"}[{{window}}]))',
    "sumOfSquares": 'sum(increase(modelgate_request_seconds_squares{arm="{{ arm }}"}[{{window}}]))',
    "margin": 0.005,
}
EXPERIMENT = {
    "strategy": "Experiment",
    "experiment": {
        "split": {"champion": 50, "challenger": 50},
        "stickyHeader": "x-user-id",
        "deadline": "24h",
    },
    "metrics": [APPROVAL_RATE, LATENCY],
    "traffic": {"gateway": {"name": "models", "namespace": "gateways"}},
}
CANARY = {
    "strategy": "Canary",
    "canary": {"steps": [{"weight": 10, "duration": "10m"}, {"weight": 50, "duration": "30m"}]},
    "metrics": [LATENCY],
}
SHADOW = {"strategy": "Shadow", "shadow": {"duration": "30m", "maxDisagreement": 0.01}}


def _document(rollout: dict[str, Any]) -> dict[str, Any]:
    environment = next(
        d
        for source, d in EXAMPLE_DOCUMENTS
        if d["kind"] == "Environment" and "production" in source
    )
    document = copy.deepcopy(environment)
    document["spec"].setdefault("policy", {})["rollout"] = rollout
    return document


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with fields replaced; a None removes one."""
    merged = {**copy.deepcopy(base), **changes}
    return {k: v for k, v in merged.items() if v is not None}


def _refusals(rollout: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What the model says (``field: message``) and what the CRD's CEL rules say."""
    document = _document(rollout)
    try:
        Environment.model_validate(document)
        model: list[str] = []
    except ValidationError as error:
        model = [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in error.errors()]
    return model, violations(schema_of("Environment"), document)


@pytest.mark.parametrize("rollout", [EXPERIMENT, CANARY, SHADOW, {"strategy": "Replace"}, {}])
def test_good_rollouts_are_taken_by_the_model_the_schema_and_the_rules(
    rollout: dict[str, Any],
) -> None:
    document = _document(rollout)
    environment = Environment.model_validate(document)
    jsonschema.validate(document, jsonschema_from_crd(schema_of("Environment")))
    assert violations(schema_of("Environment"), document) == []
    taken = environment.spec.policy.rollout
    assert taken is not None
    assert taken.strategy == rollout.get("strategy", Strategy.REPLACE)


def test_an_experiment_reads_as_written() -> None:
    rollout = Environment.model_validate(_document(EXPERIMENT)).spec.policy.rollout
    assert rollout is not None
    assert rollout.experiment is not None
    assert rollout.sticky_header == "x-user-id"
    assert (rollout.experiment.alpha, rollout.experiment.power) == (0.05, 0.8)
    assert rollout.experiment.on_inconclusive == "RollBack"
    primary, guardrail = rollout.metrics
    assert (primary.role, primary.effect) == (Role.PRIMARY, 0.02)
    assert (guardrail.role, guardrail.effect) == (Role.GUARDRAIL, 0.005)


BAD = [
    ("weights that do not add up",
     _with(EXPERIMENT, experiment={"split": {"champion": 60, "challenger": 50},
                                   "deadline": "1h"}),
     "policy.rollout.experiment.split", "champion and challenger must add up to 100"),
    ("a metric without a count query",
     _with(EXPERIMENT, metrics=[_with(APPROVAL_RATE, count=None)]),
     "policy.rollout.metrics.0.count", "Field required"),
    ("a proportion without successes",
     _with(EXPERIMENT, metrics=[_with(APPROVAL_RATE, successes=None)]),
     "policy.rollout.metrics.0", PROPORTION_QUERIES[1]),
    ("a mean without its sum of squares",
     _with(CANARY, metrics=[_with(LATENCY, sumOfSquares=None)]),
     "policy.rollout.metrics.0", MEAN_QUERIES[1]),
    ("a primary with a margin instead of an effect",
     _with(EXPERIMENT, metrics=[_with(APPROVAL_RATE, minimumDetectableEffect=None,
                                      margin=0.01)]),
     "policy.rollout.metrics.0", EFFECT_FOR_ROLE[1]),
    ("a guardrail with an effect",
     _with(CANARY, metrics=[_with(LATENCY, minimumDetectableEffect=0.01)]),
     "policy.rollout.metrics.0", EFFECT_FOR_ROLE[1]),
    ("a query that does not name the arm",
     _with(EXPERIMENT, metrics=[_with(APPROVAL_RATE, count="sum(modelgate_predictions_total)")]),
     "policy.rollout.metrics.0.count", "a query must name {{arm}}"),
    ("a query with a placeholder it cannot fill",
     _with(EXPERIMENT, metrics=[_with(APPROVAL_RATE, count='up{arm="{{arm}}",t="{{team}}"}')]),
     "policy.rollout.metrics.0.count", "a query may name only"),
    ("an experiment with no primary",
     _with(EXPERIMENT, metrics=[LATENCY]), "policy.rollout", METRICS_FOR_STRATEGY[1]),
    ("an experiment with two primaries",
     _with(EXPERIMENT, metrics=[APPROVAL_RATE, _with(APPROVAL_RATE, name="other")]),
     "policy.rollout", METRICS_FOR_STRATEGY[1]),
    ("a canary with no guardrail",
     _with(CANARY, metrics=[]), "policy.rollout", METRICS_FOR_STRATEGY[1]),
    ("a canary with a primary",
     _with(CANARY, metrics=[APPROVAL_RATE]), "policy.rollout", METRICS_FOR_STRATEGY[1]),
    ("a shadow with metrics",
     _with(SHADOW, metrics=[LATENCY]), "policy.rollout", METRICS_FOR_STRATEGY[1]),
    ("an experiment without its settings",
     _with(EXPERIMENT, experiment=None), "policy.rollout", STRATEGY_BLOCK[1]),
    ("canary settings for an experiment",
     _with(EXPERIMENT, canary=CANARY["canary"]), "policy.rollout", STRATEGY_BLOCK[1]),
    ("shadow settings for Replace",
     {"strategy": "Replace", "shadow": SHADOW["shadow"]}, "policy.rollout", STRATEGY_BLOCK[1]),
    ("looks under a second",
     _with(EXPERIMENT, interval="500ms"), "policy.rollout", "interval is shorter than 1s"),
    ("canary weights that go down",
     _with(CANARY, canary={"steps": [{"weight": 50, "duration": "5m"},
                                     {"weight": 10, "duration": "5m"}]}),
     "policy.rollout.canary.steps", INCREASING_STEPS[1]),
    ("canary weights that repeat",
     _with(CANARY, canary={"steps": [{"weight": 20, "duration": "5m"},
                                     {"weight": 20, "duration": "5m"}]}),
     "policy.rollout.canary.steps", INCREASING_STEPS[1]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rollout", "field", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_rollout_is_refused_by_the_model_and_the_rules_naming_the_field(
    name: str, rollout: dict[str, Any], field: str, message: str
) -> None:
    model, rules = _refusals(rollout)
    assert any(problem.startswith(f"spec.{field}: ") and message in problem for problem in model), (
        model
    )
    schema_refuses = False
    try:
        jsonschema.validate(_document(rollout), jsonschema_from_crd(schema_of("Environment")))
    except jsonschema.ValidationError:
        schema_refuses = True
    assert schema_refuses or any(message in rule for rule in rules), rules


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metrics", 0, "minimumDetectableEffect"), 0),
        (("metrics", 1, "margin"), 0),
        (("experiment", "alpha"), 0),
        (("experiment", "power"), 1),
        (("experiment", "split", "challenger"), 100),
        (("experiment", "stickyHeader"), "x user"),
        (("experiment", "deadline"), "tomorrow"),
    ],
)
def test_a_bad_value_is_refused_by_the_model_and_the_schema(
    path: tuple[str | int, ...], value: Any
) -> None:
    rollout = copy.deepcopy(EXPERIMENT)
    node: Any = rollout
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    document = _document(rollout)
    with pytest.raises(ValidationError) as refused:
        Environment.model_validate(document)
    where = "spec.policy.rollout." + ".".join(str(p) for p in path)
    assert any(
        ".".join(str(p) for p in e["loc"]).startswith(where) for e in refused.value.errors()
    ), refused.value
    with pytest.raises(jsonschema.ValidationError) as schema:
        jsonschema.validate(document, jsonschema_from_crd(schema_of("Environment")))
    assert list(schema.value.absolute_path)[-1] == path[-1]
