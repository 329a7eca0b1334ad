"""Incidents as the manufacturer reads them: listing, detail, the audit timeline."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, not_, or_
from sqlmodel import Session, col, select

from oos_notify.agreements.vocabulary import Transition
from oos_notify.errors import InvalidFields, NotFound
from oos_notify.incidents import offers, pathway_gates, regulatory_clocks
from oos_notify.incidents.regulatory_clocks import ClockOut
from oos_notify.store.lifecycle import IncidentStatus
from oos_notify.store.models import (
    Acknowledgement,
    AuditEntry,
    CenterReport,
    Event,
    InboundMessage,
    Incident,
    Notification,
)


class PromiseState(StrEnum):
    MET = "met"
    BREACHED = "breached"
    PENDING = "pending"
    """Nothing delivered yet, and the deadline has not passed."""


class NotifyWithin(BaseModel):
    """The agreement's promise to deliver the first notice by ``deadline``, and how it went."""

    deadline: datetime
    first_delivered_at: datetime | None
    state: PromiseState

    @classmethod
    def of(cls, incident: Incident, now: datetime) -> NotifyWithin | None:
        deadline, delivered = incident.notify_deadline, incident.first_delivered_at
        if deadline is None:
            return None
        if delivered is not None:
            state = PromiseState.MET if delivered <= deadline else PromiseState.BREACHED
        else:
            state = PromiseState.PENDING if now <= deadline else PromiseState.BREACHED
        return cls(deadline=deadline, first_delivered_at=delivered, state=state)


def breached(now: datetime) -> ColumnElement[bool]:
    """The SQL twin of ``NotifyWithin.state == BREACHED``, for filtering the listing."""
    deadline, delivered = col(Incident.notify_deadline), col(Incident.first_delivered_at)
    return and_(
        deadline.is_not(None),
        or_(
            and_(delivered.is_not(None), delivered > deadline),
            and_(delivered.is_(None), deadline < now),
        ),
    )


class IncidentSummary(BaseModel):
    incident_id: str
    incident_ref: str
    center_id: str
    product_code: str
    lot_number: str
    severity: str
    status: str
    disposition: str | None
    escalation_level: int
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    notify_within: NotifyWithin | None
    decision: str | None
    drill: bool = False
    """A practice incident: it never counts in the real reports."""

    @classmethod
    def of(cls, incident: Incident, now: datetime) -> IncidentSummary:
        return cls(
            incident_id=incident.id,
            incident_ref=incident.incident_ref,
            center_id=incident.center_id,
            product_code=incident.product_code,
            lot_number=incident.lot_number,
            severity=incident.severity,
            status=incident.status,
            disposition=incident.disposition,
            escalation_level=incident.escalation_level,
            opened_at=incident.opened_at,
            updated_at=incident.updated_at,
            acknowledged_at=incident.acknowledged_at,
            notify_within=NotifyWithin.of(incident, now),
            decision=incident.decision,
            drill=incident.drill,
        )


class IncidentPage(BaseModel):
    items: list[IncidentSummary]
    next_cursor: str | None


class EventOut(BaseModel):
    event_id: str
    type: str
    occurred_at: datetime
    received_at: datetime


class NotificationOut(BaseModel):
    notification_id: str
    kind: str
    level: int
    role: str
    recipient: str
    template: str
    status: str
    due_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    message_id: str


class SignatureOut(BaseModel):
    """A decision's signature manifestation (21 CFR 11.50)."""

    printed_name: str
    signed_at: datetime
    """The date and time of signing, with the center's UTC offset."""
    timezone: str
    meaning: str
    method: str | None
    """How the signer was identified (``passkey``, ``password``, ``one_time_code``); None on
    decisions signed with a typed name before signatures had methods."""
    content_sha256: str | None
    """The hash of the signed content, which the audit trail keeps beside it."""

    @classmethod
    def of(cls, signature: dict[str, Any] | None) -> SignatureOut | None:
        if signature is None:
            return None
        return cls(
            printed_name=signature["printed_name"],
            signed_at=datetime.fromisoformat(signature["signed_at"]),
            timezone=signature["timezone"],
            meaning=signature["meaning"],
            method=signature.get("method"),
            content_sha256=signature.get("content_sha256"),
        )


