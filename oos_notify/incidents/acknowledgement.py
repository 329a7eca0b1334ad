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
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import bindparam, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from oos_notify.addresses import one_line
from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import (
    AckResponse,
    EventType,
    KeyDate,
    Severity,
)
from oos_notify.errors import ServiceError
from oos_notify.ids import new_id
from oos_notify.incidents import outcome, pathway_gates, physician, qa_reports
from oos_notify.incidents.planning import IncidentFacts, plan_acknowledged
from oos_notify.store import audit, outbox, passkeys, signatures
from oos_notify.store.lifecycle import Condition, IncidentStatus, NotificationKind, incident_sources
from oos_notify.store.models import Acknowledgement, Event, Incident, Notification
from oos_notify.store.outbox import PlannedNotification
from oos_notify.texts import storable

MAX_TOKEN_LENGTH = 512
RECEIPT_TEMPLATE = "acknowledgement_receipt"
DECISION_RECEIPT_TEMPLATE = "decision_receipt"
CALLBACK_TEMPLATE = "callback_request"


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


_COMPRESSED = "."
"""How itsdangerous starts a compressed payload. A link path that starts with a dot looks
hidden, which spam filters score (rspamd's URI_HIDDEN_PATH)."""
COMPRESSED_MARK = "z"
"""What a compressed token starts with in links instead: a JSON payload that is not compressed
starts ``ey``, so the two never meet, and links issued with the dot still read."""


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
        if token.startswith(_COMPRESSED):
            return COMPRESSED_MARK + token[1:]
        return token

    def read(self, token: str, now: datetime) -> Claims:
        """The claims of a genuine, unexpired token; raise a LinkError otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidLink("This acknowledgement link is not valid.")
        if token.startswith(COMPRESSED_MARK):
            token = _COMPRESSED + token[1:]
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


CONFIRMER_NAME_LENGTH = 120


class AckForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    response: AckResponse = AckResponse.RECEIVED
    comment: Annotated[str, Field(max_length=2000), AfterValidator(storable)] | None = None
    round: Annotated[int, Field(ge=1)] | None = None
    """The round the page showed; a form without it answers for the round of its link."""
    signing: Annotated[str, Field(max_length=8192)] | None = None
    """The sealed content of the decision the decider's passkey signed (``signing``)."""
    assertion: Annotated[str, Field(max_length=16384)] | None = None
    """The passkey's assertion over that content, as the browser gave it (JSON)."""
    phone: Annotated[str, Field(max_length=40, pattern=r"^\+?[0-9][0-9 ()./-]*$")] | None = None
    """Where "please call us" is to be answered, when not the contact's number on file."""
    confirmed_by: (
        Annotated[
            str, Field(min_length=1, max_length=CONFIRMER_NAME_LENGTH), AfterValidator(one_line)
        ]
        | None
    ) = None
    """Who is confirming through a shared mailbox's link, as they name themselves."""


FORM_PROBLEMS = {
    "response": "Choose one of the listed answers.",
    "comment": "A comment is limited to 2000 characters.",
    "round": "This page was changed or is not complete. Open the link from the email again.",
    "signing": "This signing was changed or is not complete. Open the link from the email again.",
    "assertion": "Your passkey's answer is not complete. Sign once more.",
    "phone": "Write the phone number with digits, spaces and + ( ) - . / only.",
    "confirmed_by": (
        f"Write your name on one line, in at most {CONFIRMER_NAME_LENGTH} characters, without "
        "control characters or characters that change the direction of text."
    ),
}
SHARED_MAILBOX_ASKS = (
    "This address is a shared mailbox: write your name, so that the record says who confirmed."
)


def form_problem(error: ValidationError) -> InvalidAnswer:
    """The page's plain words for the first form field that is wrong."""
    first = error.errors()[0] if error.errors() else None
    field = str(first["loc"][0]) if first else ""
    if field == "comment" and first is not None and first["type"] == "value_error":
        return InvalidAnswer(COMMENT_NOT_STORABLE)
    return InvalidAnswer(FORM_PROBLEMS.get(field, FORM_PROBLEMS["response"]))


