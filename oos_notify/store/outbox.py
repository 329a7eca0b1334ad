"""The outbox: notifications as rows with a due time and a status, claimed before they are sent.

A claim is a conditional update (``... WHERE id IN (...) AND status = 'scheduled' RETURNING id``)
whose returned ids say which rows this sender won, so several service replicas on one database
never send the same row twice; the candidates are read ``FOR NO KEY UPDATE SKIP LOCKED`` on
PostgreSQL, so senders pass each other's rows by instead of queueing on them. Senders lock rows
``NO KEY``, which keeps other senders out and lets a row that names a notification (an answer, an
audit entry) be written meanwhile: a full ``FOR UPDATE`` made such a write wait for the sender,
and a sender that then waited for that writer's incident deadlocked with it. A claim names its
owner (a process, ``name/incarnation``) and holds a lease the owner renews while it sends. A
sender that dies leaves its rows to be taken over when the lease runs out, or at once when it
restarts under the same name; a sender that comes back after a takeover finds the rows no
longer its own and records nothing. A resend reuses the row's Message-ID so receivers can drop
a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, false, func, update
from sqlmodel import Session, col, select

from oos_notify.agreements.vocabulary import (
    MANUFACTURER_PREFIX,
    CenterRole,
    KeyDate,
    ManufacturerRole,
)
from oos_notify.ids import new_id
from oos_notify.store import audit, promises, sent_messages, wakeups
from oos_notify.store.lifecycle import (
    Condition,
    IncidentStatus,
    NotificationKind,
    NotificationStatus,
    can_move,
    notification_sources,
)
from oos_notify.store.models import DeliveryAttempt, Incident, Notification

_INSERT_ATTEMPT = DeliveryAttempt.__table__.insert()  # type: ignore[attr-defined]
"""A Core insert: an ORM object made the next statement flush once per settled row."""
# Core statements on these tables for the per-message updates on the send path: an ORM update
# first works out which objects loaded in the session it changes, which costs more than the
# update itself.
_ROWS = Notification.__table__  # type: ignore[attr-defined]
_INCIDENTS = Incident.__table__  # type: ignore[attr-defined]
SCHEDULED = NotificationStatus.SCHEDULED.value
SENDING = NotificationStatus.SENDING.value
UNREACHABLE = "unreachable"
"""A delivery attempt that found no mail server to talk to (refused, no route, timed out)."""
BOUNCED = "bounced"
"""A message a mail server accepted and later returned as undeliverable (a bounce)."""


@dataclass(frozen=True)
class PlannedNotification:
    kind: NotificationKind
    level: int
    """The step's position in its list: 0 is the first notice, 1 the first escalation, ..."""
    role: str
    contact_id: str
    recipient_name: str
    recipient_email: str
    template: str
    due_at: datetime
    condition: Condition
    with_ack_link: bool
    anchor: KeyDate | None = None
    """The key date the step is due before, so that moving the date can move the step."""


@dataclass(frozen=True)
class Addressee:
    """Someone an incident has already told, as follow-up notices address them."""

    contact_id: str
    role: str
    name: str
    email: str


def schedule(
    session: Session,
    incident_id: str,
    planned: Sequence[PlannedNotification],
    now: datetime,
    mail_domain: str,
    drill: bool | None = None,
) -> list[tuple[str, PlannedNotification]]:
    """Write planned notifications as outbox rows, each with its Message-ID fixed once; return
    each row's id with what was planned. A drill's messages to patient liaisons are left out,
    and the trail says so (``drill``: whether the incident is one, read when not given)."""
    planned = _without_drill_liaisons(session, incident_id, planned, now, drill)
    scheduled = [(new_id("ntf"), item) for item in planned]
    if not scheduled:
        return []
    session.execute(
        Notification.__table__.insert(),  # type: ignore[attr-defined]
        [
            {
                "id": notification_id,
                "incident_id": incident_id,
                "kind": item.kind.value,
                "level": item.level,
                "condition": item.condition.value,
                "role": item.role,
                "contact_id": item.contact_id,
                "recipient_name": item.recipient_name,
                "recipient_email": item.recipient_email,
                "template": item.template,
                "with_ack_link": item.with_ack_link,
                "anchor": item.anchor,
                "due_at": item.due_at,
                "status": SCHEDULED,
                "attempts": 0,
                "message_id": f"<{notification_id.lower()}@{mail_domain}>",
                "created_at": now,
            }
            for notification_id, item in scheduled
        ],
    )
    wakeups.announce(session)
    for notification_id, item in scheduled:
        audit.record(
            session,
            now,
            "notification_scheduled",
            "planner",
            incident_id=incident_id,
            notification_id=notification_id,
            recipient=item.recipient_email,
            role=item.role,
            template=item.template,
            due_at=item.due_at.isoformat(),
            kind=item.kind.value,
            level=item.level,
        )
    return scheduled


