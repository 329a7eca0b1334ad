"""Instants as the database stores them: aware UTC in Python, naive UTC in the column, so they
compare correctly in SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: instants compare correctly in SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC instant")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _storable(value: datetime) -> datetime:
    """Refuse an instant that leaves years 1-9999 when moved to UTC: UTCDateTime cannot store it."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None
    return value


UtcInstant = Annotated[AwareDatetime, AfterValidator(_storable)]
"""An aware datetime from a client, as UTCDateTime can store it and compare with it."""
