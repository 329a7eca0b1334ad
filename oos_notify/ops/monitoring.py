"""What operators watch: readiness of the service's parts, and metrics in Prometheus format.

Metrics are read from the database at scrape time, so they are right after a restart and the
same whichever replica is scraped: counts of events and notifications, the send latency and
time-to-acknowledge histograms, and the notifications that are overdue now. The dispatcher's
own runs (failed runs, time since its last success) are the scraped replica's. A scrape always
answers: while the database is unreachable its metrics are left out, the process's own are
there, and ``oos_notify_database_up`` is 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from oos_notify.delivery.dispatch import Dispatcher
from oos_notify.inbound.health import IntakeHealth
from oos_notify.store.lifecycle import NotificationStatus
from oos_notify.store.models import (
    DeliveryAttempt,
    Event,
    InboundMessage,
    Incident,
    Notification,
)
from oos_notify.store.outages import availability, unreachable
from oos_notify.store.outbox import BOUNCED

DATABASE_TIMEOUT_SECONDS = 2.0
FAILING_RUNS_UNREADY = 3
"""Failed dispatch runs in a row that make the service unready: one can be a passing hiccup,
three (15 s at the default sweep) are a dispatcher that cannot send."""
SEND_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ACK_BUCKETS_SECONDS = tuple(
    minutes * 60.0 for minutes in (5, 15, 30, 60, 120, 240, 480, 1440, 4320)
)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]


def _ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _dispatcher_check(dispatcher: Dispatcher | None) -> tuple[bool, str]:
    """Whether the dispatcher works, and what an operator reads about it. Only the error's type
    is shown here, as for the database: the page is public; the logs have the rest."""
    if dispatcher is None or not dispatcher.running:
        return False, "stopped"
    health = dispatcher.health
    if health.failing_runs:
        runs = (
            "dispatch run" if health.failing_runs == 1 else f"{health.failing_runs} dispatch runs"
        )
        summary = f"the last {runs} failed ({health.last_error})"
        if health.failing_runs < FAILING_RUNS_UNREADY:
            return True, f"retrying: {summary}"
        return False, f"failing: {summary}"
    if health.last_success_age_seconds > health.stalled_after_seconds:
        age = round(health.last_success_age_seconds)
        return False, f"stalled: no dispatch run has finished for {age} s"
    return True, "ok"


async def readiness(
    engine: Engine,
    dispatcher: Dispatcher | None,
    inbound: IntakeHealth | None = None,
    sends: bool = True,
) -> Readiness:
    """Database and dispatcher (in a process that ``sends``) must work for the service to be
    ready; an unreachable mail server is reported but does not make it unready: events are still
    accepted and their notifications wait in the outbox until the server is back. A dispatcher
    whose runs keep failing, or that has not finished one for long, is not working even though
    its timers run. A process that does not send (``oos-notify api``) has no scheduler check."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, engine), DATABASE_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except TimeoutError:
        checks["database"] = f"no answer within {DATABASE_TIMEOUT_SECONDS:g} s"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    working = True
    if sends:
        working, checks["scheduler"] = _dispatcher_check(dispatcher)
    ready = checks["database"] == "ok" and working
    if dispatcher is not None:
        problem = await dispatcher.probe_mail()
        checks["smtp"] = "ok" if problem is None else f"queueing, server unreachable: {problem}"
    if inbound is not None:
        # Like the mail server: returned mail waits in its mailbox or at the relay meanwhile.
        checks["inbound"] = inbound.describe()
    return Readiness(ready, checks)