class RevisionOut(BaseModel):
    """Set on a decision QA recorded for the decider."""

    reason: str
    recorded_by: dict[str, str]
    """The QA user who approved the revision, and whose signature it carries."""
    replaces: str | None
    previous_response: str | None
    proposal_id: str | None = None
    proposed_by: str | None = None
    """Who proposed it: a QA user's address, or the API key's name."""


class AcknowledgementOut(BaseModel):
    acknowledgement_id: str
    purpose: str
    """``acknowledgement``, ``decision`` or ``callback_request``."""
    round: int
    by: str
    role: str
    response: str
    comment: str | None
    at: datetime
    stopped_escalation: bool | None
    """For an acknowledgement: whether it stopped the escalation (only the plan's
    ``stops_escalation`` roles do); None for other purposes."""
    signature: SignatureOut | None
    revision: RevisionOut | None
    confirmed_by: str | None = None
    """Through a shared mailbox's link: the person who confirmed, as they named themselves."""


class CallbackTask(BaseModel):
    """A decider's request to be called: open until a decision is recorded."""

    acknowledgement_id: str
    requested_by: str
    role: str
    phone: str | None
    comment: str | None
    requested_at: datetime
    status: str
    """``open`` or ``closed``."""
    closed_at: datetime | None


class CenterReportOut(BaseModel):
    """What a center's contact said from their link or in a reply."""

    report_id: str
    kind: str
    by: str
    role: str
    day: date | None
    phone: str | None
    call_window: str | None
    comment: str | None
    source: str
    event_id: str | None
    """The update event it made, when it changed the incident's facts."""
    at: datetime


class ChecklistItemOut(BaseModel):
    id: str
    label: str
    reference: str | None
    confirmed_at: datetime | None
    gates: str
    """The transition refused while the item is open: ``shipped``, ``infused`` or ``resolved``."""
    owner: str | None
    """Who sees to it: a center role or ``manufacturer:<role>`` (None on older offers)."""
    due_at: datetime | None


class OosReleaseOut(BaseModel):
    """The regulatory pathway of the product offered for release, and its checklist."""

    pathway: str
    name: str
    checklist: list[ChecklistItemOut]
    outstanding: list[str]
    asked: list[str]
    """The emails of the deciders asked."""
    decision_requires: list[str] = []
    """Items on file before a decider may accept (the EU's risk evaluation)."""
    physician_requests_supply: bool = False


class TreatingPhysicianOut(BaseModel):
    """The patient's treating physician the opening event named, and whether they confirmed
    themselves (a coordinator's confirmation does not count for them)."""

    name: str
    email: str
    phone: str | None
    confirmed: bool
    confirmed_at: datetime | None


class ReturnedMailOut(BaseModel):
    """A mail that came back about one of the incident's notifications, and what it did."""

    inbound_id: str
    received_at: datetime
    kind: str
    """``bounce``, ``delay``, ``auto_reply``, ``reply`` or ``report``."""
    outcome: str
    notification_id: str | None
    sender: str | None
    subject: str | None
    text: str | None
    detail: dict[str, Any]


RETURNED_MAIL_KINDS = ("bounce", "delay", "auto_reply", "reply")


class IncidentDetail(IncidentSummary):
    chain_of_identity: str
    severity_rule: str | None
    plan: str
    """The escalation plan in force (a late result switches to the center's plan for those)."""
    ack_round: int
    decided_at: datetime | None
    decision_signature: SignatureOut | None
    """The signature of the decision in force."""
    summary: str | None
    failed_attributes: list[dict[str, Any]]
    key_dates: dict[str, str]
    product_status: str | None
    infused_at: datetime | None
    indication: str | None
    oos_release: OosReleaseOut | None
    treating_physician: TreatingPhysicianOut | None
    remanufacture: dict[str, Any] | None
    within_spec_basis: dict[str, Any] | None
    agreement_version: str
    agreements_version_id: int | None = None
    """The approved version of the agreements the incident opened under (``oos-notify
    agreements history``); None for incidents opened before change control."""
    template_version: str | None
    events: list[EventOut]
    notifications: list[NotificationOut]
    acknowledgements: list[AcknowledgementOut]
    callback_tasks: list[CallbackTask]
    center_reports: list[CenterReportOut] = []
    returned_mail: list[ReturnedMailOut]
    returned_mail_counts: dict[str, int]
    """How many bounces, delays, automatic replies and replies came back, by kind."""
    regulatory_clocks: list[ClockOut] = []
    """Reports owed to an authority, each with its due time, and its reference once filed."""