COMMENT_NOT_STORABLE = "A comment cannot hold the character U+0000 (NUL). Remove it and send again."


class Purpose(StrEnum):
    """What an answer is: the acknowledgement of a notice, a decider's decision, or a decider's
    request to be called first (which leaves the decision open)."""

    ACKNOWLEDGEMENT = "acknowledgement"
    DECISION = "decision"
    CALLBACK_REQUEST = "callback_request"


DECISION_KINDS = (NotificationKind.DECISION, NotificationKind.DECISION_OVERDUE)


def purpose_of(notification: Notification) -> Purpose:
    if notification.kind in DECISION_KINDS:
        return Purpose.DECISION
    return Purpose.ACKNOWLEDGEMENT


REQUEST_SUPPLY_MEANING = (
    "request supply of the out-of-specification product for this patient, having considered "
    "the manufacturer's evaluation of its risks"
)
REQUEST_SUPPLY_LABEL = "Request supply of the out-of-specification product"


def decision_meaning(response: AckResponse, oos_release: dict[str, Any] | None) -> str:
    """What a decider signs with ``response``: acceptance names the regulatory pathway, and is
    the physician's request for supply where the pathway says so (EU GMP Part IV 11.5)."""
    if response is AckResponse.ACCEPT_OOS_PRODUCT and oos_release:
        meaning = (
            REQUEST_SUPPLY_MEANING
            if pathway_gates.requests_supply(oos_release)
            else response.meaning
        )
        return f"{meaning}, under {oos_release['name']}"
    return response.meaning


def choice_label(response: AckResponse, oos_release: dict[str, Any] | None) -> str:
    """How the page names a choice: acceptance is a request for supply where the pathway says."""
    if response is AckResponse.ACCEPT_OOS_PRODUCT and pathway_gates.requests_supply(oos_release):
        return REQUEST_SUPPLY_LABEL
    return response.label


class NotYetOnFile(LinkError):
    """A decision the pathway allows only once a document is on file (the EU's risk
    evaluation before the physician's request)."""

    status_code = 409
    title = "Not yet possible"


def check_decision_allowed(incident: Incident, response: AckResponse) -> None:
    """Refuse an acceptance before the documents its pathway puts first are on file."""
    offer = incident.oos_release
    missing = pathway_gates.missing_before_decision(offer, response)
    if not missing:
        return
    assert offer is not None
    labels = "; ".join(i["label"] for i in offer["items"] if i["id"] in missing)
    raise NotYetOnFile(
        f"This cannot be recorded yet: under {offer['name']}, the product is supplied only after "
        f"this is on file: {labels}. The manufacturer sends it to you first; then open the link "
        "again. Meanwhile you may decline, request re-manufacture or ask to be called."
    )


def may_stop(agreement: EffectiveAgreement, plan_type: str, notification: Notification) -> bool:
    """Whether the person a notification went to may stop the escalation: one of their roles
    (the one they were told under, or another they hold) is in the plan's stops_escalation."""
    plan = agreement.plans[EventType(plan_type)]
    contact = agreement.contact(notification.contact_id)
    roles = {notification.role, *(contact.roles if contact else [])}
    return bool(roles & set(plan.stops_escalation))


def response_choices(purpose: Purpose) -> list[AckResponse]:
    """The answers the page offers; when OOS release is offered, the physician decides."""
    if purpose is Purpose.DECISION:
        return [
            AckResponse.ACCEPT_OOS_PRODUCT,
            AckResponse.REQUEST_REMANUFACTURE,
            AckResponse.DECLINE_PRODUCT,
            AckResponse.CALL_ME,
        ]
    # Re-manufacture is a decision: only a decider is offered it, and signs it.
    return [AckResponse.RECEIVED, AckResponse.CALL_ME]


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
    """The answer already given for what this link asks, if any: the confirmation that stopped
    the round's escalation, or the decision that counts."""
    link_round: int
    changes: Changes | None
    """Set when the email is from an earlier round than the incident's current one."""
    stops_escalation: bool = True
    """Whether this recipient's confirmation stops the escalation (the plan's roles)."""
    own_confirmation: Acknowledgement | None = None
    """This recipient's confirmation of the current round, when it stopped nothing."""
    callback: Acknowledgement | None = None
    """A request to be called that is still open: the decision it leaves open is not made."""
    signs_as: str | None = None
    """The printed name of the passkey the decider enrolled; None before they enrol one."""
    just_acknowledged: bool = False
    just_asked_callback: bool = False
    not_recorded: bool = False
    """The answer was for a round that is no longer current: nothing was recorded."""

    @property
    def closed(self) -> bool:
        return IncidentStatus(self.incident.status).is_closed


