"""Calendar arithmetic in a center's time zone: business hours, closures, daylight saving."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from oos_notify.agreements.business_time import CenterCalendar, add, public_holidays, subtract
from oos_notify.agreements.config import load_agreements
from oos_notify.agreements.durations import Duration, parse_duration

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


# --- the example centers' real calendars, with a fixed clock ------------------------------------
#
# Mercy General (America/Chicago, Mon-Fri 08:00-17:00, US public holidays) and Bonn
# (Europe/Berlin, Mon-Fri 07:30-16:30, public holidays of Germany and North Rhine-Westphalia), as
# ``config/`` defines them. Every expected instant is written as the center's wall clock with the
# zone abbreviation, which tells the two 01:30s of a night when clocks go back apart.
#
# The holidays these cases rely on (checked against the holidays package):
#   US: Thanksgiving Thu 2026-11-26 (Fri 11-27 is a working day), Christmas Fri 2026-12-25,
#       New Year's Day Fri 2027-01-01, Martin Luther King Jr. Day Mon 2027-01-18, and in 2027
#       Christmas and New Year's Day fall on Saturdays, observed on Fri 12-24 and Fri 12-31.
#   DE/NW: Good Friday 2026-04-03 and Easter Monday 2026-04-06, Corpus Christi Thu 2026-06-04
#       (NW, not Berlin), Christmas Fri 2026-12-25 and Sat 12-26 (Thu 12-24 is a working day),
#       New Year's Day Fri 2027-01-01, All Saints' Day Mon 2027-11-01 (NW), German Unity Day
#       Tue 2028-10-03 (it falls on a Saturday in 2026).
# Clocks change: US Sun 2026-03-08 and Sun 2026-11-01; EU Sun 2026-03-29, Sun 2026-10-25 and
# Sun 2027-10-31.

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@cache
def center(center_id: str) -> CenterCalendar:
    return CenterCalendar.of(load_agreements(CONFIG_DIR).effective(center_id))


MERCY = "mercy-general-main"
BONN = "rhein-uk-bonn"


def wall(instant: datetime, cal: CenterCalendar) -> str:
    """An instant as the center's wall clock reads it: ``Mon 2026-11-23 09:30 CST``."""
    return instant.astimezone(cal.timezone).strftime("%a %Y-%m-%d %H:%M %Z")


def test_the_example_centers_calendars_come_from_their_agreements() -> None:
    mercy, bonn = center(MERCY), center(BONN)
    assert (mercy.timezone, mercy.opens, mercy.closes) == (CHICAGO, time(8, 0), time(17, 0))
    assert (bonn.timezone, bonn.opens, bonn.closes) == (BERLIN, time(7, 30), time(16, 30))
    assert mercy.business_days == bonn.business_days == frozenset({0, 1, 2, 3, 4})
    assert not mercy.is_business_day(date(2026, 11, 26))  # Thanksgiving
    assert mercy.is_business_day(date(2026, 11, 27))  # the day after is no federal holiday
    assert not bonn.is_business_day(date(2026, 6, 4))  # Corpus Christi in NW
    assert bonn.is_business_day(date(2026, 12, 24))