class TimelineEntry(BaseModel):
    seq: int
    at: datetime
    action: str
    actor: str
    notification_id: str | None
    detail: dict[str, Any]


def _encode_cursor(incident: Incident) -> str:
    raw = f"{incident.opened_at.isoformat()}|{incident.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        opened_at, incident_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        instant = datetime.fromisoformat(opened_at)
        if instant.tzinfo is None:  # every cursor given out carries an aware UTC instant
            raise ValueError("naive cursor time")
        return instant.astimezone(UTC), incident_id
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidFields(
            [("cursor", "not a cursor this service gave out", "invalid_cursor")], "query"
        ) from None


def list_incidents(
    session: Session,
    *,
    center_id: str | None,
    status: IncidentStatus | None,
    since: datetime | None,
    breach: bool | None = None,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> IncidentPage:
    """Newest first; ``cursor`` continues where the previous page ended. ``breach`` keeps the
    incidents whose ``notify_within`` promise was (True) or was not (False) broken."""
    query = select(Incident)
    if breach is not None:
        query = query.where(breached(now) if breach else not_(breached(now)))
    if center_id is not None:
        query = query.where(Incident.center_id == center_id)
    if status is not None:
        query = query.where(Incident.status == status)
    if since is not None:
        query = query.where(col(Incident.opened_at) >= since)
    if cursor is not None:
        opened_at, incident_id = _decode_cursor(cursor)
        query = query.where(
            or_(
                col(Incident.opened_at) < opened_at,
                and_(col(Incident.opened_at) == opened_at, col(Incident.id) < incident_id),
            )
        )
    rows = session.exec(
        query.order_by(col(Incident.opened_at).desc(), col(Incident.id).desc()).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    next_cursor = _encode_cursor(page[-1]) if len(rows) > limit else None
    return IncidentPage(items=[IncidentSummary.of(i, now) for i in page], next_cursor=next_cursor)


def _get(session: Session, incident_id: str) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id!r}")
    return incident


@dataclass(frozen=True)
class IncidentRows:
    """An incident's events, notifications and answers, each in the order they are shown."""

    events: Sequence[Event]
    notifications: Sequence[Notification]
    answers: Sequence[Acknowledgement]


def incident_rows(session: Session, incident_id: str) -> IncidentRows:
    return IncidentRows(
        events=session.exec(
            select(Event).where(Event.incident_id == incident_id).order_by(col(Event.received_at))
        ).all(),
        notifications=session.exec(
            select(Notification)
            .where(Notification.incident_id == incident_id)
            .order_by(col(Notification.due_at), col(Notification.id))
        ).all(),
        answers=session.exec(
            select(Acknowledgement)
            .where(Acknowledgement.incident_id == incident_id)
            .order_by(col(Acknowledgement.at))
        ).all(),
    )


def detail(session: Session, incident_id: str, now: datetime) -> IncidentDetail:
    incident = _get(session, incident_id)
    rows = incident_rows(session, incident.id)
    events, notifications, acks = rows.events, rows.notifications, rows.answers
    decisions = [a for a in acks if a.purpose == "decision"]
    returned = session.exec(
        select(InboundMessage)
        .where(InboundMessage.incident_id == incident.id)
        .order_by(col(InboundMessage.received_at), col(InboundMessage.id))
    ).all()
    counts = dict.fromkeys(RETURNED_MAIL_KINDS, 0)
    for mail in returned:
        counts[mail.kind] = counts.get(mail.kind, 0) + 1
    return IncidentDetail(
        **IncidentSummary.of(incident, now).model_dump(),
        chain_of_identity=incident.chain_of_identity,
        severity_rule=incident.severity_rule,
        plan=incident.agreement["plans"][incident.plan_type]["id"],
        ack_round=incident.ack_round,
        decided_at=incident.decided_at,
        decision_signature=SignatureOut.of(decisions[-1].signature) if decisions else None,
        summary=incident.summary,
        failed_attributes=incident.failed_attributes,
        key_dates=incident.key_dates,
        product_status=incident.product_status,
        infused_at=incident.infused_at,
        indication=incident.indication,
        oos_release=oos_release(incident.oos_release),
        treating_physician=TreatingPhysicianOut(
            name=incident.treating_physician["name"],
            email=incident.treating_physician["email"],
            phone=incident.treating_physician.get("phone"),
            confirmed=incident.physician_confirmed_at is not None,
            confirmed_at=incident.physician_confirmed_at,
        )
        if incident.treating_physician
        else None,
        remanufacture=incident.remanufacture,
        within_spec_basis=incident.within_spec_basis,
        agreement_version=incident.agreement_version,
        agreements_version_id=incident.agreements_version_id,
        template_version=incident.template_version,
        events=[_read(EventOut, e) for e in events],
        notifications=[
            _read(NotificationOut, n, notification_id=n.id, recipient=n.recipient_email)
            for n in notifications
        ],
        acknowledgements=[
            _read(
                AcknowledgementOut,
                a,
                acknowledgement_id=a.id,
                by=a.email,
                stopped_escalation=(
                    a.stopped_escalation is not False if a.purpose == "acknowledgement" else None
                ),
                signature=SignatureOut.of(a.signature),
                revision=RevisionOut.model_validate(a.revision) if a.revision else None,
            )
            for a in acks
        ],
        callback_tasks=callback_tasks(acks),
        center_reports=[
            _read(CenterReportOut, r, report_id=r.id, by=r.email)
            for r in session.exec(
                select(CenterReport)
                .where(CenterReport.incident_id == incident.id)
                .order_by(col(CenterReport.at), col(CenterReport.id))
            ).all()
        ],
        returned_mail=[_read(ReturnedMailOut, m, inbound_id=m.id) for m in returned],
        returned_mail_counts=counts,
        regulatory_clocks=regulatory_clocks.of_incident(session, incident.id, now),
    )


_Out = TypeVar("_Out", bound=BaseModel)


def _read(model: type[_Out], row: object, **given: Any) -> _Out:
    """``model`` read from a stored ``row``: each field from the row's attribute of the same
    name, but those ``given`` (named otherwise in the row, or derived from it)."""
    same = {name: getattr(row, name) for name in model.model_fields if name not in given}
    return model(**same, **given)


def oos_release(offer: dict[str, Any] | None) -> OosReleaseOut | None:
    """An offer as the API and the console show it, with what its checklist still lacks."""
    if offer is None:
        return None
    return OosReleaseOut(
        pathway=offer["pathway"],
        name=offer["name"],
        checklist=[
            ChecklistItemOut(
                id=item["id"],
                label=item["label"],
                reference=item["reference"],
                confirmed_at=item["confirmed_at"],
                gates=item.get("gates", Transition.INFUSED.value),
                owner=item.get("owner"),
                due_at=item.get("due_at"),
            )
            for item in offer["items"]
        ],
        outstanding=offers.missing(offer),
        asked=[person["email"] for person in offer["asked"]],
        decision_requires=offer.get("definition", {}).get("decision_requires", []),
        physician_requests_supply=pathway_gates.requests_supply(offer),
    )


def callback_tasks(acks: Sequence[Acknowledgement]) -> list[CallbackTask]:
    """Each request to be called, closed by the first decision recorded after it."""
    tasks = []
    for request in (a for a in acks if a.purpose == "callback_request"):
        closing = next((a for a in acks if a.purpose == "decision" and a.at >= request.at), None)
        tasks.append(
            CallbackTask(
                acknowledgement_id=request.id,
                requested_by=request.email,
                role=request.role,
                phone=request.callback_phone,
                comment=request.comment,
                requested_at=request.at,
                status="closed" if closing else "open",
                closed_at=closing.at if closing else None,
            )
        )
    return tasks


def timeline(session: Session, incident_id: str) -> list[TimelineEntry]:
    """The incident's audit trail in the order it happened."""
    incident = _get(session, incident_id)
    entries = session.exec(
        select(AuditEntry)
        .where(AuditEntry.incident_id == incident.id)
        .order_by(col(AuditEntry.seq))
    ).all()
    return [
        TimelineEntry(
            seq=e.seq or 0,
            at=e.at,
            action=e.action,
            actor=e.actor,
            notification_id=e.notification_id,
            detail=e.detail,
        )
        for e in entries
    ]
