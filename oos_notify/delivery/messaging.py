"""From outbox rows to email: the template context of a notification, and its envelope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from oos_notify.agreements.business_time import CenterCalendar
from oos_notify.agreements.business_time import add as add_duration
from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse
from oos_notify.delivery.mail import Envelope
from oos_notify.delivery.rendering import (
    AckLinkView,
    AcknowledgementView,
    CenterView,
    FailedAttributeView,
    FailedDeliveryView,
    ForwardedReplyView,
    IncidentView,
    MessageContext,
    PersonView,
    disposition_label,
    key_date_views,
    local_time,
)
from oos_notify.incidents.acknowledgement import AckTokens, Purpose, first_answer, purpose_of
from oos_notify.return_addresses import Purpose as AddressPurpose
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from oos_notify.store.lifecycle import NotificationKind
from oos_notify.store.models import (
    Acknowledgement,
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


def incident_view(incident: Incident, agreement: EffectiveAgreement) -> IncidentView:
    product = next(
        (p.name for p in agreement.products if p.code == incident.product_code),
        incident.product_code,
    )
    return IncidentView(
        id=incident.id,
        ref=incident.incident_ref,
        status=incident.status,
        severity=incident.severity,
        disposition=incident.disposition,
        disposition_label=disposition_label(incident.disposition),
        product_code=incident.product_code,
        product_name=product,
        lot_number=incident.lot_number,
        chain_of_identity=incident.chain_of_identity,
        summary=incident.summary,
        failed_attributes=[FailedAttributeView(**a) for a in incident.failed_attributes],
        key_dates=key_date_views(incident.key_dates),
        opened_at=local_time(incident.opened_at, agreement.timezone),
    )


@dataclass(frozen=True)
class Answers:
    """What an incident's messages say was answered: the first acknowledgement of the current
    round and the first decision. Read once per incident for a batch of its messages."""

    acknowledgement: Acknowledgement | None
    decision: Acknowledgement | None

    @classmethod
    def of(cls, session: Session, incident: Incident) -> Answers:
        """Read from the acknowledgements only when the incident says it has some: it notes
        when it was first acknowledged and its decision in the transactions that record them."""
        return cls(
            first_answer(session, incident, Purpose.ACKNOWLEDGEMENT)
            if incident.acknowledged_at is not None
            else None,
            first_answer(session, incident, Purpose.DECISION)
            if incident.decision is not None
            else None,
        )


def build_context(
    session: Session,
    notification: Notification,
    incident: Incident,
    agreement: EffectiveAgreement,
    answers: Answers,
    tokens: AckTokens,
    settings: Settings,
    now: datetime,
) -> MessageContext:
    """The facts a template may show, in the center's time zone, with a link where one is due."""
    ack_link = None
    if notification.with_ack_link:
        expires_at = add_duration(
            now, agreement.ack_link_valid_for, CenterCalendar.of(agreement), business_hours=False
        )
        token = tokens.issue(notification, expires_at, ack_round=incident.ack_round)
        ack_link = AckLinkView(
            url=f"{settings.public_base_url.rstrip('/')}/ack/{token}",
            expires_at=local_time(expires_at, agreement.timezone),
        )
    first_ack, decision = answers.acknowledgement, answers.decision
    qa = incident.qa_contact
    return MessageContext(
        incident=incident_view(incident, agreement),
        center=CenterView(
            id=agreement.center_id,
            name=agreement.center_name,
            health_system=agreement.health_system_name,
            timezone=agreement.timezone,
        ),
        recipient=PersonView(
            name=notification.recipient_name,
            email=notification.recipient_email,
            role=notification.role,
        ),
        manufacturer=agreement.manufacturer_name,
        qa_contact=PersonView(name=qa["name"], email=qa["email"], phone=qa.get("phone"))
        if qa
        else None,
        step_level=notification.level,
        ack=ack_link,
        asks_decision=purpose_of(notification) is Purpose.DECISION,
        acknowledgement=acknowledgement_view(first_ack, agreement) if first_ack else None,
        decision=acknowledgement_view(decision, agreement) if decision else None,
        failed_delivery=failed_delivery_view(session, notification, agreement)
        if notification.kind == NotificationKind.DELIVERY_FAILURE
        else None,
        forwarded_reply=forwarded_reply_view(session, notification, agreement)
        if notification.kind == NotificationKind.FORWARDED_REPLY
        else None,
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
    return ForwardedReplyView(
        sender=PersonView(
            name=answered.recipient_name if answered else reply.sender or "",
            email=reply.sender,
            role=answered.role if answered else None,
        ),
        received_at=local_time(reply.received_at, agreement.timezone),
        subject=reply.subject or "",
        text=reply.text or "",
        reason=str(reply.detail.get("reason", "")),
    )


def acknowledgement_view(
    ack: Acknowledgement, agreement: EffectiveAgreement
) -> AcknowledgementView:
    contact = next(
        (c for c in agreement.contacts + agreement.system_contacts if c.id == ack.contact_id), None
    )
    return AcknowledgementView(
        by=f"{contact.name} <{ack.email}>" if contact else ack.email,
        role=ack.role,
        at=local_time(ack.at, agreement.timezone),
        response=AckResponse(ack.response).label,
        comment=ack.comment,
    )


def envelope(
    notification: Notification,
    incident: Incident,
    settings: Settings,
    now: datetime,
    manufacturer_name: str,
    addresses: ReturnAddresses | None = None,
) -> Envelope:
    """Who a message is from and to. With return addresses, bounces come back to the
    notification's own envelope sender, and a center's replies to its own Reply-To; messages
    to the manufacturer's QA keep replies going to the From address, where people read them."""
    reply_to = return_path = None
    if addresses is not None:
        return_path = addresses.address(notification.id, AddressPurpose.BOUNCE)
        if not NotificationKind(notification.kind).reports_to_qa:
            reply_to = addresses.address(notification.id, AddressPurpose.REPLY)
    return Envelope(
        sender=settings.mail_from,
        sender_name=f"{manufacturer_name} OOS notifications",
        recipient=notification.recipient_email,
        recipient_name=notification.recipient_name,
        message_id=notification.message_id,
        notification_id=notification.id,
        thread_id=f"<{incident.id.lower()}@{settings.mail_domain}>",
        incident_ref=incident.incident_ref,
        sent_at=now,
        reply_to=reply_to,
        return_path=return_path,
    )