@pytest.mark.parametrize(
    ("center_id", "start", "amount", "expected"),
    [
        # Mercy General, America/Chicago
        pytest.param(
            MERCY, chi(2026, 6, 12, 15, 0), "3h", "Mon 2026-06-15 09:00 CDT", id="us-weekend"
        ),
        pytest.param(
            MERCY, chi(2026, 11, 25, 16, 0), "2h", "Fri 2026-11-27 09:00 CST", id="us-thanksgiving"
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 26, 10, 0),
            "1h",
            "Fri 2026-11-27 09:00 CST",
            id="us-from-thanksgiving-itself",
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 24, 16, 0),
            "11h",
            "Fri 2026-11-27 09:00 CST",
            id="us-tuesday-over-thanksgiving",
        ),
        pytest.param(
            MERCY, chi(2026, 12, 24, 16, 0), "2h", "Mon 2026-12-28 09:00 CST", id="us-christmas"
        ),
        pytest.param(
            MERCY, chi(2026, 12, 31, 16, 0), "2h", "Mon 2027-01-04 09:00 CST", id="us-new-year"
        ),
        pytest.param(
            MERCY,
            chi(2026, 12, 31, 16, 45),
            "30m",
            "Mon 2027-01-04 08:15 CST",
            id="us-new-year-minutes",
        ),
        pytest.param(
            MERCY,
            chi(2027, 12, 23, 16, 0),
            "2h",
            "Mon 2027-12-27 09:00 CST",
            id="us-christmas-observed-on-friday-2027",
        ),
        pytest.param(
            MERCY,
            chi(2027, 12, 30, 16, 0),
            "2h",
            "Mon 2028-01-03 09:00 CST",
            id="us-new-year-observed-on-friday-2027",
        ),
        pytest.param(
            MERCY, chi(2027, 1, 15, 16, 0), "2h", "Tue 2027-01-19 09:00 CST", id="us-mlk-monday"
        ),
        pytest.param(
            MERCY,
            chi(2026, 3, 6, 16, 0),
            "2h",
            "Mon 2026-03-09 09:00 CDT",
            id="us-dst-start-weekend",
        ),
        pytest.param(
            MERCY,
            chi(2026, 3, 6, 12, 0),
            "9h",
            "Mon 2026-03-09 12:00 CDT",
            id="us-dst-start-a-full-day",
        ),
        pytest.param(
            MERCY,
            chi(2026, 10, 30, 16, 0),
            "2h",
            "Mon 2026-11-02 09:00 CST",
            id="us-dst-end-weekend",
        ),
        pytest.param(
            MERCY,
            chi(2026, 10, 31, 1, 30),
            "1h",
            "Mon 2026-11-02 09:00 CST",
            id="us-from-saturday-before-dst-end",
        ),
        # Bonn, Europe/Berlin
        pytest.param(
            BONN, ber(2026, 11, 20, 16, 0), "1h", "Mon 2026-11-23 08:00 CET", id="de-weekend"
        ),
        pytest.param(
            BONN, ber(2026, 4, 2, 16, 0), "1h", "Tue 2026-04-07 08:00 CEST", id="de-easter"
        ),
        pytest.param(
            BONN,
            ber(2026, 6, 3, 16, 0),
            "1h",
            "Fri 2026-06-05 08:00 CEST",
            id="de-nw-corpus-christi",
        ),
        pytest.param(
            BONN, ber(2028, 10, 2, 16, 0), "1h", "Wed 2028-10-04 08:00 CEST", id="de-unity-day"
        ),
        pytest.param(
            BONN, ber(2026, 12, 24, 16, 0), "1h", "Mon 2026-12-28 08:00 CET", id="de-christmas"
        ),
        pytest.param(
            BONN, ber(2026, 12, 31, 16, 0), "1h", "Mon 2027-01-04 08:00 CET", id="de-new-year"
        ),
        pytest.param(
            BONN,
            ber(2026, 12, 30, 9, 0),
            "18h",
            "Mon 2027-01-04 09:00 CET",
            id="de-new-year-two-days",
        ),
        pytest.param(
            BONN,
            ber(2026, 3, 27, 16, 0),
            "1h",
            "Mon 2026-03-30 08:00 CEST",
            id="de-dst-start-weekend",
        ),
        pytest.param(
            BONN,
            ber(2026, 10, 23, 16, 0),
            "1h",
            "Mon 2026-10-26 08:00 CET",
            id="de-dst-end-weekend",
        ),
        pytest.param(
            BONN,
            ber(2027, 10, 29, 16, 0),
            "1h",
            "Tue 2027-11-02 08:00 CET",
            id="de-dst-end-then-all-saints",
        ),
    ],
)
def test_business_hours_steps_at_the_example_centers(
    center_id: str, start: datetime, amount: str, expected: str
) -> None:
    # Given a center's real calendar and a step that counts business hours
    cal = center(center_id)
    # When the step is planned from ``start``
    result = add(start.astimezone(UTC), parse_duration(amount), cal, business_hours=True)
    # Then it lands on the expected wall-clock time, inside business hours
    assert wall(result, cal) == expected
    assert cal.in_business_hours(result)


