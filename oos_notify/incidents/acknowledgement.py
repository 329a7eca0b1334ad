"""Acknowledgement by signed link: tokens, the confirmation page's facts, and recording the answer.

A token names one notification, its incident and its recipient, and carries its expiry and the
incident's round when the email was sent; it is signed with the service's secret key, so it
cannot be forged or moved. Reading a token never changes anything: mail scanners open every
link, and only the page's POST acknowledges. An answer counts for the round its page showed: a
late result starts a new round, and an old email or an old page must not confirm facts nobody saw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import update
from sqlmodel import Session, col, select

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import (
    AckResponse,
    EventType,
    KeyDate,
    Severity,
)
from oos_notify.errors import ServiceError
from oos_notify.ids import new_id
from oos_notify.incidents import qa_reports
from oos_notify.incidents.planning import IncidentFacts, plan_acknowledged
from oos_notify.store import audit, outbox
from oos_notify.store.lifecycle import Condition, IncidentStatus, NotificationKind, incident_sources
from oos_notify.store.models import Acknowledgement, Event, Incident, Notification
from oos_notify.store.outbox import PlannedNotification

MAX_TOKEN_LENGTH = 512
RECEIPT_TEMPLATE = "acknowledgement_receipt"
DECISION_RECEIPT_TEMPLATE = "decision_receipt"


class LinkError(ServiceError):
    """An acknowledgement link that cannot be used; the page says why in plain words."""

    title = "This link cannot be used"


class InvalidLink(LinkError):
    status_code = 400


class ExpiredLink(LinkError):
    status_code = 410


class UnknownLink(LinkError):
    status_code = 404


class InvalidAnswer(LinkError):
    """The link is fine but the answer posted is not one the page offers."""

    status_code = 422
    title = "Please check your answer"


@dataclass(frozen=True)
class Claims:
    notification_id: str
    incident_id: str
    contact_id: str
    expires_at: datetime
    ack_round: int
    """The incident's round when the email was sent, so the facts the email showed."""


class AckTokens:
    """Issues and reads acknowledgement tokens signed with the service's secret key."""

    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="oos-notify.ack.v1")

    def issue(self, notification: Notification, expires_at: datetime, *, ack_round: int = 1) -> str:
        """A link for the email about to be sent, which shows the incident in ``ack_round``.
        Links signed before the round was added carry none and read as round 1, like the default."""
        payload = {
            "n": notification.id,
            "i": notification.incident_id,
            "c": notification.contact_id,
            "x": int(expires_at.timestamp()),
            "r": ack_round,
        }
        token = self._serializer.dumps(payload)
        assert isinstance(token, str)
        return token

    def read(self, token: str, now: datetime) -> Claims:
        """The claims of a genuine, unexpired token; raise a LinkError otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidLink("This acknowledgement link is not valid.")
        try:
            payload = self._serializer.loads(token)
            claims = Claims(
                notification_id=str(payload["n"]),
                incident_id=str(payload["i"]),
                contact_id=str(payload["c"]),
                expires_at=datetime.fromtimestamp(int(payload["x"]), UTC),
                ack_round=int(payload.get("r", 1)),
            )
        except (BadSignature, AttributeError, KeyError, TypeError, ValueError, OverflowError):
            raise InvalidLink(
                "This acknowledgement link is not valid. Open the link from the email again, "
                "or reply to the email to reach the manufacturer."
            ) from None
        if claims.expires_at <= now:
            raise ExpiredLink(
                "This acknowledgement link has expired. Reply to the email or call the "
                "manufacturer's QA contact to confirm."
            )
        return claims


class AckForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    response: AckResponse = AckResponse.RECEIVED
    comment: Annotated[str, Field(max_length=2000)] | None = None
    round: Annotated[int, Field(ge=1)] | None = None
    """The round the page showed; a form without it answers for the round of its link."""


FORM_PROBLEMS = {
    "response": "Choose one of the listed answers.",
    "comment": "A comment is limited to 2000 characters.",
    "round": "This page was changed or is not complete. Open the link from the email again.",
}


def form_problem(error: ValidationError) -> InvalidAnswer:
    """The page's plain words for the first form field that is wrong."""
    field = str(error.errors()[0]["loc"][0]) if error.errors() else ""
    return InvalidAnswer(FORM_PROBLEMS.get(field, FORM_PROBLEMS["response"]))


class Purpose(StrEnum):
    """What an answer on the page is: the acknowledgement of a notice, or a physician's decision."""

    ACKNOWLEDGEMENT = "acknowledgement"
    DECISION = "decision"


def purpose_of(notification: Notification) -> Purpose:
    if notification.kind == NotificationKind.DECISION:
        return Purpose.DECISION
    return Purpose.ACKNOWLEDGEMENT


