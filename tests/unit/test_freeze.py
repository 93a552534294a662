"""Freeze windows: absolute and cron-based, holding promotions until they end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelgate.api import ManifestError, parse_resource
from modelgate.api.environment import FreezeWindow
from modelgate.api.schedule import Cron
from tests.unit.test_reconcile import World, drive, make_envs, make_release

FRIDAY_EVENING = datetime(2026, 11, 20, 19, 30, tzinfo=UTC)  # a Friday


def test_cron_parsing_and_matching() -> None:
    weekend = Cron.parse("0 18 * * 5")
    assert weekend.matches(datetime(2026, 11, 20, 18, 0, tzinfo=UTC))
    assert not weekend.matches(datetime(2026, 11, 19, 18, 0, tzinfo=UTC))
    assert Cron.parse("*/15 9-17 * * 1-5").matches(datetime(2026, 11, 23, 9, 45, tzinfo=UTC))
    assert Cron.parse("0 0 * * 7").matches(datetime(2026, 11, 22, 0, 0, tzinfo=UTC))  # Sunday
    fired = weekend.last_fire(FRIDAY_EVENING, timedelta(hours=64))
    assert fired == datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 18 * *", "must have 5 fields"),
        ("61 * * * *", "minute: '61' is outside 0-59"),
        ("0 18 * * fri", "day of week: 'fri' is not a number"),
        ("*/0 * * * *", "step '0' must be a positive number"),
    ],
)
def test_bad_schedules_are_rejected_with_the_field(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cron.parse(schedule)


def test_recurring_and_absolute_windows() -> None:
    weekend = FreezeWindow(name="weekend", schedule="0 18 * * 5", duration="64h")
    assert weekend.holds(FRIDAY_EVENING) == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert weekend.holds(datetime(2026, 11, 23, 10, 0, tzinfo=UTC)) is None
    assert weekend.holds(datetime(2026, 11, 19, 12, 0, tzinfo=UTC)) is None
    holidays = FreezeWindow(
        name="holidays", start="2026-12-24T00:00:00Z", end="2027-01-02T00:00:00Z"
    )
    assert holidays.holds(datetime(2026, 12, 25, tzinfo=UTC)) == datetime(2027, 1, 2, tzinfo=UTC)
    assert holidays.holds(datetime(2027, 1, 2, tzinfo=UTC)) is None


def test_window_spec_errors_name_the_window() -> None:
    document = {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "production"},
        "spec": {
            "tier": "production",
            "namespace": "ml-prod",
            "policy": {"freezeWindows": [{"name": "oops", "start": "2026-12-24T00:00:00Z"}]},
        },
    }
    with pytest.raises(ManifestError, match="freeze window 'oops': set both start and end"):
        parse_resource(document)
    document["spec"]["policy"]["freezeWindows"] = [
        {"name": "x", "schedule": "0 18 * *", "duration": "1h"}
    ]
    with pytest.raises(
        ManifestError, match="schedule: '0 18 \\* \\*' does not fit: a schedule is five"
    ):
        parse_resource(document)


def test_a_freeze_window_holds_production_until_it_ends() -> None:
    envs = make_envs(
        policy={"freezeWindows": [{"name": "weekend", "schedule": "0 18 * * 5", "duration": "64h"}]}
    )
    world = World()
    release, plans = drive(make_release(), world, envs=envs, now=FRIDAY_EVENING)
    assert release.status is not None
    assert release.status.phase == "Promoting"
    assert [d.environment for d in world.deploys] == ["staging"]
    ready = next(c for c in release.status.conditions if c.type == "Ready")
    assert ready.reason == "FreezeWindow"
    assert "frozen by window 'weekend' until 2026-11-23T10:00:00Z" in ready.message
    assert plans[-1].requeue_after == timedelta(days=2, hours=14, minutes=30)
    monday, _ = drive(release, world, envs=envs, now=datetime(2026, 11, 23, 10, 1, tzinfo=UTC))
    assert monday.status is not None
    assert monday.status.phase == "Released"