def answer_that_counts(
    session: Session, incident: Incident, purpose: Purpose
) -> Acknowledgement | None:
    """The acknowledgement that stopped the current round's escalation (a late result starts a
    new round that needs its own), or the decision in force: the last one recorded, since QA
    may record a revision."""
    if purpose is Purpose.ACKNOWLEDGEMENT:
        params = {"incident_id": incident.id, "round": incident.ack_round}
        return session.exec(_ROUND_STOPPED_BY, params=params).first()
    params = {"incident_id": incident.id, "purpose": purpose.value}
    return session.exec(_LATEST_ANSWER, params=params).first()


# Built once: the page, each answer and each message about an incident read these.
_ROUND_STOPPED_BY = (
    select(Acknowledgement)
    .where(
        col(Acknowledgement.incident_id) == bindparam("incident_id"),
        col(Acknowledgement.purpose) == Purpose.ACKNOWLEDGEMENT.value,
        col(Acknowledgement.round) == bindparam("round"),
        col(Acknowledgement.stopped_escalation).is_not(False),
    )
    .order_by(col(Acknowledgement.at))
)
_LATEST_ANSWER = (
    select(Acknowledgement)
    .where(
        col(Acknowledgement.incident_id) == bindparam("incident_id"),
        col(Acknowledgement.purpose) == bindparam("purpose"),
    )
    .order_by(col(Acknowledgement.at).desc())
)


def confirmations(session: Session, incident: Incident) -> list[Acknowledgement]:
    """The current round's confirmations that stopped nothing (a cell lab's, say), oldest first."""
    return list(
        session.exec(
            select(Acknowledgement)
            .where(
                Acknowledgement.incident_id == incident.id,
                Acknowledgement.purpose == Purpose.ACKNOWLEDGEMENT.value,
                Acknowledgement.round == incident.ack_round,
                col(Acknowledgement.stopped_escalation).is_(False),
            )
            .order_by(col(Acknowledgement.at))
        ).all()
    )


def open_callback(session: Session, incident: Incident) -> Acknowledgement | None:
    """The latest request to be called while no decision is recorded: a decision closes it."""
    if incident.decision is not None:
        return None
    return session.exec(
        select(Acknowledgement)
        .where(
            Acknowledgement.incident_id == incident.id,
            Acknowledgement.purpose == Purpose.CALLBACK_REQUEST.value,
        )
        .order_by(col(Acknowledgement.at).desc())
    ).first()


def physician_confirmation(session: Session, incident: Incident) -> Acknowledgement | None:
    """The treating physician's own confirmation of the current round, if they gave one."""
    return session.exec(
        select(Acknowledgement)
        .where(
            Acknowledgement.incident_id == incident.id,
            Acknowledgement.purpose == Purpose.ACKNOWLEDGEMENT.value,
            Acknowledgement.round == incident.ack_round,
            Acknowledgement.contact_id == physician.TREATING_PHYSICIAN_ID,
        )
        .order_by(col(Acknowledgement.at))
    ).first()


_LINKED = (
    select(Notification, Incident)
    .join(Incident, col(Incident.id) == col(Notification.incident_id))
    .where(
        col(Notification.id) == bindparam("notification_id"),
        col(Notification.incident_id) == bindparam("incident_id"),
        col(Notification.contact_id) == bindparam("contact_id"),
    )
)
"""A link's notification and its incident in one statement, built once: every page and every
answer reads them."""


