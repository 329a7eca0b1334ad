"""What a returned mail does to its notification and incident, in one transaction with the
record that it was processed, so that it does it once.

- A permanent bounce fails the notification with the diagnostic, tells QA as a 5xx would, and
  starts the round's next escalation step at once. A temporary one is recorded only.
- An automatic reply goes on the timeline with its first lines and, unless the plan says
  ``on_out_of_office: record``, starts the round's next step at once. It never acknowledges and
  is never answered.
- A reply from the recipient's own address whose first line confirms acknowledges exactly as
  the link would (the same round rules, QA's receipt); from a role the plan does not let stop
  the escalation it is recorded as a confirmation that stops nothing, as on the page. Any other
  reply is forwarded to QA. A reply from another address, or one whose sender failed SPF and
  DKIM, does nothing but show.
- Bringing the next step forward is for notices to those whose confirmation would stop the
  escalation: a cell lab's bounce or absence tells QA or the timeline, and moves nothing.

Only a genuine return address names a notification: anything without one is recorded and does
nothing. One message that cannot be processed is recorded as such and fails alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.message import Message
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse, EventType
from oos_notify.clock import Clock
from oos_notify.ids import new_id
from oos_notify.inbound.classify import Kind, Returned, classify, parse
from oos_notify.incidents import acknowledgement, qa_reports
from oos_notify.incidents.acknowledgement import AckForm, AckTokens, Purpose, purpose_of
from oos_notify.incidents.planning import plan_to_qa
from oos_notify.return_addresses import ReturnAddress, ReturnAddresses
from oos_notify.store import audit, outbox
from oos_notify.store.db import transaction
from oos_notify.store.lifecycle import (
    Condition,
    IncidentStatus,
    NotificationKind,
    NotificationStatus,
)
from oos_notify.store.models import (
    AuditEntry,
    ForwardedReply,
    InboundMessage,
    Incident,
    Notification,
)
from oos_notify.texts import nul_replaced

log = logging.getLogger(__name__)

FORWARDED_REPLY_TEMPLATE = "forwarded_reply"
ACTOR = "returned mail"
"""Who the timeline says acted on a bounce or an automatic reply."""
RECIPIENT_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
    "Cc",
)
"""Where a mailbox shows the address a message came to, most trustworthy first."""
_ACK_LINK_LIFETIME = timedelta(minutes=5)


class Outcome(StrEnum):
    NOTICE_FAILED = "notice_failed"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    FORWARDED = "forwarded"
    RECORDED = "recorded"
    FLAGGED = "flagged"
    UNMATCHED = "unmatched"
    ERROR = "error"


@dataclass(frozen=True)
class Origin:
    """Where a message was read, and its SMTP envelope when it came over SMTP."""

    source: str
    uidvalidity: int | None = None
    uid: int | None = None
    envelope_sender: str | None = None
    envelope_recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Handled:
    kind: Kind
    outcome: Outcome | None
    """None when the message had been processed before."""
    inbound_id: str | None = None
    wake: bool = False
    """Something became due now: the dispatcher should run."""

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.ERROR


@dataclass
class _Effect:
    """What handling a message did, gathered as it goes and written with its record."""

    outcome: Outcome
    detail: dict[str, Any] = field(default_factory=dict)
    wake: bool = False
    forwards: list[str] = field(default_factory=list)


def message_key(message_id: str | None, raw: bytes) -> str:
    """What identifies a message wherever it is read: its Message-ID, else its bytes."""
    basis = message_id.strip().lower().encode() if message_id else raw
    return hashlib.sha256(basis).hexdigest()


def confirms(text: str, words: Sequence[str]) -> bool:
    """Whether a reply's first own line confirms: it starts with one of ``words`` (as a whole
    word) and asks nothing. A question is never taken for a confirmation."""
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    line = " ".join(first.casefold().split())
    if not line or "?" in line:
        return False
    return any(re.match(rf"{re.escape(word)}(?![\w])", line) for word in words)


class Intake:
    """Processes returned mail; one per service, shared by the mailbox reader and the
    listener. ``handle`` is blocking database work: run it in a thread at the write gate."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        addresses: ReturnAddresses,
        tokens: AckTokens,
        mail_domain: str,
        confirm_words: Sequence[str],
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._addresses = addresses
        self._tokens = tokens
        self._mail_domain = mail_domain
        self._confirm_words = tuple(confirm_words)

    def accepts(self, recipient: str) -> bool:
        """Whether an SMTP recipient is a genuine return address."""
        return self._addresses.find(recipient) is not None

    def processed(self, source: str, uidvalidity: int, uid: int) -> bool:
        """Whether the message at this place in a mailbox was processed already."""
        with transaction(self._engine) as session:
            return self._at(session, source, uidvalidity, uid) is not None

    def handle(self, raw: bytes, origin: Origin) -> Handled:
        """Process one message: its effects and its record commit together, or neither does.
        A database error is raised (the message is left for another try); anything else
        this message causes is recorded as its failure, and the next message goes on."""
        now = self._clock.now()
        try:
            returned = classify(raw, origin.envelope_sender)
        except Exception as exc:
            return self._failed(origin, None, exc)
        key = message_key(returned.message_id, raw)
        returned = _storable(returned)
        try:
            with transaction(self._engine) as session:
                if self._seen(session, origin, key):
                    return Handled(returned.kind, None)
                return self._apply(session, raw, returned, origin, key, now)
        except IntegrityError:
            # Another reader committed the same message first; anything else is a failure.
            with transaction(self._engine) as session:
                if self._seen(session, origin, key):
                    return Handled(returned.kind, None)
            raise
        except SQLAlchemyError:
            raise
        except Exception as exc:
            return self._failed(origin, returned, exc)

    # --- finding what a message is about ---------------------------------------------------

    def _at(
        self, session: Session, source: str, uidvalidity: int | None, uid: int | None
    ) -> str | None:
        if uidvalidity is None or uid is None:
            return None
        return session.exec(
            select(InboundMessage.id).where(
                InboundMessage.source == source,
                InboundMessage.uidvalidity == uidvalidity,
                InboundMessage.uid == uid,
            )
        ).first()

    def _seen(self, session: Session, origin: Origin, key: str) -> bool:
        if self._at(session, origin.source, origin.uidvalidity, origin.uid) is not None:
            return True
        found = session.exec(select(InboundMessage.id).where(InboundMessage.message_key == key))
        return found.first() is not None

    def _return_address(self, message: Message, origin: Origin) -> ReturnAddress | None:
        """The notification a message came back for: from the envelope when it came over
        SMTP, else from the headers a mailbox shows the recipient in."""
        for recipient in origin.envelope_recipients:
            found = self._addresses.find(recipient)
            if found is not None:
                return found
        for name in RECIPIENT_HEADERS:
            for value in message.get_all(name) or []:
                found = self._addresses.find(str(value))
                if found is not None:
                    return found
        return None

    # --- effects ---------------------------------------------------------------------------

    def _apply(
        self,
        session: Session,
        raw: bytes,
        returned: Returned,
        origin: Origin,
        key: str,
        now: datetime,
    ) -> Handled:
        address = self._return_address(parse(raw), origin)
        notification = session.get(Notification, address.notification_id) if address else None
        incident = session.get(Incident, notification.incident_id) if notification else None
        if notification is None or incident is None:
            effect = _Effect(
                Outcome.UNMATCHED,
                {"reason": "the notification is unknown" if address else "no return address"},
            )
        elif returned.kind is Kind.BOUNCE:
            effect = self._bounced(session, returned, notification, incident, now)
        elif returned.kind is Kind.DELAY:
            effect = self._delayed(session, returned, notification, now)
        elif returned.kind is Kind.AUTO_REPLY:
            effect = self._auto_reply(session, returned, notification, incident, now)
        elif returned.kind is Kind.REPLY:
            effect = self._reply(session, returned, notification, incident, now)
        else:
            effect = _Effect(Outcome.RECORDED, {"reason": "a report, not a failure"})
        record = self._record(
            origin,
            returned,
            key,
            now,
            effect.outcome,
            {"evidence": list(returned.evidence), **effect.detail},
            notification,
        )
        session.add(record)
        session.flush()  # the links below refer to it
        for forward in effect.forwards:
            session.add(ForwardedReply(notification_id=forward, inbound_message_id=record.id))
        session.flush()
        log.info(
            "returned mail %s: %s",
            returned.kind,
            effect.outcome,
            extra={
                "incident_id": record.incident_id,
                "notification_id": record.notification_id,
            },
        )
        return Handled(returned.kind, effect.outcome, record.id, effect.wake)

    def _record(
        self,
        origin: Origin,
        returned: Returned | None,
        key: str | None,
        now: datetime,
        outcome: Outcome,
        detail: dict[str, Any],
        notification: Notification | None = None,
    ) -> InboundMessage:
        return InboundMessage(
            id=new_id("inb"),
            source=origin.source,
            uidvalidity=origin.uidvalidity,
            uid=origin.uid,
            message_key=key,
            message_id=returned.message_id[:500] if returned and returned.message_id else None,
            received_at=now,
            kind=returned.kind if returned else Kind.UNREADABLE,
            outcome=outcome,
            notification_id=notification.id if notification else None,
            incident_id=notification.incident_id if notification else None,
            sender=returned.sender[:320] if returned and returned.sender else None,
            subject=returned.subject if returned else None,
            text=(returned.text or returned.diagnostic or None) if returned else None,
            detail=detail,
        )

    def _failed(self, origin: Origin, returned: Returned | None, exc: Exception) -> Handled:
        """Record a message that could not be processed, without its Message-ID key: a
        redelivery of it (after a fix) is processed again."""
        log.error(
            "returned mail could not be processed (%s, uid %s): %s: %s",
            origin.source,
            origin.uid,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return self.refuse(origin, f"{type(exc).__name__}: {exc}", returned)

    def refuse(self, origin: Origin, error: str, returned: Returned | None = None) -> Handled:
        """Record a message that cannot be processed (unreadable, too large, failing) with
        ``error``, so that it shows; it does nothing else."""
        error = nul_replaced(" ".join(error.split())[:500])
        now = self._clock.now()
        record = self._record(origin, returned, None, now, Outcome.ERROR, {"error": error})
        with transaction(self._engine) as session:
            session.add(record)
        return Handled(Kind(record.kind), Outcome.ERROR, record.id)

    def _bounced(
        self,
        session: Session,
        returned: Returned,
        notification: Notification,
        incident: Incident,
        now: datetime,
    ) -> _Effect:
        detail: dict[str, Any] = {"status": returned.status, "diagnostic": returned.diagnostic}
        if notification.status != NotificationStatus.SENT:
            detail["reason"] = f"the notification is {notification.status}"
            return _Effect(Outcome.RECORDED, detail)
        diagnostic = returned.diagnostic or "returned as undeliverable, without a reason"
        reply = f"bounced: {diagnostic}"[:1000]
        if not outbox.settle_bounce(session, notification, now, returned.smtp_code, diagnostic):
            detail["reason"] = "the notification was settled meanwhile"
            return _Effect(Outcome.RECORDED, detail)
        audit.record(
            session,
            now,
            "notification_bounced",
            ACTOR,
            incident_id=incident.id,
            notification_id=notification.id,
            recipient=notification.recipient_email,
            status=returned.status,
            smtp_code=returned.smtp_code,
            reply=diagnostic[:1000],
        )
        detail["qa_told"] = qa_reports.delivery_failure(
            session, notification, now, self._mail_domain, reply, ACTOR
        )
        advanced = self._advance(session, notification, incident, now, "bounce")
        detail.update(advanced)
        return _Effect(Outcome.NOTICE_FAILED, detail, wake=True)

    def _delayed(
        self, session: Session, returned: Returned, notification: Notification, now: datetime
    ) -> _Effect:
        audit.record(
            session,
            now,
            "delivery_delayed",
            ACTOR,
            incident_id=notification.incident_id,
            notification_id=notification.id,
            recipient=notification.recipient_email,
            status=returned.status,
            reply=(returned.diagnostic or "")[:1000],
        )
        return _Effect(
            Outcome.RECORDED, {"status": returned.status, "diagnostic": returned.diagnostic}
        )

    def _auto_reply(
        self,
        session: Session,
        returned: Returned,
        notification: Notification,
        incident: Incident,
        now: datetime,
    ) -> _Effect:
        audit.record(
            session,
            now,
            "auto_reply_received",
            ACTOR,
            incident_id=incident.id,
            notification_id=notification.id,
            sender=returned.sender,
            subject=returned.subject,
            first_lines=returned.text,
            evidence=list(returned.evidence),
        )
        agreement = EffectiveAgreement.stored(incident.agreement)
        plan = agreement.plans[EventType(incident.plan_type)]
        if plan.on_out_of_office == "record":
            return _Effect(Outcome.RECORDED, {"reason": "the plan says record"})
        advanced = self._advance(session, notification, incident, now, "automatic reply")
        if advanced.get("next_step_level") is None:
            return _Effect(Outcome.RECORDED, advanced)
        return _Effect(Outcome.ESCALATED, advanced, wake=True)

    def _advance(
        self,
        session: Session,
        notification: Notification,
        incident: Incident,
        now: datetime,
        cause: str,
    ) -> dict[str, Any]:
        """Make the round's next escalation step due now, after a notice of this round that
        did not reach its recipient. Says what it moved, or why nothing: somebody whose
        confirmation would stop nothing (a cell lab) being away delays no confirmation."""
        if notification.kind != NotificationKind.ESCALATION:
            return {"reason": "not an escalation notice"}
        status = IncidentStatus(incident.status)
        if status.is_closed or status is IncidentStatus.ACKNOWLEDGED:
            return {"reason": f"the incident is {status}"}
        if notification_round(session, notification) != incident.ack_round:
            return {"reason": "the notice is from an earlier round"}
        agreement = EffectiveAgreement.stored(incident.agreement)
        if not acknowledgement.may_stop(agreement, incident.plan_type, notification):
            return {"reason": "its recipient's confirmation would not stop the escalation"}
        forward = outbox.bring_forward(session, incident.id, notification.level, now)
        if forward is None:
            return {"reason": "no later step is waiting"}
        level, moved = forward
        audit.record(
            session,
            now,
            "escalation_advanced",
            ACTOR,
            incident_id=incident.id,
            notification_id=notification.id,
            level=level,
            cause=cause,
            notifications=moved,
        )
        return {"next_step_level": level}

    def _reply(
        self,
        session: Session,
        returned: Returned,
        notification: Notification,
        incident: Incident,
        now: datetime,
    ) -> _Effect:
        effect = self._answer(session, returned, notification, incident, now)
        audit.record(
            session,
            now,
            "reply_flagged" if effect.outcome is Outcome.FLAGGED else "reply_received",
            returned.sender or "unknown sender",
            incident_id=incident.id,
            notification_id=notification.id,
            sender=returned.sender,
            subject=returned.subject,
            first_line=returned.text.split("\n")[0][:300] if returned.text else None,
            outcome=effect.outcome,
            **effect.detail,
        )
        return effect

    def _answer(
        self,
        session: Session,
        returned: Returned,
        notification: Notification,
        incident: Incident,
        now: datetime,
    ) -> _Effect:
        """What a reply does. Acknowledging comes first in the transaction: the acknowledgement
        rolls the transaction back when another answer won the race."""
        if IncidentStatus(incident.status).is_closed:
            return _Effect(Outcome.RECORDED, {"reason": f"the incident is {incident.status}"})
        problems = []
        if returned.sender != notification.recipient_email.lower():
            problems.append(f"sent from {returned.sender}, not {notification.recipient_email}")
        if returned.authentication.failed:
            problems.append("the sender failed authentication")
        if problems:
            checks = returned.authentication.summary()
            reason = "; ".join(problems)
            return _Effect(Outcome.FLAGGED, {"reason": reason, "authentication": checks})
        if NotificationKind(notification.kind).reports_to_qa:
            return _Effect(Outcome.RECORDED, {"reason": "a reply to a message to QA"})
        reason = "it does not confirm"
        if confirms(returned.text, self._confirm_words):
            acknowledges = purpose_of(notification) is Purpose.ACKNOWLEDGEMENT
            if not (notification.with_ack_link and acknowledges):
                reason = "its notice cannot be acknowledged by reply"
            else:
                state = self._acknowledge(session, returned, notification, now)
                if state.just_acknowledged and state.stops_escalation:
                    return _Effect(Outcome.ACKNOWLEDGED, {}, wake=True)
                if state.just_acknowledged:
                    # Recorded like the link's confirmation from the same person, which the
                    # manufacturer does not hear of either: the escalation goes on.
                    return _Effect(
                        Outcome.RECORDED,
                        {"reason": "a confirmation from a role that does not stop the escalation"},
                    )
                if state.acknowledgement is not None:
                    return _Effect(Outcome.RECORDED, {"reason": "already acknowledged"})
                if state.own_confirmation is not None:
                    return _Effect(Outcome.RECORDED, {"reason": "already confirmed"})
                reason = "it confirms an earlier round"
        return self._forward(session, notification, incident, now, reason)

    def _acknowledge(
        self, session: Session, returned: Returned, notification: Notification, now: datetime
    ) -> acknowledgement.AckState:
        """Acknowledge as the notification's link would, for the round its email showed."""
        token = self._tokens.issue(
            notification,
            now + _ACK_LINK_LIFETIME,
            ack_round=notification_round(session, notification),
        )
        try:
            form = AckForm(response=AckResponse.RECEIVED, comment=returned.text or None)
        except ValidationError:
            form = AckForm(response=AckResponse.RECEIVED)
        return acknowledgement.acknowledge(
            session,
            self._tokens,
            token,
            form,
            client_address=None,
            user_agent=f"email reply {returned.message_id or ''}".strip(),
            now=now,
            mail_domain=self._mail_domain,
        )

    def _forward(
        self,
        session: Session,
        notification: Notification,
        incident: Incident,
        now: datetime,
        reason: str,
    ) -> _Effect:
        reports = plan_to_qa(
            EffectiveAgreement.stored(incident.agreement),
            incident.qa_contact,
            NotificationKind.FORWARDED_REPLY,
            FORWARDED_REPLY_TEMPLATE,
            now,
            Condition.ALWAYS,
        )
        if not reports:
            return _Effect(
                Outcome.RECORDED, {"reason": f"{reason}, and there is no QA contact to tell"}
            )
        scheduled = outbox.schedule(session, incident.id, reports, now, self._mail_domain)
        return _Effect(
            Outcome.FORWARDED,
            {"reason": reason},
            wake=True,
            forwards=[notification_id for notification_id, _ in scheduled],
        )


def notification_round(session: Session, notification: Notification) -> int:
    """The acknowledgement round a notification was planned in: each late result that restarted
    the escalation before it (in the audit trail's order) began one more."""
    scheduled = (
        select(func.min(AuditEntry.seq))
        .where(
            AuditEntry.notification_id == notification.id,
            AuditEntry.action == "notification_scheduled",
        )
        .scalar_subquery()
    )
    restarts = session.exec(
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.incident_id == notification.incident_id,
            AuditEntry.action == "escalation_restarted",
            col(AuditEntry.seq) < scheduled,
        )
    ).one()
    return 1 + int(restarts)


def _storable(returned: Returned) -> Returned:
    """A returned mail's texts as they can be stored and acted on: a NUL in them (a broken
    mailer's) is kept as U+FFFD, which PostgreSQL's text can hold."""

    def text(value: str | None) -> str | None:
        return None if value is None else nul_replaced(value)

    return replace(
        returned,
        evidence=tuple(nul_replaced(e) for e in returned.evidence),
        message_id=text(returned.message_id),
        sender=text(returned.sender),
        subject=nul_replaced(returned.subject),
        text=nul_replaced(returned.text),
        status=text(returned.status),
        diagnostic=text(returned.diagnostic),
    )
