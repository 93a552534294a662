"""Five-field cron schedules (minute hour day-of-month month day-of-week), UTC.

Supports ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n`` or
``a-b/n``; day of week 0-7 with 0 and 7 both Sunday. When both day fields are
restricted, a day matches if either does (as cron does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
# Five fields of cron characters, single spaces between them (what the API
# server's CEL splits exactly as Python does).
CRON_PATTERN = r"^[0-9*,/-]+( [0-9*,/-]+){4}$"
CRON_MESSAGE = (
    "a schedule is five cron fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12, "
    "day of week 0-7) of numbers, ranges a-b with a <= b, lists a,b, * and steps /n with "
    "n >= 1, e.g. '0 18 * * 5'"
)


def cron_cel(field: str) -> str:
    """A CEL expression true when the string ``field`` (matching CRON_PATTERN)
    is a schedule :meth:`Cron.parse` takes: the same ranges and steps."""
    part = "item.split('/')[0]"
    first = f"int({part}.split('-')[0])"
    last = f"int({part}.split('-')[size({part}.split('-')) - 1])"
    checks = []
    for index, (_, low, high) in enumerate(FIELDS):
        item = (
            "item.matches('^([*]|[0-9]+(-[0-9]+)?)(/[0-9]+)?$') && "
            "(!item.contains('/') || int(item.split('/')[1]) > 0) && "
            f"({part} == '*' || ({first} >= {low} && {last} <= {high} && {first} <= {last}))"
        )
        checks.append(f"{field}.split(' ')[{index}].split(',').all(item, {item})")
    return f"size({field}.split(' ')) == 5 && " + " && ".join(checks)


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        part, step = item, 1
        if "/" in item:
            part, step_text = item.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            first, last = part.split("-", 1)
            if not (first.isdigit() and last.isdigit()):
                raise ValueError(f"{name}: range {part!r} must be two numbers")
            start, end = int(first), int(last)
        elif part.isdigit():
            start = end = int(part)
        else:
            raise ValueError(f"{name}: {part!r} is not a number, range, list or *")
        if not (low <= start <= end <= high):
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(
                f"schedule {expression!r} must have 5 fields: minute hour day-of-month "
                "month day-of-week, e.g. '0 18 * * 5' (Fridays 18:00 UTC)"
            )
        parsed = [_parse_field(p, *spec) for p, spec in zip(parts, FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in parsed[4])
        return cls(
            parsed[0], parsed[1], parsed[2], parsed[3], weekdays, parts[2] != "*", parts[4] != "*"
        )

    def matches(self, moment: datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours:
            return False
        if moment.month not in self.months:
            return False
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def last_fire(self, moment: datetime, within: timedelta) -> datetime | None:
        """The latest time <= ``moment`` the schedule fired, looking back ``within``."""
        current = moment.replace(second=0, microsecond=0)
        earliest = moment - within
        while current >= earliest:
            if self.matches(current):
                return current
            current -= timedelta(minutes=1)
        return None
