"""Sending what is due: APScheduler arms a timer for the next due row and sweeps periodically;
each run claims due rows from the outbox, renders and sends them over a few SMTP connections, and
settles each row with its outcome. The database, not this process, remembers what is pending.

While the database is unreachable, a dispatcher keeps in memory what it could not record (the
outcomes of messages it sent, the claims it did not send) and records them before it claims
anything once the database is back, so that nothing it sent goes out again."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Session, col, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.clock import Clock
from oos_notify.delivery import messaging
from oos_notify.delivery.mail import (
    DkimSigner,
    OutgoingMessage,
    SendOutcome,
    SmtpBatch,
    SmtpPool,
    build_message,
    probe,
)
from oos_notify.delivery.rendering import MessageContext, Renderer, RenderError
from oos_notify.incidents import timed, unreached
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from oos_notify.store import outbox, timers, turns
from oos_notify.store.db import transaction
from oos_notify.store.models import Incident, Notification
from oos_notify.store.outages import availability, unreachable

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CLAIM_LEASE = timedelta(seconds=Settings.model_fields["claim_lease_seconds"].default)
"""How long a claimed row is left to its sender without word from it before another sender may
take it over, unless ``OOS_NOTIFY_CLAIM_LEASE_SECONDS`` says otherwise: the sender renews it
every third of it while it sends."""
MAX_RETRY_DELAY = timedelta(hours=1)
SETTLE_EVERY = timedelta(seconds=0.5)
"""How long sent messages may go unrecorded while the rest of their batch is being sent."""
STALLED_AFTER = timedelta(minutes=10)
"""A dispatcher that has finished no run and no batch for this long (or three sweeps, if
longer) is stuck: a batch, even over a slow mail server, takes a few minutes at most. Not the
claim lease: a sender renews that while a long batch goes on."""


@dataclass(frozen=True)
class _Gathered:
    notification: Notification
    incident: Incident
    agreement: EffectiveAgreement
    context: MessageContext
    now: datetime
    thread_root: str | None


@dataclass(frozen=True)
class Prepared:
    message: OutgoingMessage
    template_version: str


@dataclass(frozen=True)
class Unbuildable:
    """A notification whose message could not be made: it fails alone, for good, with ``reason``;
    retrying would build the same message from the same rows and fail the same way."""

    reason: str


@dataclass(frozen=True)
class DispatchHealth:
    """How this process's dispatch runs are going, for readiness and metrics."""

    failed_runs_total: int
    """Runs that ended in an error since the process started."""
    failing_runs: int
    """Failed runs in a row (see ``Dispatcher._on_clean_run``); 0 when all is well."""
    last_error: str | None
    """The type of the error that ended the last failed run, while ``failing_runs`` is not 0."""
    last_success_age_seconds: float
    """Seconds since a run or a batch last finished without an error (or since the start)."""
    stalled_after_seconds: float
    """How long without a success means the dispatcher is stuck: it runs every sweep."""


_Result = tuple[Notification, SendOutcome, Prepared | None]
"""A message's row, what became of it, and the message sent (None when it could not be made)."""


@dataclass
class _Pending:
    """What a batch's connections have sent and not yet settled, shared between them."""

    settled_at: float
    results: list[_Result] = field(default_factory=list)
    recorded: set[str] = field(default_factory=set)
    """The rows whose outcome is in the database."""
    database_away: Exception | None = None
    """Set when recording found the database unreachable: the connections send no more."""

    def take(self) -> list[_Result]:
        taken, self.results, self.settled_at = self.results, [], time.monotonic()
        return taken


@dataclass
class _Unrecorded:
    """What this process did with its claims while it could not tell the database: the outcomes
    of what it sent or failed to send, and the claims it did not send."""

    results: list[_Result] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.results or self.unsent)

    def add(self, results: list[_Result], unsent: list[str]) -> None:
        self.results.extend(results)
        self.unsent.extend(unsent)


