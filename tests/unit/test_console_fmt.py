"""How the console writes instants, days, people and statuses: one way everywhere, the zone
named, the address on hover, and no markup let through from what it writes."""

from __future__ import annotations

from datetime import UTC, date, datetime

from oos_notify.web.console import fmt

EVENING = datetime(2026, 12, 7, 2, 33, 29, tzinfo=UTC)


def test_an_instant_is_written_at_the_center_with_its_zone_named_and_no_seconds() -> None:
    assert fmt.instant(EVENING, "America/Chicago") == "Sun 6 Dec 2026, 20:33 CST"
    assert fmt.instant(EVENING, "Europe/Berlin") == "Mon 7 Dec 2026, 03:33 CET"


def test_a_time_element_carries_the_instant_and_utc_on_hover() -> None:
    assert str(fmt.when(EVENING, "America/Chicago")) == (
        '<time datetime="2026-12-07T02:33:29Z" title="Mon 7 Dec 2026, 02:33 UTC">'
        "Sun 6 Dec 2026, 20:33 CST</time>"
    )


def test_a_key_date_is_a_day_written_as_the_instants_are() -> None:
    assert fmt.day("2026-12-13") == "Sun 13 Dec 2026"
    assert fmt.day(date(2026, 12, 1)) == "Tue 1 Dec 2026"


def test_a_person_is_named_with_the_address_on_hover_and_nothing_in_them_is_markup() -> None:
    assert str(fmt.person("Dr. <b>Ortiz</b>", 'md"@x.example')) == (
        '<bdi title="md&#34;@x.example">Dr. &lt;b&gt;Ortiz&lt;/b&gt;</bdi>'
    )
    assert str(fmt.person(None, "md@x.example")) == "<bdi>md@x.example</bdi>"


def test_a_confirmed_incident_is_confirmed_on_its_badge() -> None:
    assert fmt.status("acknowledged") == "confirmed"
    assert fmt.status("notifying") == "notifying"


def test_the_record_writes_instants_the_same_way_to_the_second_with_utc_beside() -> None:
    assert fmt.zoned(EVENING, "America/Chicago") == (
        "Sun 6 Dec 2026, 20:33:29 CST (Mon 7 Dec 2026, 02:33:29 UTC)"
    )
    assert fmt.zoned(EVENING, "Europe/Berlin") == "Mon 7 Dec 2026, 03:33:29 CET (02:33:29 UTC)"
