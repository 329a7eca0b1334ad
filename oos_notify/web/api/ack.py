"""``/ack/{token}``: the no-login confirmation page. GET only shows; POST acknowledges the round
the page showed, or records nothing and shows what changed (409) when that round is over."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import AckResponse
from oos_notify.delivery.rendering import disposition_label, local_time
from oos_notify.incidents import acknowledgement
from oos_notify.incidents.acknowledgement import (
    AckForm,
    AckState,
    Changes,
    LinkError,
    Purpose,
)
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


def _render(state: AckState, services: Services) -> HTMLResponse:
    agreement = EffectiveAgreement.stored(state.incident.agreement)
    ack = state.acknowledgement
    return page(
        "ack.html",
        409 if state.not_recorded else 200,
        incident=state.incident,
        manufacturer=agreement.manufacturer_name,
        center_name=agreement.center_name,
        recipient=f"{state.notification.recipient_name} <{state.notification.recipient_email}>",
        disposition=disposition_label(state.incident.disposition),
        choices=state.choices,
        deciding=state.purpose is Purpose.DECISION,
        closed=state.closed,
        just_acknowledged=state.just_acknowledged,
        acknowledgement=ack,
        acknowledged_at=local_time(ack.at, agreement.timezone) if ack else None,
        acknowledgement_label=AckResponse(ack.response).label if ack else None,
        changes=_changes(state.changes, agreement.timezone) if state.changes else None,
        not_recorded=state.not_recorded,
    )


def _refusal(error: LinkError) -> HTMLResponse:
    return page(
        "message.html", error.status_code, title="This link cannot be used", message=error.message
    )


@router.get("/ack/{token}", response_class=HTMLResponse)
def show(token: str, session: SessionDep, services: ServicesDep) -> HTMLResponse:
    try:
        state = acknowledgement.view(session, services.tokens, token, services.clock.now())
    except LinkError as error:
        return _refusal(error)
    return _render(state, services)


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
) -> HTMLResponse:
    try:
        form = AckForm.model_validate({"response": response, "comment": comment, "round": round})
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
    return _render(state, services)