@pytest.mark.parametrize(
    ("center_id", "start", "amount", "business_hours", "expected"),
    [
        pytest.param(
            MERCY,
            chi(2026, 11, 25, 10, 0),
            "1bd",
            False,
            "Fri 2026-11-27 10:00 CST",
            id="us-bd-over-thanksgiving",
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 26, 10, 0),
            "1bd",
            False,
            "Fri 2026-11-27 10:00 CST",
            id="us-bd-from-thanksgiving",
        ),
        pytest.param(
            MERCY,
            chi(2026, 12, 24, 9, 0),
            "2bd",
            False,
            "Tue 2026-12-29 09:00 CST",
            id="us-bd-over-christmas",
        ),
        pytest.param(
            MERCY,
            chi(2026, 12, 31, 14, 0),
            "1bd",
            False,
            "Mon 2027-01-04 14:00 CST",
            id="us-bd-over-new-year",
        ),
        pytest.param(
            MERCY,
            chi(2026, 3, 6, 10, 0),
            "1bd",
            False,
            "Mon 2026-03-09 10:00 CDT",
            id="us-bd-over-dst-start",
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 20, 20, 0),
            "1bd",
            False,
            "Mon 2026-11-23 20:00 CST",
            id="us-bd-keeps-an-evening-time",
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 20, 20, 0),
            "1bd",
            True,
            "Tue 2026-11-24 08:00 CST",
            id="us-bd-in-business-hours-moves-to-the-next-opening",
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 25, 10, 0),
            "1d",
            True,
            "Fri 2026-11-27 10:00 CST",
            id="us-d-in-business-hours-is-a-business-day",
        ),
        pytest.param(
            MERCY,
            chi(2026, 11, 25, 10, 0),
            "1d",
            False,
            "Thu 2026-11-26 10:00 CST",
            id="us-d-is-a-calendar-day-holiday-or-not",
        ),
        pytest.param(
            MERCY,
            chi(2026, 12, 31, 18, 0),
            "1d",
            True,
            "Tue 2027-01-05 08:00 CST",
            id="us-d-in-business-hours-over-new-year-after-closing",
        ),
        pytest.param(
            MERCY,
            chi(2026, 3, 7, 9, 0),
            "1d",
            False,
            "Sun 2026-03-08 09:00 CDT",
            id="us-d-over-dst-start-keeps-wall-clock",
        ),
        pytest.param(
            MERCY,
            chi(2026, 3, 7, 2, 30),
            "1d",
            False,
            "Sun 2026-03-08 03:30 CDT",
            id="us-d-onto-the-skipped-hour",
        ),
        pytest.param(
            MERCY,
            chi(2026, 10, 31, 1, 30),
            "1d",
            False,
            "Sun 2026-11-01 01:30 CDT",
            id="us-d-onto-the-repeated-hour-takes-the-first",
        ),
        pytest.param(
            MERCY,
            chi(2026, 3, 7, 12, 0),
            "24h",
            False,
            "Sun 2026-03-08 13:00 CDT",
            id="us-24h-over-dst-start-is-elapsed",
        ),
        pytest.param(
            BONN,
            ber(2026, 4, 2, 10, 0),
            "1bd",
            False,
            "Tue 2026-04-07 10:00 CEST",
            id="de-bd-over-easter",
        ),
        pytest.param(
            BONN,
            ber(2026, 10, 23, 10, 0),
            "1bd",
            False,
            "Mon 2026-10-26 10:00 CET",
            id="de-bd-over-dst-end",
        ),
        pytest.param(
            BONN,
            ber(2026, 12, 24, 10, 0),
            "3bd",
            False,
            "Wed 2026-12-30 10:00 CET",
            id="de-bd-over-christmas",
        ),
        pytest.param(
            BONN,
            ber(2026, 12, 31, 10, 0),
            "1bd",
            False,
            "Mon 2027-01-04 10:00 CET",
            id="de-bd-over-new-year",
        ),
        pytest.param(
            BONN,
            ber(2026, 3, 28, 2, 30),
            "1d",
            False,
            "Sun 2026-03-29 03:30 CEST",
            id="de-d-onto-the-skipped-hour",
        ),
        pytest.param(
            BONN,
            ber(2026, 10, 24, 2, 30),
            "1d",
            False,
            "Sun 2026-10-25 02:30 CEST",
            id="de-d-onto-the-repeated-hour-takes-the-first",
        ),
        pytest.param(
            BONN,
            ber(2026, 10, 24, 12, 0),
            "24h",
            False,
            "Sun 2026-10-25 11:00 CET",
            id="de-24h-over-dst-end-is-elapsed",
        ),
    ],
)
def test_days_and_business_days_at_the_example_centers(
    center_id: str, start: datetime, amount: str, business_hours: bool, expected: str
) -> None:
    cal = center(center_id)
    result = add(start.astimezone(UTC), parse_duration(amount), cal, business_hours)
    assert wall(result, cal) == expected


