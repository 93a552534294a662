"""Operator settings from the environment: peering priority and lifetime."""

from __future__ import annotations

import pytest

from modelgate.settings import OperatorSettings, priority_by_age


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
