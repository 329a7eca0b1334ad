"""Reports: how fast each center confirms, and how often the ``notify_within`` promise is kept,
month by month; with the CSV the charts are drawn from. Drills never count here: each has its
own report (``incidents.drills``)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from oos_notify.incidents.queries import NotifyWithin, PromiseState
from oos_notify.store.models import Acknowledgement, Incident
from oos_notify.web.console.board import Center

MONTH_CHOICES = (3, 6, 12, 24)


def months_back(now: datetime, months: int) -> datetime:
    """The first instant (UTC) of the month ``months - 1`` before ``now``'s: a window of
    ``months`` calendar months that ends now."""
    index = now.year * 12 + now.month - 1 - (months - 1)
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile: a value that was actually observed, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(math.ceil(percent / 100 * len(ordered)) - 1, 0)]


@dataclass(frozen=True)
class Confirming:
    """One center's time from an incident's opening to its first confirmation."""

    center_id: str
    center_name: str
    opened: int
    confirmed: int
    median: timedelta | None
    p90: timedelta | None


def time_to_confirm(
    session: Session, centers: Mapping[str, Center], since: datetime
) -> list[Confirming]:
    """Per center, over incidents opened since ``since``: the median and 90th percentile of the
    time to the first answer of the first round that counts for it (a decision does; a cell
    lab's confirmation, which stops nothing, does not)."""
    opened = session.exec(
        select(Incident.id, Incident.center_id, Incident.opened_at).where(
            col(Incident.opened_at) >= since, col(Incident.drill).is_(False)
        )
    ).all()
    first = dict(
        session.exec(
            select(Acknowledgement.incident_id, func.min(Acknowledgement.at))
            .join(Incident, col(Incident.id) == col(Acknowledgement.incident_id))
            .where(
                col(Incident.opened_at) >= since,
                col(Incident.drill).is_(False),
                Acknowledgement.round == 1,
                col(Acknowledgement.stopped_escalation).is_not(False),
            )
            .group_by(col(Acknowledgement.incident_id))
        ).all()
    )
    minutes: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for incident_id, center_id, opened_at in opened:
        counts[center_id] = counts.get(center_id, 0) + 1
        answered = first.get(incident_id)
        if answered is not None:
            answered = answered.replace(tzinfo=UTC) if answered.tzinfo is None else answered
            minutes.setdefault(center_id, []).append((answered - opened_at).total_seconds() / 60)
    found = []
    for center_id in sorted(counts, key=lambda c: centers.get(c, Center(c, "UTC")).name):
        values = minutes.get(center_id, [])
        found.append(
            Confirming(
                center_id,
                centers.get(center_id, Center(center_id, "UTC")).name,
                counts[center_id],
                len(values),
                timedelta(minutes=statistics.median(values)) if values else None,
                timedelta(minutes=nearest_rank(values, 90)) if values else None,
            )
        )
    return found


@dataclass(frozen=True)
class MonthOfPromises:
    month: str
    met: int
    breached: int
    pending: int

    @property
    def share_met(self) -> float | None:
        """Met among those decided (met or breached); None when none were."""
        decided = self.met + self.breached
        return self.met / decided if decided else None


def promises_by_month(session: Session, since: datetime, now: datetime) -> list[MonthOfPromises]:
    """The ``notify_within`` promises of incidents opened each month (UTC) since ``since``;
    a month in which none was opened is left out (a year of "no data" hides the months that
    tell something)."""
    incidents = session.exec(
        select(Incident)
        .options(defer(Incident.agreement))  # type: ignore[arg-type]
        .where(
            col(Incident.opened_at) >= since,
            col(Incident.notify_deadline).is_not(None),
            col(Incident.drill).is_(False),
        )
    ).all()
    tally: dict[str, dict[PromiseState, int]] = {}
    for incident in incidents:
        promise = NotifyWithin.of(incident, now)
        assert promise is not None
        month = tally.setdefault(
            incident.opened_at.strftime("%Y-%m"), dict.fromkeys(PromiseState, 0)
        )
        month[promise.state] += 1
    return [
        MonthOfPromises(
            month,
            counts[PromiseState.MET],
            counts[PromiseState.BREACHED],
            counts[PromiseState.PENDING],
        )
        for month, counts in sorted(tally.items())
    ]


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _minutes(delta: timedelta | None) -> str:
    return "" if delta is None else f"{delta.total_seconds() / 60:.1f}"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return out.getvalue()


def confirming_csv(found: Sequence[Confirming]) -> str:
    return csv_text(
        ["center_id", "center", "incidents", "confirmed", "median_minutes", "p90_minutes"],
        [
            [c.center_id, c.center_name, c.opened, c.confirmed, _minutes(c.median), _minutes(c.p90)]
            for c in found
        ],
    )


def promises_csv(found: Sequence[MonthOfPromises]) -> str:
    return csv_text(
        ["month", "met", "breached", "pending", "met_percent"],
        [
            [
                m.month,
                m.met,
                m.breached,
                m.pending,
                "" if m.share_met is None else f"{100 * m.share_met:.1f}",
            ]
            for m in found
        ],
    )