def retry_delay(attempt: int, base_seconds: float) -> timedelta:
    """Exponential backoff with jitter, so a recovering server is not hit by every retry at once."""
    delay = base_seconds * 2 ** max(attempt - 1, 0) * random.uniform(0.5, 1.5)
    return min(timedelta(seconds=delay), MAX_RETRY_DELAY)


class Dispatcher:
    """Claims, sends and settles due notifications; one run at a time per process."""

    def __init__(
        self,
        engine: Engine,
        write_gate: AbstractAsyncContextManager[object],
        clock: Clock,
        settings: Settings,
        renderer: Renderer,
        tokens: AckTokens,
        smtp_host: str,
        smtp_port: int,
        return_addresses: ReturnAddresses | None = None,
        signer: DkimSigner | None = None,
    ) -> None:
        self._engine = engine
        self._signer = signer
        self._return_addresses = return_addresses
        self._write_gate = turns.ahead(write_gate)
        self._clock = clock
        self._settings = settings
        self._renderer = renderer
        self._tokens = tokens
        self._smtp_host = smtp_host
        self._smtp_port = smtp_port
        self._smtp = SmtpPool(settings, smtp_host, smtp_port, clock, settings.smtp_connections)
        self._scheduler: AsyncIOScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = False
        self._stopping = False
        self._mail_unreachable = True
        """Set when no mail server answered; at start, a previous process may have seen that."""
        self._lease = timedelta(seconds=settings.claim_lease_seconds)
        self._availability = availability(engine)
        self._unrecorded = _Unrecorded()
        self._name = settings.instance_name or socket.gethostname()
        self.owner = f"{self._name}/{secrets.token_hex(4)}"
        """What this process's claims are named: its name, and which start of it."""
        self._holding = False
        self._lease_from = 0.0
        """When (monotonic) the claims held were last taken or renewed."""
        self._failed_runs_total = 0
        self._failing_runs = 0
        self._last_error: str | None = None
        self._last_success = clock.now()
        self._last_batch_failure: datetime | None = None

    @property
    def health(self) -> DispatchHealth:
        return DispatchHealth(
            failed_runs_total=self._failed_runs_total,
            failing_runs=self._failing_runs,
            last_error=self._last_error if self._failing_runs else None,
            last_success_age_seconds=(self._clock.now() - self._last_success).total_seconds(),
            stalled_after_seconds=max(
                STALLED_AFTER.total_seconds(), 3 * self._settings.sweep_interval_seconds
            ),
        )

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running and not self._stopping

    async def start(self) -> None:
        """Take over what a dead process left mid-send, start the sweep, and send what is due."""
        self._loop = asyncio.get_running_loop()
        released = await self._in_database(self._release_abandoned)
        if released:
            log.warning(
                "resending %d notifications interrupted by a stop",
                released,
                extra={"count": released},
            )
        # Imported here: an `api` process imports this module but runs no dispatcher
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(event_loop=self._loop, timezone=UTC)
        self._scheduler.add_job(
            self._on_timer,
            "interval",
            seconds=self._settings.sweep_interval_seconds,
            id="sweep",
            coalesce=True,
            max_instances=1,
        )
        self._scheduler.add_job(
            self._renew,
            "interval",
            seconds=self._lease.total_seconds() / 3,
            id="renew",
            coalesce=True,
            max_instances=1,
        )
        self._scheduler.start()
        self._request_run()

    async def stop(self) -> None:
        """Stop timers and let the run in progress finish its sends; record what an outage of
        the database left unrecorded, if it is back."""
        self._stopping = True
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._task is not None:
            await self._task
        await self._smtp.close()
        if self._unrecorded:
            try:
                await self._record_unrecorded()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                kept = self._unrecorded
                log.warning(
                    "stopping with %d outcomes and %d unsent claims unrecorded for want of the "
                    "database: once their claims run out they are sent (again, for those already "
                    "sent, under their Message-ID)",
                    len(kept.results),
                    len(kept.unsent),
                    extra={"count": len(kept.results) + len(kept.unsent)},
                )

    async def probe_mail(self) -> str | None:
        """Whether the mail server greets us now: ``None`` if it does, else why not."""
        return await probe(self._settings, self._smtp_host, self._smtp_port)

    def wake(self) -> None:
        """Ask for a run now (thread-safe): something became due, e.g. a new first step."""
        if self._loop is not None and not self._stopping:
            self._loop.call_soon_threadsafe(self._request_run)

    async def run_until_idle(self) -> None:
        """Run now and wait until nothing due is left (for tests and the CLI)."""
        self._request_run()
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _on_timer(self) -> None:
        self._request_run()

    async def _renew(self) -> None:
        """Tell the other senders this process is alive and still sending what it claimed."""
        if not self._holding:
            return
        try:
            await self._in_database(self._renew_claims)
        except Exception as exc:
            if not unreachable(exc):  # an outage is logged once, by the availability
                log.exception("could not renew the claims being sent; retrying")
        else:
            self._lease_from = time.monotonic()

    def _lease_lost(self) -> bool:
        """The claims may have been taken over: nothing renewed them for a whole lease."""
        return time.monotonic() - self._lease_from >= self._lease.total_seconds()

    def _request_run(self) -> None:
        self._wanted = True
        if not self._stopping and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._wanted and not self._stopping:
            self._wanted = False
            try:
                await self._dispatch_due()
            except Exception as exc:
                self._failed_runs_total += 1
                self._failing_runs += 1
                self._last_error = type(exc).__name__
                if unreachable(exc):
                    # Logged once for the whole outage; the listener wakes us when it ends.
                    self._availability.lost(exc)
                    continue
                log.exception(
                    "dispatch run failed (%d in a row); the sweep will retry",
                    self._failing_runs,
                    extra={"count": self._failing_runs},
                )
            else:
                self._on_clean_run()

    def _on_clean_run(self) -> None:
        """A run without an error ends a failing streak, unless a batch failed within the
        longest retry delay: the rows it gave back are not due yet, so a run that found nothing
        to claim says nothing about them, and a dispatcher that fails every batch would
        otherwise never look failing."""
        now = self._clock.now()
        self._last_success = now
        if self._last_batch_failure is None or now - self._last_batch_failure > MAX_RETRY_DELAY:
            self._failing_runs = 0

    async def _dispatch_due(self) -> None:
        if self._unrecorded:
            await self._record_unrecorded()
        if self._mail_unreachable and await self.probe_mail() is None:
            # The server is back: what waited for it goes now, not at the end of a backoff
            # that may have grown to an hour during the outage.
            self._mail_unreachable = False
            resumed = await self._in_database(self._resume_after_outage)
            if resumed:
                log.info(
                    "mail server reachable: %d notifications resume",
                    resumed,
                    extra={"count": resumed},
                )
        await self._in_database(self._run_timers)
        while not self._stopping:
            self._lease_from = time.monotonic()
            # Right after an outage every claim's lease has run out, its owner's too: leave
            # them to their owners, which record them on their return, for a third of a lease.
            take_over = not self._availability.back_within(self._lease.total_seconds() / 3)
            batch = await self._in_database(self._claim, take_over)
            if not batch:
                break
            self._holding = True
            try:
                await self._send(batch)
            finally:
                self._holding = False
        await self._smtp.close_idle()
        self._arm(await asyncio.to_thread(self._next_due))

    def _arm(self, due_at: datetime | None) -> None:
        """Set the one timer for the next due row, translating the service clock to real time."""
        if due_at is None or self._scheduler is None or self._stopping:
            return
        delay = due_at - self._clock.now()
        if delay <= timedelta(0):
            self._wanted = True
            return
        self._scheduler.add_job(
            self._on_timer,
            "date",
            run_date=datetime.now(UTC) + delay,
            id="next-due",
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def _send(self, batch: list[Notification]) -> None:
        """Send a claimed batch. If that fails for a reason no single message explains (a
        database that refuses a write, a bug), give the batch's unsettled claims back to the
        queue, due after a backoff and showing the error, rather than leave them 'sending' until
        their lease runs out; then fail the run. Messages sent but not yet recorded go out again
        under their Message-ID, as after a crash. A database that cannot be reached is no such
        failure: ``_send_batch`` keeps what it could not record for when it is back."""
        try:
            await self._send_batch(batch)
        except Exception as exc:
            if unreachable(exc):
                raise
            error = f"the dispatch run failed: {_describe(exc)}"
            now = self._last_batch_failure = self._clock.now()
            retries = {
                n.id: now + retry_delay(n.attempts, self._settings.retry_base_seconds)
                for n in batch
            }
            try:
                released = await self._in_database(self._release_after_error, retries, error)
            except Exception:
                log.exception("cannot give back the claims of a failed batch")
            else:
                log.error(
                    "%s: %d claimed notifications go back to the queue",
                    error,
                    released,
                    extra={"count": released},
                )
            raise
        self._failing_runs, self._last_batch_failure = 0, None
        self._last_success = self._clock.now()

    async def _send_batch(self, batch: list[Notification]) -> None:
        """Render the batch off the event loop, send it over a few connections at once, and
        settle what was sent at least every SETTLE_EVERY seconds and at the end.

        A crash between sending and settling leaves rows 'sending': they are sent again with
        the same Message-ID, which receivers use to drop the duplicate. Settling as the batch
        goes keeps that window short when the mail server is slow. Once the service is asked to
        stop, the messages in flight are finished and recorded; the rest go back to the queue.
        """
        pending = _Pending(settled_at=time.monotonic())
        try:
            await self._send_and_settle(batch, pending)
        except Exception as exc:
            if not unreachable(exc):
                raise
            pending.database_away = exc
        if pending.database_away is not None:
            # What was sent stays in memory until the database is back, and the claims not
            # sent wait there too, to be given back: none is sent again under its own claim.
            waiting = {n.id for n, _, _ in pending.results} | pending.recorded
            self._unrecorded.add(pending.take(), [n.id for n in batch if n.id not in waiting])
            raise pending.database_away

    async def _send_and_settle(self, batch: list[Notification], pending: _Pending) -> None:
        gathered = await asyncio.to_thread(self._gather, batch)  # reads need no turn at the gate
        prepared = await asyncio.to_thread(lambda: [self._render(item) for item in gathered])
        work = list(zip(batch, prepared, strict=True))
        # Each message waits for the server's replies; several connections overlap the waits.
        lanes = min(self._settings.smtp_connections, len(work))
        unsent = await asyncio.gather(
            *(self._send_lane(work[lane::lanes], pending) for lane in range(lanes))
        )
        if pending.database_away is not None:
            return
        if pending.results:
            await self._settle_pending(pending)
        released = [notification_id for lane in unsent for notification_id in lane]
        if released:
            await self._in_database(self._settle, [], released)
            pending.recorded.update(released)
            log.info(
                "%s: %d claimed notifications go back to the queue",
                "stopping" if self._stopping else "claims not renewed for a whole lease",
                len(released),
                extra={"count": len(released)},
            )

    async def _settle_pending(self, pending: _Pending) -> None:
        """Record what the batch's connections sent so far. An unreachable database keeps them
        in ``pending`` and stops the connections; any other error fails the batch."""
        taken = pending.take()
        try:
            await self._in_database(self._settle, taken)
        except Exception as exc:
            if not unreachable(exc):
                raise
            pending.results[:0] = taken
            pending.database_away = exc
        else:
            pending.recorded.update(n.id for n, _, _ in taken)

    async def _record_unrecorded(self) -> None:
        """The database is back: record the outcomes an outage left in memory, give back the
        claims it left unsent, and only then claim anything new."""
        unrecorded, self._unrecorded = self._unrecorded, _Unrecorded()
        try:
            await self._in_database(self._settle, unrecorded.results, unrecorded.unsent)
        except Exception:
            unrecorded.add(self._unrecorded.results, self._unrecorded.unsent)
            self._unrecorded = unrecorded
            raise
        log.info(
            "database back: recorded %d outcomes and gave back %d unsent claims kept meanwhile",
            len(unrecorded.results),
            len(unrecorded.unsent),
            extra={"count": len(unrecorded.results) + len(unrecorded.unsent)},
        )

    async def _send_lane(
        self, work: list[tuple[Notification, Prepared | Unbuildable]], pending: _Pending
    ) -> list[str]:
        """Send one connection's share of a batch; return the ids left unsent by a stop."""
        async with SmtpBatch(self._settings, self._smtp_host, self._smtp_port, self._smtp) as smtp:
            for position, (notification, item) in enumerate(work):
                if self._stopping or self._lease_lost() or pending.database_away is not None:
                    return [n.id for n, _ in work[position:]]
                if isinstance(item, Unbuildable):
                    outcome = SendOutcome(False, True, None, item.reason, 0)
                    pending.results.append((notification, outcome, None))
                else:
                    outcome = await smtp.send(item.message)
                    pending.results.append((notification, outcome, item))
                    if not outcome.connected:
                        self._mail_unreachable = True
                if time.monotonic() - pending.settled_at >= SETTLE_EVERY.total_seconds():
                    # Taken before the await, so the other lanes start a fresh list meanwhile.
                    await self._settle_pending(pending)
        return []

    async def _in_database(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run database work in a worker thread once it is this writer's turn at the gate."""
        async with self._write_gate:
            return await asyncio.to_thread(work, *args)

    # --- database work, run in a worker thread -------------------------------------------

    def _release_abandoned(self) -> int:
        with transaction(self._engine) as session:
            if self._engine.dialect.name == "sqlite":
                # One process owns a SQLite file: anything 'sending' was left by a crash.
                return outbox.release_abandoned(session)
            return outbox.release_predecessors(session, self._name, self.owner)

    def _renew_claims(self) -> int:
        with transaction(self._engine) as session:
            return outbox.renew(session, self.owner, self._clock.now(), self._lease)

    def _resume_after_outage(self) -> int:
        with transaction(self._engine) as session:
            return outbox.resume_after_outage(session, self._clock.now())

    def _release_after_error(self, retries: dict[str, datetime], error: str) -> int:
        with transaction(self._engine) as session:
            return outbox.release_after_error(
                session, retries, error, self._clock.now(), self.owner
            )

    def _claim(self, take_over: bool) -> list[Notification]:
        with transaction(self._engine) as session:
            return outbox.claim_due(
                session,
                self._clock.now(),
                self._settings.send_batch_size,
                self._lease,
                self.owner,
                take_over=take_over,
            )

    def _next_due(self) -> datetime | None:
        with transaction(self._engine) as session:
            due = [outbox.next_due(session), timers.next_due(session)]
        return min((d for d in due if d is not None), default=None)

    def _run_timers(self) -> int:
        """Do the work of the timers due now (``incidents.timed``), each in a transaction of its
        own: one that fails is recorded as failed and holds up no other, nor the messages."""
        now = self._clock.now()
        with transaction(self._engine) as session:
            due = timers.due(session, now, self._settings.send_batch_size)
        ran = 0
        for timer_id in due:
            try:
                with transaction(self._engine) as session:
                    ran += timed.run(session, timer_id, now, self._settings.mail_domain)
            except SQLAlchemyError as exc:
                if unreachable(exc):
                    raise
                self._timer_failed(timer_id, now, exc)
            except Exception as exc:
                self._timer_failed(timer_id, now, exc)
        return ran

    def _timer_failed(self, timer_id: str, now: datetime, exc: Exception) -> None:
        log.error("timer %s failed: %s", timer_id, _describe(exc), exc_info=exc)
        with transaction(self._engine) as session:
            timers.fail(session, timer_id, now, _describe(exc))

    def _gather(self, batch: list[Notification]) -> list[_Gathered | Unbuildable]:
        """Read what the batch's templates need, in one transaction. A row whose facts cannot
        be made into a template context (data this code does not expect) fails alone; a
        database error is no row's fault and fails the batch."""
        now = self._clock.now()
        per_incident: dict[str, tuple[EffectiveAgreement, messaging.Answers, messaging.Shown]] = {}
        gathered: list[_Gathered | Unbuildable] = []
        with transaction(self._engine) as session:
            roots = outbox.thread_roots(session, batch)
            # The batch's incidents in one query, and when their escalations go out in another,
            # not a query or two for each incident.
            incidents = {
                incident.id: incident
                for incident in session.exec(
                    select(Incident).where(col(Incident.id).in_({n.incident_id for n in batch}))
                )
            }
            escalations = messaging.escalations_due(
                session, [i.id for i in incidents.values() if i.acknowledged_at is None]
            )
            for notification in batch:
                try:
                    gathered.append(
                        self._gather_one(
                            session, notification, incidents, escalations, per_incident, now, roots
                        )
                    )
                except SQLAlchemyError:
                    raise
                except Exception as exc:
                    gathered.append(self._unbuildable(notification, exc))
        return gathered

    def _gather_one(
        self,
        session: Session,
        notification: Notification,
        incidents: dict[str, Incident],
        escalations: dict[str, dict[int, datetime]],
        per_incident: dict[str, tuple[EffectiveAgreement, messaging.Answers, messaging.Shown]],
        now: datetime,
        roots: dict[str, str | None],
    ) -> _Gathered:
        incident = incidents[notification.incident_id]
        if incident.id not in per_incident:
            agreement = EffectiveAgreement.stored(incident.agreement)
            answers = messaging.Answers.of(session, incident, escalations.get(incident.id, {}))
            shown = messaging.Shown(incident, agreement, answers, now)
            per_incident[incident.id] = (agreement, answers, shown)
        agreement, answers, shown = per_incident[incident.id]
        context = messaging.build_context(
            session,
            notification,
            incident,
            agreement,
            answers,
            self._tokens,
            self._settings,
            now,
            shown,
        )
        return _Gathered(notification, incident, agreement, context, now, roots[notification.id])

    def _render(self, item: _Gathered | Unbuildable) -> Prepared | Unbuildable:
        """The message on the wire, or why there is none: whatever one message's templates,
        names or addresses hold, it cannot stop the rest of its batch."""
        if isinstance(item, Unbuildable):
            return item
        notification, incident, agreement = item.notification, item.incident, item.agreement
        try:
            rendered = self._renderer.render(
                notification.template,
                item.context,
                messaging.center_ids(agreement),
                incident.template_version,
            )
        except RenderError as exc:
            log.error(
                "cannot render %s for %s: %s",
                notification.template,
                notification.id,
                exc,
                extra=_ids(notification),
            )
            return Unbuildable(f"template error: {exc}")
        try:
            envelope = messaging.envelope(
                notification,
                incident,
                self._settings,
                item.now,
                agreement.manufacturer_name,
                self._return_addresses,
                item.thread_root,
            )
            return Prepared(build_message(rendered, envelope, self._signer), rendered.version)
        except Exception as exc:
            return self._unbuildable(notification, exc)

    def _unbuildable(self, notification: Notification, exc: Exception) -> Unbuildable:
        described = _describe(exc)
        log.error(
            "cannot build %s for %s: %s",
            notification.template,
            notification.id,
            described,
            # A refused header is the data's fault and says so; anything else may be a bug.
            exc_info=None if type(exc) is ValueError else exc,
            extra=_ids(notification),
        )
        return Unbuildable(f"cannot build the message: {described}")

    def _settle(self, results: list[_Result], unsent: Sequence[str] = ()) -> None:
        """Record what was sent or failed, and give back the claims ``unsent``, of the rows
        this process still holds; a row another sender took over is theirs to record."""
        now = self._clock.now()
        with transaction(self._engine) as session:
            held = outbox.still_claimed(
                session, [*(n.id for n, _, _ in results), *unsent], self.owner
            )
            given_back = [notification_id for notification_id in unsent if notification_id in held]
            if given_back:
                outbox.release_claims(session, given_back, self.owner)
            lost = [n for n, _, _ in results if n.id not in held]
            results = [result for result in results if result[0].id in held]
            delivered = [
                outbox.Delivered(
                    notification,
                    outcome.reply,
                    outcome.duration_ms,
                    sent.template_version,
                    sent.message.data,
                )
                for notification, outcome, sent in results
                if outcome.accepted and sent is not None
            ]
            outbox.settle_sent(session, delivered, now)
            for notification, outcome, _ in results:
                if not outcome.accepted:
                    self._settle_failure(session, notification, outcome, now)
        for notification in lost:
            log.warning(
                "%s was taken over by another sender after its lease ran out: its outcome here "
                "is not recorded (a second copy has the same Message-ID)",
                notification.id,
                extra=_ids(notification),
            )
        for item in delivered:
            log.info(
                "sent %s to %s",
                item.notification.id,
                item.notification.recipient_email,
                extra=_ids(item.notification, duration_ms=item.duration_ms),
            )

    def _not_reached(
        self, session: Session, notification: Notification, outcome: SendOutcome, now: datetime
    ) -> bool:
        """A refusal for good is a bounce the server gave at once: the same rule for both, the
        role left unreached calls for its backup or its next step. Returns whether QA was told."""
        if outcome.code is None and outcome.permanent:
            cause = "never sent"
        else:
            cause = "refused" if outcome.permanent else "retries exhausted"
        told, _ = unreached.not_reached(
            session,
            notification,
            now,
            self._settings.mail_domain,
            outcome.reply,
            "dispatcher",
            cause,
        )
        return told

    def _settle_failure(
        self, session: Session, notification: Notification, outcome: SendOutcome, now: datetime
    ) -> None:
        retry_at = None
        if not outcome.permanent and (
            # No server could be reached: nobody judged the message, so it waits for the server
            # however long that takes. Only the server's own failures count against its attempts.
            not outcome.connected
            or outbox.refusals(session, notification.id) + 1 < self._settings.max_send_attempts
        ):
            retry_at = now + retry_delay(notification.attempts, self._settings.retry_base_seconds)
        failed = outbox.settle_failure(
            session,
            notification,
            now,
            permanent=outcome.permanent,
            connected=outcome.connected,
            code=outcome.code,
            reply=outcome.reply,
            duration_ms=outcome.duration_ms,
            retry_at=retry_at,
        )
        if failed and not self._not_reached(session, notification, outcome, now):
            log.error(
                "QA could not be told that %s failed: %s",
                notification.id,
                outcome.reply,
                extra=_ids(notification),
            )
        log.warning(
            "delivery of %s failed (%s): %s",
            notification.id,
            outcome.code,
            outcome.reply,
            extra=_ids(
                notification,
                smtp_code=outcome.code,
                retry_at=retry_at.isoformat() if retry_at else None,
            ),
        )


def _describe(exc: Exception) -> str:
    """An error as a notification's ``last_error`` shows it, on one line: a refused header says
    what was wrong; anything else names its type too. Without the values a validation error
    echoes (they could be anything an incident holds) or the SQL a database error adds."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        text = f"invalid {exc.title}: {problems}"
    elif isinstance(exc, DBAPIError):
        text = f"{type(exc).__name__}: {exc.orig}"
    elif type(exc) is ValueError:
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500] or type(exc).__name__


def _ids(notification: Notification, **more: object) -> dict[str, object]:
    """The fields a log line about a notification carries (see ``logs``)."""
    return {
        "incident_id": notification.incident_id,
        "notification_id": notification.id,
        "recipient": notification.recipient_email,
        "template": notification.template,
        "attempt": notification.attempts,
        **more,
    }
