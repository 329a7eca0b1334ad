"""Reading what a center's reply says of the treatment: taken only when nothing is in doubt."""

from __future__ import annotations

from datetime import date

import pytest

from oos_notify.inbound.center_words import read
from oos_notify.incidents.center_reports import ReportKind

TODAY = date(2031, 3, 4)  # a Tuesday


def _kinds(text: str) -> list[str]:
    return [r.kind.value for r in read(text, TODAY).reports]


def test_ok_flu_cy_started_today_call_me_is_three_statements_two_reports() -> None:
    said = read("OK. Flu/Cy started today, call me\n\nDr. A", TODAY)
    assert said.unclear == ()
    started, call = said.reports
    assert started.kind is ReportKind.LYMPHODEPLETION_STARTED and started.day == TODAY
    assert call.kind is ReportKind.CALL_ME and call.phone is None and call.call_window is None


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("LD started yesterday", date(2031, 3, 3)),
        ("Lymphodepletion began on 2031-03-02.", date(2031, 3, 2)),
        ("Fludarabine started 3 March", date(2031, 3, 3)),
        ("Conditioning commenced Mar 2nd, 2031", date(2031, 3, 2)),
    ],
)
def test_a_start_with_a_date_that_reads_one_way_is_taken(text: str, day: date) -> None:
    [report] = read(text, TODAY).reports
    assert report.kind is ReportKind.LYMPHODEPLETION_STARTED and report.day == day


def test_a_postponement_to_a_named_day_without_a_year_takes_the_nearest() -> None:
    [report] = read("Received. LD postponed to 12 Jan", date(2031, 12, 20)).reports
    assert report.kind is ReportKind.LYMPHODEPLETION_POSTPONED
    assert report.day == date(2032, 1, 12)


@pytest.mark.parametrize(
    "text", ["Product received", "The cells have arrived", "We got the shipment."]
)
def test_the_product_arriving_is_taken(text: str) -> None:
    assert _kinds(text) == ["product_received"]


@pytest.mark.parametrize(
    ("text", "phone", "window"),
    [
        (
            "Please call me on +1 312 555 0199 between 14:00 and 16:00",
            "+1 312 555 0199",
            "14:00-16:00",
        ),
        ("call me 2-4pm", None, "14:00-16:00"),
        ("Call us back after 9am", None, "from 09:00"),
        ("please call before 17:30, 0228 555 0110", "0228 555 0110", "until 17:30"),
    ],
)
def test_a_call_request_keeps_its_number_and_window(
    text: str, phone: str | None, window: str | None
) -> None:
    [report] = read(text, TODAY).reports
    assert report.kind is ReportKind.CALL_ME
    assert report.phone == phone and report.call_window == window


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("LD started 03/04", "two different days"),
        ("Flu/Cy started Monday", "which week"),
        ("LD started", "no date"),
        ("LD starts on 2031-03-10", "not whether it started or was postponed"),
        ("Product not received yet", "negation"),
        ("Should we postpone LD to 12 March?", "a question"),
        ("call me at 2", "cannot be read for sure"),
        ("LD postponed to 10 March or 12 March", "more than one date"),
        ("Don't call me", "negation"),
    ],
)
def test_anything_in_doubt_takes_nothing_and_says_what(text: str, why: str) -> None:
    said = read(f"Received, thanks. {text}", TODAY)
    assert said.reports == ()
    assert said.request is not None and why in said.request


def test_one_doubt_takes_nothing_from_the_reply() -> None:
    said = read("Product received. LD started 03/04", TODAY)
    assert said.reports == () and said.request is not None and "03/04" in said.request


def test_only_the_first_lines_are_read() -> None:
    assert _kinds("Received\nThanks\nWe will review\nLD started today") == []


@pytest.mark.parametrize("text", ["Received", "Confirmed, thank you", "OK", ""])
def test_a_plain_confirmation_says_nothing_more(text: str) -> None:
    said = read(text, TODAY)
    assert said.reports == () and said.unclear == ()


def test_a_call_takes_no_time_or_number_from_the_other_statements() -> None:
    started, call = read("LD started at 08:00 on 2031-03-04, call me", TODAY).reports
    assert started.day == TODAY
    assert call.kind is ReportKind.CALL_ME and call.call_window is None and call.phone is None
