"""Liveness, readiness and metrics for operators and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from oos_notify.ops import monitoring
from oos_notify.web.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """503 unless the database answers and the dispatcher (where this process sends) runs
    without failing; says how the mail server is."""
    inbound = services.inbound.health if services.inbound is not None else None
    readiness = await monitoring.readiness(
        services.engine, services.dispatcher, inbound, sends=services.role.sends
    )
    return JSONResponse(
        {"ready": readiness.ready, "checks": readiness.checks},
        status_code=200 if readiness.ready else 503,
    )


@router.get("/metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format, read from the database at scrape time; 200 even while the
    database is unreachable (``oos_notify_database_up 0``, database metrics left out)."""
    now = services.clock.now()
    body = await monitoring.metrics_text(services.engine, now, services.dispatcher)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
