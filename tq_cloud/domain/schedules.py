"""A recurring schedule, declared in code next to its executor, and its occurrences.

Occurrences are computed as EventBridge Scheduler computes them, so that every backend (memory,
the local runtime, AWS) and the sweeper's catch-up agree on each one's time, and so on each
one's task id (derived from the schedule's name and the occurrence's time):
- `cron`: the five usual fields, read by croniter in the schedule's zone on wall-clock time; a
  time the zone skips (spring forward) has no occurrence, a time it repeats (fall back) has one
  (the first), as EventBridge Scheduler documents;
- `every`: a fixed duration from the Unix epoch (k * every, in UTC), deployed as a rate schedule
  whose StartDate is such an instant; a day is 24 hours whatever the zone does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tq_cloud.errors import ConfigurationError

Overlap = Literal["allow", "skip"]
SCHEDULE_FIRE_TYPE = "_tq.schedule"
"""The type of the record a firing puts on the stream; the worker turns it into the occurrence."""
NAME = re.compile(r"[0-9A-Za-z_.-]{1,48}")
"""EventBridge Scheduler names take 1 to 64 of these; 16 are kept for the deployed name's prefix."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOW_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_FIELD_CHARS = re.compile(r"[0-9A-Za-z*,/-]+")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """What `app.schedule(...)` declares (see TaskQueuesManager.schedule)."""

    name: str
    queue_id: str
    task_type: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    payload: Any = None
    overlap: Overlap = "allow"
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ConfigurationError(f"schedule name {self.name!r}: use 1 to 48 letters, digits, '-', '_' or '.'")
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"schedule {self.name!r}: give exactly one of cron= and every=")
        if self.overlap not in ("allow", "skip"):
            raise ConfigurationError(f"schedule {self.name!r}: overlap is 'allow' or 'skip', not {self.overlap!r}")
        try:
            object.__setattr__(self, "zone", ZoneInfo(self.timezone))
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(f"schedule {self.name!r}: {self.timezone!r} is no IANA time zone "
                                     "(e.g. 'Europe/Paris', 'America/New_York', 'UTC')") from None
        if self.cron is not None:
            eventbridge_cron(self.cron, self.name)
        else:
            rate_expression(self.every, self.name)

    @property
    def expression(self) -> str:
        """The EventBridge Scheduler expression: `cron(...)` (six fields) or `rate(...)`."""
        if self.cron is not None:
            return eventbridge_cron(self.cron, self.name)
        return rate_expression(self.every, self.name)

    def occurrences(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Occurrences in (after, until], in order, as aware UTC datetimes."""
        if self.every is not None:
            step = self.every
            at = EPOCH + step * ((after - EPOCH) // step + 1)
            while at <= until:
                yield at
                at += step
            return
        assert self.cron is not None
        from croniter import croniter  # here, not at import: apps without a cron pay no cold-start time for it

        local = after.astimezone(self.zone).replace(tzinfo=None, second=0, microsecond=0)
        wall = croniter(self.cron, local)
        while True:
            found = _existing(wall.get_next(datetime), self.zone)
            if found is None:
                continue  # skipped by the zone (spring forward): no occurrence, as on EventBridge
            if found > until:
                return
            if found > after:
                yield found

    def previous(self, at: datetime) -> datetime | None:
        """The occurrence before the one at `at`, or None (within a year, for a cron)."""
        if self.every is not None:
            return at - self.every
        assert self.cron is not None
        from croniter import croniter

        wall = croniter(self.cron, at.astimezone(self.zone).replace(tzinfo=None))
        for _ in range(1000):
            candidate = wall.get_prev(datetime)
            if at - candidate.replace(tzinfo=self.zone) > timedelta(days=366):
                return None
            if (found := _existing(candidate, self.zone)) is not None and found < at:
                return found
        return None

    def occurrence_at(self, fired: datetime) -> datetime:
        """The occurrence a firing at `fired` stands for: its scheduled time, or for a rate the
        nearest instant of its epoch grid (a rate EventBridge started off the grid still maps
        each firing to one occurrence)."""
        fired = fired.astimezone(UTC).replace(microsecond=0)
        if self.every is None:
            return fired.replace(second=0)
        k = round((fired - EPOCH) / self.every)
        return EPOCH + self.every * k


_TICK = timedelta(microseconds=1)


def _existing(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """`wall` (naive, in `zone`) as UTC; None if the zone skips it. A repeated wall time (fall
    back) is taken once, at its first instant (fold=0)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    utc = aware.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return utc


def rate_expression(every: timedelta | None, name: str) -> str:
    if not isinstance(every, timedelta) or every < timedelta(minutes=1) or every % timedelta(minutes=1):
        raise ConfigurationError(f"schedule {name!r}: every= must be a timedelta of whole minutes, at least one "
                                 f"(EventBridge Scheduler's rate), got {every!r}")
    minutes = int(every / timedelta(minutes=1))
    for unit, size in (("day", 1440), ("hour", 60), ("minute", 1)):
        if minutes % size == 0:
            value = minutes // size
            return f"rate({value} {unit}{'s' if value != 1 else ''})"
    raise AssertionError("unreachable")


def eventbridge_cron(cron: str, name: str) -> str:
    """The five usual fields as EventBridge's six (`cron(min hour dom month dow year)`), or a
    ConfigurationError naming what EventBridge cannot express: a day-of-month and a
    day-of-week both restricted (cron ORs them; EventBridge takes one, with `?` in the other),
    a step in the day-of-week, or a field croniter does not read."""
    from croniter import croniter

    fields = cron.split() if isinstance(cron, str) else []
    if len(fields) != 5 or not all(_FIELD_CHARS.fullmatch(f) for f in fields) or not croniter.is_valid(cron):
        raise ConfigurationError(f"schedule {name!r}: cron={cron!r} is not five cron fields (minute hour "
                                 "day-of-month month day-of-week), e.g. '0 2 * * *' for 02:00 every day")
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        raise ConfigurationError(f"schedule {name!r}: cron={cron!r} restricts both the day of the month and the "
                                 "day of the week, which EventBridge Scheduler cannot express: keep one of them '*'")
    if "/" in dow:
        raise ConfigurationError(f"schedule {name!r}: cron={cron!r}: EventBridge takes no step (/) in the day "
                                 "of the week; list the days instead (e.g. 1,3,5)")
    if dow == "*":
        return f"cron({minute} {hour} {dom} {month} ? *)"
    return f"cron({minute} {hour} ? {month} {_eventbridge_days(dow)} *)"


def _eventbridge_days(dow: str) -> str:
    """Cron's days (0 or 7 = Sunday, names) as EventBridge's (1 = Sunday ... 7 = Saturday)."""
    def day(token: str) -> str:
        number = _DOW_NAMES.get(token.lower()[:3]) if token.isalpha() else int(token) % 7
        return str((number or 0) + 1)

    parts = []
    for item in dow.split(","):
        if "-" not in item:
            parts.append(day(item))
            continue
        low, high = item.split("-", 1)
        if high == "7" or (high.isalpha() and high.lower()[:3] == "sun"):  # ...-Sunday: up to Saturday, and Sunday
            parts += [f"{day(low)}-7", "1"]
        else:
            parts.append(f"{day(low)}-{day(high)}")
    return ",".join(parts)
