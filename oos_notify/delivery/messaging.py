"""From outbox rows to email: the template context of a notification, and its envelope."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func
from sqlmodel import Session, col, select

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.business_time import add as add_duration
from oos_notify.agreements.config import EffectiveAgreement, Recipient
from oos_notify.agreements.vocabulary import AckResponse, EventType, ProductStatus
from oos_notify.delivery.clinical import clinical_facts
from oos_notify.delivery.mail import Envelope
from oos_notify.delivery.rendering import (
    AckLinkView,
    AcknowledgementView,
    CallTaskView,
    CenterReportView,
    CenterView,
    ChecklistItemView,
    FailedAttributeView,
    FailedDeliveryView,
    ForwardedReplyView,
    IncidentView,
    MessageContext,
    OosReleaseView,
    PersonView,
    RegulatoryClockView,
    RemanufactureView,
    RevisionView,
    SignatureView,
    WithinSpecBasisView,
    day,
    disposition_label,
    key_date_views,
    local_time,
)
from oos_notify.incidents import call_tasks, pathway_gates, regulatory_clocks, unreached
from oos_notify.incidents.acknowledgement import (
    AckTokens,
    Purpose,
    answer_that_counts,
    attribution,
    confirmations,
    open_callback,
    purpose_of,
)
from oos_notify.incidents.center_reports import ReportKind
from oos_notify.return_addresses import Purpose as AddressPurpose
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from oos_notify.store import passkeys, signatures
from oos_notify.store.lifecycle import NotificationKind, NotificationStatus
from oos_notify.store.models import (
    Acknowledgement,
    CenterReport,
    CenterReportReceipt,
    DeliveryAttempt,
    FailureReport,
    ForwardedReply,
    InboundMessage,
    Incident,
    Notification,
)
from oos_notify.store.outbox import BOUNCED


def center_ids(agreement: EffectiveAgreement) -> tuple[str, str]:
    """The template override chain of a center: the site first, then its health system."""
    return (agreement.center_id, agreement.health_system_id)


MICROBIAL_ATTRIBUTES = frozenset({"sterility", "mycoplasma", "gram stain"})
"""Failed attributes that mean organisms may have been infused: the patient is assessed for
signs of infection (what else to do is each attribute's clinical guidance)."""


def incident_view(
    incident: Incident,
    agreement: EffectiveAgreement,
    now: datetime,
    decision_due: datetime | None = None,
) -> IncidentView:
    """The incident as its messages state it at ``now``: whether lymphodepletion has started
    is read in the center's own date."""
    product = agreement.product(incident.product_code)
    status = ProductStatus(incident.product_status) if incident.product_status else None
    infused = status is ProductStatus.INFUSED
    facts = clinical_facts(
        agreement,
        product,
        status,
        incident.indication,
        incident.key_dates,
        (a["attribute"] for a in incident.failed_attributes),
        now.astimezone(ZoneInfo(agreement.timezone)).date(),
    )
    return IncidentView(
        id=incident.id,
        ref=incident.incident_ref,
        status=incident.status,
        severity=incident.severity,
        severity_rule=incident.severity_rule,
        disposition=incident.disposition,
        disposition_label=disposition_label(incident.disposition),
        product_code=incident.product_code,
        product_name=product.name if product else incident.product_code,
        lot_number=incident.lot_number,
        chain_of_identity=incident.chain_of_identity,
        summary=incident.summary,
        failed_attributes=[FailedAttributeView(**a) for a in incident.failed_attributes],
        key_dates=key_date_views(incident.key_dates),
        opened_at=local_time(incident.opened_at, agreement.timezone),
        product_status=status.value if status else None,
        product_status_label=status.label if status else None,
        infused=infused,
        infused_at=local_time(incident.infused_at, agreement.timezone)
        if incident.infused_at
        else None,
        late_result=incident.plan_type == EventType.LATE_RESULT,
        microbial=any(
            a["attribute"].strip().lower() in MICROBIAL_ATTRIBUTES
            for a in incident.failed_attributes
        ),
        infusion_window=facts.infusion_window,
        infusion_windows=facts.infusion_windows,
        lymphodepletion_started=facts.lymphodepletion_started,
        shipper_hold=facts.shipper_hold,
        guidance=facts.guidance,
        unguided=facts.unguided,
        oos_release=oos_release_view(incident.oos_release, agreement),
        remanufacture=remanufacture_view(incident.remanufacture),
        within_spec_basis=WithinSpecBasisView(**incident.within_spec_basis)
        if incident.within_spec_basis
        else None,
        decision_due=local_time(decision_due, agreement.timezone) if decision_due else None,
        drill=incident.drill,
    )


def oos_release_view(
    offer: dict[str, Any] | None, agreement: EffectiveAgreement
) -> OosReleaseView | None:
    if offer is None:
        return None
    timezone = agreement.timezone
    asked = []
    for person in offer["asked"]:
        contact = agreement.contact(person["contact_id"])
        asked.append(
            PersonView(
                name=person["name"],
                email=person["email"],
                phone=contact.phone if contact else None,
                role=person["role"],
            )
        )
    items = [
        ChecklistItemView(
            label=item["label"],
            reference=item["reference"],
            confirmed_at=local_time(datetime.fromisoformat(item["confirmed_at"]), timezone)
            if item["confirmed_at"]
            else None,
            gates=GATE_WORDS.get(item.get("gates", "")),
        )
        for item in offer["items"]
    ]
    return OosReleaseView(
        pathway=offer["name"],
        checklist=items,
        outstanding=sum(1 for item in items if item.reference is None),
        asked=asked,
        requests_supply=pathway_gates.requests_supply(offer),
        awaiting=[
            item["label"]
            for item in offer["items"]
            if item["id"]
            in pathway_gates.missing_before_decision(offer, AckResponse.ACCEPT_OOS_PRODUCT)
        ],
    )


GATE_WORDS = {"shipped": "shipment", "infused": "infusion", "resolved": "closing"}
"""How a message names the transition a checklist item gates."""


def remanufacture_view(facts: dict[str, Any] | None) -> RemanufactureView | None:
    if facts is None:
        return None
    release = facts.get("expected_release")
    return RemanufactureView(
        new_apheresis_needed=facts.get("new_apheresis_needed"),
        expected_release=day(date.fromisoformat(release)) if release else None,
        bridging_therapy_needed=facts.get("bridging_therapy_needed"),
    )


def center_view(
    agreement: EffectiveAgreement, plan_type: str = EventType.RELEASE_FAILURE
) -> CenterView:
    """The center as its messages name it, with who may stop the escalation of the plan in
    force and the numbers to call in the final escalation."""
    stopping = agreement.plans[EventType(plan_type)].stops_escalation
    labels = [f"the {role.label}" for role in stopping]
    phrase = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"
    callers: dict[str, PersonView] = {}
    for role in stopping:
        for contact in agreement.contacts_for(Recipient(role, manufacturer=False)):
            if contact.phone and contact.email not in callers:
                callers[contact.email] = PersonView(
                    name=contact.name, email=contact.email, phone=contact.phone, role=role.label
                )
    return CenterView(
        id=agreement.center_id,
        name=agreement.center_name,
        health_system=agreement.health_system_name,
        timezone=agreement.timezone,
        on_call_phone=agreement.on_call_phone,
        stopping_roles=phrase,
        call_list=list(callers.values()),
    )


@dataclass(frozen=True)
class Answers:
    """What an incident's messages say was answered: the acknowledgement that stopped the
    current round, the decision in force, the confirmations that stopped nothing, an open
    request to be called, and when a missing decision is escalated. Read once per incident for
    a batch of its messages."""

    acknowledgement: Acknowledgement | None
    decision: Acknowledgement | None
    confirmations: list[Acknowledgement] = field(default_factory=list)
    callback: Acknowledgement | None = None
    decision_due: datetime | None = None
    escalation_due: dict[int, datetime] = field(default_factory=dict)
    """When each level of the escalation still scheduled goes out, while nobody has confirmed."""

    @classmethod
    def of(
        cls,
        session: Session,
        incident: Incident,
        escalation_due: dict[int, datetime] | None = None,
    ) -> Answers:
        """Read from the acknowledgements only when the incident says it has some: it notes
        when it was first acknowledged, its decision, and (by its update time) any other
        answer, in the transactions that record them. ``escalation_due``, when given, is what
        ``escalations_due`` read for it with other incidents."""
        changed = incident.updated_at > incident.opened_at
        offered = incident.oos_release is not None and incident.decision is None
        return cls(
            answer_that_counts(session, incident, Purpose.ACKNOWLEDGEMENT)
            if incident.acknowledged_at is not None
            else None,
            answer_that_counts(session, incident, Purpose.DECISION)
            if incident.decision is not None
            else None,
            confirmations(session, incident) if changed else [],
            open_callback(session, incident) if offered else None,
            session.exec(
                select(func.min(Notification.due_at)).where(
                    Notification.incident_id == incident.id,
                    Notification.kind == NotificationKind.DECISION_OVERDUE.value,
                    col(Notification.status) != NotificationStatus.CANCELLED.value,
                )
            ).one()
            if offered
            else None,
            {}
            if incident.acknowledged_at is not None
            else escalation_due
            if escalation_due is not None
            else escalations_due(session, [incident.id]).get(incident.id, {}),
        )


def escalations_due(
    session: Session, incident_ids: Iterable[str]
) -> dict[str, dict[int, datetime]]:
    """When each level of each incident's escalation still scheduled goes out, in one query."""
    due: dict[str, dict[int, datetime]] = {}
    incident_ids = set(incident_ids)
    if not incident_ids:
        return due
    rows = session.exec(
        select(Notification.incident_id, Notification.level, func.min(Notification.due_at))
        .where(
            col(Notification.incident_id).in_(incident_ids),
            Notification.kind == NotificationKind.ESCALATION.value,
            Notification.status == NotificationStatus.SCHEDULED.value,
        )
        .group_by(col(Notification.incident_id), col(Notification.level))
    ).all()
    for incident_id, level, due_at in rows:
        due.setdefault(incident_id, {})[level] = due_at
    return due


class Shown:
    """What every message of an incident states alike at ``now``: the incident, its center, and
    when a link sent then expires. Worked out once for all of a batch's messages of the
    incident, not once for each."""

    def __init__(
        self, incident: Incident, agreement: EffectiveAgreement, answers: Answers, now: datetime
    ) -> None:
        self._incident = incident
        self._agreement = agreement
        self._answers = answers
        self._now = now

    @functools.cached_property
    def incident(self) -> IncidentView:
        return incident_view(self._incident, self._agreement, self._now, self._answers.decision_due)

    @functools.cached_property
    def center(self) -> CenterView:
        return center_view(self._agreement, self._incident.plan_type)

    @functools.cached_property
    def link_expires_at(self) -> datetime:
        return add_duration(
            self._now,
            self._agreement.ack_link_valid_for,
            CenterCalendar.of(self._agreement),
            business_hours=False,
        )

    @functools.cached_property
    def link_expires(self) -> str:
        """``link_expires_at`` as the center reads it."""
        return local_time(self.link_expires_at, self._agreement.timezone)


def build_context(
    session: Session,
    notification: Notification,
    incident: Incident,
    agreement: EffectiveAgreement,
    answers: Answers,
    tokens: AckTokens,
    settings: Settings,
    now: datetime,
    shown: Shown | None = None,
) -> MessageContext:
    """The facts a template may show, in the center's time zone, with a link where one is due.
    ``shown``: what the incident's other messages of the batch worked out already."""
    shown = shown or Shown(incident, agreement, answers, now)
    ack_link = None
    if notification.with_ack_link:
        token = tokens.issue(notification, shown.link_expires_at, ack_round=incident.ack_round)
        url = f"{settings.public_base_url.rstrip('/')}/ack/{token}"
        enrols = purpose_of(notification) is Purpose.DECISION and not passkeys.enrolled(
            session, notification.recipient_email
        )
        ack_link = AckLinkView(
            url=url,
            expires_at=shown.link_expires,
            enrol_url=f"{url}/passkey" if enrols else None,
        )
    first_ack, decision = answers.acknowledgement, answers.decision
    # Replies acknowledge escalation notices with a link, and only those (returned-mail.md).
    acknowledges = notification.with_ack_link and notification.kind in (
        NotificationKind.ESCALATION,
        NotificationKind.PHYSICIAN,
    )
    escalates_at = min(
        (due for level, due in answers.escalation_due.items() if level > notification.level),
        default=None,
    )
    qa = incident.qa_contact
    contact = agreement.contact(notification.contact_id)
    return MessageContext(
        incident=shown.incident,
        center=shown.center,
        recipient=PersonView(
            name=notification.recipient_name,
            email=notification.recipient_email,
            phone=contact.phone if contact else None,
            role=notification.role,
        ),
        manufacturer=agreement.manufacturer_name,
        qa_contact=PersonView(name=qa["name"], email=qa["email"], phone=qa.get("phone"))
        if qa
        else None,
        step_level=notification.level,
        ack=ack_link,
        asks_decision=notification.with_ack_link and purpose_of(notification) is Purpose.DECISION,
        escalates_at=local_time(escalates_at, agreement.timezone)
        if acknowledges and escalates_at
        else None,
        replies_confirm=acknowledges and settings.replies_confirm,
        acknowledgement=acknowledgement_view(first_ack, agreement) if first_ack else None,
        decision=acknowledgement_view(decision, agreement) if decision else None,
        confirmations=[acknowledgement_view(c, agreement) for c in answers.confirmations],
        callback=acknowledgement_view(answers.callback, agreement) if answers.callback else None,
        failed_delivery=failed_delivery_view(session, notification, agreement)
        if notification.kind == NotificationKind.DELIVERY_FAILURE
        else None,
        forwarded_reply=forwarded_reply_view(session, notification, agreement)
        if notification.kind == NotificationKind.FORWARDED_REPLY
        else None,
        call_task=call_task_view(session, notification, agreement)
        if notification.kind in CALL_TASK_KINDS
        else None,
        regulatory_clock=regulatory_clock_view(session, notification, agreement, now)
        if notification.kind == NotificationKind.REGULATORY_CLOCK
        else None,
        center_report=center_report_view(session, notification, agreement),
    )


CALL_TASK_KINDS = frozenset({NotificationKind.CALL_TASK, NotificationKind.CALL_TASK_OVERDUE})


def call_task_view(
    session: Session, notification: Notification, agreement: EffectiveAgreement
) -> CallTaskView:
    """The call task a message to its caller (or its escalation) is about."""
    task = call_tasks.call_task_for(session, notification.id)
    assert task is not None, f"{notification.id} is about no call task"
    return CallTaskView(
        id=task.id,
        reason=task.reason,
        caller_role=task.caller_role,
        numbers=[
            PersonView(name=n["name"], phone=n["phone"], role=n.get("role")) for n in task.numbers
        ],
        opened_at=local_time(task.opened_at, agreement.timezone),
        due_at=local_time(task.due_at, agreement.timezone),
        api_path=f"/v1/call-tasks/{task.id}/close",
    )


CLOCK_STARTS = {
    "opened": "the discovery of the failure",
    "shipped": "the shipment of the product",
    "infused": "the infusion of the product",
    "resolved": "the resolution of the incident",
}


def regulatory_clock_view(
    session: Session, notification: Notification, agreement: EffectiveAgreement, now: datetime
) -> RegulatoryClockView:
    """The report a clock's reminder or escalation is about, in the center's time zone."""
    row = regulatory_clocks.for_notice(session, notification.id)
    assert row is not None, f"{notification.id} is about no regulatory clock"
    return RegulatoryClockView(
        label=row.label,
        source=row.source,
        started_by=CLOCK_STARTS.get(row.started_by, row.started_by),
        started_at=local_time(row.started_at, agreement.timezone),
        due_at=local_time(row.due_at, agreement.timezone),
        missed=now >= row.due_at,
    )


def center_report_view(
    session: Session, receipt: Notification, agreement: EffectiveAgreement
) -> CenterReportView | None:
    """The center's report a message to QA tells of; None for any other message."""
    if receipt.kind != NotificationKind.RECEIPT:
        return None
    link = session.get(CenterReportReceipt, receipt.id)
    if link is None:
        return None
    report = session.get(CenterReport, link.report_id)
    assert report is not None
    contact = agreement.contact(report.contact_id)
    kind = ReportKind(report.kind)
    return CenterReportView(
        by=PersonView(
            name=contact.name if contact else report.email,
            email=report.email,
            phone=contact.phone if contact else None,
            role=report.role,
        ),
        kind=kind.value,
        label=kind.label,
        day=day(report.day) if report.day else None,
        phone=report.phone,
        call_window=report.call_window,
        comment=report.comment,
        source=report.source,
        at=local_time(report.at, agreement.timezone),
    )


def failed_delivery_view(
    session: Session, report: Notification, agreement: EffectiveAgreement
) -> FailedDeliveryView:
    """What a delivery-failure report tells QA: who was not reached, with what, and the reply."""
    link = session.get(FailureReport, report.id)
    assert link is not None, f"{report.id} reports no failed notification"
    failed = session.get(Notification, link.failed_notification_id)
    assert failed is not None
    last = session.exec(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.notification_id == failed.id)
        .order_by(col(DeliveryAttempt.id).desc())
    ).first()
    return FailedDeliveryView(
        recipient=PersonView(
            name=failed.recipient_name, email=failed.recipient_email, role=failed.role
        ),
        template=failed.template,
        failed_at=local_time(last.at if last else report.created_at, agreement.timezone),
        attempts=failed.attempts,
        smtp_code=last.smtp_code if last else None,
        reply=(last.smtp_reply if last else None) or failed.last_error or "",
        never_sent=last is not None and last.outcome == "permanent" and last.smtp_code is None,
        bounced=last is not None and last.outcome == BOUNCED,
        brought_forward=[
            PersonView(name=n.recipient_name, email=n.recipient_email, role=n.role)
            for n in unreached.brought_forward_by(session, failed.id)
        ],
    )


