"""Operator settings from the environment: peering priority and lifetime, the
sizes of the pods it creates."""

from __future__ import annotations

import re

import pytest

from modelgate.backends.manifests import sized
from modelgate.settings import (
    DEFAULT_WORKLOAD_RESOURCES,
    OperatorSettings,
    priority_by_age,
    workload_resources,
)


def test_older_replicas_rank_higher_and_a_microsecond_apart_still_differ() -> None:
    started = 1_795_000_000_000_000_000  # ns
    assert priority_by_age(started) > priority_by_age(started + 1_000)
    assert priority_by_age(started) != priority_by_age(started + 1_000)
    # Positive for any start time this century: kopf compares plain integers.
    assert priority_by_age(4_102_444_800 * 10**9) > 0


def test_peering_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELGATE_PEERING_PRIORITY", raising=False)
    monkeypatch.delenv("MODELGATE_PEERING_LIFETIME", raising=False)
    defaults = OperatorSettings.from_env()
    assert defaults.peering_priority is None
    assert defaults.peering_lifetime == 60
    monkeypatch.setenv("MODELGATE_PEERING_PRIORITY", "7")
    monkeypatch.setenv("MODELGATE_PEERING_LIFETIME", "15")
    chosen = OperatorSettings.from_env()
    assert (chosen.peering_priority, chosen.peering_lifetime) == (7, 15)


def test_a_bad_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGATE_PEERING_LIFETIME", "a minute")
    with pytest.raises(ValueError, match="MODELGATE_PEERING_LIFETIME='a minute' is not a number"):
        OperatorSettings.from_env()


def test_workload_resources_are_the_defaults_with_what_the_chart_gives() -> None:
    found = workload_resources('{"serving": {"limits": {"memory": "16Gi"}}}')
    assert found["serving"]["limits"] == {"memory": "16Gi"}
    assert found["serving"]["requests"] == DEFAULT_WORKLOAD_RESOURCES["serving"]["requests"]
    assert found["training"] == DEFAULT_WORKLOAD_RESOURCES["training"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "MODELGATE_WORKLOAD_RESOURCES is not JSON"),
        ("[]", "must map workloads to their resources"),
        ('{"trainer": {}}', "unknown workload 'trainer'; use training, evaluation"),
        ('{"training": {"request": {}}}', "MODELGATE_WORKLOAD_RESOURCES.training: give requests"),
        ('{"training": {"limits": {"memory": []}}}', "training.limits: map resource names"),
    ],
)
def test_bad_workload_resources_name_the_setting(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        workload_resources(text)


def test_a_release_that_sizes_a_resource_sizes_it_alone() -> None:
    settings = OperatorSettings()
    given = {
        "requests": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert sized("training", settings, given) == {
        "requests": {
            "cpu": "500m",
            "ephemeral-storage": "1Gi",
            "memory": "32Gi",
            "nvidia.com/gpu": "1",
        },
        "limits": {"ephemeral-storage": "8Gi", "nvidia.com/gpu": "1"},
    }