def _histogram(
    name: str,
    documentation: str,
    bounds: Sequence[float],
    counts: Sequence[int],
    total: int,
    sum_value: float,
    labels: Sequence[str] = (),
    label_values: Sequence[str] = (),
) -> HistogramMetricFamily:
    """A histogram family from per-bucket cumulative counts (``le`` upper bounds)."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    buckets = [(f"{bound:g}", count) for bound, count in zip(bounds, counts, strict=True)]
    family.add_metric(list(label_values), [*buckets, ("+Inf", total)], sum_value)
    return family


class DatabaseMetrics:
    """Reads every metric from the database when Prometheus scrapes."""

    def __init__(self, engine: Engine, now: datetime) -> None:
        self._engine = engine
        self._now = now

    def read(self) -> list[Metric]:
        """Every database metric, read now in one session."""
        with Session(self._engine) as session:
            return [
                self._events(session),
                *self._notifications(session),
                self._send_latency(session),
                self._time_to_acknowledge(session),
                self._returned_mail(session),
            ]

    def _events(self, session: Session) -> Metric:
        family = CounterMetricFamily(
            "oos_notify_events_received", "Events accepted, by type", labels=["type"]
        )
        rows = session.exec(select(Event.type, func.count()).group_by(Event.type)).all()
        for event_type, count in sorted(rows):
            family.add_metric([event_type], count)
        return family

    def _notifications(self, session: Session) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "oos_notify_notifications", "Notifications, by status", labels=["status"]
        )
        rows = dict(
            session.exec(
                select(Notification.status, func.count()).group_by(Notification.status)
            ).all()
        )
        for status in NotificationStatus:
            by_status.add_metric([status.value], rows.get(status.value, 0))
        yield by_status
        # A row claimed for sending is not sent either: one whose sender stalls or died stays
        # 'sending', and must count as late as it would waiting in the queue.
        overdue, oldest = session.exec(
            select(func.count(), func.min(Notification.due_at)).where(
                col(Notification.status).in_(
                    [NotificationStatus.SCHEDULED.value, NotificationStatus.SENDING.value]
                ),
                col(Notification.due_at) <= self._now,
            )
        ).one()
        yield GaugeMetricFamily(
            "oos_notify_notifications_overdue",
            "Notifications whose due time has passed and that are not sent yet, "
            "waiting in the queue or claimed for sending",
            value=overdue,
        )
        lease_expired = session.exec(
            select(func.count()).where(
                Notification.status == NotificationStatus.SENDING.value,
                col(Notification.lease_until) < self._now,
            )
        ).one()
        yield GaugeMetricFamily(
            "oos_notify_notifications_lease_expired",
            "Notifications claimed for sending whose claim ran out unsettled: their sender "
            "stalled or died; a sender takes them over",
            value=lease_expired,
        )
        retrying = session.exec(
            select(func.count()).where(
                Notification.status == NotificationStatus.SCHEDULED.value,
                col(Notification.attempts) > 0,
            )
        ).one()
        yield GaugeMetricFamily(
            "oos_notify_notifications_retrying",
            "Scheduled notifications waiting to be tried again after a failed attempt",
            value=retrying,
        )
        age = (self._now - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "oos_notify_oldest_overdue_seconds",
            "How long the longest-waiting overdue notification is past its due time",
            value=age,
        )

    def _send_latency(self, session: Session) -> Metric:
        """One pass over the attempts: a cumulative count per bucket, summed in SQL."""
        duration = col(DeliveryAttempt.duration_ms)
        columns = [
            func.coalesce(func.sum(case((duration <= bound * 1000, 1), else_=0)), 0)
            for bound in SEND_BUCKETS_SECONDS
        ]
        row = session.execute(
            select(func.count(), func.coalesce(func.sum(duration), 0), *columns).where(
                col(DeliveryAttempt.outcome) != BOUNCED  # a bounce is no attempt of ours
            )
        ).one()
        total, sum_ms, *counts = tuple(row)
        return _histogram(
            "oos_notify_send_duration_seconds",
            "Time an SMTP delivery attempt took, whatever its outcome",
            SEND_BUCKETS_SECONDS,
            [int(c) for c in counts],
            int(total),
            float(sum_ms) / 1000,
        )

    def _returned_mail(self, session: Session) -> Metric:
        family = CounterMetricFamily(
            "oos_notify_returned_mail",
            "Mail that came back to the return addresses, by kind (bounce, delay, auto_reply, "
            "reply, report, unreadable) and what it did",
            labels=["kind", "outcome"],
        )
        rows = session.exec(
            select(InboundMessage.kind, InboundMessage.outcome, func.count()).group_by(
                InboundMessage.kind, InboundMessage.outcome
            )
        ).all()
        for kind, outcome, count in sorted(rows):
            family.add_metric([kind, outcome], count)
        return family

    def _time_to_acknowledge(self, session: Session) -> Metric:
        rows = session.exec(
            select(Incident.opened_at, Incident.acknowledged_at).where(
                col(Incident.acknowledged_at).is_not(None)
            )
        ).all()
        waits = [(acked - opened).total_seconds() for opened, acked in rows if acked is not None]
        counts = [sum(1 for w in waits if w <= bound) for bound in ACK_BUCKETS_SECONDS]
        return _histogram(
            "oos_notify_time_to_acknowledge_seconds",
            "From an incident's opening to its first acknowledgement",
            ACK_BUCKETS_SECONDS,
            counts,
            len(waits),
            sum(waits),
        )


class DispatcherCollector(Collector):
    """How this process's dispatcher is doing: unlike the rest, these are per replica."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        health = self._dispatcher.health
        yield CounterMetricFamily(
            "oos_notify_dispatch_runs_failed",
            "Dispatch runs that ended in an error, since this process started",
            value=health.failed_runs_total,
        )
        yield GaugeMetricFamily(
            "oos_notify_dispatch_failing_runs",
            "Dispatch runs that failed in a row, since a batch was last sent and recorded",
            value=health.failing_runs,
        )
        yield GaugeMetricFamily(
            "oos_notify_dispatcher_last_success_age_seconds",
            "Seconds since this process's dispatcher last finished a run or a batch without "
            "an error; it runs at least every sweep interval",
            value=health.last_success_age_seconds,
        )


class _Read(Collector):
    """Metrics already read."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


async def metrics_text(
    engine: Engine, now: datetime, dispatcher: Dispatcher | None = None
) -> bytes:
    """The Prometheus text exposition of every metric, read from the database now, and of the
    dispatcher's runs in this process when it has one. A database that cannot be reached leaves
    its metrics out and shows as ``oos_notify_database_up 0``: the scrape itself succeeds, so
    the process's own metrics and the outage are seen when they matter."""
    database: list[Metric] = []
    try:
        database = await asyncio.to_thread(DatabaseMetrics(engine, now).read)
    except Exception as exc:
        if not unreachable(exc):
            raise
        availability(engine).lost(exc)
    up = GaugeMetricFamily(
        "oos_notify_database_up",
        "1 if this process read the database at this scrape, 0 if it could not reach it (its "
        "database metrics are then left out)",
        value=1 if database else 0,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Read([up, *database]))
    if dispatcher is not None:
        registry.register(DispatcherCollector(dispatcher))
    return generate_latest(registry)
