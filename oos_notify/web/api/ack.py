"""``/ack/{token}``: the no-login confirmation page. GET only shows; POST acknowledges the round
the page showed, or records nothing and shows what changed (409) when that round is over. The
page's second form posts to the same address with a ``kind``: the center's own report of the
treatment (``incidents.center_reports``), which confirms nothing."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse, ProductStatus
from oos_notify.delivery.messaging import center_view, oos_release_view
from oos_notify.delivery.rendering import day, disposition_label, key_date_views, local_time
from oos_notify.incidents import acknowledgement, center_reports
from oos_notify.incidents.acknowledgement import (
    CONFIRMER_NAME_LENGTH,
    AckForm,
    AckState,
    Changes,
    LinkError,
    Purpose,
    choice_label,
    decision_meaning,
)
from oos_notify.incidents.center_reports import ReportIn, ReportKind, ReportRefused
from oos_notify.incidents.signing import PasskeySigner
from oos_notify.store.models import CenterReport
from oos_notify.web.api.deps import ServicesDep, SessionDep, WriterDep, limit_ack_requests
from oos_notify.web.pages import page
from oos_notify.web.services import Services

log = logging.getLogger(__name__)
router = APIRouter(
    tags=["acknowledgement"], include_in_schema=False, dependencies=[Depends(limit_ack_requests)]
)


def _changes(changes: Changes, timezone: str) -> dict[str, Any]:
    decision = changes.decision
    return {
        "sent_at": local_time(changes.sent_at, timezone),
        "events": [
            {
                "type": event.type,
                "at": local_time(event.received_at, timezone),
                "failed_attributes": event.payload.get("failed_attributes") or [],
                "disposition": disposition_label(event.payload.get("disposition")),
            }
            for event in changes.events
        ],
        "decision": AckResponse(decision.response).label if decision else None,
        "decided_by": decision.email if decision else None,
    }


def _render(
    state: AckState, services: Services, token: str, reported: CenterReport | None = None
) -> HTMLResponse:
    incident = state.incident
    agreement = EffectiveAgreement.stored(incident.agreement)
    ack, own, callback = state.acknowledgement, state.own_confirmation, state.callback
    deciding = state.purpose is Purpose.DECISION
    contact = agreement.contact(state.notification.contact_id)
    return page(
        "ack.html",
        409 if state.not_recorded else 200,
        scripts=deciding,
        incident=incident,
        manufacturer=agreement.manufacturer_name,
        center_name=agreement.center_name,
        recipient=f"{state.notification.recipient_name} <{state.notification.recipient_email}>",
        recipient_name=state.notification.recipient_name,
        recipient_email=state.notification.recipient_email,
        signs_as=state.signs_as,
        enrol_url=f"{token}/passkey",
        recipient_phone=contact.phone if contact else None,
        shared_mailbox=bool(contact and contact.shared) and not deciding,
        confirmer_name_length=CONFIRMER_NAME_LENGTH,
        disposition=disposition_label(incident.disposition),
        product_status=ProductStatus(incident.product_status).label
        if incident.product_status
        else None,
        infused_at=local_time(incident.infused_at, agreement.timezone)
        if incident.infused_at
        else None,
        oos_release=oos_release_view(incident.oos_release, agreement),
        choices=state.choices,
        labels={c.value: choice_label(c, incident.oos_release) for c in state.choices},
        meanings={
            c.value: decision_meaning(c, incident.oos_release)
            for c in state.choices
            if c.is_decision
        },
        deciding=deciding,
        closed=state.closed,
        just_acknowledged=state.just_acknowledged,
        just_asked_callback=state.just_asked_callback,
        stops_escalation=state.stops_escalation,
        stopping_roles=center_view(agreement, incident.plan_type).stopping_roles,
        acknowledgement=ack,
        acknowledged_at=local_time(ack.at, agreement.timezone) if ack else None,
        acknowledgement_label=AckResponse(ack.response).label if ack else None,
        own_confirmation=own,
        own_confirmed_at=local_time(own.at, agreement.timezone) if own else None,
        callback=callback,
        callback_at=local_time(callback.at, agreement.timezone) if callback else None,
        changes=_changes(state.changes, agreement.timezone) if state.changes else None,
        not_recorded=state.not_recorded,
        report_kinds=list(ReportKind),
        reported=reported,
        reported_label=ReportKind(reported.kind).label if reported else None,
        reported_day=day(reported.day) if reported and reported.day else None,
        key_dates=key_date_views(incident.key_dates),
        timezone=agreement.timezone,
    )


def _refusal(error: LinkError | ReportRefused) -> HTMLResponse:
    return page("message.html", error.status_code, title=error.title, message=error.message)


@router.get("/ack/{token}", response_class=HTMLResponse)
def show(token: str, session: SessionDep, services: ServicesDep) -> HTMLResponse:
    try:
        state = acknowledgement.view(session, services.tokens, token, services.clock.now())
    except LinkError as error:
        return _refusal(error)
    return _render(state, services, token)


@router.post("/ack/{token}", response_class=HTMLResponse)
async def confirm(
    token: str,
    request: Request,
    background: BackgroundTasks,
    writer: WriterDep,
    services: ServicesDep,
    # No limits here: AckForm checks the fields so that a wrong answer gets a page, not JSON;
    # the request body limit bounds what can arrive at all.
    response: Annotated[str, Form()] = AckResponse.RECEIVED.value,
    comment: Annotated[str, Form()] = "",
    round: Annotated[str | None, Form()] = None,
    signing: Annotated[str, Form()] = "",
    assertion: Annotated[str, Form()] = "",
    phone: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "",
    day: Annotated[str, Form()] = "",
    call_from: Annotated[str, Form()] = "",
    call_until: Annotated[str, Form()] = "",
    confirmed_by: Annotated[str, Form()] = "",
) -> HTMLResponse:
    if kind:  # the page's second form: the center reports something (center_reports)
        fields = {
            "kind": kind,
            "day": day,
            "phone": phone,
            "call_from": call_from,
            "call_until": call_until,
            "comment": comment,
        }
        return await _report(token, fields, background, writer, services)
    try:
        form = AckForm.model_validate(
            {
                "response": response,
                "comment": comment,
                "round": round,
                "signing": signing or None,
                "assertion": assertion or None,
                "phone": phone.strip() or None,
                "confirmed_by": confirmed_by.strip() or None,
            }
        )
    except ValidationError as error:
        return _refusal(acknowledgement.form_problem(error))
    try:
        state = await writer.run(
            lambda session: acknowledgement.acknowledge(
                session,
                services.tokens,
                token,
                form,
                client_address=request.client.host if request.client else None,
                user_agent=request.headers.get("user-agent"),
                now=services.clock.now(),
                mail_domain=services.settings.mail_domain,
                signer=PasskeySigner(services.ceremonies, token),
            )
        )
    except LinkError as error:
        return _refusal(error)
    if state.just_acknowledged:
        log.info(
            "incident %s acknowledged by %s",
            state.incident.id,
            state.notification.role,
            extra={"incident_id": state.incident.id, "notification_id": state.notification.id},
        )
        if services.dispatcher is not None:
            background.add_task(services.dispatcher.wake)
    elif state.not_recorded:
        log.info(
            "incident %s: an answer for an earlier round was not recorded",
            state.incident.id,
            extra={"incident_id": state.incident.id, "notification_id": state.notification.id},
        )
    return _render(state, services, token)


async def _report(
    token: str,
    fields: dict[str, str],
    background: BackgroundTasks,
    writer: WriterDep,
    services: Services,
) -> HTMLResponse:
    """The center speaks from its link: a date, the product received, or a call request."""
    try:
        form = ReportIn.model_validate({k: v.strip() or None for k, v in fields.items()})
    except ValidationError as error:
        return _refusal(center_reports.form_problem(error))
    try:
        done = await writer.run(
            lambda session: center_reports.from_link(
                session,
                services.tokens,
                token,
                form,
                now=services.clock.now(),
                mail_domain=services.settings.mail_domain,
            )
        )
    except (LinkError, ReportRefused) as error:
        return _refusal(error)
    log.info(
        "incident %s: the center reported %s",
        done.state.incident.id,
        form.kind,
        extra={
            "incident_id": done.state.incident.id,
            "notification_id": done.state.notification.id,
        },
    )
    if done.recorded.wakes and services.dispatcher is not None:
        background.add_task(services.dispatcher.wake)
    return _render(done.state, services, token, done.recorded.report)