def response_choices(purpose: Purpose) -> list[AckResponse]:
    """The answers the page offers; when OOS release is offered, the physician decides."""
    if purpose is Purpose.DECISION:
        return [
            AckResponse.ACCEPT_OOS_PRODUCT,
            AckResponse.REQUEST_REMANUFACTURE,
            AckResponse.DECLINE_PRODUCT,
            AckResponse.CALL_ME,
        ]
    return [AckResponse.RECEIVED, AckResponse.CALL_ME, AckResponse.REQUEST_REMANUFACTURE]


@dataclass(frozen=True)
class Changes:
    """What happened to the incident after an email from an earlier round was sent: the page
    shows it before asking again, so nobody confirms facts they have not seen."""

    sent_at: datetime
    events: list[Event]
    """The follow-up events since, oldest first: every late result that started a later round,
    and whatever else arrived after the email was sent."""
    decision: Acknowledgement | None
    """The physician's decision, when it was recorded after the email was sent."""


@dataclass(frozen=True)
class AckState:
    """What the acknowledgement page shows."""

    incident: Incident
    notification: Notification
    purpose: Purpose
    choices: list[AckResponse]
    acknowledgement: Acknowledgement | None
    """The answer already given for what this link asks, if any."""
    link_round: int
    changes: Changes | None
    """Set when the email is from an earlier round than the incident's current one."""
    just_acknowledged: bool = False
    not_recorded: bool = False
    """The answer was for a round that is no longer current: nothing was recorded."""

    @property
    def closed(self) -> bool:
        return IncidentStatus(self.incident.status).is_closed


def first_answer(session: Session, incident: Incident, purpose: Purpose) -> Acknowledgement | None:
    """The answer that counts: the first decision, or the first acknowledgement of the current
    round (a late result starts a new round that needs its own)."""
    query = select(Acknowledgement).where(
        Acknowledgement.incident_id == incident.id, Acknowledgement.purpose == purpose.value
    )
    if purpose is Purpose.ACKNOWLEDGEMENT:
        query = query.where(Acknowledgement.round == incident.ack_round)
    return session.exec(query.order_by(col(Acknowledgement.at))).first()


def _load(session: Session, tokens: AckTokens, token: str, now: datetime) -> AckState:
    claims = tokens.read(token, now)
    notification = session.get(Notification, claims.notification_id)
    if (
        notification is None
        or notification.incident_id != claims.incident_id
        or notification.contact_id != claims.contact_id
    ):
        raise UnknownLink("This acknowledgement link does not match any notification.")
    incident = session.get(Incident, notification.incident_id)
    assert incident is not None
    purpose = purpose_of(notification)
    return AckState(
        incident,
        notification,
        purpose,
        response_choices(purpose),
        first_answer(session, incident, purpose),
        claims.ack_round,
        _changes(session, incident, notification, claims.ack_round, purpose),
    )


def _changes(
    session: Session,
    incident: Incident,
    notification: Notification,
    link_round: int,
    purpose: Purpose,
) -> Changes | None:
    if link_round >= incident.ack_round:
        return None
    sent_at = notification.sent_at or notification.created_at
    events = session.exec(
        select(Event)
        .where(Event.incident_id == incident.id)
        .order_by(col(Event.received_at), col(Event.occurred_at))
    ).all()
    # Each late result after the opening started one round, so the last ones started the rounds
    # after the link's: counted, not compared by time, they are found even when the email went
    # out in the same instant.
    late = [e.event_id for e in events if e.type == EventType.LATE_RESULT]
    restarts = set(late[-(incident.ack_round - link_round) :])
    decision = (
        first_answer(session, incident, Purpose.DECISION)
        if purpose is Purpose.ACKNOWLEDGEMENT
        and incident.decided_at is not None
        and incident.decided_at > sent_at
        else None
    )
    return Changes(
        sent_at,
        [e for e in events if e.event_id in restarts or e.received_at > sent_at],
        decision,
    )


def view(session: Session, tokens: AckTokens, token: str, now: datetime) -> AckState:
    """What the link shows. Reads only: a GET must never acknowledge."""
    return _load(session, tokens, token, now)


@dataclass(frozen=True)
class _Answer:
    form: AckForm
    client_address: str | None
    user_agent: str | None
    now: datetime