def _load(session: Session, tokens: AckTokens, token: str, now: datetime) -> AckState:
    claims = tokens.read(token, now)
    linked = session.exec(
        _LINKED,
        params={
            "notification_id": claims.notification_id,
            "incident_id": claims.incident_id,
            "contact_id": claims.contact_id,
        },
    ).first()
    if linked is None:
        raise UnknownLink("This acknowledgement link does not match any notification.")
    notification, incident = linked
    purpose = purpose_of(notification)
    agreement = EffectiveAgreement.stored(incident.agreement)
    if purpose is Purpose.ACKNOWLEDGEMENT and physician.is_treating_physician(notification):
        # The treating physician confirms for themselves, whoever stopped the escalation.
        return AckState(
            incident,
            notification,
            purpose,
            response_choices(purpose),
            physician_confirmation(session, incident),
            claims.ack_round,
            _changes(session, incident, notification, claims.ack_round, purpose),
        )
    stops = purpose is Purpose.DECISION or may_stop(agreement, incident.plan_type, notification)
    own = None
    if not stops:
        own = next(
            (
                c
                for c in confirmations(session, incident)
                if c.contact_id == notification.contact_id
            ),
            None,
        )
    choices = [
        choice
        for choice in (response_choices(purpose) if stops else [AckResponse.RECEIVED])
        if not pathway_gates.missing_before_decision(incident.oos_release, choice)
    ]
    return AckState(
        incident,
        notification,
        purpose,
        # Somebody whose answer stops nothing is not offered to ask for anything either: a
        # "please call us" that reaches nobody would be worse than none.
        choices,
        answer_that_counts(session, incident, purpose),
        claims.ack_round,
        _changes(session, incident, notification, claims.ack_round, purpose),
        stops_escalation=stops,
        own_confirmation=own,
        callback=open_callback(session, incident) if purpose is Purpose.DECISION else None,
        signs_as=next(
            (c.printed_name for c in passkeys.enrolled(session, notification.recipient_email)),
            None,
        )
        if purpose is Purpose.DECISION
        else None,
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
        answer_that_counts(session, incident, Purpose.DECISION)
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
class Answer:
    """An answer as it was given: on the page, or recorded by QA for a decider."""

    response: AckResponse
    comment: str | None
    client_address: str | None
    user_agent: str | None
    now: datetime
    phone: str | None = None
    signature: dict[str, Any] | None = None
    revision: dict[str, Any] | None = None
    signed: dict[str, Any] | None = None
    """The audit detail of an electronic signature (``signatures.signed``): its content and its
    binding, kept in the entry that records the answer."""
    confirmed_by: str | None = None
    """The person who confirmed through a shared mailbox's link, as they named themselves."""
    attribution: str | None = None
    """Who the record says confirmed, where the address is a shared mailbox's."""


def attribution(confirmed_by: str | None, address: str) -> str:
    """Who a confirmation from a shared mailbox is recorded as: the person who named themselves
    on its link, or the mailbox itself (an email reply names nobody)."""
    if confirmed_by:
        return f"confirmed by {confirmed_by} via {address}"
    return f"confirmed by the shared mailbox {address}"


@dataclass(frozen=True)
class SignedDecision:
    """A decision's electronic signature: the manifestation kept on the answer and shown, and
    the audit detail that binds it to the content signed (``signatures.signed``)."""

    manifestation: dict[str, Any]
    detail: dict[str, Any]

    @classmethod
    def of(cls, detail: dict[str, Any]) -> SignedDecision:
        signed = detail[signatures.SIGNATURE]
        local = datetime.fromisoformat(signed["signed_at"]).astimezone(ZoneInfo(signed["zone"]))
        return cls(
            {
                "printed_name": signed["printed_name"],
                "meaning": signed["meaning"],
                "signed_at": signed["signed_at"],
                "timezone": signed["zone"],
                "shown": local.strftime("%a %d %b %Y, %H:%M %Z"),
                "method": signed["method"],
                "signer": signed["signer"],
                "content_sha256": signed["content_sha256"],
            },
            detail,
        )


class DecisionSigner(Protocol):
    """How a decision on the page is signed: it checks the signature posted with the form and
    returns it, or raises a LinkError and nothing is recorded."""

    def sign(
        self, session: Session, state: AckState, form: AckForm, meaning: str, now: datetime
    ) -> SignedDecision: ...


def signature(printed_name: str, meaning: str, now: datetime, timezone: str) -> dict[str, Any]:
    """A signature manifestation (21 CFR 11.50): the signer's printed name, the date and time of
    signing with its zone, and the meaning of what was signed."""
    local = now.astimezone(ZoneInfo(timezone))
    return {
        "printed_name": printed_name,
        "meaning": meaning,
        "signed_at": local.isoformat(),
        "timezone": timezone,
        "shown": local.strftime("%a %d %b %Y, %H:%M %Z"),
    }


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
    by_reply: bool = False,
    signer: DecisionSigner | None = None,
) -> AckState:
    """Record the answer: a confirmation from a role the plan lets stop the escalation stops it
    and starts what it starts; anybody else's is recorded and stops nothing. A decision is
    recorded once, signed (and acknowledges the notice too); "please call us" leaves it open.
    The manufacturer hears of each but a confirmation that stopped nothing. An answer for a
    round that is no longer current records nothing: the page shows what changed and asks
    again. Through a shared mailbox's link the person confirming must name themselves; an email
    reply (``by_reply``) from one is the mailbox's."""
    state = _load(session, tokens, token, now)
    if state.closed or state.acknowledgement is not None or state.own_confirmation is not None:
        return state
    answered_round = state.link_round if form.round is None else form.round
    if answered_round != state.incident.ack_round:
        return replace(state, not_recorded=True)
    if state.purpose is Purpose.DECISION:
        check_decision_allowed(state.incident, form.response)
    if form.response not in state.choices:
        raise InvalidAnswer("That answer is not one of the choices for this incident.")
    incident, notification = state.incident, state.notification
    agreement = EffectiveAgreement.stored(incident.agreement)
    contact = agreement.contact(notification.contact_id)
    shared = contact is not None and contact.shared and state.purpose is Purpose.ACKNOWLEDGEMENT
    if shared and not by_reply and not form.confirmed_by:
        raise InvalidAnswer(SHARED_MAILBOX_ASKS)
    confirmed_by = form.confirmed_by if shared and not by_reply else None
    answer = Answer(
        form.response,
        form.comment or None,
        client_address,
        (user_agent or "")[:300] or None,
        now,
        phone=form.phone,
        confirmed_by=confirmed_by,
        attribution=attribution(confirmed_by, notification.recipient_email) if shared else None,
    )
    if state.purpose is Purpose.DECISION:
        return _answer_decision(
            session, tokens, token, state, form, answer, agreement, mail_domain, signer
        )
    if physician.is_treating_physician(notification):
        return _confirm_physician(session, state, answer, agreement, mail_domain)
    if not state.stops_escalation:
        own = _record(session, incident, notification, answer, Purpose.ACKNOWLEDGEMENT, False)
        # The incident changed: its next messages read the confirmations again.
        session.execute(
            update(Incident).where(col(Incident.id) == incident.id).values(updated_at=now)
        )
        session.flush()
        return replace(state, own_confirmation=own, just_acknowledged=True)
    started = acknowledge_round(session, incident, notification.recipient_email, agreement, now)
    if started is None:
        session.rollback()
        return _load(session, tokens, token, now)
    # The round was this answer's to stop (the conditional update above): it is the one that
    # counts, and the update brought the loaded incident up to date (its new status).
    recorded = _record(session, incident, notification, answer, Purpose.ACKNOWLEDGEMENT, True)
    receipts = qa_reports.receipts(incident, agreement, RECEIPT_TEMPLATE, now)
    outbox.schedule(
        session, incident.id, [*started, *receipts], now, mail_domain, drill=incident.drill
    )
    session.flush()
    return replace(state, acknowledgement=recorded, just_acknowledged=True)


