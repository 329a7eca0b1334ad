"""What a returned mail does to its notification and incident, in one transaction with the
record that it was processed, so that it does it once.

- A permanent bounce fails the notification with the diagnostic and is then taken as a 5xx
  would be (``incidents.unreached``): QA is told, and the role left unreached brings its backup's
  or its own next notice forward. A temporary one is recorded only.
- An automatic reply goes on the timeline with its first lines and, unless the plan says
  ``on_out_of_office: record``, starts the round's next step at once. It never acknowledges and
  is never answered.
- A reply from the recipient's own address, authenticated and aligned by the operator's own
  receiving server, whose first line confirms acknowledges exactly as the link would (the same
  round rules, QA's receipt); from a role the plan does not let stop the escalation it is
  recorded as a confirmation that stops nothing, as on the page. Any other reply is forwarded
  to QA, marked unverified when nothing trusted authenticates it. A reply from another address,
  with a From header that names no one sender, or whose sender failed authentication, does
  nothing but show.
- Bringing anything forward is for notices to those whose confirmation would stop the
  escalation: a cell lab's bounce or absence tells QA or the timeline, and moves nothing.

Only a genuine return address names a notification: anything without one is recorded and does
nothing, and each address takes only its own kind of mail. Nothing stored, shown or forwarded
keeps a center's confirmation link or return address. One message that cannot be read or
processed is recorded as such and fails alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse, EventType
from oos_notify.clock import Clock
from oos_notify.ids import new_id
from oos_notify.inbound import center_words
from oos_notify.inbound.center_links import without_center_links
from oos_notify.inbound.classify import Kind, Returned, Verdict
from oos_notify.inbound.reading import Reader, Reading
from oos_notify.incidents import acknowledgement, center_reports, deputies, unreached
from oos_notify.incidents.acknowledgement import AckForm, AckTokens, Purpose, purpose_of
from oos_notify.incidents.center_reports import Source
from oos_notify.incidents.planning import plan_to_qa
from oos_notify.incidents.unreached import notification_round
from oos_notify.return_addresses import Purpose as AddressPurpose
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
ACCEPTED = {
    AddressPurpose.REPLY: frozenset({Kind.REPLY, Kind.AUTO_REPLY, Kind.REPORT}),
    AddressPurpose.BOUNCE: frozenset({Kind.BOUNCE, Kind.DELAY, Kind.AUTO_REPLY, Kind.REPORT}),
}
"""What each return address is for: replies go to the Reply-To, delivery reports to the
envelope sender; automatic replies may go to either (RFC 3834 answers the envelope sender,
Exchange the Reply-To)."""
_ACK_LINK_LIFETIME = timedelta(minutes=5)


_SEND_RECORD_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
"""How long to wait, in turn, for the record of a send that a bounce came back for: a relay can
deliver its own bounce within milliseconds of answering 250, while the dispatcher still records
that answer."""


class NotYetSent(Exception):
    """A bounce is about a notice whose send is not recorded yet (still ``sending``): handled
    now, it would change nothing and the bounce would be lost. Nothing is written; it is tried
    again once the send is recorded."""


class Outcome(StrEnum):
    NOTICE_FAILED = "notice_failed"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    FORWARDED = "forwarded"
    REPORTED = "reported"
    """Said what the link's page lets a center say (a date, the product, a call): taken."""
    RECORDED = "recorded"
    FLAGGED = "flagged"
    MISDIRECTED = "misdirected"
    """Came to the other return address of its notification: shown, not acted on."""
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
    listener. ``read`` parses a message in the reader process: await it outside the write
    gate. ``handle`` is blocking database work: run it in a thread at the write gate."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        addresses: ReturnAddresses,
        tokens: AckTokens,
        mail_domain: str,
        confirm_words: Sequence[str],
        reader: Reader,
    ) -> None:
        self._engine = engine
        self._reader = reader
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

    async def read(self, raw: bytes, origin: Origin) -> Reading:
        """Parse and classify a message, within the reader's time limit; no database work."""
        return await self._reader.read(raw, origin.envelope_sender)

    def handle(self, raw: bytes, origin: Origin, reading: Reading) -> Handled:
        """Process one message as read: its effects and its record commit together, or
        neither does. A database error is raised (the message is left for another try);
        anything else this message causes is recorded as its failure, and the next message
        goes on."""
        now = self._clock.now()
        if reading.returned is None:
            log.error(
                "returned mail could not be read (%s, uid %s): %s",
                origin.source,
                origin.uid,
                reading.error,
            )
            return self.refuse(origin, reading.error or "it could not be read", None, reading)
        key = message_key(reading.returned.message_id, raw)
        returned = self._storable(reading.returned, now)
        try:
            with transaction(self._engine) as session:
                if self._seen(session, origin, key):
                    return Handled(returned.kind, None)
                return self._apply(session, reading, returned, origin, key, now)
        except IntegrityError:
            # Another reader committed the same message first; anything else is a failure.
            with transaction(self._engine) as session:
                if self._seen(session, origin, key):
                    return Handled(returned.kind, None)
            raise
        except (SQLAlchemyError, NotYetSent):
            raise
        except Exception as exc:
            return self._failed(origin, returned, exc)

    async def handle_once_sent(
        self,
        raw: bytes,
        origin: Origin,
        reading: Reading,
        write_gate: AbstractAsyncContextManager[object],
    ) -> Handled:
        """``handle`` at the write gate; a bounce that came back before its notice's send was
        recorded is tried again, outside the gate (the dispatcher needs it to record the send),
        after each of ``_SEND_RECORD_WAITS``; then ``NotYetSent`` is raised, for the caller to
        leave the message for a later try."""
        for wait in _SEND_RECORD_WAITS:
            try:
                async with write_gate:
                    return await asyncio.to_thread(self.handle, raw, origin, reading)
            except NotYetSent:
                await asyncio.sleep(wait)
        async with write_gate:
            return await asyncio.to_thread(self.handle, raw, origin, reading)

    def _storable(self, returned: Returned, now: datetime) -> Returned:
        """A returned mail's texts as they can be stored, shown and forwarded: no NUL (kept
        as U+FFFD, which PostgreSQL's text can hold), no working center link or return
        address."""

        def text(value: str) -> str:
            return without_center_links(nul_replaced(value), self._tokens, now)

        def optional(value: str | None) -> str | None:
            return None if value is None else text(value)

        return replace(
            returned,
            evidence=tuple(nul_replaced(e) for e in returned.evidence),
            message_id=optional(returned.message_id),
            sender=None if returned.sender is None else nul_replaced(returned.sender),
            subject=text(returned.subject),
            text=text(returned.text),
            status=optional(returned.status),
            diagnostic=optional(returned.diagnostic),
        )

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

    def _return_address(self, reading: Reading | None, origin: Origin) -> ReturnAddress | None:
        """The notification a message came back for: from the envelope when it came over
        SMTP, else from the headers a mailbox shows the recipient in."""
        for recipient in (*origin.envelope_recipients, *(reading.recipients if reading else ())):
            found = self._addresses.find(recipient)
            if found is not None:
                return found
        return None

    # --- effects ---------------------------------------------------------------------------

    def _apply(
        self,
        session: Session,
        reading: Reading,
        returned: Returned,
        origin: Origin,
        key: str,
        now: datetime,
    ) -> Handled:
        address = self._return_address(reading, origin)
        notification = session.get(Notification, address.notification_id) if address else None
        incident = session.get(Incident, notification.incident_id) if notification else None
        if notification is None or incident is None:
            effect = _Effect(
                Outcome.UNMATCHED,
                {"reason": "the notification is unknown" if address else "no return address"},
            )
        elif address is not None and returned.kind not in ACCEPTED[address.purpose]:
            effect = self._misdirected(session, returned, notification, address, now)
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

    def refuse(
        self,
        origin: Origin,
        error: str,
        returned: Returned | None = None,
        reading: Reading | None = None,
    ) -> Handled:
        """Record a message that cannot be processed (unreadable, too large, too slow to read,
        failing) with ``error``, so that it shows; nothing it says is acted on. One that could
        not be read (``reading``) and came to a notification's return address shows on that
        incident's timeline, and QA gets it forwarded as unverified, its text unread."""
        error = nul_replaced(" ".join(error.split())[:500])
        now = self._clock.now()
        effect = _Effect(Outcome.ERROR, {"error": error})
        with transaction(self._engine) as session:
            address = self._return_address(reading, origin) if reading is not None else None
            notification = session.get(Notification, address.notification_id) if address else None
            incident = session.get(Incident, notification.incident_id) if notification else None
            if notification is not None and incident is not None:
                effect = self._unreadable(session, notification, incident, now, error)
            record = self._record(origin, returned, None, now, Outcome.ERROR, effect.detail)
            if notification is not None and incident is not None:
                record.notification_id, record.incident_id = notification.id, incident.id
            session.add(record)
            session.flush()
            for forward in effect.forwards:
                session.add(ForwardedReply(notification_id=forward, inbound_message_id=record.id))
        return Handled(Kind(record.kind), Outcome.ERROR, record.id, effect.wake)

    def _unreadable(
        self,
        session: Session,
        notification: Notification,
        incident: Incident,
        now: datetime,
        error: str,
    ) -> _Effect:
        audit.record(
            session,
            now,
            "returned_mail_unreadable",
            ACTOR,
            incident_id=incident.id,
            notification_id=notification.id,
            error=error,
        )
        detail: dict[str, Any] = {"error": error}
        if IncidentStatus(incident.status).is_closed:
            detail["reason"] = f"the incident is {incident.status}"
        elif NotificationKind(notification.kind).reports_to_qa:
            detail["reason"] = "mail about a message to QA"
        else:
            told = self._forward(
                session, notification, incident, now, f"it could not be read ({error})", False
            )
            return _Effect(Outcome.ERROR, {**told.detail, **detail}, told.wake, told.forwards)
        return _Effect(Outcome.ERROR, detail)

    def _misdirected(
        self,
        session: Session,
        returned: Returned,
        notification: Notification,
        address: ReturnAddress,
        now: datetime,
    ) -> _Effect:
        """A reply sent to the bounce address, or a delivery report sent to the reply address:
        each address does only its own job, so this one is shown and does nothing."""
        if address.purpose is AddressPurpose.BOUNCE:
            reason = "a reply sent to the bounce address, which takes delivery reports only"
        else:
            reason = "a delivery report sent to the reply address, which takes replies only"
        audit.record(
            session,
            now,
            "returned_mail_misdirected",
            returned.sender or "unknown sender",
            incident_id=notification.incident_id,
            notification_id=notification.id,
            kind=returned.kind,
            sender=returned.sender,
            subject=returned.subject,
            reason=reason,
        )
        return _Effect(Outcome.MISDIRECTED, {"reason": reason})

    def _bounced(
        self,
        session: Session,
        returned: Returned,
        notification: Notification,
        incident: Incident,
        now: datetime,
    ) -> _Effect:
        detail: dict[str, Any] = {"status": returned.status, "diagnostic": returned.diagnostic}
        if notification.status == NotificationStatus.SENDING:
            raise NotYetSent(notification.id)
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
        detail["qa_told"], advanced = unreached.not_reached(
            session, notification, now, self._mail_domain, reply, ACTOR, "bounce"
        )
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
        if purpose_of(notification) is Purpose.DECISION and deputies.undecided(incident):
            return self._decider_absent(session, notification, incident, now)
        agreement = EffectiveAgreement.stored(incident.agreement)
        plan = agreement.plans[EventType(incident.plan_type)]
        if plan.on_out_of_office == "record":
            return _Effect(Outcome.RECORDED, {"reason": "the plan says record"})
        advanced = self._advance(session, notification, incident, now, "automatic reply")
        if advanced.get("next_step_level") is None:
            return _Effect(Outcome.RECORDED, advanced)
        return _Effect(Outcome.ESCALATED, advanced, wake=True)

    def _decider_absent(
        self, session: Session, notification: Notification, incident: Incident, now: datetime
    ) -> _Effect:
        """A decision cannot wait for a decider who is away: QA hears at once, with the
        automatic reply, and the deputy deciders the agreement names are asked now."""
        asked = deputies.ask_deputies(session, incident, notification, ACTOR, now)
        reports = plan_to_qa(
            EffectiveAgreement.stored(incident.agreement),
            incident.qa_contact,
            NotificationKind.FORWARDED_REPLY,
            deputies.DECIDER_ABSENT_TEMPLATE,
            now,
            Condition.ALWAYS,
        )
        planned = [*asked, *reports]
        scheduled = outbox.schedule(session, incident.id, planned, now, self._mail_domain)
        detail = {
            "reason": "an automatic reply to a decision request",
            "deputies_asked": [item.recipient_email for item in asked],
        }
        forwards = [
            notification_id
            for notification_id, item in scheduled
            if item.kind is NotificationKind.FORWARDED_REPLY
        ]
        outcome = Outcome.FORWARDED if forwards else Outcome.RECORDED
        return _Effect(outcome, detail, wake=bool(scheduled), forwards=forwards)

    def _advance(
        self,
        session: Session,
        notification: Notification,
        incident: Incident,
        now: datetime,
        cause: str,
    ) -> dict[str, Any]:
        """Make the round's next escalation step due now, after an automatic reply to a notice
        of this round. Says what it moved, or why nothing (``unreached.held_back``)."""
        reason = unreached.held_back(session, notification, incident)
        if reason is not None:
            return {"reason": reason}
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
        if returned.sender_problem:
            problems.append(returned.sender_problem)
        domain = returned.sender.rpartition("@")[2] if returned.sender else None
        verdict, why = returned.authentication.verdict(domain)
        checks = {"verdict": verdict, "why": why, **returned.authentication.summary()}
        if verdict is Verdict.FAILED:
            problems.append(f"the sender failed authentication: {why}")
        if problems:
            reason = "; ".join(problems)
            return _Effect(Outcome.FLAGGED, {"reason": reason, "authentication": checks})
        if NotificationKind(notification.kind).reports_to_qa:
            return _Effect(Outcome.RECORDED, {"reason": "a reply to a message to QA"})
        if verdict is Verdict.UNVERIFIED:
            # Only an authenticated sender confirms: anyone can write a From header.
            reason = f"its sender could not be verified: {why}"
            forwarded = self._forward(session, notification, incident, now, reason, False)
            forwarded.detail["authentication"] = checks
            return forwarded
        confirmed = self._confirmation(session, returned, notification, now)
        agreement = EffectiveAgreement.stored(incident.agreement)
        said = center_words.read(returned.text, center_reports.center_today(agreement, now))
        if said.reports or said.unclear:
            return self._reports(session, notification, incident, now, said, confirmed)
        if isinstance(confirmed, str):
            return self._forward(session, notification, incident, now, confirmed)
        return confirmed

    def _confirmation(
        self, session: Session, returned: Returned, notification: Notification, now: datetime
    ) -> _Effect | str:
        """What a reply's confirmation did, or why it did not acknowledge (to forward it)."""
        if not confirms(returned.text, self._confirm_words):
            return "it does not confirm"
        acknowledges = purpose_of(notification) is Purpose.ACKNOWLEDGEMENT
        if not (notification.with_ack_link and acknowledges):
            return "its notice cannot be acknowledged by reply"
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
        return "it confirms an earlier round"

    def _reports(
        self,
        session: Session,
        notification: Notification,
        incident: Incident,
        now: datetime,
        said: center_words.Said,
        confirmed: _Effect | str,
    ) -> _Effect:
        """A reply that speaks of the treatment does what the link's page would, when every
        statement in it reads one way; otherwise QA gets it forwarded, the request shown
        first, and nothing of it is taken. Either way its confirmation stands."""
        request = said.request
        taken: list[str] = []
        answerable = purpose_of(notification) is Purpose.ACKNOWLEDGEMENT
        if request is None and not (notification.with_ack_link and answerable):
            request = "a report in a reply to a message whose page takes none"
        if request is None:
            refused = [
                f"{report.kind.label.lower()}: {why}"
                for report in said.reports
                if (why := center_reports.refusal(incident, notification, report, now))
            ]
            request = "; ".join(refused) or None
        if request is None:
            for report in said.reports:
                recorded = center_reports.record(
                    session, incident, notification, report, Source.REPLY, now, self._mail_domain
                )
                taken.append(recorded.report.kind)
        if request is not None:
            acknowledged = {} if isinstance(confirmed, str) else {"confirmation": confirmed.outcome}
            reason = (
                "what it asks or reports cannot be read for sure"
                if said.unclear
                else "what it reports cannot be taken as written"
            )
            forwarded = self._forward(session, notification, incident, now, reason, request=request)
            forwarded.detail.update(acknowledged)
            forwarded.wake = forwarded.wake or (not isinstance(confirmed, str) and confirmed.wake)
            return forwarded
        if isinstance(confirmed, str):
            return _Effect(Outcome.REPORTED, {"reports": taken}, wake=True)
        confirmed.detail["reports"] = taken
        confirmed.wake = True
        return confirmed

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
            by_reply=True,
        )

    def _forward(
        self,
        session: Session,
        notification: Notification,
        incident: Incident,
        now: datetime,
        reason: str,
        verified: bool = True,
        request: str | None = None,
    ) -> _Effect:
        """Forward the reply to QA; ``verified`` is False when nothing proves who sent it;
        ``request`` is what it seems to ask or report, shown first."""
        reports = plan_to_qa(
            EffectiveAgreement.stored(incident.agreement),
            incident.qa_contact,
            NotificationKind.FORWARDED_REPLY,
            FORWARDED_REPLY_TEMPLATE,
            now,
            Condition.ALWAYS,
        )
        detail: dict[str, Any] = {"reason": reason, "verified": verified}
        if request is not None:
            detail["request"] = request
        if not reports:
            detail["reason"] = f"{reason}, and there is no QA contact to tell"
            return _Effect(Outcome.RECORDED, detail)
        scheduled = outbox.schedule(session, incident.id, reports, now, self._mail_domain)
        return _Effect(
            Outcome.FORWARDED,
            detail,
            wake=True,
            forwards=[notification_id for notification_id, _ in scheduled],
        )