def acknowledge(
    session: Session,
    tokens: AckTokens,
    token: str,
    form: AckForm,
    *,
    client_address: str | None,
    user_agent: str | None,
    now: datetime,
    mail_domain: str,
) -> AckState:
    """Record the answer: an acknowledgement stops the escalation and starts what it starts; a
    decision is recorded once (and acknowledges the notice too). The manufacturer hears of it.
    An answer for a round that is no longer current records nothing: the page shows what
    changed and asks again."""
    state = _load(session, tokens, token, now)
    if state.closed or state.acknowledgement is not None:
        return state
    answered_round = state.link_round if form.round is None else form.round
    if answered_round != state.incident.ack_round:
        return replace(state, not_recorded=True)
    if form.response not in state.choices:
        raise InvalidAnswer("That answer is not one of the choices for this incident.")
    answer = _Answer(form, client_address, (user_agent or "")[:300] or None, now)
    incident, notification = state.incident, state.notification
    agreement = EffectiveAgreement.stored(incident.agreement)
    started: list[PlannedNotification] | None
    if state.purpose is Purpose.DECISION:
        recorded = _decide(session, incident, notification, answer)
        if recorded is None:
            session.rollback()
            return _load(session, tokens, token, now)
        # A decision answers the notice too, unless somebody acknowledged it already.
        started = _acknowledge_round(session, incident, notification, answer, agreement) or []
        receipt_template = DECISION_RECEIPT_TEMPLATE
    else:
        started = _acknowledge_round(session, incident, notification, answer, agreement)
        if started is None:
            session.rollback()
            return _load(session, tokens, token, now)
        receipt_template = RECEIPT_TEMPLATE
    receipts = qa_reports.receipts(incident, agreement, receipt_template, now)
    outbox.schedule(session, incident.id, [*started, *receipts], now, mail_domain)
    session.flush()
    session.refresh(incident)
    recorded_answer = first_answer(session, incident, state.purpose)
    return replace(state, acknowledgement=recorded_answer, just_acknowledged=True)


def _record(
    session: Session,
    incident: Incident,
    notification: Notification,
    answer: _Answer,
    purpose: Purpose,
) -> Acknowledgement:
    ack = Acknowledgement(
        id=new_id("ack"),
        incident_id=incident.id,
        notification_id=notification.id,
        contact_id=notification.contact_id,
        email=notification.recipient_email,
        role=notification.role,
        purpose=purpose.value,
        round=incident.ack_round,
        response=answer.form.response,
        comment=answer.form.comment or None,
        client_address=answer.client_address,
        user_agent=answer.user_agent,
        at=answer.now,
    )
    session.add(ack)
    audit.record(
        session,
        answer.now,
        "decided" if purpose is Purpose.DECISION else "acknowledged",
        notification.recipient_email,
        incident_id=incident.id,
        notification_id=notification.id,
        response=answer.form.response,
        comment=ack.comment,
        client_address=answer.client_address,
        user_agent=ack.user_agent,
        round=incident.ack_round,
    )
    return ack


def _decide(
    session: Session, incident: Incident, notification: Notification, answer: _Answer
) -> Acknowledgement | None:
    """Record the decision unless another one was recorded first (then None)."""
    won = session.execute(
        update(Incident)
        .where(col(Incident.id) == incident.id, col(Incident.decision).is_(None))
        .values(decision=answer.form.response.value, decided_at=answer.now, updated_at=answer.now)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return _record(session, incident, notification, answer, Purpose.DECISION)


def _acknowledge_round(
    session: Session,
    incident: Incident,
    notification: Notification,
    answer: _Answer,
    agreement: EffectiveAgreement,
) -> list[PlannedNotification] | None:
    """Acknowledge the current round: stop its escalation and plan the ``when: acknowledged``
    steps, which are returned. None when the round was already acknowledged (or is closed)."""
    now = answer.now
    # The conditional update makes two simultaneous acknowledgements settle on one winner.
    won = session.execute(
        update(Incident)
        .where(
            col(Incident.id) == incident.id,
            col(Incident.ack_round) == incident.ack_round,
            col(Incident.status).in_(incident_sources(IncidentStatus.ACKNOWLEDGED)),
        )
        .values(status=IncidentStatus.ACKNOWLEDGED.value, acknowledged_at=now, updated_at=now)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        return None
    if purpose_of(notification) is Purpose.ACKNOWLEDGEMENT:
        _record(session, incident, notification, answer, Purpose.ACKNOWLEDGEMENT)
    audit.record(
        session,
        now,
        "incident_status_changed",
        notification.recipient_email,
        incident_id=incident.id,
        status_from=incident.status,
        status_to=IncidentStatus.ACKNOWLEDGED.value,
    )
    outbox.cancel_pending(
        session,
        incident.id,
        now,
        "acknowledged",
        col(Notification.condition) == Condition.UNACKNOWLEDGED.value,
    )
    facts = IncidentFacts(
        EventType(incident.plan_type),
        Severity(incident.severity),
        {KeyDate(k): date.fromisoformat(v) for k, v in incident.key_dates.items()},
    )
    return plan_acknowledged(agreement, facts, now).notifications