def _confirm_physician(
    session: Session,
    state: AckState,
    answer: Answer,
    agreement: EffectiveAgreement,
    mail_domain: str,
) -> AckState:
    """The treating physician's confirmation stops their own steps and, when nobody stopped it
    yet, the round's escalation; QA hears of it either way."""
    incident, notification, now = state.incident, state.notification, answer.now
    started = acknowledge_round(session, incident, notification.recipient_email, agreement, now)
    own = _record(
        session, incident, notification, answer, Purpose.ACKNOWLEDGEMENT, started is not None
    )
    physician.mark_confirmed(session, incident, notification.recipient_email, now)
    receipts = qa_reports.receipts(incident, agreement, RECEIPT_TEMPLATE, now)
    outbox.schedule(session, incident.id, [*(started or []), *receipts], now, mail_domain)
    session.flush()
    session.refresh(incident)
    return replace(state, acknowledgement=own, just_acknowledged=True)


def _answer_decision(
    session: Session,
    tokens: AckTokens,
    token: str,
    state: AckState,
    form: AckForm,
    answer: Answer,
    agreement: EffectiveAgreement,
    mail_domain: str,
    signer: DecisionSigner | None,
) -> AckState:
    """A decision, signed; or a request to be called, which leaves the decision open. Either
    answers the notice too, unless somebody acknowledged it already."""
    incident, notification, now = state.incident, state.notification, answer.now
    if answer.response is AckResponse.CALL_ME:
        if state.callback is not None:
            return state
        contact = agreement.contact(notification.contact_id)
        phone = answer.phone or (contact.phone if contact else None)
        callback = _record(
            session,
            incident,
            notification,
            replace(answer, phone=phone),
            Purpose.CALLBACK_REQUEST,
            True,
        )
        template = CALLBACK_TEMPLATE
    else:
        if signer is None:
            raise InvalidAnswer("This service cannot take a signed decision here.")
        meaning = decision_meaning(answer.response, incident.oos_release)
        signing = signer.sign(session, state, form, meaning, now)
        signed = replace(answer, signature=signing.manifestation, signed=signing.detail)
        if record_decision(session, incident, notification, signed) is None:
            session.rollback()
            return _load(session, tokens, token, now)
        if physician.is_treating_physician(notification):
            physician.mark_confirmed(session, incident, notification.recipient_email, now)
        outcome.tell_outcome(
            session, incident, agreement, notification.recipient_email, now, mail_domain
        )
        callback = None
        template = DECISION_RECEIPT_TEMPLATE
    started = acknowledge_round(session, incident, notification.recipient_email, agreement, now)
    receipts = qa_reports.receipts(incident, agreement, template, now)
    outbox.schedule(session, incident.id, [*(started or []), *receipts], now, mail_domain)
    session.flush()
    session.refresh(incident)
    return replace(
        state,
        acknowledgement=answer_that_counts(session, incident, Purpose.DECISION),
        callback=callback,
        just_acknowledged=callback is None,
        just_asked_callback=callback is not None,
    )