def forwarded_reply_view(
    session: Session, forward: Notification, agreement: EffectiveAgreement
) -> ForwardedReplyView:
    """The reply a message to QA forwards, and who sent it."""
    link = session.get(ForwardedReply, forward.id)
    assert link is not None, f"{forward.id} forwards no reply"
    reply = session.get(InboundMessage, link.inbound_message_id)
    assert reply is not None
    answered = session.get(Notification, reply.notification_id) if reply.notification_id else None
    # A message that could not be read has no sender: the notice's recipient is who to ask.
    email = reply.sender or (answered.recipient_email if answered else None)
    return ForwardedReplyView(
        sender=PersonView(
            name=answered.recipient_name if answered else email or "",
            email=email,
            role=answered.role if answered else None,
        ),
        received_at=local_time(reply.received_at, agreement.timezone),
        subject=reply.subject or "",
        text=reply.text or "",
        reason=str(reply.detail.get("reason", "")),
        request=reply.detail.get("request"),
        verified=reply.detail.get("verified") is not False,
    )


def acknowledgement_view(
    ack: Acknowledgement, agreement: EffectiveAgreement
) -> AcknowledgementView:
    contact = agreement.contact(ack.contact_id)
    signed, revision = ack.signature, ack.revision
    return AcknowledgementView(
        by=f"{contact.name} <{ack.email}>" if contact else ack.email,
        role=ack.role,
        at=local_time(ack.at, agreement.timezone),
        response=AckResponse(ack.response).label,
        answer=ack.response,
        comment=ack.comment,
        signature=SignatureView(
            printed_name=signed["printed_name"],
            meaning=signed["meaning"],
            signed_at=signed["shown"],
            method=signatures.METHOD_LABELS.get(signed.get("method") or "", None),
        )
        if signed
        else None,
        revision=RevisionView(
            reason=revision["reason"],
            recorded_by=f"{revision['recorded_by']['name']} <{revision['recorded_by']['email']}>",
        )
        if revision
        else None,
        phone=ack.callback_phone,
        attribution=attribution(ack.confirmed_by, ack.email)
        if contact and contact.shared and ack.purpose == Purpose.ACKNOWLEDGEMENT
        else None,
    )


def envelope(
    notification: Notification,
    incident: Incident,
    settings: Settings,
    now: datetime,
    manufacturer_name: str,
    addresses: ReturnAddresses | None = None,
    thread_root: str | None = None,
) -> Envelope:
    """Who a message is from and to. With return addresses, bounces come back to the
    notification's own envelope sender, and a center's replies to its own Reply-To; messages
    to the manufacturer's QA send replies to ``MAIL_FROM``, where people read them."""
    reply_to = return_path = None
    if addresses is not None:
        return_path = addresses.address(notification.id, AddressPurpose.BOUNCE)
        if not NotificationKind(notification.kind).reports_to_qa:
            reply_to = addresses.address(notification.id, AddressPurpose.REPLY)
    if reply_to is None and settings.from_address != settings.mail_from:
        reply_to = settings.mail_from
    return Envelope(
        sender=settings.from_address,
        sender_name=f"{manufacturer_name} OOS notifications",
        recipient=notification.recipient_email,
        recipient_name=notification.recipient_name,
        message_id=notification.message_id,
        notification_id=notification.id,
        thread_id=thread_root,
        incident_ref=incident.incident_ref,
        sent_at=now,
        reply_to=reply_to,
        return_path=return_path,
    )
