"""``POST /v1/events``: one event about one incident, idempotent on ``event_id``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, Response, status
from sqlmodel import Session

from oos_notify.incidents import events
from oos_notify.incidents.events import EventAccepted, EventIn
from oos_notify.store import agreement_versions
from oos_notify.web.api.deps import RateLimitedKeyDep, ServicesDep, WriterDep

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": EventAccepted, "description": "The same event was received before"},
        409: {
            "description": "The event_id was used for a different body, or the incident is closed"
        },
        422: {"description": "Invalid fields; every one is named"},
        429: {"description": "Too many events for this API key; see Retry-After"},
    },
)
async def post_event(
    event: EventIn,
    response: Response,
    background: BackgroundTasks,
    writer: WriterDep,
    services: ServicesDep,
    _key: RateLimitedKeyDep,
) -> EventAccepted:
    """Open an incident with a release_failure or late_result, or follow one up."""

    def intake(session: Session) -> events.IngestResult:
        now = services.clock.now()
        version = agreement_versions.take_effect(session, now)
        return events.ingest(
            session,
            event,
            services.agreements.version(session, version),
            now,
            services.settings.mail_domain,
            services.template_versions,
        )

    result = await writer.run(intake)
    answer = result.answer
    log.info(
        "event %s %s for incident %s: %d notifications scheduled",
        answer.event_id,
        "repeated" if answer.duplicate else "accepted",
        answer.incident_id,
        0 if answer.duplicate else len(answer.scheduled),
        extra={
            "event_id": answer.event_id,
            "event_type": event.type,
            "incident_id": answer.incident_id,
        },
    )
    if answer.duplicate:
        response.status_code = status.HTTP_200_OK
    if result.schedules_now and services.dispatcher is not None:
        # Runs after the transaction committed: the dispatcher must find the new rows.
        background.add_task(services.dispatcher.wake)
    return answer
