"""A decider's passkey, from the link of their decision request: ``/ack/{token}/passkey`` sets it
up once (the page, then the two steps of the browser's ceremony), ``/ack/{token}/signing`` puts
the chosen decision before the passkey to sign. The decision itself is posted to ``/ack/{token}``
with the assertion (``ack``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from oos_notify.incidents import signing
from oos_notify.incidents.acknowledgement import LinkError
from oos_notify.web.api.deps import ServicesDep, SessionDep, WriterDep, limit_ack_requests
from oos_notify.web.pages import SECURITY_HEADERS, page

log = logging.getLogger(__name__)
router = APIRouter(
    tags=["acknowledgement"], include_in_schema=False, dependencies=[Depends(limit_ack_requests)]
)
SCRIPT = (Path(__file__).parents[1] / "pages" / "passkey.js").read_text(encoding="utf-8")


class EnrolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Annotated[str, Field(min_length=1, max_length=4096)]
    credential: dict[str, Any]


class SigningIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response: Annotated[str, Field(min_length=1, max_length=64)]


def _refused(error: LinkError) -> JSONResponse:
    return JSONResponse(
        {"title": error.title, "detail": error.message},
        status_code=error.status_code,
        headers=SECURITY_HEADERS,
    )


@router.get("/passkey.js")
def script() -> Response:
    return Response(
        SCRIPT,
        media_type="text/javascript",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


@router.get("/ack/{token}/passkey", response_class=HTMLResponse)
def enrolment_page(token: str, session: SessionDep, services: ServicesDep) -> HTMLResponse:
    try:
        found = signing.enrolment(session, services.tokens, token, services.clock.now())
    except LinkError as error:
        return page("message.html", error.status_code, title=error.title, message=error.message)
    return page(
        "passkey.html",
        scripts=True,
        incident=found.state.incident,
        printed_name=found.printed_name,
        email=found.email,
        enrolled=bool(found.credentials),
        already=signing.already_enrolled(found.email),
        token=token,
    )


@router.post("/ack/{token}/passkey/options")
def enrolment_options(token: str, session: SessionDep, services: ServicesDep) -> JSONResponse:
    try:
        started = signing.start_enrolment(
            session, services.tokens, services.ceremonies, token, services.clock.now()
        )
    except LinkError as error:
        return _refused(error)
    return JSONResponse(started, headers=SECURITY_HEADERS)


@router.post("/ack/{token}/passkey")
async def enrol(
    token: str, body: EnrolIn, writer: WriterDep, services: ServicesDep
) -> JSONResponse:
    try:
        enrolled = await writer.run(
            lambda session: signing.finish_enrolment(
                session,
                services.tokens,
                services.ceremonies,
                token,
                body.state,
                body.credential,
                services.clock.now(),
            )
        )
    except LinkError as error:
        return _refused(error)
    log.info(
        "a decider enrolled a passkey",
        extra={"notification_id": enrolled.enrolled_from},
    )
    return JSONResponse(
        {
            "enrolled": True,
            "printed_name": enrolled.printed_name,
            "message": (
                f"Your passkey is set up. Your decisions are signed as {enrolled.printed_name}."
            ),
        },
        status_code=201,
        headers=SECURITY_HEADERS,
    )


@router.post("/ack/{token}/signing")
def start_signing(
    token: str, body: SigningIn, session: SessionDep, services: ServicesDep
) -> JSONResponse:
    try:
        started = signing.start_signing(
            session,
            services.tokens,
            services.ceremonies,
            token,
            body.response,
            services.clock.now(),
        )
    except LinkError as error:
        return _refused(error)
    return JSONResponse(started, headers=SECURITY_HEADERS)