LIAISON_ROLES = frozenset(
    {CenterRole.PATIENT_LIAISON.value, ManufacturerRole.PATIENT_SERVICES.value}
)
"""Who coordinates the conversation with the patient: a drill never reaches them."""


def reaches_liaison(item: PlannedNotification) -> bool:
    """Whether a message is for the patient's liaisons: a patient-communication step, or a
    liaison's role in any step."""
    role = item.role.removeprefix(MANUFACTURER_PREFIX)
    return item.kind is NotificationKind.PATIENT or role in LIAISON_ROLES


def _without_drill_liaisons(
    session: Session,
    incident_id: str,
    planned: Sequence[PlannedNotification],
    now: datetime,
    drill: bool | None,
) -> Sequence[PlannedNotification]:
    # The incident is read only when a liaison is among the recipients, which is rare.
    liaisons = [item for item in planned if reaches_liaison(item)]
    if not liaisons:
        return planned
    if drill is None:
        drill = session.exec(select(Incident.drill).where(Incident.id == incident_id)).one()
    if not drill:
        return planned
    for item in liaisons:
        audit.record(
            session,
            now,
            "step_skipped",
            "planner",
            incident_id=incident_id,
            kind=item.kind.value,
            level=item.level,
            role=item.role,
            reason="a drill reaches no patient liaison",
        )
    return [item for item in planned if not reaches_liaison(item)]


def cancel_pending(
    session: Session,
    incident_id: str,
    now: datetime,
    reason: str,
    *criteria: ColumnElement[bool],
) -> int:
    """Cancel the incident's notifications not yet claimed for sending that meet every
    criterion (all of them when none is given); return how many."""
    # One conditional update: the rows it returns are those no sender had claimed first.
    cancelled = session.execute(
        _ROWS.update()
        .where(
            _ROWS.c.incident_id == incident_id,
            _ROWS.c.status.in_(notification_sources(NotificationStatus.CANCELLED)),
            *criteria,
        )
        .values(status=NotificationStatus.CANCELLED.value)
        .returning(_ROWS.c.id, _ROWS.c.recipient_email, _ROWS.c.due_at)
    ).all()
    for notification_id, recipient, _ in sorted(cancelled, key=lambda row: (row[2], row[0])):
        audit.record(
            session,
            now,
            "notification_cancelled",
            "system",
            incident_id=incident_id,
            notification_id=notification_id,
            recipient=recipient,
            reason=reason,
        )
    return len(cancelled)


def release_abandoned(session: Session) -> int:
    """Return every row left 'sending' to the queue: for a SQLite file, which one process owns,
    so whatever is 'sending' when it starts was left by a crash."""
    return _release(session, col(Notification.status) == SENDING)


def release_predecessors(session: Session, name: str, owner: str) -> int:
    """Return to the queue the rows that earlier processes of the same ``name`` (a restart of
    this one) left 'sending', without waiting for their leases to run out."""
    return _release(
        session,
        col(Notification.status) == SENDING,
        col(Notification.claimed_by).startswith(f"{name}/", autoescape=True),
        col(Notification.claimed_by) != owner,
    )


def _release(session: Session, *criteria: ColumnElement[bool], **values: Any) -> int:
    result = session.execute(
        update(Notification)
        .where(*criteria)
        .values(status=SCHEDULED, lease_until=None, claimed_by=None, **values)
    )
    released = int(result.rowcount)  # type: ignore[attr-defined]
    if released:
        wakeups.announce(session)
    return released


def release_claims(session: Session, notification_ids: list[str], owner: str) -> int:
    """Give back claimed rows that were not sent (the service is stopping): they are due again
    at once for the next sender, and the claim does not count as an attempt."""
    return _release(
        session,
        col(Notification.id).in_(notification_ids),
        col(Notification.status) == SENDING,
        col(Notification.claimed_by) == owner,
        attempts=Notification.attempts - 1,
    )


