"""Calendar arithmetic in a center's time zone: pure functions, the clock is an argument.

Elapsed durations (``s``, ``m``, ``h``) are exact; ``d`` keeps the local wall-clock time across
daylight-saving changes; ``bd`` moves to the same local time on a later business day; and a step
marked ``business_hours`` counts only time inside the center's business hours (``d`` then means
business days, and a result outside the hours moves to the next opening).

A business day is one of the agreement's days that is neither a public holiday of the center's
country (and subdivision, from the ``holidays`` package, observed days included) nor one of its
explicit closure dates. A local time that does not exist (the hour skipped when clocks go forward)
resolves to the same offset as the hour before it, i.e. one hour later on the wall clock; an
ambiguous one (the hour repeated when clocks go back) resolves to its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from oos_notify.agreements.config import WEEKDAYS, EffectiveAgreement, Holidays
from oos_notify.agreements.durations import Duration

_SEARCH_LIMIT_DAYS = 3 * 366
"""How far ahead to look for business time before calling a calendar broken."""


@lru_cache(maxsize=64)
def public_holidays(country: str, subdivision: str | None) -> holidays.HolidayBase:
    """A country's public holidays (years are filled in as they are asked for)."""
    return holidays.country_holidays(country, subdiv=subdivision)


@dataclass(frozen=True)
class CenterCalendar:
    """When a center works: its time zone, business days and hours, and the days it is closed."""

    timezone: ZoneInfo
    business_days: frozenset[int]
    opens: time
    closes: time
    closed_dates: frozenset[date] = frozenset()
    public_holidays: holidays.HolidayBase | None = field(default=None, compare=False)
    holiday_calendar: tuple[str, str | None] | None = None
    """The country and subdivision ``public_holidays`` is for: what makes two calendars equal."""
    working_holidays: frozenset[str] = frozenset()
    """Public holidays (by name, lower case) the center works on, e.g. Columbus Day."""

    @classmethod
    def of(cls, agreement: EffectiveAgreement) -> CenterCalendar:
        hours = agreement.business_hours
        return cls(
            timezone=ZoneInfo(agreement.timezone),
            business_days=frozenset(WEEKDAYS.index(day) for day in hours.days),
            opens=hours.start,
            closes=hours.end,
            closed_dates=frozenset(agreement.holidays.dates),
            public_holidays=_country_holidays(agreement.holidays),
            holiday_calendar=(agreement.holidays.country, agreement.holidays.subdivision)
            if agreement.holidays.country
            else None,
            working_holidays=frozenset(name.lower() for name in agreement.holidays.working),
        )

    def is_business_day(self, day: date) -> bool:
        return (
            day.weekday() in self.business_days
            and day not in self.closed_dates
            and not self.holiday_names(day)
        )

    def holiday_names(self, day: date) -> list[str]:
        """The names of the public holiday ``day`` is, when the center does not work it;
        empty on any other day."""
        if self.public_holidays is None or day not in self.public_holidays:
            return []
        names = self.public_holidays.get_list(day)
        return [] if {n.lower() for n in names} <= self.working_holidays else names

    def in_business_hours(self, instant: datetime) -> bool:
        """Whether an instant is inside business hours (the closing minute included)."""
        local = self.local(instant)
        day = local.date()
        return self.is_business_day(day) and self.at(day, self.opens) <= instant <= self.at(
            day, self.closes
        )

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.timezone)

    def at(self, day: date, wall: time) -> datetime:
        """The UTC instant of a local wall-clock time on a day."""
        return datetime.combine(day, wall, tzinfo=self.timezone).astimezone(UTC)

    def start_of(self, day: date) -> datetime:
        return self.at(day, time(0, 0))


def _country_holidays(setting: Holidays) -> holidays.HolidayBase | None:
    if setting.country is None:
        return None
    return public_holidays(setting.country, setting.subdivision)


def add(
    start: datetime, duration: Duration, calendar: CenterCalendar, business_hours: bool
) -> datetime:
    """The instant ``duration`` after ``start``, counted the way the agreement says."""
    if duration.is_business_days or (business_hours and duration.unit == "d"):
        landed = _add_business_days(start, duration.amount, calendar)
        return _add_business_hours(landed, timedelta(0), calendar) if business_hours else landed
    if duration.unit == "d":
        local = calendar.local(start)
        day = local.date() + timedelta(days=duration.amount)
        return calendar.at(day, local.time().replace(tzinfo=None))
    if business_hours:
        return _add_business_hours(start, duration.as_timedelta(), calendar)
    # in UTC: aware datetimes that share a zone add wall-clock time, not elapsed time
    return start.astimezone(UTC) + duration.as_timedelta()


def subtract(
    anchor: datetime, duration: Duration, calendar: CenterCalendar, business_hours: bool = False
) -> datetime:
    """The instant ``duration`` before ``anchor`` (for steps due before a key date)."""
    if duration.is_business_days or (business_hours and duration.unit == "d"):
        landed = _subtract_business_days(anchor, duration.amount, calendar)
        # backwards into business hours: "at least N business days before" stays true
        return (
            _subtract_business_hours(landed, timedelta(0), calendar) if business_hours else landed
        )
    if duration.unit == "d":
        local = calendar.local(anchor)
        day = local.date() - timedelta(days=duration.amount)
        return calendar.at(day, local.time().replace(tzinfo=None))
    if business_hours:
        return _subtract_business_hours(anchor, duration.as_timedelta(), calendar)
    return anchor.astimezone(UTC) - duration.as_timedelta()


def _subtract_business_days(anchor: datetime, days: int, calendar: CenterCalendar) -> datetime:
    local = calendar.local(anchor)
    day, remaining = local.date(), days
    for _ in range(_SEARCH_LIMIT_DAYS):
        if remaining == 0:
            return calendar.at(day, local.time().replace(tzinfo=None))
        day -= timedelta(days=1)
        if calendar.is_business_day(day):
            remaining -= 1
    raise ValueError("no business days found in the calendar")


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


def _subtract_business_hours(
    anchor: datetime, amount: timedelta, calendar: CenterCalendar
) -> datetime:
    """Count business time backwards from ``anchor``: the mirror of ``_add_business_hours``."""
    cursor = anchor.astimezone(UTC)
    remaining = amount
    day = calendar.local(cursor).date()
    for _ in range(_SEARCH_LIMIT_DAYS):
        if calendar.is_business_day(day):
            opens, closes = calendar.at(day, calendar.opens), calendar.at(day, calendar.closes)
            cursor = min(cursor, closes)
            if cursor > opens or (cursor == opens and not remaining):
                available = cursor - opens
                if remaining <= available:
                    return cursor - remaining
                remaining -= available
        day -= timedelta(days=1)
        cursor = min(cursor, calendar.start_of(day + timedelta(days=1)))
    raise ValueError("no business hours found in the calendar")
