"""Calendar arithmetic in a center's time zone: business hours, closures, daylight saving."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from oos_notify.business_time import CenterCalendar, add, subtract
from oos_notify.durations import Duration, parse_duration

CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")
THANKSGIVING = date(2026, 11, 26)  # a Thursday the Chicago center has declared closed
GOOD_FRIDAY = date(2026, 4, 3)


def calendar(zone: ZoneInfo, *closed: date) -> CenterCalendar:
    """Mon-Fri 08:00-17:00 in ``zone``, closed on the given dates."""
    return CenterCalendar(
        timezone=zone,
        business_days=frozenset(range(5)),
        opens=time(8, 0),
        closes=time(17, 0),
        closed_dates=frozenset(closed),
    )


US = calendar(CHICAGO, THANKSGIVING)
EU = calendar(BERLIN, GOOD_FRIDAY)


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A local wall-clock time, as a timezone-aware datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def chi(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """Wall-clock time in Chicago."""
    return local(CHICAGO, year, month, day, hour, minute)


def ber(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """Wall-clock time in Berlin."""
    return local(BERLIN, year, month, day, hour, minute)


# --- business hours -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "amount", "expected"),
    [
        pytest.param(chi(2026, 11, 24, 9, 12), "2h", chi(2026, 11, 24, 11, 12), id="inside-a-day"),
        pytest.param(
            chi(2026, 11, 24, 16, 0), "2h", chi(2026, 11, 25, 9, 0), id="across-the-evening"
        ),
        pytest.param(
            chi(2026, 11, 20, 16, 30), "2h", chi(2026, 11, 23, 9, 30), id="across-the-weekend"
        ),
        pytest.param(
            chi(2026, 11, 25, 16, 0), "2h", chi(2026, 11, 27, 9, 0), id="across-a-closed-date"
        ),
        pytest.param(
            chi(2026, 11, 24, 6, 0),
            "1h",
            chi(2026, 11, 24, 9, 0),
            id="before-opening-counts-from-opening",
        ),
        pytest.param(
            chi(2026, 11, 21, 12, 0), "90m", chi(2026, 11, 23, 9, 30), id="from-a-saturday"
        ),
        pytest.param(
            chi(2026, 11, 24, 15, 0), "2h", chi(2026, 11, 24, 17, 0), id="exactly-to-closing"
        ),
        pytest.param(
            chi(2026, 11, 23, 9, 0), "20h", chi(2026, 11, 25, 11, 0), id="more-than-one-working-day"
        ),
        pytest.param(
            chi(2026, 10, 30, 16, 0),
            "2h",
            chi(2026, 11, 2, 9, 0),
            id="across-the-us-dst-end-weekend",
        ),
        pytest.param(
            ber(2026, 3, 27, 16, 0),
            "2h",
            ber(2026, 3, 30, 9, 0),
            id="across-the-eu-dst-start-weekend",
        ),
        pytest.param(
            ber(2026, 4, 2, 16, 30), "1h", ber(2026, 4, 6, 8, 30), id="across-an-eu-closed-friday"
        ),
    ],
)
def test_business_hours_count_only_open_time(
    start: datetime, amount: str, expected: datetime
) -> None:
    cal = US if start.tzinfo is CHICAGO else EU
    assert add(start.astimezone(UTC), parse_duration(amount), cal, business_hours=True) == expected


def test_a_business_hours_step_due_at_once_waits_for_opening() -> None:
    saturday_noon = chi(2026, 11, 21, 12, 0)
    assert add(saturday_noon, parse_duration("0m"), US, business_hours=True) == local(
        CHICAGO, 2026, 11, 23, 8, 0
    )
    tuesday_ten = chi(2026, 11, 24, 10, 0)
    assert add(tuesday_ten, parse_duration("0m"), US, business_hours=True) == tuesday_ten


def test_without_business_hours_hours_are_elapsed_time() -> None:
    friday_evening = utc(2026, 11, 20, 23, 30)
    assert add(friday_evening, parse_duration("2h"), US, business_hours=False) == utc(
        2026, 11, 21, 1, 30
    )
    # 24 elapsed hours across the US DST end are 23 wall-clock hours later
    saturday_nine = chi(2026, 10, 31, 9, 0)
    assert add(saturday_nine, parse_duration("24h"), US, business_hours=False) == local(
        CHICAGO, 2026, 11, 1, 8, 0
    )


# --- days and business days -----------------------------------------------------------------


def test_a_day_keeps_the_wall_clock_time_across_the_us_dst_end() -> None:
    start = chi(2026, 10, 31, 9, 0)  # CDT, 14:00Z
    result = add(start.astimezone(UTC), parse_duration("1d"), US, business_hours=False)
    assert result == utc(2026, 11, 1, 15, 0)  # 09:00 CST
    assert result.astimezone(CHICAGO).time() == time(9, 0)
    assert result - start == timedelta(hours=25)


def test_a_day_keeps_the_wall_clock_time_across_the_eu_dst_start() -> None:
    start = ber(2026, 3, 28, 10, 0)  # CET, 09:00Z
    result = add(start.astimezone(UTC), parse_duration("1d"), EU, business_hours=False)
    assert result == utc(2026, 3, 29, 8, 0)  # 10:00 CEST
    assert result.astimezone(BERLIN).time() == time(10, 0)
    assert result - start == timedelta(hours=23)


def test_fourteen_days_of_link_validity_end_at_the_same_local_time() -> None:
    start = chi(2026, 10, 20, 9, 12)
    result = add(start, parse_duration("14d"), US, business_hours=False)
    assert result.astimezone(CHICAGO).replace(tzinfo=None) == datetime(2026, 11, 3, 9, 12)


@pytest.mark.parametrize(
    ("start", "amount", "expected"),
    [
        pytest.param(
            chi(2026, 11, 20, 10, 0), "1bd", chi(2026, 11, 23, 10, 0), id="friday-to-monday"
        ),
        pytest.param(
            chi(2026, 10, 30, 10, 0),
            "1bd",
            chi(2026, 11, 2, 10, 0),
            id="friday-to-monday-across-dst-end",
        ),
        pytest.param(
            chi(2026, 11, 25, 10, 0), "1bd", chi(2026, 11, 27, 10, 0), id="over-a-closed-date"
        ),
        pytest.param(
            chi(2026, 11, 19, 14, 0), "2bd", chi(2026, 11, 23, 14, 0), id="two-over-a-weekend"
        ),
        pytest.param(
            ber(2026, 3, 27, 10, 0),
            "1bd",
            ber(2026, 3, 30, 10, 0),
            id="friday-to-monday-across-eu-dst-start",
        ),
    ],
)
def test_business_days_land_on_a_later_business_day_at_the_same_local_time(
    start: datetime, amount: str, expected: datetime
) -> None:
    cal = US if start.tzinfo is CHICAGO else EU
    result = add(start.astimezone(UTC), parse_duration(amount), cal, business_hours=False)
    assert result == expected
    assert result.astimezone(cal.timezone).time() == start.time()


# --- subtracting (steps due before a key date) ----------------------------------------------


def test_subtract_hours_is_elapsed_time() -> None:
    midnight = US.start_of(date(2026, 11, 30))
    assert midnight == utc(2026, 11, 30, 6, 0)
    assert subtract(midnight, parse_duration("48h"), US) == utc(2026, 11, 28, 6, 0)
    # across the DST end 48 elapsed hours before local midnight is 01:00 CDT
    after_dst_end = US.start_of(date(2026, 11, 2))
    assert subtract(after_dst_end, parse_duration("48h"), US) == local(CHICAGO, 2026, 10, 31, 1, 0)
    # the same instant given in local time is still 48 elapsed hours earlier
    local_anchor = chi(2026, 11, 2, 0, 0)
    assert subtract(local_anchor, parse_duration("48h"), US) == chi(2026, 10, 31, 1, 0)


def test_subtract_days_keeps_local_midnight_across_dst() -> None:
    assert subtract(US.start_of(date(2026, 11, 2)), parse_duration("2d"), US) == local(
        CHICAGO, 2026, 10, 31, 0, 0
    )
    assert subtract(EU.start_of(date(2026, 3, 30)), parse_duration("2d"), EU) == local(
        BERLIN, 2026, 3, 28, 0, 0
    )


def test_subtract_business_days_skips_weekends_and_closed_dates() -> None:
    monday = US.start_of(date(2026, 11, 30))
    assert subtract(monday, parse_duration("1bd"), US) == chi(2026, 11, 27, 0, 0)
    assert subtract(monday, parse_duration("2bd"), US) == chi(2026, 11, 25, 0, 0)


# --- properties over a grid of instants -----------------------------------------------------


def business_time_between(start: datetime, end: datetime, cal: CenterCalendar) -> timedelta:
    """An independent count of the open time between two instants, day by day."""
    total = timedelta(0)
    day = cal.local(start).date()
    while cal.start_of(day) < end:
        if cal.is_business_day(day):
            lo = max(start, cal.at(day, cal.opens))
            hi = min(end, cal.at(day, cal.closes))
            total += max(hi - lo, timedelta(0))
        day += timedelta(days=1)
    return total


def grid(first: datetime, days: int, step_minutes: int) -> list[datetime]:
    count = days * 24 * 60 // step_minutes
    return [first + timedelta(minutes=step_minutes * i) for i in range(count)]


AMOUNTS_MINUTES = [1, 30, 59, 60, 120, 240, 539, 540, 541, 1000, 3000]
GRIDS = [
    pytest.param(US, grid(utc(2026, 10, 28, 0, 7), 12, 47), id="chicago-dst-end"),
    pytest.param(US, grid(utc(2026, 11, 19, 0, 3), 12, 47), id="chicago-closed-date"),
    pytest.param(EU, grid(utc(2026, 3, 25, 0, 11), 12, 47), id="berlin-dst-start"),
]


@pytest.mark.parametrize(("cal", "starts"), GRIDS)
def test_adding_business_hours_lands_inside_business_hours_after_exactly_that_much(
    cal: CenterCalendar, starts: list[datetime]
) -> None:
    for start in starts:
        for minutes in AMOUNTS_MINUTES:
            result = add(start, Duration(minutes, "m"), cal, business_hours=True)
            wall = cal.local(result)
            assert cal.is_business_day(wall.date()), (start, minutes, result)
            assert cal.opens <= wall.time() <= cal.closes, (start, minutes, result)
            assert business_time_between(start, result, cal) == timedelta(minutes=minutes), (
                start,
                minutes,
                result,
            )


@pytest.mark.parametrize(("cal", "starts"), GRIDS)
def test_adding_business_hours_is_monotonic_in_the_amount_and_the_start(
    cal: CenterCalendar, starts: list[datetime]
) -> None:
    previous_row: list[datetime] | None = None
    for start in starts:
        row = [add(start, Duration(m, "m"), cal, business_hours=True) for m in AMOUNTS_MINUTES]
        assert row == sorted(row) and len(set(row)) == len(row), (start, row)
        if previous_row is not None:
            assert all(a <= b for a, b in zip(previous_row, row, strict=True)), start
        previous_row = row
