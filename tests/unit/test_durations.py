"""The duration syntax of agreements: what an author may write, and what they are told otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from oos_notify.agreements.durations import Duration, DurationField, parse_duration

ACCEPTED_FORMS = ("45s", "30m", "2h", "1d", "1bd")


class _Step(BaseModel):
    after: DurationField


@pytest.mark.parametrize(
    ("text", "amount", "unit", "elapsed"),
    [
        ("45s", 45, "s", timedelta(seconds=45)),
        ("30m", 30, "m", timedelta(minutes=30)),
        ("2h", 2, "h", timedelta(hours=2)),
        ("1d", 1, "d", timedelta(days=1)),
        ("0m", 0, "m", timedelta(0)),
        ("999999s", 999_999, "s", timedelta(seconds=999_999)),
    ],
)
def test_accepts_whole_numbers_with_a_unit(
    text: str, amount: int, unit: str, elapsed: timedelta
) -> None:
    duration = parse_duration(text)
    assert duration == Duration(amount, unit)
    assert duration.as_timedelta() == elapsed
    assert str(duration) == text


def test_business_days_have_no_fixed_length() -> None:
    duration = parse_duration("1bd")
    assert duration == Duration(1, "bd")
    assert duration.is_business_days
    assert str(duration) == "1bd"
    with pytest.raises(ValueError, match="calendar"):
        duration.as_timedelta()


def test_surrounding_spaces_are_tolerated() -> None:
    assert parse_duration(" 2h ") == Duration(2, "h")


@pytest.mark.parametrize(
    "text",
    ["2x", "", "-1h", "1.5h", "h", "2", "1234567h", "2H", "1 day", "2h30m", "bd"],
)
def test_refuses_anything_else_and_lists_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    message = str(raised.value)
    assert repr(text) in message
    for form in ACCEPTED_FORMS:
        assert form in message


def test_the_config_field_parses_text_and_serialises_back_to_it() -> None:
    step = _Step.model_validate({"after": "2h"})
    assert step.after == Duration(2, "h")
    assert step.model_dump(mode="json") == {"after": "2h"}


@pytest.mark.parametrize("value", [2, 1.5, True, None, ["2h"], {"h": 2}])
def test_the_config_field_refuses_non_text_with_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValidationError) as raised:
        _Step.model_validate({"after": value})
    [error] = raised.value.errors(include_url=False)
    assert error["loc"] == ("after",)
    for form in ACCEPTED_FORMS:
        assert form in error["msg"]


def test_the_config_field_refuses_bad_text_with_the_accepted_forms() -> None:
    with pytest.raises(ValidationError) as raised:
        _Step.model_validate({"after": "2x"})
    [error] = raised.value.errors(include_url=False)
    assert "invalid duration '2x'" in error["msg"]
    assert "1bd" in error["msg"]