def audit_action(answer: Acknowledgement) -> str:
    """The audit action that records an answer: a confirmation that stopped nothing (a cell
    lab's) and a revision of a decision have their own."""
    if answer.revision:
        return "decision_revised"
    purpose = Purpose(answer.purpose)
    if purpose is Purpose.ACKNOWLEDGEMENT:
        return "confirmation_recorded" if answer.stopped_escalation is False else "acknowledged"
    return "decided" if purpose is Purpose.DECISION else "callback_requested"


_INSERT_ANSWER = Acknowledgement.__table__.insert()  # type: ignore[attr-defined]


def _record(
    session: Session,
    incident: Incident,
    notification: Notification,
    answer: Answer,
    purpose: Purpose,
    stopped_escalation: bool,
) -> Acknowledgement:
    row: dict[str, Any] = {
        "id": new_id("ack"),
        "incident_id": incident.id,
        "notification_id": notification.id,
        "contact_id": notification.contact_id,
        "email": notification.recipient_email,
        "role": notification.role,
        "purpose": purpose.value,
        "round": incident.ack_round,
        "response": answer.response,
        "comment": answer.comment,
        "client_address": answer.client_address,
        "user_agent": answer.user_agent,
        "at": answer.now,
        "stopped_escalation": stopped_escalation if purpose is Purpose.ACKNOWLEDGEMENT else None,
        "signature": answer.signature,
        "revision": answer.revision,
        "callback_phone": answer.phone if purpose is Purpose.CALLBACK_REQUEST else None,
        "confirmed_by": answer.confirmed_by,
    }
    # Written at once by a Core insert: the session's flush of an added object costs more.
    session.execute(_INSERT_ANSWER, row)
    ack = Acknowledgement(**row)
    extra: dict[str, Any] = {}
    if answer.signed:
        extra.update(answer.signed)
    elif answer.signature:
        extra["signature"] = answer.signature
    if answer.confirmed_by:
        extra["confirmed_by"] = answer.confirmed_by
    if answer.attribution:
        extra["attribution"] = answer.attribution
    if answer.revision:
        extra["revision"] = answer.revision
    if purpose is Purpose.CALLBACK_REQUEST:
        extra["phone"] = answer.phone
    audit.record(
        session,
        answer.now,
        audit_action(ack),
        answer.revision["recorded_by"]["email"]
        if answer.revision
        else notification.recipient_email,
        incident_id=incident.id,
        notification_id=notification.id,
        response=answer.response,
        comment=ack.comment,
        client_address=answer.client_address,
        user_agent=ack.user_agent,
        round=incident.ack_round,
        **extra,
    )
    return ack


