"""``GET /v1/incidents...``: what the manufacturer sees of each incident."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from oos_notify.errors import Forbidden
from oos_notify.incidents import drills, queries, regulatory_clocks, revisions
from oos_notify.incidents.queries import IncidentDetail, IncidentPage, TimelineEntry
from oos_notify.incidents.regulatory_clocks import ClockOut, ClockReportIn
from oos_notify.incidents.revisions import DecisionRevisionIn, ProposalOut
from oos_notify.store.instants import UtcInstant
from oos_notify.store.lifecycle import IncidentStatus
from oos_notify.web.api.deps import ApiKeyDep, ServicesDep, SessionDep, WriterDep

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])


@router.get("")
def list_incidents(
    session: SessionDep,
    services: ServicesDep,
    _key: ApiKeyDep,
    center_id: Annotated[str | None, Query(max_length=100)] = None,
    status: IncidentStatus | None = None,
    since: UtcInstant | None = None,
    breached: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> IncidentPage:
    """Incidents, newest first; pass ``next_cursor`` back as ``cursor`` for the next page.
    ``breached=true`` lists those whose first notice missed the agreement's ``notify_within``."""
    since_at: datetime | None = since
    return queries.list_incidents(
        session,
        center_id=center_id,
        status=status,
        since=since_at,
        breach=breached,
        limit=limit,
        cursor=cursor,
        now=services.clock.now(),
    )


@router.get("/{incident_id}")
def get_incident(
    incident_id: str, session: SessionDep, services: ServicesDep, _key: ApiKeyDep
) -> IncidentDetail:
    """The incident with its events, notifications, acknowledgements and escalation level."""
    return queries.detail(session, incident_id, services.clock.now())


@router.get("/{incident_id}/timeline")
def get_timeline(incident_id: str, session: SessionDep, _key: ApiKeyDep) -> list[TimelineEntry]:
    """The incident's audit trail, in order."""
    return queries.timeline(session, incident_id)


@router.get(
    "/{incident_id}/drill-report",
    responses={404: {"description": "No such incident"}, 409: {"description": "Not a drill"}},
)
def get_drill_report(
    incident_id: str, session: SessionDep, services: ServicesDep, _key: ApiKeyDep
) -> drills.DrillReport:
    """How the center did in a drill against each promise of its agreement."""
    return drills.for_incident(session, incident_id, services.clock.now())


@router.post(
    "/{incident_id}/decision-revisions",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"description": "The body asks to record the revision at once (recorded_by)"},
        404: {"description": "No such incident"},
        409: {"description": "The incident is closed, or no product is offered for a decision"},
        422: {"description": "Invalid fields; every one is named"},
    },
)
async def propose_decision_revision(
    incident_id: str,
    revision: DecisionRevisionIn,
    writer: WriterDep,
    services: ServicesDep,
    key: ApiKeyDep,
) -> ProposalOut:
    """Propose a decision a decider gave outside the decision page (after asking to be called),
    or a correction on their word. It is pending: it takes effect only when a QA user approves
    it with their signature in the console; until then the decision in force stands."""
    return await writer.run(
        lambda session: revisions.propose(
            session, incident_id, revision, services.clock.now(), api_key=key.name
        )
    )


@router.get(
    "/{incident_id}/decision-revisions", responses={404: {"description": "No such incident"}}
)
def list_decision_revisions(
    incident_id: str, session: SessionDep, _key: ApiKeyDep
) -> list[ProposalOut]:
    """The incident's proposed revisions, oldest first: pending, approved or rejected, with
    the signatures of those who proposed, approved or rejected them."""
    return revisions.for_incident(session, incident_id)


@router.post(
    "/{incident_id}/decision-revisions/{proposal_id}/approval",
    status_code=status.HTTP_403_FORBIDDEN,
    responses={403: {"description": "Always: an API key cannot approve a revision"}},
)
def approve_decision_revision(incident_id: str, proposal_id: str, _key: ApiKeyDep) -> None:
    """Refused: a revision takes effect only on a QA user's signed approval in the console."""
    raise Forbidden(
        "an API key cannot approve a revision of a decision: a QA user other than its proposer "
        "approves it, signed with their password, on the incident's page in the console"
    )


@router.post(
    "/{incident_id}/regulatory-clocks/{clock_id}/report",
    responses={
        404: {"description": "No such incident, or no such clock started on it"},
        409: {"description": "The clock was closed with another reference"},
        422: {"description": "Invalid fields; every one is named"},
    },
)
async def report_regulatory_clock(
    incident_id: str,
    clock_id: Annotated[str, Path(max_length=64)],
    report: ClockReportIn,
    writer: WriterDep,
    services: ServicesDep,
    _key: ApiKeyDep,
) -> ClockOut:
    """Close a regulatory clock with the reference of the report that was filed: its reminder
    and escalation, if still waiting, are cancelled. The same reference again changes nothing."""
    return await writer.run(
        lambda session: regulatory_clocks.close(
            session, incident_id, clock_id, report, services.clock.now()
        )
    )