def release_after_error(
    session: Session, retries: Mapping[str, datetime], error: str, now: datetime, owner: str
) -> int:
    """Give back ``owner``'s claims of a batch whose sending failed as a whole (the database, a
    bug), each due again at its ``retries`` time, showing ``error``; return how many were still
    its own. Rows the batch settled before it failed keep their outcome, and rows another sender
    took over are theirs to record. The claim stays counted, so the delay grows with each
    failed try."""
    released: list[tuple[str, str, str, int]] = []
    for notification_id, retry_at in sorted(retries.items()):
        row = session.execute(
            _ROWS.update()
            .where(
                _ROWS.c.id == notification_id,
                _ROWS.c.status == SENDING,
                _ROWS.c.claimed_by == owner,
            )
            .values(
                status=SCHEDULED,
                lease_until=None,
                claimed_by=None,
                due_at=retry_at,
                last_error=error,
            )
            .returning(_ROWS.c.incident_id, _ROWS.c.recipient_email, _ROWS.c.attempts)
        ).one_or_none()
        if row is not None:
            released.append((notification_id, row.incident_id, row.recipient_email, row.attempts))
    for notification_id, incident_id, recipient, attempt in released:
        audit.record(
            session,
            now,
            "notification_retry",
            "dispatcher",
            incident_id=incident_id,
            notification_id=notification_id,
            recipient=recipient,
            smtp_code=None,
            reply=error,
            attempt=attempt,
            retry_at=retries[notification_id].isoformat(),
        )
    if released:
        wakeups.announce(session)
    return len(released)