def record_decision(
    session: Session, incident: Incident, notification: Notification, answer: Answer
) -> Acknowledgement | None:
    """Record a signed decision; on the page, unless another one was recorded first (then
    None). A revision QA records replaces the decision in force. Either cancels what waits for
    a decision (its deadline's escalation)."""
    update_decision = update(Incident).where(col(Incident.id) == incident.id)
    if answer.revision is None:
        update_decision = update_decision.where(col(Incident.decision).is_(None))
    won = session.execute(
        update_decision.values(
            decision=answer.response.value, decided_at=answer.now, updated_at=answer.now
        )
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        return None
    outbox.cancel_pending(
        session,
        incident.id,
        answer.now,
        "decided",
        col(Notification.condition) == Condition.UNDECIDED.value,
    )
    return _record(session, incident, notification, answer, Purpose.DECISION, True)


_INCIDENTS = Incident.__table__  # type: ignore[attr-defined]
_AT = bindparam("at", type_=_INCIDENTS.c.updated_at.type)
_ACKNOWLEDGE_ROUND = (
    _INCIDENTS.update()
    .where(
        _INCIDENTS.c.id == bindparam("incident_id"),
        _INCIDENTS.c.ack_round == bindparam("round"),
        _INCIDENTS.c.status.in_(incident_sources(IncidentStatus.ACKNOWLEDGED)),
    )
    .values(status=IncidentStatus.ACKNOWLEDGED.value, acknowledged_at=_AT, updated_at=_AT)
)
"""A Core statement, built once: an ORM update would first work out which loaded objects it
changes, which costs more than the update itself (``acknowledge_round`` sets the one it does)."""


def acknowledge_round(
    session: Session,
    incident: Incident,
    actor: str,
    agreement: EffectiveAgreement,
    now: datetime,
) -> list[PlannedNotification] | None:
    """Acknowledge the current round: stop its escalation and plan the ``when: acknowledged``
    steps, which are returned. None when the round was already acknowledged (or is closed)."""
    status_from = incident.status
    # What the transaction changed on loaded objects is written first, as before an ORM update
    # (a Core one does not flush): the update's conditions see it.
    session.flush()
    # The conditional update makes two simultaneous acknowledgements settle on one winner.
    won = session.execute(
        _ACKNOWLEDGE_ROUND, {"incident_id": incident.id, "round": incident.ack_round, "at": now}
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        return None
    # The loaded incident as the update left the row, without reading it again.
    set_committed_value(incident, "status", IncidentStatus.ACKNOWLEDGED.value)
    set_committed_value(incident, "acknowledged_at", now)
    set_committed_value(incident, "updated_at", now)
    audit.record(
        session,
        now,
        "incident_status_changed",
        actor,
        incident_id=incident.id,
        status_from=status_from,
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