def test_the_repeated_hour_is_told_apart_by_its_zone() -> None:
    # Saturday 01:30 CDT is 06:30Z; the clocks go back at 07:00Z on Sunday
    cal = center(MERCY)
    saturday = chi(2026, 10, 31, 1, 30)
    first = add(saturday, parse_duration("24h"), cal, business_hours=False)
    second = add(saturday, parse_duration("25h"), cal, business_hours=False)
    assert (wall(first, cal), first) == ("Sun 2026-11-01 01:30 CDT", utc(2026, 11, 1, 6, 30))
    assert (wall(second, cal), second) == ("Sun 2026-11-01 01:30 CST", utc(2026, 11, 1, 7, 30))


# --- steps due before a key date: subtracting ---------------------------------------------------


@pytest.mark.parametrize(
    ("center_id", "anchor", "amount", "business_hours", "expected"),
    [
        pytest.param(
            MERCY,
            date(2026, 11, 30),
            "16h",
            True,
            "Wed 2026-11-25 10:00 CST",
            id="us-business-hours-over-thanksgiving",
        ),
        pytest.param(
            MERCY,
            date(2027, 1, 4),
            "2h",
            True,
            "Thu 2026-12-31 15:00 CST",
            id="us-business-hours-over-new-year",
        ),
        pytest.param(
            MERCY,
            date(2026, 3, 9),
            "4h",
            True,
            "Fri 2026-03-06 13:00 CST",
            id="us-business-hours-over-dst-start",
        ),
        pytest.param(
            MERCY,
            date(2026, 11, 2),
            "9h",
            True,
            "Fri 2026-10-30 08:00 CDT",
            id="us-business-hours-a-whole-day-ends-at-its-opening",
        ),
        pytest.param(
            MERCY,
            date(2026, 11, 2),
            "10h",
            True,
            "Thu 2026-10-29 16:00 CDT",
            id="us-business-hours-over-dst-end",
        ),
        pytest.param(
            MERCY,
            date(2026, 11, 30),
            "2bd",
            False,
            "Wed 2026-11-25 00:00 CST",
            id="us-bd-over-thanksgiving",
        ),
        pytest.param(
            MERCY,
            date(2027, 1, 4),
            "1bd",
            False,
            "Thu 2026-12-31 00:00 CST",
            id="us-bd-over-new-year",
        ),
        pytest.param(
            MERCY,
            date(2026, 3, 9),
            "1bd",
            False,
            "Fri 2026-03-06 00:00 CST",
            id="us-bd-over-dst-start",
        ),
        pytest.param(
            MERCY,
            date(2026, 3, 9),
            "2d",
            False,
            "Sat 2026-03-07 00:00 CST",
            id="us-d-over-dst-start",
        ),
        pytest.param(
            MERCY,
            date(2026, 3, 9),
            "48h",
            False,
            "Fri 2026-03-06 23:00 CST",
            id="us-48h-over-dst-start-is-elapsed",
        ),
        pytest.param(
            BONN,
            date(2026, 4, 7),
            "3h",
            True,
            "Thu 2026-04-02 13:30 CEST",
            id="de-business-hours-over-easter",
        ),
        pytest.param(
            BONN,
            date(2026, 3, 30),
            "10h",
            True,
            "Thu 2026-03-26 15:30 CET",
            id="de-business-hours-over-dst-start",
        ),
        pytest.param(
            BONN,
            date(2026, 10, 26),
            "1h",
            True,
            "Fri 2026-10-23 15:30 CEST",
            id="de-business-hours-over-dst-end",
        ),
        pytest.param(
            BONN,
            date(2027, 1, 4),
            "9h",
            True,
            "Thu 2026-12-31 07:30 CET",
            id="de-business-hours-over-new-year",
        ),
        pytest.param(
            BONN,
            date(2026, 4, 7),
            "1bd",
            False,
            "Thu 2026-04-02 00:00 CEST",
            id="de-bd-over-easter",
        ),
        pytest.param(
            BONN,
            date(2026, 10, 26),
            "1bd",
            False,
            "Fri 2026-10-23 00:00 CEST",
            id="de-bd-over-dst-end",
        ),
        pytest.param(
            BONN,
            date(2026, 10, 26),
            "1d",
            False,
            "Sun 2026-10-25 00:00 CEST",
            id="de-d-over-dst-end",
        ),
        pytest.param(
            BONN,
            date(2026, 3, 30),
            "48h",
            False,
            "Fri 2026-03-27 23:00 CET",
            id="de-48h-over-dst-start-is-elapsed",
        ),
    ],
)
def test_steps_before_a_key_date_at_the_example_centers(
    center_id: str, anchor: date, amount: str, business_hours: bool, expected: str
) -> None:
    # Given a key date, whose local midnight is the anchor (as planning uses it)
    cal = center(center_id)
    midnight = cal.start_of(anchor)
    # When the step is due ``amount`` before it
    result = subtract(midnight, parse_duration(amount), cal, business_hours)
    # Then it is due at the expected wall-clock time
    assert wall(result, cal) == expected


