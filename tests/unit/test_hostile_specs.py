"""Hypothesis-generated specs for the three kinds: the models either accept a
document or name the field that is wrong; the core never crashes on what
they accept."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.api import Environment, ManifestError, ModelRelease, QualityGate, parse_resource
from modelgate.api.loader import Resource
from modelgate.envconfig import merge_config, validate_config
from modelgate.promotion import Observed, reconcile
from modelgate.promotion.paths import graph_problems
from tests.conftest import EXAMPLES

SAMPLE = EXAMPLES / "credit-risk"
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def _load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLE / name).read_text()) if d]


BASE = {
    "QualityGate": _load("gate.yaml")[0],
    "Environment": _load("environments.yaml")[1],
    "ModelRelease": _load("release.yaml")[0],
}

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(BASE)))
    document = copy.deepcopy(BASE[kind])
    for _ in range(draw(st.integers(1, 3))):
        candidates = [p for p in _paths(document["spec"], ("spec",)) if len(p) > 1]
        path = draw(st.sampled_from(candidates))
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        if draw(st.booleans()) and isinstance(target, dict):
            del target[path[-1]]
        else:
            target[path[-1]] = draw(JSON)
    return document


def _environments() -> dict[str, Environment]:
    found = {}
    for document in _load("environments.yaml"):
        environment = Environment.model_validate(document)
        found[environment.name] = environment
    return found


def _parse(document: dict[str, Any]) -> Resource | list[str]:
    """The resource, or the problems the loader names."""
    try:
        return parse_resource(document, "fuzz.yaml")
    except ManifestError as error:
        return error.problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_accepted_or_refused_with_the_field_named(document: dict[str, Any]) -> None:
    resource = _parse(document)
    if isinstance(resource, list):
        assert resource
        for problem in resource:
            assert problem.split(":", 1)[0].startswith(("spec", "metadata")), problem
        return
    environments = _environments()
    if isinstance(resource, ModelRelease):
        gate = QualityGate.model_validate(BASE["QualityGate"])
        plan = reconcile(resource, gate, environments, Observed(), NOW)
        assert plan.status.phase is not None
    elif isinstance(resource, Environment):
        peers = {**environments, resource.name: resource}
        graph_problems(peers)
        validate_config(resource, merge_config(resource, []), peers.values())
    else:
        assert isinstance(resource, QualityGate)
