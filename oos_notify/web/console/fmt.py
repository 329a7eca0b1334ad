"""How the console writes instants and durations: pure functions, shared by pages and the PDF."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from oos_notify.delivery import rendering


def clock_in_zone(instant: datetime, timezone: str) -> str:
    """The time of day at a center: ``09:12 CST``."""
    return instant.astimezone(ZoneInfo(timezone)).strftime("%H:%M %Z")


def utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def zoned(instant: datetime, timezone: str) -> str:
    """An instant at the center with UTC beside it, for the record:
    ``2026-11-24 09:12:00 CST (15:12:00 UTC)``, the UTC date added when it is another day."""
    local = instant.astimezone(ZoneInfo(timezone))
    universal = instant.astimezone(UTC)
    shown = "%H:%M:%S UTC" if universal.date() == local.date() else "%Y-%m-%d %H:%M:%S UTC"
    return f"{local.strftime('%Y-%m-%d %H:%M:%S %Z')} ({universal.strftime(shown)})"


def iso(instant: datetime) -> str:
    """For ``<time datetime>`` and CSV: ``2026-11-24T15:12:00Z``."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(value: date) -> str:
    """A date (a key date) as the messages write it: ``Mon 30 Nov 2026``."""
    return rendering.day(value)


def days_until(value: date, now: datetime, timezone: str) -> str:
    """How far a date is from today at the center: ``today``, ``in 3 days``, ``yesterday``."""
    days = (value - now.astimezone(ZoneInfo(timezone)).date()).days
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if days == -1:
        return "yesterday"
    return f"in {days} days" if days > 0 else f"{-days} days ago"


def span(delta: timedelta) -> str:
    """A duration as people say it, to the minute: ``2 h 05 min``, ``3 d 4 h``, ``under 1 min``."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min" if minutes else "under 1 min"


def relative(instant: datetime, now: datetime) -> str:
    """``in 41 min``, ``12 min ago`` or ``just now``."""
    if abs(instant - now) < timedelta(minutes=1):
        return "just now"
    if instant > now:
        return f"in {span(instant - now)}"
    return f"{span(now - instant)} ago"


def words(value: str | None) -> str:
    """An identifier as words: ``notify_within_met`` -> ``notify within met``."""
    return (value or "").replace("_", " ")


def sentence(text: str) -> str:
    """``text`` with its first letter capitalised and the rest as it is (``str.capitalize``
    would write ``qa`` for ``QA``)."""
    return text[:1].upper() + text[1:]


def role(name: str) -> str:
    """A plan's role as words: ``coordinator_backup`` -> ``coordinator backup``,
    ``manufacturer:account_lead`` -> ``account lead (manufacturer)``."""
    company, _, own = name.rpartition(":")
    return f"{words(own)} ({company})" if company else words(own)