@pytest.mark.parametrize(
    ("anchor", "amount", "expected"),
    [
        pytest.param(chi(2026, 11, 24, 10, 0), "3h", "Mon 2026-11-23 16:00 CST", id="mid-day"),
        pytest.param(
            chi(2026, 11, 24, 8, 0), "1h", "Mon 2026-11-23 16:00 CST", id="from-an-opening"
        ),
        pytest.param(
            chi(2026, 11, 21, 12, 0),
            "0m",
            "Fri 2026-11-20 17:00 CST",
            id="nothing-before-a-saturday-is-friday-closing",
        ),
        pytest.param(
            chi(2026, 11, 27, 9, 0), "2h", "Wed 2026-11-25 16:00 CST", id="back-over-thanksgiving"
        ),
    ],
)
def test_subtracting_business_hours_from_a_time_of_day(
    anchor: datetime, amount: str, expected: str
) -> None:
    cal = center(MERCY)
    result = subtract(anchor, parse_duration(amount), cal, business_hours=True)
    assert wall(result, cal) == expected
    assert cal.in_business_hours(result)


# --- in_business_hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("center_id", "instant", "inside"),
    [
        pytest.param(MERCY, chi(2026, 11, 24, 8, 0), True, id="us-the-opening-minute"),
        pytest.param(MERCY, chi(2026, 11, 24, 17, 0), True, id="us-the-closing-minute"),
        pytest.param(MERCY, chi(2026, 11, 24, 7, 59), False, id="us-before-opening"),
        pytest.param(MERCY, chi(2026, 11, 24, 17, 1), False, id="us-after-closing"),
        pytest.param(MERCY, chi(2026, 11, 26, 12, 0), False, id="us-thanksgiving-noon"),
        pytest.param(MERCY, chi(2026, 11, 28, 12, 0), False, id="us-saturday-noon"),
        pytest.param(BONN, ber(2026, 11, 24, 7, 30), True, id="de-the-opening-minute"),
        pytest.param(BONN, ber(2026, 11, 24, 7, 29), False, id="de-before-opening"),
        pytest.param(BONN, ber(2026, 11, 24, 16, 30), True, id="de-the-closing-minute"),
        pytest.param(BONN, ber(2026, 6, 4, 10, 0), False, id="de-corpus-christi"),
        # 16:00 in Chicago is 23:00 in Berlin: each center answers in its own zone
        pytest.param(BONN, chi(2026, 11, 24, 16, 0), False, id="de-asked-in-chicago-time"),
    ],
)
def test_in_business_hours(center_id: str, instant: datetime, inside: bool) -> None:
    assert center(center_id).in_business_hours(instant) is inside
    assert center(center_id).in_business_hours(instant.astimezone(UTC)) is inside