def claim_due(
    session: Session,
    now: datetime,
    limit: int,
    lease: timedelta,
    owner: str,
    *,
    take_over: bool = True,
) -> list[Notification]:
    """Claim up to ``limit`` due notifications for ``owner``; each claim is won by one sender.
    Claims whose lease ran out are taken over too, unless ``take_over`` is false."""
    scheduled = (col(Notification.status) == SCHEDULED) & (col(Notification.due_at) <= now)
    abandoned = (col(Notification.status) == SENDING) & (col(Notification.lease_until) < now)
    # Two queries rather than one OR: each walks the (status, due_at) index and stops at the
    # limit, where the OR made SQLite sort every due row on every claim, however many were due.
    candidates = [
        *(
            session.exec(
                select(Notification.id)
                .where(abandoned)
                .limit(limit)
                .with_for_update(skip_locked=True, key_share=True)
            )
            if take_over
            else ()
        ),
        *session.exec(
            select(Notification.id)
            .where(scheduled)
            .order_by(col(Notification.due_at))
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True)
        ),
    ][:limit]
    if not candidates:
        return []
    # The same test written as a CASE: SQLite planned the OR as a walk of the (status, due_at)
    # index over every due row, 50 ids or not, which grew with the backlog; a CASE cannot use
    # that index, so the ids' primary key is looked up instead.
    still_claimable = case(
        (col(Notification.status) == SCHEDULED, col(Notification.due_at) <= now),
        (col(Notification.status) == SENDING, col(Notification.lease_until) < now),
        else_=false(),
    )
    claimed = (
        session.execute(
            update(Notification)
            .where(col(Notification.id).in_(candidates), still_claimable)
            .values(
                status=SENDING,
                lease_until=now + lease,
                claimed_by=owner,
                attempts=Notification.attempts + 1,
            )
            .returning(col(Notification.id))
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    if not claimed:
        return []
    return list(
        session.exec(
            select(Notification)
            .where(col(Notification.id).in_(claimed))
            .order_by(col(Notification.due_at))
        ).all()
    )


def renew(session: Session, owner: str, now: datetime, lease: timedelta) -> int:
    """Extend the lease of every row ``owner`` is sending: it is alive and still at it."""
    result = session.execute(
        update(Notification)
        .where(col(Notification.claimed_by) == owner, col(Notification.status) == SENDING)
        .values(lease_until=now + lease)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def still_claimed(session: Session, notification_ids: Sequence[str], owner: str) -> set[str]:
    """Which of these rows ``owner`` still holds, locked until the transaction ends so that no
    sender can take them over while their outcome is recorded. A row missing from the answer was
    taken over after the lease ran out: its new owner sends and records it."""
    if not notification_ids:
        return set()
    held = session.exec(
        select(Notification.id)
        .where(
            col(Notification.id).in_(notification_ids),
            col(Notification.status) == SENDING,
            col(Notification.claimed_by) == owner,
        )
        .with_for_update(key_share=True)
    )
    return set(held)


def thread_roots(session: Session, notifications: Sequence[Notification]) -> dict[str, str | None]:
    """For each notification (by id), the Message-ID of the first message of its incident that
    went out to its recipient, which its message points at to thread with it; None when there
    is none yet, and its message will be that first one. One query for a whole batch."""
    incidents = {n.incident_id for n in notifications}
    if not incidents:
        return {}
    sent: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for incident_id, recipient, notification_id, message_id in session.execute(
        select(
            Notification.incident_id,
            Notification.recipient_email,
            Notification.id,
            Notification.message_id,
        )
        .where(col(Notification.incident_id).in_(incidents), col(Notification.sent_at).is_not(None))
        .order_by(col(Notification.sent_at), col(Notification.id))
    ):
        sent.setdefault((incident_id, recipient), []).append((notification_id, message_id))
    return {
        n.id: next(
            (
                message_id
                for other, message_id in sent.get((n.incident_id, n.recipient_email), [])
                if other != n.id
            ),
            None,
        )
        for n in notifications
    }


def next_due(session: Session) -> datetime | None:
    """The earliest due time of a scheduled notification, to arm the dispatch timer."""
    return session.exec(
        select(func.min(Notification.due_at)).where(Notification.status == SCHEDULED)
    ).one()


def refusals(session: Session, notification_id: str) -> int:
    """How many attempts at a notification failed at a mail server that could be reached."""
    return session.exec(
        select(func.count())
        .select_from(DeliveryAttempt)
        .where(
            DeliveryAttempt.notification_id == notification_id,
            DeliveryAttempt.outcome == "transient",
        )
    ).one()


def resume_after_outage(session: Session, now: datetime) -> int:
    """Make due now the retries whose last attempt found no mail server; return how many."""
    last_outcome = (
        select(DeliveryAttempt.outcome)
        .where(DeliveryAttempt.notification_id == Notification.id)
        .order_by(col(DeliveryAttempt.id).desc())
        .limit(1)
        .correlate(Notification)
        .scalar_subquery()
    )
    waiting = session.exec(
        select(Notification.id).where(
            Notification.status == SCHEDULED,
            col(Notification.due_at) > now,
            col(Notification.attempts) > 0,
            last_outcome == UNREACHABLE,
        )
    ).all()
    if not waiting:
        return 0
    result = session.execute(
        update(Notification)
        .where(col(Notification.id).in_(waiting), col(Notification.status) == SCHEDULED)
        .values(due_at=now)
    )
    wakeups.announce(session)
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Delivered:
    """A message the mail server accepted: its row, the server's reply and the send's duration,
    the template set it was rendered from, and the message as it went on the wire."""

    notification: Notification
    reply: str
    duration_ms: int
    template_version: str
    message: bytes


_MARK_SENT = (
    _ROWS.update()
    .where(_ROWS.c.id == bindparam("notification_id"), _ROWS.c.status == SENDING)
    .values(
        status=NotificationStatus.SENT.value,
        sent_at=bindparam("now"),
        lease_until=None,
        claimed_by=None,
        last_error=None,
        template_version=bindparam("version"),
    )
)


def settle_sent(session: Session, delivered: Sequence[Delivered], now: datetime) -> None:
    """Record deliveries the mail server accepted, a batch in a few statements; a later step
    escalates its incident."""
    if not delivered:
        return
    session.execute(
        _MARK_SENT,
        [
            {"notification_id": d.notification.id, "now": now, "version": d.template_version}
            for d in delivered
        ],
    )
    session.execute(
        _INSERT_ATTEMPT,
        [_attempt_row(d.notification, now, "sent", 250, d.reply, d.duration_ms) for d in delivered],
    )
    sent_messages.keep(session, [(d.notification.id, d.message) for d in delivered], now)
    escalations = [
        d.notification for d in delivered if d.notification.kind == NotificationKind.ESCALATION
    ]
    follow_ups = [
        d.notification for d in delivered if d.notification.kind == NotificationKind.FOLLOW_UP
    ]
    first_deliveries = _record_first_deliveries(session, escalations, follow_ups, now)
    for d in delivered:
        notification = d.notification
        audit.record(
            session,
            now,
            "notification_sent",
            "dispatcher",
            incident_id=notification.incident_id,
            notification_id=notification.id,
            recipient=notification.recipient_email,
            template=notification.template,
            template_version=d.template_version,
            message_id=notification.message_id,
            attempt=notification.attempts,
        )
        deadline = first_deliveries.get(notification.id)
        if deadline is not None:
            audit.record(
                session,
                now,
                "notify_within_breached" if now > deadline else "notify_within_met",
                "dispatcher",
                incident_id=notification.incident_id,
                notification_id=notification.id,
                deadline=deadline.isoformat(),
                delivered_at=now.isoformat(),
            )
    for notification in escalations:
        if notification.level > 0:
            _escalate(session, notification, now)


def settle_failure(
    session: Session,
    notification: Notification,
    now: datetime,
    *,
    permanent: bool,
    connected: bool,
    code: int | None,
    reply: str,
    duration_ms: int,
    retry_at: datetime | None,
) -> bool:
    """Record a failed attempt: back to the queue for ``retry_at``, or failed for good; return
    whether it failed for good (the caller then reports it to QA in the same transaction)."""
    give_up = permanent or retry_at is None
    status = NotificationStatus.FAILED if give_up else NotificationStatus.SCHEDULED
    values: dict[str, object] = {
        "status": status.value,
        "lease_until": None,
        "claimed_by": None,
        "last_error": reply,
    }
    if not give_up:
        values["due_at"] = retry_at
    session.execute(
        _ROWS.update()
        .where(_ROWS.c.id == notification.id, _ROWS.c.status == SENDING)
        .values(**values)
    )
    outcome = "permanent" if permanent else "transient" if connected else UNREACHABLE
    session.execute(
        _INSERT_ATTEMPT, _attempt_row(notification, now, outcome, code, reply, duration_ms)
    )
    audit.record(
        session,
        now,
        "notification_failed" if give_up else "notification_retry",
        "dispatcher",
        incident_id=notification.incident_id,
        notification_id=notification.id,
        recipient=notification.recipient_email,
        smtp_code=code,
        reply=reply,
        attempt=notification.attempts,
        retry_at=retry_at.isoformat() if retry_at and not give_up else None,
    )
    return give_up


def settle_bounce(
    session: Session, notification: Notification, now: datetime, code: int | None, reply: str
) -> bool:
    """A sent notification came back undeliverable: failed, with the bounce as an attempt of its
    own (``reply`` is the receiving server's diagnostic). False when it was no longer ``sent``:
    something settled it meanwhile, and nothing is written."""
    changed = session.execute(
        _ROWS.update()
        .where(_ROWS.c.id == notification.id, _ROWS.c.status == NotificationStatus.SENT.value)
        .values(status=NotificationStatus.FAILED.value, last_error=f"bounced: {reply}"[:1000])
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(_INSERT_ATTEMPT, _attempt_row(notification, now, BOUNCED, code, reply, 0))
    promises.reopen_after_bounce(session, notification, now)
    return True


def bring_forward(
    session: Session, incident_id: str, after_level: int, now: datetime
) -> tuple[int, list[str]] | None:
    """Make the incident's next escalation step after ``after_level`` that still waits for an
    acknowledgement due now; return its level and the notifications moved, or None when no such
    step waits."""
    waiting = (
        col(Notification.incident_id) == incident_id,
        col(Notification.kind) == NotificationKind.ESCALATION.value,
        col(Notification.status) == SCHEDULED,
        col(Notification.condition) == Condition.UNACKNOWLEDGED.value,
        col(Notification.level) > after_level,
    )
    level = session.exec(select(func.min(Notification.level)).where(*waiting)).one()
    if level is None:
        return None
    moved = session.execute(
        _ROWS.update()
        .where(*waiting, _ROWS.c.level == level, _ROWS.c.due_at > now)
        .values(due_at=now)
        .returning(_ROWS.c.id)
    ).all()
    return level, sorted(row.id for row in moved)


def make_due(session: Session, notification_ids: Sequence[str], now: datetime) -> list[str]:
    """Make these notifications due now if they still wait for a later time; return those
    moved."""
    if not notification_ids:
        return []
    moved = session.execute(
        _ROWS.update()
        .where(
            _ROWS.c.id.in_(notification_ids),
            _ROWS.c.status == SCHEDULED,
            _ROWS.c.due_at > now,
        )
        .values(due_at=now)
        .returning(_ROWS.c.id)
    ).all()
    if moved:
        wakeups.announce(session)
    return sorted(row.id for row in moved)


def _attempt_row(
    notification: Notification,
    now: datetime,
    outcome: str,
    code: int | None,
    reply: str,
    duration_ms: int,
) -> dict[str, object]:
    return {
        "notification_id": notification.id,
        "at": now,
        "outcome": outcome,
        "smtp_code": code,
        "smtp_reply": reply[:1000],
        "duration_ms": duration_ms,
    }


def _record_first_deliveries(
    session: Session,
    delivered: Sequence[Notification],
    follow_ups: Sequence[Notification],
    now: datetime,
) -> dict[str, datetime]:
    """The agreement promises the first notice within ``notify_within``: note when each incident
    first had one delivered. Returns, for each notice that was its incident's first, the deadline
    it was measured against (incidents without one are noted but not returned)."""
    firsts: dict[str, Notification] = {}
    for notification in delivered:
        firsts.setdefault(notification.incident_id, notification)
    # An incident whose first notice bounced meets its promise only once its role is reached
    # again, by a later step or a follow-up.
    reaching = dict(firsts)
    for notification in follow_ups:
        reaching.setdefault(notification.incident_id, notification)
    bounced = promises.with_bounces(session, reaching)
    firsts |= {i: reaching[i] for i in bounced}
    if not firsts:
        return {}
    noted = list(
        session.execute(
            _INCIDENTS.update()
            .where(
                _INCIDENTS.c.id.in_(set(firsts) - bounced),
                _INCIDENTS.c.first_delivered_at.is_(None),
            )
            .values(first_delivered_at=now)
            .returning(_INCIDENTS.c.id, _INCIDENTS.c.notify_deadline)
        ).all()
    )
    for incident_id in sorted(bounced):
        met = promises.met_after_bounce(session, incident_id)
        if met is not None:
            noted.extend(
                session.execute(
                    _INCIDENTS.update()
                    .where(
                        _INCIDENTS.c.id == incident_id, _INCIDENTS.c.first_delivered_at.is_(None)
                    )
                    .values(first_delivered_at=met)
                    .returning(_INCIDENTS.c.id, _INCIDENTS.c.notify_deadline)
                ).all()
            )
    return {
        firsts[incident_id].id: deadline for incident_id, deadline in noted if deadline is not None
    }


def told(session: Session, incident_id: str) -> list[Addressee]:
    """Everyone the incident has told so far (the manufacturer's receipts and forwarded replies
    aside), in order."""
    rows = session.exec(
        select(Notification)
        .where(
            Notification.incident_id == incident_id,
            col(Notification.status).in_([NotificationStatus.SENT.value, SENDING]),
            col(Notification.kind).not_in(
                [NotificationKind.RECEIPT.value, NotificationKind.FORWARDED_REPLY.value]
            ),
        )
        .order_by(col(Notification.due_at), col(Notification.id))
    )
    return [Addressee(n.contact_id, n.role, n.recipient_name, n.recipient_email) for n in rows]


def sent_steps(
    session: Session, incident_id: str, since: datetime | None = None
) -> set[tuple[NotificationKind, int]]:
    """The plan steps of an incident that have reached someone (planned ``since`` then: the
    current round's, when a late result restarted the escalation)."""
    query = select(Notification.kind, Notification.level).where(
        Notification.incident_id == incident_id,
        col(Notification.status).in_([NotificationStatus.SENT.value, SENDING]),
    )
    if since is not None:
        query = query.where(col(Notification.created_at) >= since)
    return {(NotificationKind(kind), level) for kind, level in session.exec(query)}


def _escalate(session: Session, notification: Notification, now: datetime) -> None:
    incident = session.get(Incident, notification.incident_id)
    if incident is None or notification.level <= incident.escalation_level:
        return
    incident.escalation_level = notification.level
    if can_move(IncidentStatus(incident.status), IncidentStatus.ESCALATED):
        audit.record(
            session,
            now,
            "incident_status_changed",
            "dispatcher",
            incident_id=incident.id,
            status_from=incident.status,
            status_to=IncidentStatus.ESCALATED.value,
            level=notification.level,
        )
        incident.status = IncidentStatus.ESCALATED
    incident.updated_at = now
    session.add(incident)
