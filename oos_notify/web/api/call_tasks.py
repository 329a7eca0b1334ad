"""``/v1/call-tasks``: the phone calls agreements require, listed and closed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from oos_notify.incidents import call_tasks
from oos_notify.incidents.call_tasks import CallTaskClose, CallTaskOut, CallTaskStatus
from oos_notify.web.api.deps import ApiKeyDep, ServicesDep, SessionDep, WriterDep

router = APIRouter(prefix="/v1/call-tasks", tags=["call tasks"])


@router.get("")
def list_call_tasks(
    session: SessionDep,
    services: ServicesDep,
    _key: ApiKeyDep,
    status: CallTaskStatus | None = None,
    incident_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
) -> list[CallTaskOut]:
    """Call tasks, open ones first, each group by its deadline."""
    return call_tasks.list_call_tasks(
        session, services.clock.now(), status=status, incident_id=incident_id, limit=limit
    )


@router.post(
    "/{call_task_id}/close",
    responses={
        404: {"description": "No such call task"},
        409: {"description": "The call task is already closed"},
        422: {"description": "A field is missing or invalid; every one is named"},
    },
)
async def close_call_task(
    call_task_id: str,
    record: CallTaskClose,
    writer: WriterDep,
    services: ServicesDep,
    _key: ApiKeyDep,
) -> CallTaskOut:
    """Record the call that closes a task: whom the caller reached, on which number, when, and
    the outcome. Its escalation, if still waiting, is called off."""
    return await writer.run(
        lambda session: call_tasks.close_call_task(
            session, call_task_id, record, services.clock.now()
        )
    )