# --- hand-built calendars: Saturday openings, public holidays by subdivision, night hours ------


SATURDAYS = CenterCalendar(
    timezone=CHICAGO,
    business_days=frozenset(range(6)),  # Mon-Sat
    opens=time(9, 0),
    closes=time(13, 0),
    closed_dates=frozenset({date(2026, 11, 28)}),  # the Saturday after Thanksgiving
    public_holidays=public_holidays("US", None),
)
BERLIN_STATE = CenterCalendar(
    timezone=BERLIN,
    business_days=frozenset(range(5)),
    opens=time(7, 30),
    closes=time(16, 30),
    public_holidays=public_holidays("DE", "BE"),  # Berlin: no Corpus Christi
)
NIGHTS_CHICAGO = CenterCalendar(
    timezone=CHICAGO,
    business_days=frozenset(range(7)),
    opens=time(1, 0),
    closes=time(5, 0),
)
NIGHTS_BERLIN = CenterCalendar(
    timezone=BERLIN,
    business_days=frozenset(range(7)),
    opens=time(1, 0),
    closes=time(5, 0),
)


@pytest.mark.parametrize(
    ("cal", "start", "amount", "expected"),
    [
        pytest.param(
            SATURDAYS,
            chi(2026, 11, 20, 12, 0),
            "2h",
            "Sat 2026-11-21 10:00 CST",
            id="saturday-is-a-business-day",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 11, 21, 12, 30),
            "1h",
            "Mon 2026-11-23 09:30 CST",
            id="sunday-is-not",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 11, 25, 12, 0),
            "2h",
            "Fri 2026-11-27 10:00 CST",
            id="public-holiday-and-closed-saturday",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 11, 27, 12, 0),
            "2h",
            "Mon 2026-11-30 10:00 CST",
            id="closed-saturday-after-thanksgiving",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 3, 6, 12, 0),
            "2h",
            "Sat 2026-03-07 10:00 CST",
            id="saturday-before-dst-start",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 3, 7, 12, 0),
            "2h",
            "Mon 2026-03-09 10:00 CDT",
            id="over-dst-start-sunday",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 12, 31, 12, 0),
            "2h",
            "Sat 2027-01-02 10:00 CST",
            id="new-year-then-saturday",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 11, 25, 12, 0),
            "1bd",
            "Fri 2026-11-27 12:00 CST",
            id="bd-over-thanksgiving",
        ),
        pytest.param(
            SATURDAYS,
            chi(2026, 11, 27, 12, 0),
            "1bd",
            "Mon 2026-11-30 12:00 CST",
            id="bd-over-a-closed-saturday",
        ),
        pytest.param(
            BERLIN_STATE,
            ber(2026, 6, 3, 16, 0),
            "1h",
            "Thu 2026-06-04 08:00 CEST",
            id="berlin-state-works-on-corpus-christi",
        ),
        pytest.param(
            BERLIN_STATE,
            ber(2026, 4, 2, 16, 0),
            "1h",
            "Tue 2026-04-07 08:00 CEST",
            id="berlin-state-easter",
        ),
        # Open every night 01:00-05:00: on the night clocks go forward 02:00-03:00 does not exist,
        # so the night is 3 hours long; on the night they go back it is 5 hours long.
        pytest.param(
            NIGHTS_CHICAGO,
            chi(2026, 3, 8, 1, 30),
            "2h",
            "Sun 2026-03-08 04:30 CDT",
            id="us-the-short-night",
        ),
        pytest.param(
            NIGHTS_CHICAGO,
            chi(2026, 3, 8, 1, 0),
            "3h",
            "Sun 2026-03-08 05:00 CDT",
            id="us-the-short-night-ends-after-3h",
        ),
        pytest.param(
            NIGHTS_CHICAGO,
            chi(2026, 3, 8, 1, 0),
            "181m",
            "Mon 2026-03-09 01:01 CDT",
            id="us-the-short-night-then-the-next",
        ),
        pytest.param(
            NIGHTS_CHICAGO,
            chi(2026, 11, 1, 1, 0),
            "30m",
            "Sun 2026-11-01 01:30 CDT",
            id="us-the-long-night-first-01-30",
        ),
        pytest.param(
            NIGHTS_CHICAGO,
            chi(2026, 11, 1, 1, 0),
            "90m",
            "Sun 2026-11-01 01:30 CST",
            id="us-the-long-night-second-01-30",
        ),
        pytest.param(
            NIGHTS_CHICAGO,
            chi(2026, 11, 1, 1, 0),
            "5h",
            "Sun 2026-11-01 05:00 CST",
            id="us-the-long-night-ends-after-5h",
        ),
        pytest.param(
            NIGHTS_BERLIN,
            ber(2026, 3, 29, 1, 30),
            "2h",
            "Sun 2026-03-29 04:30 CEST",
            id="de-the-short-night",
        ),
        pytest.param(
            NIGHTS_BERLIN,
            ber(2026, 10, 25, 1, 0),
            "90m",
            "Sun 2026-10-25 02:30 CEST",
            id="de-the-long-night-first-02-30",
        ),
        pytest.param(
            NIGHTS_BERLIN,
            ber(2026, 10, 25, 1, 0),
            "150m",
            "Sun 2026-10-25 02:30 CET",
            id="de-the-long-night-second-02-30",
        ),
        pytest.param(
            NIGHTS_BERLIN,
            ber(2026, 10, 25, 4, 30),
            "1h",
            "Mon 2026-10-26 01:30 CET",
            id="de-the-long-night-then-the-next",
        ),
    ],
)
def test_hand_built_calendars(
    cal: CenterCalendar, start: datetime, amount: str, expected: str
) -> None:
    duration = parse_duration(amount)
    result = add(start.astimezone(UTC), duration, cal, business_hours=not duration.is_business_days)
    assert wall(result, cal) == expected


# --- days with business hours, counted back; holidays the center works --------------------------


def test_business_days_before_a_key_date_land_on_the_last_open_minute_before_it() -> None:
    # 2 business days before Monday Nov 30 (local midnight) is Wednesday 00:00, outside hours:
    # the step moves back to Tuesday's closing, still at least 2 business days before
    mercy = center(MERCY)
    due = subtract(mercy.start_of(date(2026, 11, 30)), parse_duration("2d"), mercy, True)
    assert wall(due, mercy) == "Tue 2026-11-24 17:00 CST"


def test_a_holiday_the_center_works_on_is_a_business_day() -> None:
    worked = replace(center(MERCY), working_holidays=frozenset({"columbus day"}))
    assert not center(MERCY).is_business_day(date(2026, 10, 12))
    assert worked.is_business_day(date(2026, 10, 12))
    assert not worked.is_business_day(date(2026, 11, 26))  # Thanksgiving is still a holiday


def test_calendars_for_different_countries_are_not_equal() -> None:
    assert center(MERCY) != replace(center(MERCY), holiday_calendar=("DE", "NW"))
