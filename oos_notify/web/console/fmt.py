"""How the console writes instants and durations: pure functions, shared by pages and the PDF."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup

from oos_notify.agreements.vocabulary import AckResponse
from oos_notify.store.lifecycle import IncidentStatus

STATUS_WORDS = {IncidentStatus.ACKNOWLEDGED.value: "confirmed"}
"""An incident's status as the desk says it: the center *confirms* (the section, the answers
and the board all say so), so the status badge does too."""


def clock_in_zone(instant: datetime, timezone: str) -> str:
    """The time of day at a center: ``09:12 CST``."""
    return instant.astimezone(ZoneInfo(timezone)).strftime("%H:%M %Z")


def instant(at: datetime, timezone: str) -> str:
    """The one way the console writes an instant: at the center, the zone named,
    ``Sun 6 Dec 2026, 20:33 CST``."""
    local = at.astimezone(ZoneInfo(timezone))
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M %Z}"


def day(value: date | str) -> str:
    """A calendar date (a key date, an ISO string as stored) as the console writes it:
    ``Sun 13 Dec 2026``. A date has no zone: it is the day at the center."""
    found = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{found:%a} {found.day} {found:%b %Y}"


def month(value: str) -> str:
    """A calendar month as stored (``2026-11``) as the console writes it: ``Nov 2026``."""
    found = date.fromisoformat(f"{value}-01")
    return f"{found:%b %Y}"


def when(at: datetime, timezone: str) -> Markup:
    """An instant as a ``<time>`` element: the center's time in words, UTC on hover; the
    console's script puts the viewer's own zone on hover instead where it runs."""
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        iso(at), instant(at, "UTC"), instant(at, timezone)
    )


def person(name: str | None, address: str) -> Markup:
    """Someone by name, their address on hover (and the address alone when no name is known)."""
    if not name:
        return Markup("<bdi>{}</bdi>").format(address)
    return Markup('<bdi title="{}">{}</bdi>').format(address, name)


def status(value: str) -> str:
    """An incident's status in the desk's words: ``acknowledged`` -> ``confirmed``."""
    return STATUS_WORDS.get(value, words(value))


def answer(response: str) -> str:
    """A center's answer in the words its page offered."""
    return AckResponse(response).label


def zoned(at: datetime, timezone: str) -> str:
    """An instant for the record, written as everywhere else, to the second and with UTC
    beside it: ``Tue 24 Nov 2026, 09:12:00 CST (15:12:00 UTC)``, the UTC date added when it is
    another day."""
    local = at.astimezone(ZoneInfo(timezone))
    universal = at.astimezone(UTC)
    clock = f"{universal:%H:%M:%S UTC}"
    if universal.date() != local.date():
        clock = f"{universal:%a} {universal.day} {universal:%b %Y}, {clock}"
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M:%S %Z} ({clock})"


def iso(instant: datetime) -> str:
    """For ``<time datetime>`` and CSV: ``2026-11-24T15:12:00Z``."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
