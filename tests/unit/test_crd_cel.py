"""The CRDs' CEL rules, evaluated with a CEL interpreter against real documents.

The API server runs these rules (x-kubernetes-validations) even when the
admission webhook is off; they mirror the pydantic validators.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import celpy
import pytest
from celpy import celtypes

from modelgate.api.analysis import COUNT_OR_DURATION
from modelgate.api.crdgen import build_crd
from modelgate.api.environment import VERIFICATION_ONE_KIND
from modelgate.api.modelrelease import IMAGE_FOR_SERVING
from modelgate.api.qualitygate import MIN_NOT_ABOVE_MAX
from tests.unit.test_crds import EXAMPLE_DOCUMENTS

CEL = celpy.Environment()


def _find_all(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(m.group(0)) for m in re.finditer(pattern, text)])


def _sum(values: celtypes.ListType) -> celtypes.IntType:
    return celtypes.IntType(sum(int(v) for v in values))


def _substring(
    text: celtypes.StringType, start: celtypes.IntType, end: celtypes.IntType | None = None
) -> celtypes.StringType:
    return celtypes.StringType(text[int(start) : None if end is None else int(end)])


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


def _split(text: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(p) for p in text.split(separator)])


# The Kubernetes CEL libraries the rules use that CEL's standard one lacks
# (Python's regexes stand in for RE2 here; the real API server has the last
# word, in tests/realcluster).
KUBERNETES_FUNCTIONS = {
    "findAll": _find_all,
    "sum": _sum,
    "substring": _substring,
    "split": _split,
    "isSorted": _is_sorted,
}


_NO_OLD = object()


def violations(schema: dict[str, Any], value: Any, old: Any = _NO_OLD) -> list[str]:
    """Messages of every CEL rule that fails, walking schema and value together.
    Transition rules (``oldSelf``) run only with an ``old`` value, as the API
    server runs them only on updates of an existing field."""
    found: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        activation = {"self": celpy.json_to_cel(value)}
        if "oldSelf" in rule["rule"]:
            if old is _NO_OLD:
                continue
            activation["oldSelf"] = celpy.json_to_cel(old)
        program = CEL.program(CEL.compile(rule["rule"]), functions=KUBERNETES_FUNCTIONS)
        if not program.evaluate(activation):
            found.append(rule["message"])
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                before = old.get(name, _NO_OLD) if isinstance(old, dict) else _NO_OLD
                found.extend(violations(child, value[name], before))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            found.extend(violations(schema["items"], item))
    return found


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_rule_compiles() -> None:
    count = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal count
        for rule in node.get("x-kubernetes-validations", []):
            CEL.compile(rule["rule"])
            count += 1
        for child in node.get("properties", {}).values():
            walk(child)
        if isinstance(node.get("items"), dict):
            walk(node["items"])

    for kind in ("QualityGate", "Environment", "ModelRelease"):
        walk(schema_of(kind))
    assert count >= 8


@pytest.mark.parametrize(("source", "document"), EXAMPLE_DOCUMENTS, ids=lambda v: str(v)[:60])
def test_examples_satisfy_every_rule(source: str, document: dict[str, Any]) -> None:
    assert violations(schema_of(document["kind"]), document) == []


GATE = {
    "apiVersion": "modelgate.dev/v1alpha1",
    "kind": "QualityGate",
    "metadata": {"name": "g"},
    "spec": {
        "task": "binary",
        "checks": [{"name": "auc", "metric": {"name": "roc_auc", "min": 0.8}}],
    },
}


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (
            {"name": "a"},
            "set exactly one of metric, fairness, data, drift, explainability or behavior",
        ),
        (
            {"name": "a", "metric": {"name": "f1", "min": 0.5}, "data": {"column": "x", "min": 0}},
            "set exactly one of metric, fairness, data, drift, explainability or behavior",
        ),
        (
            {"name": "a", "data": {"column": "x", "min": 0}, "slice": {"columns": ["r"]}},
            "slice and baseline apply to a metric check",
        ),
        (
            {
                "name": "a",
                "metric": {"name": "f1", "min": 0.5},
                "slice": {"columns": ["r"]},
                "baseline": {"environment": "production"},
            },
            "combine either slice or baseline with a metric, not both",
        ),
        ({"name": "a", "metric": {"name": "f1"}}, "a metric check needs min or max"),
        (
            {"name": "a", "metric": {"name": "f1", "min": 0.9, "max": 0.1}},
            "min is greater than max: no value can pass; swap them or widen the range",
        ),
    ],
)
def test_bad_checks_are_rejected_server_side(check: dict[str, Any], message: str) -> None:
    document = copy.deepcopy(GATE)
    document["spec"]["checks"] = [check]
    assert any(v.startswith(message) for v in violations(schema_of("QualityGate"), document))


def test_release_rules() -> None:
    release = next(d for _, d in EXAMPLE_DOCUMENTS if d["kind"] == "ModelRelease")
    document = copy.deepcopy(release)
    document["spec"]["promotion"]["config"][0]["environment"] = "prod"
    assert violations(schema_of("ModelRelease"), document) == [
        "every promotion.config entry must name an environment listed in environments"
    ]
    document = copy.deepcopy(release)
    document["spec"]["promotion"]["rollbacks"] = [
        {"environment": "prod", "requestedAt": "2026-12-07T12:00:00Z"}
    ]
    assert violations(schema_of("ModelRelease"), document) == [
        "every promotion.rollbacks entry must name an environment listed in environments"
    ]
    document = copy.deepcopy(release)
    document["spec"]["gate"] = {
        "checks": [{"name": "auc", "metric": {"name": "roc_auc", "min": 0.8}}]
    }
    assert violations(schema_of("ModelRelease"), document) == [
        "inline checks without a named gate need task"
    ]
    document["spec"]["gate"] = {}
    assert "set name (a QualityGate) or inline checks (or both)" in violations(
        schema_of("ModelRelease"), document
    )


def test_environment_rule_range() -> None:
    environment = next(d for _, d in EXAMPLE_DOCUMENTS if d["kind"] == "Environment")
    document = copy.deepcopy(environment)
    document["spec"]["configRules"] = [{"key": "N", "min": 5, "max": 1}]
    assert violations(schema_of("Environment"), document) == [
        "min is greater than max: no value can pass; swap them or widen the range"
    ]


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({}, "a metric needs min, max or both: the success condition is min <= value <= max"),
        ({"min": 0.5, "max": 0.1}, MIN_NOT_ABOVE_MAX[1]),
        ({"max": 1, "count": 3, "duration": "10m"}, COUNT_OR_DURATION[1]),
    ],
)
def test_a_bad_analysis_metric_is_refused_server_side(metric: dict[str, Any], message: str) -> None:
    environment = next(d for _, d in EXAMPLE_DOCUMENTS if d["kind"] == "Environment")
    document = copy.deepcopy(environment)
    document["spec"].setdefault("policy", {})["analysis"] = {
        "metrics": [{"name": "rate", "query": "up", **metric}]
    }
    assert violations(schema_of("Environment"), document) == [message]
    document["spec"]["policy"]["analysis"]["metrics"][0] = {"name": "rate", "query": "up", "min": 0}
    assert violations(schema_of("Environment"), document) == []


@pytest.mark.parametrize(
    "delivery",
    [
        {"mode": "GitOps"},
        {"mode": "Direct", "git": {"repository": "file:///r", "path": "p"}},
        {"mode": "Direct", "argoCD": {"name": "app"}},
    ],
)
def test_delivery_needs_git_exactly_for_gitops(delivery: dict[str, Any]) -> None:
    environment = next(
        d for _, d in EXAMPLE_DOCUMENTS if d["kind"] == "Environment" and d["spec"].get("namespace")
    )
    document = copy.deepcopy(environment)
    document["spec"]["delivery"] = delivery
    assert violations(schema_of("Environment"), document) == [
        "mode GitOps needs git (repository, path); git and argoCD are only for mode GitOps"
    ]
    document["spec"]["delivery"] = {
        "mode": "GitOps",
        "git": {"repository": "file:///r", "path": "p"},
        "argoCD": {"name": "app"},
    }
    assert violations(schema_of("Environment"), document) == []


def test_serving_and_verification_rules() -> None:
    release = next(d for _, d in EXAMPLE_DOCUMENTS if d["kind"] == "ModelRelease")
    document = copy.deepcopy(release)
    document["spec"].pop("image", None)
    document["spec"]["serving"] = "Image"
    assert violations(schema_of("ModelRelease"), document) == [IMAGE_FOR_SERVING[1]]
    document["spec"]["serving"] = "ReferenceServer"
    assert violations(schema_of("ModelRelease"), document) == []
    environment = {"tier": "production", "namespace": "ml-prod"}
    for verification, expected in (
        ({"servedPredictions": {}}, []),
        ({"image": "verify:1"}, []),
        ({}, [VERIFICATION_ONE_KIND[1]]),
        ({"image": "verify:1", "servedPredictions": {}}, [VERIFICATION_ONE_KIND[1]]),
    ):
        spec = {**environment, "verification": verification}
        assert violations(schema_of("Environment"), {"spec": spec}) == expected, verification


@pytest.mark.parametrize(
    ("field", "change", "message_start"),
    [
        ("model", lambda s: s["model"].update(version="9.9.9"), "spec.model is immutable"),
        (
            "image",
            lambda s: s.update(image="registry.example.com/other:2"),
            "spec.image is immutable",
        ),
        ("image", lambda s: s.pop("image"), "spec.image is immutable"),
        ("serving", lambda s: s.update(serving="ReferenceServer"), "spec.serving is immutable"),
        ("training", lambda s: s["training"]["params"].update(n=3), "spec.training is immutable"),
        ("training", lambda s: s["training"].update(seed=7), "spec.training is immutable"),
    ],
)
def test_what_defines_the_model_cannot_change(field: str, change: Any, message_start: str) -> None:
    old = {
        "model": {"name": "m", "version": "1.0.0"},
        "serving": "Image",  # the CRD's default, present on every stored object
        "image": "registry.example.com/m:1",
        "training": {
            "image": "trainer:1",
            "params": {"n": 1},
            "data": {"train": "t.csv", "evaluation": "e.csv", "target": "y"},
        },
        "gate": {"name": "gate"},
        "promotion": {"environments": ["staging"]},
    }
    new = copy.deepcopy(old)
    change(new)
    found = violations(schema_of("ModelRelease"), {"spec": new}, {"spec": old})
    immutable = [v for v in found if v.startswith(message_start)]
    assert len(immutable) == 1, found
    assert "create a new ModelRelease" in immutable[0]


def test_promotion_config_approvals_and_gate_may_change() -> None:
    old = {
        "model": {"name": "m", "version": "1.0.0"},
        "serving": "Image",  # the CRD's default, present on every stored object
        "image": "registry.example.com/m:1",
        "training": {"image": "t:1", "data": {"train": "t", "evaluation": "e", "target": "y"}},
        "gate": {"name": "gate"},
        "promotion": {"environments": ["staging"]},
    }
    new = copy.deepcopy(old)
    new["gate"] = {"name": "stricter-gate"}
    new["promotion"] = {
        "environments": ["staging", "production"],
        "config": [{"environment": "production", "values": [{"name": "A", "value": "b"}]}],
        "approvals": [{"environment": "production", "approvedBy": "alice"}],
    }
    assert violations(schema_of("ModelRelease"), {"spec": new}, {"spec": old}) == []
