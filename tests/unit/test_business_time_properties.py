"""Business-time arithmetic, property by property (hypothesis), over real and hand-built calendars.

The calendars: the two example centers as ``config/`` defines them (America/Chicago with US
holidays; Europe/Berlin with DE/NW holidays), a hand-built one open on Saturdays with US holidays
and an explicit closure date, and a hand-built night service open 01:00-05:00 every day in Berlin,
so that the hours skipped and repeated by daylight saving fall inside business hours.

Start instants are whole minutes in 2026-2028, half of them drawn near the days that matter
(clock changes, holidays, year ends). Durations are whole minutes (``Duration(n, "m")``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oos_notify.agreements.business_time import CenterCalendar, add, public_holidays, subtract
from oos_notify.agreements.config import load_agreements
from oos_notify.agreements.durations import Duration

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow],
)

HAND_BUILT = {
    "saturdays": CenterCalendar(
        timezone=CHICAGO,
        business_days=frozenset(range(6)),  # Mon-Sat
        opens=time(9, 0),
        closes=time(13, 0),
        closed_dates=frozenset({date(2026, 11, 28), date(2027, 7, 3)}),
        public_holidays=public_holidays("US", None),
    ),
    "berlin-nights": CenterCalendar(
        timezone=BERLIN,
        business_days=frozenset(range(7)),
        opens=time(1, 0),
        closes=time(5, 0),
    ),
}
CALENDARS = ["mercy-general-main", "rhein-uk-bonn", *HAND_BUILT]


@cache
def calendar(name: str) -> CenterCalendar:
    if name in HAND_BUILT:
        return HAND_BUILT[name]
    return CenterCalendar.of(load_agreements(CONFIG_DIR).effective(name))


with_each_calendar = pytest.mark.parametrize("name", CALENDARS)

# --- strategies ---------------------------------------------------------------------------------

FIRST = datetime(2026, 1, 1, tzinfo=UTC)
MINUTES_IN_RANGE = int((datetime(2029, 1, 1, tzinfo=UTC) - FIRST).total_seconds() // 60) - 1
INTERESTING_DAYS = [
    date(2026, 3, 6),  # Friday before the US clocks go forward (Sun 03-08)
    date(2026, 3, 27),  # Friday before the EU clocks go forward (Sun 03-29)
    date(2026, 4, 2),  # Thursday before Easter
    date(2026, 10, 23),  # Friday before the EU clocks go back (Sun 10-25)
    date(2026, 10, 30),  # Friday before the US clocks go back (Sun 11-01)
    date(2026, 11, 25),  # the day before Thanksgiving
    date(2026, 12, 23),  # Christmas
    date(2026, 12, 30),  # New Year
    date(2027, 12, 22),  # Christmas and New Year observed on Fridays in the US
    date(2027, 12, 29),
    date(2028, 10, 1),  # German Unity Day on a Tuesday
]

any_minute = st.integers(0, MINUTES_IN_RANGE).map(lambda m: FIRST + timedelta(minutes=m))
near_a_day_that_matters = st.builds(
    lambda day, minutes: datetime.combine(day, time(0, 0), tzinfo=UTC) + timedelta(minutes=minutes),
    st.sampled_from(INTERESTING_DAYS),
    st.integers(0, 5 * 24 * 60),
)
starts = st.one_of(any_minute, near_a_day_that_matters)
minutes = st.integers(0, 3 * 24 * 60)  # up to 3 days of business time: weeks of calendar time
business_days = st.integers(0, 12)


def m(amount: int) -> Duration:
    return Duration(amount, "m")


def business_time_between(start: datetime, end: datetime, cal: CenterCalendar) -> timedelta:
    """An independent count of the open time between two instants, day by day."""
    total = timedelta(0)
    day = cal.local(start).date() - timedelta(days=1)
    while cal.start_of(day) < end:
        if cal.is_business_day(day):
            lo = max(start, cal.at(day, cal.opens))
            hi = min(end, cal.at(day, cal.closes))
            total += max(hi - lo, timedelta(0))
        day += timedelta(days=1)
    return total


def is_closing(instant: datetime, cal: CenterCalendar) -> bool:
    return instant == cal.at(cal.local(instant).date(), cal.closes)


def is_opening(instant: datetime, cal: CenterCalendar) -> bool:
    return instant == cal.at(cal.local(instant).date(), cal.opens)


# --- adding business hours ------------------------------------------------------------------------


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, amount=minutes)
def test_adding_business_hours_lands_inside_business_hours(
    name: str, start: datetime, amount: int
) -> None:
    cal = calendar(name)
    result = add(start, m(amount), cal, business_hours=True)
    assert cal.in_business_hours(result)
    assert result >= start


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, amount=minutes)
def test_adding_business_hours_counts_exactly_that_much_open_time_and_no_more(
    name: str, start: datetime, amount: int
) -> None:
    # The result is the earliest instant with ``amount`` of open time since ``start``
    cal = calendar(name)
    result = add(start, m(amount), cal, business_hours=True)
    assert business_time_between(start, result, cal) == timedelta(minutes=amount)
    if amount:
        assert business_time_between(start, result - timedelta(minutes=1), cal) < timedelta(
            minutes=amount
        )


@with_each_calendar
@PROPERTY_SETTINGS
@given(first=starts, later_by=st.integers(0, 4 * 24 * 60), amount=minutes)
def test_adding_business_hours_is_monotonic_in_the_start(
    name: str, first: datetime, later_by: int, amount: int
) -> None:
    cal = calendar(name)
    second = first + timedelta(minutes=later_by)
    assert add(first, m(amount), cal, True) <= add(second, m(amount), cal, True)


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, shorter=minutes, longer_by=st.integers(1, 24 * 60))
def test_adding_business_hours_is_strictly_monotonic_in_the_duration(
    name: str, start: datetime, shorter: int, longer_by: int
) -> None:
    cal = calendar(name)
    assert add(start, m(shorter), cal, True) < add(start, m(shorter + longer_by), cal, True)


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, a=minutes, b=minutes)
def test_adding_business_hours_in_two_steps_is_adding_the_sum(
    name: str, start: datetime, a: int, b: int
) -> None:
    cal = calendar(name)
    in_two = add(add(start, m(a), cal, True), m(b), cal, True)
    assert in_two == add(start, m(a + b), cal, True)


# --- subtracting business hours (steps due before a key date) -------------------------------------


@with_each_calendar
@PROPERTY_SETTINGS
@given(anchor=starts, amount=minutes)
def test_subtracting_business_hours_is_the_latest_instant_that_much_open_time_before(
    name: str, anchor: datetime, amount: int
) -> None:
    cal = calendar(name)
    result = subtract(anchor, m(amount), cal, business_hours=True)
    assert result <= anchor
    assert cal.in_business_hours(result)
    assert business_time_between(result, anchor, cal) == timedelta(minutes=amount)
    if amount:
        assert business_time_between(result + timedelta(minutes=1), anchor, cal) < timedelta(
            minutes=amount
        )


@with_each_calendar
@PROPERTY_SETTINGS
@given(anchor=starts, amount=minutes, shorter_by=st.integers(1, 24 * 60), earlier_by=minutes)
def test_subtracting_business_hours_is_monotonic(
    name: str, anchor: datetime, amount: int, shorter_by: int, earlier_by: int
) -> None:
    cal = calendar(name)
    longer = m(amount + shorter_by)
    assert subtract(anchor, longer, cal, True) < subtract(anchor, m(amount), cal, True)
    earlier = anchor - timedelta(minutes=earlier_by)
    assert subtract(earlier, m(amount), cal, True) <= subtract(anchor, m(amount), cal, True)


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, amount=minutes)
def test_subtract_undoes_add_up_to_closed_time(name: str, start: datetime, amount: int) -> None:
    """``subtract(add(s, d), d)`` is ``s`` itself, or the first business instant after it.

    Exactly: it is not before ``s``, no business time lies between the two, and adding ``d``
    to it again gives the same instant. It equals ``s`` whenever ``s`` is inside business hours,
    except at a closing instant with ``d > 0``: the time after a closing is counted from the next
    opening, and counting back ``d`` stops at that opening (the later of the two instants that
    are ``d`` of open time before the result).
    """
    cal = calendar(name)
    duration = m(amount)
    there = add(start, duration, cal, True)
    back = subtract(there, duration, cal, True)
    assert back >= start
    assert business_time_between(start, back, cal) == timedelta(0)
    assert cal.in_business_hours(back)
    assert add(back, duration, cal, True) == there
    if cal.in_business_hours(start) and not (amount and is_closing(start, cal)):
        assert back == start


@with_each_calendar
@PROPERTY_SETTINGS
@given(anchor=starts, amount=minutes)
def test_add_undoes_subtract_up_to_closed_time(name: str, anchor: datetime, amount: int) -> None:
    """``add(subtract(a, d), d)`` is ``a`` itself, or the last business instant before it."""
    cal = calendar(name)
    duration = m(amount)
    back = subtract(anchor, duration, cal, True)
    again = add(back, duration, cal, True)
    assert again <= anchor
    assert business_time_between(again, anchor, cal) == timedelta(0)
    assert subtract(again, duration, cal, True) == back
    if cal.in_business_hours(anchor) and not (amount and is_opening(anchor, cal)):
        assert again == anchor


# --- business days --------------------------------------------------------------------------------


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, days=business_days)
def test_business_days_land_on_a_business_day_at_the_same_wall_clock_time(
    name: str, start: datetime, days: int
) -> None:
    cal = calendar(name)
    result = add(start, Duration(days, "bd"), cal, business_hours=False)
    local_start, local_result = cal.local(start), cal.local(result)
    assert cal.is_business_day(local_result.date())
    assert result >= start
    # the same wall-clock time, unless that time does not exist that day (then an hour later)
    assert local_result.replace(tzinfo=None) - datetime.combine(
        local_result.date(), local_start.time()
    ) in (timedelta(0), timedelta(hours=1))
    # exactly ``days`` business days after the start's day (or the first one, from a closed day)
    between = [
        local_start.date() + timedelta(days=i)
        for i in range(1, (local_result.date() - local_start.date()).days)
    ]
    assert sum(cal.is_business_day(d) for d in between) == max(days - 1, 0)
    if days:
        assert local_result.date() > local_start.date()
    elif cal.is_business_day(local_start.date()):
        assert result == start


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, a=st.integers(1, 12), b=business_days)
def test_business_days_in_two_steps_are_the_sum(name: str, start: datetime, a: int, b: int) -> None:
    # From a closed day, ``0bd`` moves to the next business day while ``1bd`` lands on that same
    # day, so the first step counts at least one day here (see the report on 0bd).
    cal = calendar(name)
    in_two = add(add(start, Duration(a, "bd"), cal, False), Duration(b, "bd"), cal, False)
    once = add(start, Duration(a + b, "bd"), cal, False)
    # the wall-clock time may have moved an hour off a skipped hour in the first step
    assert cal.local(in_two).date() == cal.local(once).date()


@with_each_calendar
@PROPERTY_SETTINGS
@given(start=starts, days=business_days)
def test_days_in_business_hours_land_inside_business_hours(
    name: str, start: datetime, days: int
) -> None:
    cal = calendar(name)
    for unit in ("d", "bd"):
        result = add(start, Duration(days, unit), cal, business_hours=True)
        assert cal.in_business_hours(result), unit
        assert result >= start


@with_each_calendar
@PROPERTY_SETTINGS
@given(anchor_day=st.dates(date(2026, 1, 1), date(2028, 12, 31)), days=st.integers(1, 12))
def test_subtracting_business_days_from_a_key_date_counts_business_days_back(
    name: str, anchor_day: date, days: int
) -> None:
    cal = calendar(name)
    result = subtract(cal.start_of(anchor_day), Duration(days, "bd"), cal)
    local = cal.local(result)
    assert local.time() == time(0, 0)
    assert cal.is_business_day(local.date())
    counted = [local.date() + timedelta(days=i) for i in range((anchor_day - local.date()).days)]
    assert sum(cal.is_business_day(d) for d in counted) == days
