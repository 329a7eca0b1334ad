"""Calendar arithmetic in a center's time zone: pure functions, the clock is an argument.

Elapsed durations (``s``, ``m``, ``h``) are exact; ``d`` keeps the local wall-clock time across
daylight-saving changes; ``bd`` moves to the same local time on a later business day; and a step
marked ``business_hours`` counts only time inside the center's business hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from oos_notify.agreements import WEEKDAYS, EffectiveAgreement
from oos_notify.durations import Duration

_SEARCH_LIMIT_DAYS = 3 * 366
"""How far ahead to look for business time before calling a calendar broken."""


@dataclass(frozen=True)
class CenterCalendar:
    """When a center works: its time zone, business days and hours, and closure dates."""

    timezone: ZoneInfo
    business_days: frozenset[int]
    opens: time
    closes: time
    closed_dates: frozenset[date]

    @classmethod
    def of(cls, agreement: EffectiveAgreement) -> CenterCalendar:
        hours = agreement.business_hours
        return cls(
            timezone=ZoneInfo(agreement.timezone),
            business_days=frozenset(WEEKDAYS.index(day) for day in hours.days),
            opens=hours.start,
            closes=hours.end,
            closed_dates=frozenset(agreement.holidays.dates),
        )

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.business_days and day not in self.closed_dates

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.timezone)

    def at(self, day: date, wall: time) -> datetime:
        """The UTC instant of a local wall-clock time on a day."""
        return datetime.combine(day, wall, tzinfo=self.timezone).astimezone(UTC)

    def start_of(self, day: date) -> datetime:
        return self.at(day, time(0, 0))


def add(
    start: datetime, duration: Duration, calendar: CenterCalendar, business_hours: bool
) -> datetime:
    """The instant ``duration`` after ``start``, counted the way the agreement says."""
    if duration.is_business_days:
        return _add_business_days(start, duration.amount, calendar)
    if duration.unit == "d" and not business_hours:
        local = calendar.local(start)
        day = local.date() + timedelta(days=duration.amount)
        return calendar.at(day, local.time().replace(tzinfo=None))
    if business_hours:
        return _add_business_hours(start, duration.as_timedelta(), calendar)
    # in UTC: aware datetimes that share a zone add wall-clock time, not elapsed time
    return start.astimezone(UTC) + duration.as_timedelta()


def subtract(anchor: datetime, duration: Duration, calendar: CenterCalendar) -> datetime:
    """The instant ``duration`` before ``anchor`` (for steps due before a key date)."""
    if duration.is_business_days:
        local = calendar.local(anchor)
        day, remaining = local.date(), duration.amount
        for _ in range(_SEARCH_LIMIT_DAYS):
            if remaining == 0:
                return calendar.at(day, local.time().replace(tzinfo=None))
            day -= timedelta(days=1)
            if calendar.is_business_day(day):
                remaining -= 1
        raise ValueError("no business days found in the calendar")
    if duration.unit == "d":
        local = calendar.local(anchor)
        day = local.date() - timedelta(days=duration.amount)
        return calendar.at(day, local.time().replace(tzinfo=None))
    return anchor.astimezone(UTC) - duration.as_timedelta()


def _add_business_days(start: datetime, days: int, calendar: CenterCalendar) -> datetime:
    local = calendar.local(start)
    day, remaining = local.date(), days
    for _ in range(_SEARCH_LIMIT_DAYS):
        if remaining == 0 and calendar.is_business_day(day):
            return calendar.at(day, local.time().replace(tzinfo=None))
        day += timedelta(days=1)
        if calendar.is_business_day(day):
            remaining = max(remaining - 1, 0)
    raise ValueError("no business days found in the calendar")


def _add_business_hours(start: datetime, amount: timedelta, calendar: CenterCalendar) -> datetime:
    cursor = start.astimezone(UTC)
    remaining = amount
    day = calendar.local(cursor).date()
    for _ in range(_SEARCH_LIMIT_DAYS):
        if calendar.is_business_day(day):
            opens, closes = calendar.at(day, calendar.opens), calendar.at(day, calendar.closes)
            cursor = max(cursor, opens)
            if cursor < closes or (cursor == closes and not remaining):
                available = closes - cursor
                if remaining <= available:
                    return cursor + remaining
                remaining -= available
        day += timedelta(days=1)
        cursor = max(cursor, calendar.start_of(day))
    raise ValueError("no business hours found in the calendar")
