"""The one place that defines duration syntax: ``45s``, ``30m``, ``2h``, ``1d``, ``1bd``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PATTERN = re.compile(r"^\s*(\d{1,6})\s*(s|m|h|d|bd)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Duration:
    """A span of time as written in an agreement; ``bd`` counts business days."""

    amount: int
    unit: str

    @property
    def is_business_days(self) -> bool:
        return self.unit == "bd"

    def as_timedelta(self) -> timedelta:
        """The elapsed time; business days have no fixed length and must go through a calendar."""
        if self.is_business_days:
            raise ValueError("business days have no fixed length; use a calendar")
        return timedelta(seconds=self.amount * _SECONDS[self.unit])

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def parse_duration(text: str) -> Duration:
    """Parse a duration such as ``2h``; raise ValueError with the accepted forms otherwise."""
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: write a whole number and a unit, "
            "e.g. 45s, 30m, 2h, 1d or 1bd (business days)"
        )
    return Duration(int(match.group(1)), match.group(2))


def _coerce(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(
        f"a duration must be text, not {type(value).__name__}: write a whole number and a unit, "
        "e.g. 45s, 30m, 2h, 1d or 1bd (business days)"
    )


DurationField = Annotated[
    Duration,
    BeforeValidator(_coerce),
    PlainSerializer(str, return_type=str),
]
