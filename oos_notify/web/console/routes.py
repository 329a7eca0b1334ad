"""The console's routes: thin, each reads what its page needs and renders it. ``install`` adds
them, with the console's refusals as pages, to the service's app."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session

from oos_notify.agreements.config import EffectiveAgreement
from oos_notify.agreements.vocabulary import EventType, KeyDate, ProductStatus, Severity
from oos_notify.delivery.capture import CaptureServer
from oos_notify.delivery.rendering import DISPOSITION_LABELS, KEY_DATE_LABELS, RenderError
from oos_notify.errors import ServiceError
from oos_notify.incidents import call_tasks, drills, revisions
from oos_notify.incidents.decisions import Signer
from oos_notify.incidents.events import EventIn
from oos_notify.store import agreement_versions, audit
from oos_notify.store.lifecycle import IncidentStatus
from oos_notify.store.models import Incident, Notification
from oos_notify.texts import nul_replaced
from oos_notify.web.api.deps import ServicesDep, SessionDep, Writer, WriterDep
from oos_notify.web.console import (
    accounts,
    board,
    centers,
    incident,
    record,
    reports,
    sent,
    signing,
)
from oos_notify.web.console.accounts import SignedIn
from oos_notify.web.console.auth import (
    ActingUserDep,
    Cookies,
    CookiesDep,
    FormUserDep,
    LiveSignedOut,
    LiveUserDep,
    NotAllowed,
    SignInRequired,
    UserDep,
    safe_next,
    sign_in_url,
)
from oos_notify.web.console.charts import horizontal_bars, percent_columns
from oos_notify.web.console.fmt import month, span
from oos_notify.web.console.render import EMAIL_CSP, fragment, page, static_response
from oos_notify.web.services import Services, secret_key

log = logging.getLogger(__name__)
_LINK = re.compile(r"https?://[^\s<>\"']+")
router = APIRouter(include_in_schema=False)
MAILBOX_SHOWN = 200


def install(app: FastAPI) -> None:
    """Add the console to the service's app: its routes, and its refusals shown as pages."""
    services: Services = app.state.services
    app.state.console_cookies = Cookies.of(
        services.settings, secret_key(services.settings, services.engine)
    )
    app.state.console_centers = board.centers_of(services.agreements.now(services.clock.now()))
    app.include_router(router)

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(sign_in_url(exc.back_to), status_code=303)

    @app.exception_handler(LiveSignedOut)
    async def live_signed_out(request: Request, exc: LiveSignedOut) -> Response:
        return Response("signed out", status_code=401, media_type="text/plain")

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        return _message(request, exc.who, exc.title, exc.message, 403)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return _message(request, None, exc.title, exc.message, exc.status_code)


class PageError(Exception):
    """A console page that cannot be shown as asked: its title and message, as a page."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        self.status_code = status_code
        self.title = title
        self.message = message
        super().__init__(message)


def _not_found(message: str) -> PageError:
    return PageError(404, "Not found", message)


def _message(
    request: Request, who: SignedIn | None, title: str, message: str, status_code: int
) -> HTMLResponse:
    return page(
        "message.html",
        status_code,
        **_frame(request, who),
        title=title,
        message=message,
    )


def _frame(request: Request, who: SignedIn | None, section: str = "") -> dict[str, Any]:
    """What every page's header needs."""
    services: Services = request.app.state.services
    return {
        "who": who,
        "section": section,
        "mailbox_shown": _capture(services) is not None,
        "now": services.clock.now(),
    }


def _capture(services: Services) -> CaptureServer | None:
    """The capture server, whose mailbox is shown as ``/dev/mailbox`` shows it: the service runs
    one only on a loopback bind, or where the operator opted in by name
    (``OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK``), since every link of every email is in it."""
    return services.capture


def _centers(request: Request) -> dict[str, board.Center]:
    found: dict[str, board.Center] = request.app.state.console_centers
    return found


def _etag(session: Session, who: SignedIn, now: datetime, *parts: object) -> str:
    """Changes whenever the audit trail moves (every change the service makes is audited),
    the minute turns (ages and countdowns), the role asking differs (what it may do), or what
    is asked for differs."""
    minute = now.replace(second=0, microsecond=0)
    state = (audit.heads(session), minute, who.role, *parts)
    digest = hashlib.sha256(repr(state).encode()).hexdigest()[:32]
    return f'W/"{digest}"'


def _not_modified(request: Request, etag: str) -> bool:
    return request.headers.get("if-none-match") == etag


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=303)


@router.get("/favicon.ico")
def favicon() -> RedirectResponse:
    return RedirectResponse("/console/static/favicon.svg", status_code=301)


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    return static_response(name)


# --- signing in and out -------------------------------------------------------------------------


def _sign_in_page(
    request: Request,
    jar: Cookies,
    *,
    next_url: str,
    email: str = "",
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(
        "sign_in.html",
        status_code,
        **_frame(request, None),
        next_url=next_url,
        email=email,
        error=error,
        notice=notice,
        csrf_token=token,
    )
    jar.set_sign_in(response, token)
    return response


@router.get("/console/sign-in", response_class=HTMLResponse)
def sign_in_form(
    request: Request,
    jar: CookiesDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,
    signed_out: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    return _sign_in_page(
        request,
        jar,
        next_url=safe_next(next),
        notice="You are signed out." if signed_out else None,
    )


@router.post("/console/sign-in", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    services: ServicesDep,
    writer: WriterDep,
    jar: CookiesDep,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD_LENGTH)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    next_url = safe_next(next)
    address = nul_replaced(email.strip().lower())  # compared and recorded; no account holds a NUL
    expected = jar.sign_in_token(request)
    if not expected or not csrf_token or expected != csrf_token:
        return _sign_in_page(
            request,
            jar,
            next_url=next_url,
            email=address,
            error="The sign-in form had expired. Please sign in again.",
            status_code=403,
        )
    client = request.client.host if request.client else "unknown"
    now = services.clock.now()
    (wait, attempt), user = await writer.run(
        lambda session: (
            accounts.reserve_attempt(session, address, client, now),
            accounts.find_user(session, address),
        )
    )
    if attempt is None:
        assert wait is not None
        response = _sign_in_page(
            request,
            jar,
            next_url=next_url,
            email=address,
            error=f"Too many failed sign-ins. Try again in {max(1, round(wait / 60))} min.",
            status_code=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    async with services.password_checks:
        matches = await run_in_threadpool(
            accounts.password_matches, user.password_hash if user else None, password
        )
    if user is None or not matches or user.disabled_at is not None:
        await writer.run(lambda s: accounts.settle_attempt(s, attempt, "refused"))
        log.info("console sign-in refused", extra={"client": client})
        return _sign_in_page(
            request,
            jar,
            next_url=next_url,
            email=address,
            error="Email or password is wrong, or the account is disabled.",
            status_code=401,
        )
    signed_user = user

    def open_session(session: Session) -> str:
        accounts.settle_attempt(session, attempt, "signed_in")
        fresh = session.merge(signed_user)
        return accounts.start_session(
            session,
            fresh,
            now,
            client=client,
            user_agent=request.headers.get("user-agent"),
            password=password,
        )

    token = await writer.run(open_session)
    signed_in = RedirectResponse(next_url, status_code=303)
    jar.set_session(signed_in, token)
    jar.clear(signed_in, jar.sign_in_name)
    return signed_in


@router.post("/console/sign-out")
async def sign_out(
    who: FormUserDep, services: ServicesDep, writer: WriterDep, jar: CookiesDep
) -> Response:
    now = services.clock.now()
    await writer.run(lambda session: accounts.end_session(session, who, now))
    response = RedirectResponse("/console/sign-in?signed_out=true", status_code=303)
    jar.clear(response, jar.session_name)
    return response


# --- the board ----------------------------------------------------------------------------------


FilterQuery = Annotated[str | None, Query(max_length=100)]


def _filters(
    center: FilterQuery = None,
    status: FilterQuery = None,
    breached: FilterQuery = None,
    decision: FilterQuery = None,
) -> board.Filters:
    """The board's filters, from its query: the page and its live rows take the same ones."""
    chosen: IncidentStatus | None = None
    if status:
        try:
            chosen = IncidentStatus(status)
        except ValueError:
            known = ", ".join(IncidentStatus)
            raise PageError(
                422, "Unknown filter", f"status: {status!r} is not one of {known}"
            ) from None
    return board.Filters(center or None, chosen, bool(breached), bool(decision))


FiltersDep = Annotated[board.Filters, Depends(_filters)]


@router.get("/console", response_class=HTMLResponse)
def board_page(
    request: Request,
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
    filters: FiltersDep,
) -> HTMLResponse:
    now = services.clock.now()
    etag = _etag(session, who, now, "board", filters)
    return page(
        "board.html",
        **_frame(request, who, "board"),
        filters=filters,
        calls=call_tasks.list_call_tasks(session, now, status=call_tasks.CallTaskStatus.OPEN),
        rows=board.rows(session, filters, _centers(request), now),
        centers=sorted(_centers(request).items(), key=lambda c: c[1].name),
        statuses=list(IncidentStatus),
        etag=etag,
    )


@router.get("/console/board/rows", response_class=HTMLResponse)
def board_rows(
    request: Request,
    who: LiveUserDep,
    session: SessionDep,
    services: ServicesDep,
    filters: FiltersDep,
) -> Response:
    now = services.clock.now()
    etag = _etag(session, who, now, "board", filters)
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return fragment(
        "_board_rows.html",
        etag,
        rows=board.rows(session, filters, _centers(request), now),
        now=now,
        filters=filters,
    )


@router.post("/console/call-tasks/{call_task_id}/close")
async def close_call_task(
    call_task_id: str,
    request: Request,
    who: ActingUserDep,
    services: ServicesDep,
    writer: WriterDep,
) -> Response:
    """Record the call that closes a call task, from the board's form: the time reached is the
    center's local time, as the caller reads it on the task."""
    form = await request.form()
    now = services.clock.now()
    centers_now = _centers(request)
    try:
        found = await _read(services, lambda session: _call_task(session, call_task_id, now))
        zone = ZoneInfo(centers_now[found.center_id].timezone)
        fields: dict[str, Any] = {
            name: str(form[name])
            for name in ("reached_name", "reached_number", "outcome")
            if str(form.get(name, "")).strip()
        }
        reached = str(form.get("reached_at", "")).strip()
        if reached:
            fields["reached_at"] = datetime.fromisoformat(reached).replace(tzinfo=zone)
        record = call_tasks.CallTaskClose.model_validate({**fields, "closed_by": who.email})
        await writer.run(
            lambda session: call_tasks.close_call_task(session, call_task_id, record, now)
        )
    except ValidationError as invalid:
        named = ", ".join(str(e["loc"][0]).replace("_", " ") for e in invalid.errors())
        raise PageError(
            422,
            "Call not recorded",
            f"Say whom you reached, on which number, when, and the outcome ({named}: missing "
            "or invalid). Nothing was recorded: go back and complete the form.",
        ) from None
    except ValueError:
        raise PageError(422, "Call not recorded", "reached at: not a date and time") from None
    except ServiceError as error:
        raise PageError(error.status_code, "Call not recorded", error.message) from None
    return RedirectResponse(f"/console?called={call_task_id}", status_code=303)


def _call_task(session: Session, call_task_id: str, now: datetime) -> call_tasks.CallTaskOut:
    found = call_tasks.list_call_tasks(session, now, call_task_id=call_task_id)
    if not found:
        raise _not_found(f"No call task {call_task_id}.")
    return found[0]


# --- one incident -------------------------------------------------------------------------------


def _incident(session: Session, incident_id: str) -> Incident:
    found = session.get(Incident, incident_id)
    if found is None:
        raise _not_found(f"There is no incident {incident_id!r}.")
    return found


def _incident_etag(session: Session, who: SignedIn, now: datetime, found: Incident) -> str:
    """One tag for the incident page and its live part, which show the same incident."""
    return _etag(session, who, now, "incident", found.id)


def _incident_page(
    request: Request,
    who: SignedIn,
    session: Session,
    services: Services,
    found: Incident,
    *,
    error: ServiceError | None = None,
    posted: str | None = None,
    signed: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    now = services.clock.now()
    view = incident.load(session, found, now)
    etag = _incident_etag(session, who, now, found)
    return page(
        "incident.html",
        status_code,
        **_frame(request, who, "board"),
        view=view,
        etag=etag,
        event_id=incident.new_event_id(),
        dispositions=incident.DISPOSITION_CHOICES,
        disposition_labels=DISPOSITION_LABELS,
        pathways=services.agreements.at(session, services.clock.now()).manufacturer.oos_pathways,
        product_statuses=list(ProductStatus),
        error=error,
        posted=posted,
        signed=SIGNED_NOTICES.get(signed or ""),
        meanings=SIGNING_MEANINGS,
    )


SIGNED_NOTICES = {
    "proposed": "Your proposed revision is recorded, signed. It takes effect only when another "
    "QA user approves it; until then the decision in force stands.",
    "approved": "The revision is approved, signed, and in force; the center is being told.",
    "rejected": "The proposed revision is rejected, signed: it will not take effect.",
}
SIGNING_MEANINGS = {
    "propose": revisions.PROPOSE_MEANING,
    "approve": revisions.APPROVE_MEANING,
    "reject": revisions.REJECT_MEANING,
}


@router.get("/console/incidents/{incident_id}", response_class=HTMLResponse)
def incident_page(
    incident_id: str,
    request: Request,
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
    posted: Annotated[str | None, Query(max_length=40)] = None,
    signed: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    return _incident_page(
        request,
        who,
        session,
        services,
        _incident(session, incident_id),
        posted=posted,
        signed=signed,
    )


@router.get("/console/incidents/{incident_id}/live", response_class=HTMLResponse)
def incident_live(
    incident_id: str,
    request: Request,
    who: LiveUserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    found = _incident(session, incident_id)
    now = services.clock.now()
    etag = _incident_etag(session, who, now, found)
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return fragment("_incident_live.html", etag, view=incident.load(session, found, now), now=now)


@router.post("/console/incidents/{incident_id}/events", response_class=HTMLResponse)
async def post_follow_up(
    incident_id: str,
    request: Request,
    who: ActingUserDep,
    services: ServicesDep,
    writer: WriterDep,
    background: BackgroundTasks,
) -> Response:
    form = dict(await request.form())
    found = await _read(services, lambda session: _incident(session, incident_id))
    now = services.clock.now()
    try:
        event = incident.follow_up(found, form, now)
        if event.type is EventType.DISPOSITION and form.get("confirmed") != "1":
            return await _confirm_disposition(request, who, services, writer, found, event, form)
        result = await writer.run(
            lambda session: incident.post_follow_up(
                session,
                event,
                who,
                services.agreements.at(session, now),
                now,
                services.settings.mail_domain,
                services.template_versions,
            )
        )
    except ServiceError as error:
        return await _refused(request, who, services, incident_id, error)
    log.info(
        "follow-up %s posted from the console",
        event.type,
        extra={"incident_id": found.id, "event_id": event.event_id, "event_type": event.type},
    )
    if result.schedules_now and services.dispatcher is not None:
        background.add_task(services.dispatcher.wake)
    return RedirectResponse(
        f"/console/incidents/{found.id}?posted={event.type.value}", status_code=303
    )


async def _refused(
    request: Request, who: SignedIn, services: Services, incident_id: str, error: ServiceError
) -> HTMLResponse:
    """The incident page again, with why what was posted was refused (and its status code)."""
    return await _read(
        services,
        lambda session: _incident_page(
            request,
            who,
            session,
            services,
            _incident(session, incident_id),
            error=error,
            status_code=error.status_code,
        ),
    )


async def _signed_act(
    request: Request,
    who: SignedIn,
    services: Services,
    incident_id: str,
    password: str,
    act: Callable[[Session, Signer], object],
    done: str,
) -> Response:
    """A signed act from the incident page: the password re-entered is checked first, and the
    act recorded with the signature only if it is the account's; a refusal records nothing and
    shows the page again with the reason."""
    await _read(services, lambda session: _incident(session, incident_id))
    try:
        signer = await signing.password_signer(request, who, password, services)
        await Writer(services).run(lambda session: act(session, signer))
    except ServiceError as error:
        response = await _refused(request, who, services, incident_id, error)
        if isinstance(error, signing.NotSigned) and error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response
    return RedirectResponse(f"/console/incidents/{incident_id}?signed={done}", status_code=303)


@router.post("/console/incidents/{incident_id}/revisions", response_class=HTMLResponse)
async def propose_revision(
    incident_id: str,
    request: Request,
    who: ActingUserDep,
    services: ServicesDep,
    response: Annotated[str, Form(max_length=64)] = "",
    decided_by: Annotated[str, Form(max_length=200)] = "",
    reason: Annotated[str, Form(max_length=4000)] = "",
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD_LENGTH)] = "",
) -> Response:
    """Propose a revision of the decision, signed by the proposer; it waits for a second QA
    user's approval."""
    try:
        revision = revisions.DecisionRevisionIn.model_validate(
            {"response": response, "decided_by": decided_by, "reason": reason}
        )
    except ValidationError as invalid:
        named = ", ".join(str(e["loc"][0]).replace("_", " ") for e in invalid.errors())
        raise PageError(
            422,
            "Revision not proposed",
            f"Choose the decision and the decider and give the reason ({named}: missing or "
            "invalid). Nothing was recorded: go back and complete the form.",
        ) from None
    now = services.clock.now()
    return await _signed_act(
        request,
        who,
        services,
        incident_id,
        password,
        lambda session, signer: revisions.propose(
            session, incident_id, revision, now, signer=signer
        ),
        "proposed",
    )


@router.post(
    "/console/incidents/{incident_id}/revisions/{proposal_id}/approve",
    response_class=HTMLResponse,
)
async def approve_revision(
    incident_id: str,
    proposal_id: str,
    request: Request,
    who: ActingUserDep,
    services: ServicesDep,
    background: BackgroundTasks,
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD_LENGTH)] = "",
) -> Response:
    """Approve a proposed revision, signed: it takes effect and the center is told."""
    now = services.clock.now()
    answer = await _signed_act(
        request,
        who,
        services,
        incident_id,
        password,
        lambda session, signer: revisions.approve(
            session, incident_id, proposal_id, signer, now, services.settings.mail_domain
        ),
        "approved",
    )
    if answer.status_code == 303 and services.dispatcher is not None:
        background.add_task(services.dispatcher.wake)
    return answer


@router.post(
    "/console/incidents/{incident_id}/revisions/{proposal_id}/reject",
    response_class=HTMLResponse,
)
async def reject_revision(
    incident_id: str,
    proposal_id: str,
    request: Request,
    who: ActingUserDep,
    services: ServicesDep,
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD_LENGTH)] = "",
) -> Response:
    """Reject a proposed revision, signed: it never takes effect."""
    now = services.clock.now()
    return await _signed_act(
        request,
        who,
        services,
        incident_id,
        password,
        lambda session, signer: revisions.reject(session, incident_id, proposal_id, signer, now),
        "rejected",
    )


async def _confirm_disposition(
    request: Request,
    who: SignedIn,
    services: Services,
    writer: Writer,
    found: Incident,
    event: EventIn,
    form: dict[str, Any],
) -> HTMLResponse:
    """The step between choosing a disposition and recording it: what will be recorded and
    every message it sends, learnt by posting it and rolling back; the same form again, with
    ``confirmed``, records it."""
    try:
        await writer.run(
            lambda session: incident.rehearse(
                session,
                event,
                services.agreements.at(session, services.clock.now()),
                services.clock.now(),
                services.settings.mail_domain,
                services.template_versions,
            )
        )
    except incident.Rehearsed as done:
        rehearsal = done.rehearsal
    else:
        raise AssertionError("a rehearsal always rolls back")
    return page(
        "confirm_disposition.html",
        **_frame(request, who, "board"),
        incident=found,
        event=event,
        rehearsal=rehearsal,
        timezone=EffectiveAgreement.stored(found.agreement).timezone,
        fields=[(k, str(v)) for k, v in form.items() if k not in ("csrf_token", "confirmed")],
    )


def _notification(
    session: Session, incident_id: str, notification_id: str
) -> tuple[Incident, Notification]:
    """The incident and one of its notifications; a notification of another incident is not
    found under this one."""
    found = _incident(session, incident_id)
    row = session.get(Notification, notification_id)
    if row is None or row.incident_id != found.id:
        raise _not_found(f"Incident {found.incident_ref} has no notification {notification_id!r}.")
    return found, row


def _notification_page(
    template: str,
    request: Request,
    who: SignedIn,
    found: Incident,
    row: Notification,
    **context: Any,
) -> HTMLResponse:
    """A page about one notification of an incident, its step named, in the center's zone."""
    return page(
        template,
        **_frame(request, who, "board"),
        incident=found,
        n=row,
        step=incident.step_name(row.kind, row.level),
        timezone=EffectiveAgreement.stored(found.agreement).timezone,
        **context,
    )


@router.get(
    "/console/incidents/{incident_id}/notifications/{notification_id}",
    response_class=HTMLResponse,
)
def email_preview(
    incident_id: str,
    notification_id: str,
    request: Request,
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
) -> HTMLResponse:
    found, row = _notification(session, incident_id, notification_id)
    message, problem = None, None
    try:
        message = incident.preview(
            session, found, row, services.renderer, services.settings, services.clock.now()
        )
    except RenderError as error:
        problem = str(error)
    return _notification_page(
        "preview.html", request, who, found, row, message=message, problem=problem
    )


@router.get("/console/incidents/{incident_id}/notifications/{notification_id}/html")
def email_preview_html(
    incident_id: str,
    notification_id: str,
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    found, row = _notification(session, incident_id, notification_id)
    try:
        message = incident.preview(
            session, found, row, services.renderer, services.settings, services.clock.now()
        )
    except RenderError as error:
        raise PageError(422, "This email cannot be rendered", str(error)) from None
    return _email_html(message.html)


@router.get(
    "/console/incidents/{incident_id}/notifications/{notification_id}/sent",
    response_class=HTMLResponse,
)
def sent_message(
    incident_id: str,
    notification_id: str,
    request: Request,
    who: UserDep,
    session: SessionDep,
) -> HTMLResponse:
    found, row = _notification(session, incident_id, notification_id)
    return _notification_page("sent.html", request, who, found, row, view=sent.load(session, row))


def _kept(session: Session, incident_id: str, notification_id: str) -> tuple[Incident, sent.Kept]:
    found, row = _notification(session, incident_id, notification_id)
    kept = sent.load(session, row).kept
    if kept is None:
        raise _not_found(f"No message was kept for notification {notification_id!r}.")
    return found, kept


@router.get("/console/incidents/{incident_id}/notifications/{notification_id}/sent/html")
def sent_message_html(
    incident_id: str, notification_id: str, who: UserDep, session: SessionDep
) -> Response:
    _, kept = _kept(session, incident_id, notification_id)
    return _email_html(kept.html)


@router.get("/console/incidents/{incident_id}/notifications/{notification_id}/sent.eml")
def sent_message_source(
    incident_id: str, notification_id: str, who: UserDep, session: SessionDep
) -> Response:
    """The message byte for byte as the mail server accepted it (its confirmation links masked),
    for a mail client to open."""
    _, kept = _kept(session, incident_id, notification_id)
    return Response(
        kept.raw,
        media_type="message/rfc822",
        headers={
            "Content-Disposition": f'attachment; filename="message-{notification_id}.eml"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _email_html(html: str, links_work: bool = False) -> HTMLResponse:
    """An email's HTML part for a frame; in the mailbox its links open (as the mail they are)."""
    policy = EMAIL_CSP + (
        " allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
        if links_work
        else ""
    )
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": policy,
            "X-Frame-Options": "SAMEORIGIN",
            "Cache-Control": "no-store",
        },
    )


_T = TypeVar("_T")


async def _export(
    services: Services,
    writer: Writer,
    who: SignedIn,
    incident_id: str,
    form: str,
    make: Callable[[record.IncidentRecord], _T],
) -> _T:
    """The record made into a document by ``make``, audited only once it could be made: it is
    made first from the trail as it stands, and nothing is written if that fails; then its
    export is audited and it is made again, now holding that entry and the digest up to it."""
    now = services.clock.now()
    found = await _read(services, lambda session: _incident(session, incident_id))
    await _read(services, lambda session: make(record.build(session, found, who.email, now)))
    await writer.run(lambda session: record.note_export(session, found, who.email, form, now))
    return await _read(services, lambda session: make(record.build(session, found, who.email, now)))


async def _read(services: Services, work: Callable[[Session], _T]) -> _T:
    """Reads for an ``async`` route, in a worker thread, so that the event loop serves other
    requests (acknowledgement pages among them) while the database answers."""

    def in_session() -> _T:
        with Session(services.engine) as session:
            return work(session)

    return await run_in_threadpool(in_session)


@router.get("/console/incidents/{incident_id}/record", response_class=HTMLResponse)
async def record_page(
    incident_id: str,
    request: Request,
    who: UserDep,
    services: ServicesDep,
    writer: WriterDep,
) -> HTMLResponse:
    frame = _frame(request, who, "board")
    return await _export(
        services,
        writer,
        who,
        incident_id,
        "html",
        lambda made: page(
            "record.html",
            **frame,
            record=made,
            detail_text=record.detail_text,
            step_name=incident.step_name,
        ),
    )


@router.get("/console/incidents/{incident_id}/record.pdf")
async def record_pdf(
    incident_id: str, who: UserDep, services: ServicesDep, writer: WriterDep
) -> Response:
    ref, body = await _export(
        services,
        writer,
        who,
        incident_id,
        "pdf",
        lambda made: (made.view.incident.incident_ref, record.pdf(made)),
    )
    name = f"incident-record-{ref}.pdf"
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


# --- centers --------------------------------------------------------------------------------------


@router.get("/console/centers", response_class=HTMLResponse)
def centers_page(request: Request, who: UserDep, services: ServicesDep) -> HTMLResponse:
    agreements = services.agreements.now(services.clock.now())
    systems = [
        (system, [agreements.effective(site.id) for site in system.sites])
        for system in agreements.health_systems.values()
    ]
    return page("centers.html", **_frame(request, who, "centers"), systems=systems)


@router.get("/console/centers/agreements/history", response_class=HTMLResponse)
def agreement_history_page(
    request: Request, who: UserDep, session: SessionDep, services: ServicesDep
) -> HTMLResponse:
    """Every version of the agreements, who proposed and approved it, and its diff."""
    now = services.clock.now()
    return page(
        "agreement_history.html",
        **_frame(request, who, "centers"),
        versions=agreement_versions.history(session),
        in_force=agreement_versions.in_force(session, now),
        baseline=agreement_versions.INSTALLATION,
        baseline_note=agreement_versions.BASELINE_NOTE,
        short=agreement_versions.short,
    )


KeyDateQuery = Annotated[date | None, Query(ge=date(2000, 1, 1), le=date(2100, 12, 31))]
"""A key date as events accept it: outside these years planning cannot count back from it."""


@router.get("/console/centers/{center_id}", response_class=HTMLResponse)
def center_page(
    center_id: str,
    request: Request,
    who: UserDep,
    services: ServicesDep,
    event_type: Annotated[EventType, Query()] = EventType.RELEASE_FAILURE,
    severity: Annotated[Severity, Query()] = Severity.MAJOR,
    lymphodepletion_start: KeyDateQuery = None,
    planned_infusion: KeyDateQuery = None,
) -> HTMLResponse:
    now = services.clock.now()
    agreements = services.agreements.now(now)
    if center_id not in agreements.center_ids():
        raise _not_found(f"There is no center {center_id!r} in the agreements.")
    agreement = agreements.effective(center_id)
    key_dates = {
        key: day
        for key, day in (
            (KeyDate.LYMPHODEPLETION_START, lymphodepletion_start),
            (KeyDate.PLANNED_INFUSION, planned_infusion),
        )
        if day is not None
    }
    if event_type not in (EventType.RELEASE_FAILURE, EventType.LATE_RESULT):
        event_type = EventType.RELEASE_FAILURE
    return page(
        "center.html",
        **_frame(request, who, "centers"),
        agreement=agreement,
        contacts=centers.contacts_by_role(agreement),
        manufacturer_contacts=centers.manufacturer_contacts(agreement),
        days_off=centers.days_off(agreement, now.astimezone(ZoneInfo(agreement.timezone)).date()),
        timing=centers.timing,
        what_if=centers.what_if(agreement, event_type, severity, key_dates, now),
        key_date_labels=KEY_DATE_LABELS,
        severities=list(Severity),
    )


# --- reports --------------------------------------------------------------------------------------


MonthsQuery = Annotated[int, Query(ge=1, le=36)]


@router.get("/console/reports", response_class=HTMLResponse)
def reports_page(
    request: Request,
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
    months: MonthsQuery = 12,
) -> HTMLResponse:
    now = services.clock.now()
    since = reports.months_back(now, months)
    confirming = reports.time_to_confirm(session, _centers(request), since)
    promises = reports.promises_by_month(session, since, now)
    hours = [
        (
            c.center_name,
            [
                (
                    None if c.median is None else c.median.total_seconds() / 3600,
                    _duration(c.median),
                ),
                (None if c.p90 is None else c.p90.total_seconds() / 3600, _duration(c.p90)),
            ],
        )
        for c in confirming
    ]
    return page(
        "reports.html",
        **_frame(request, who, "reports"),
        months=months,
        month_choices=reports.MONTH_CHOICES,
        since=since,
        confirming=confirming,
        promises=promises,
        confirm_chart=horizontal_bars(hours, ["median", "90th percentile"]),
        promise_chart=percent_columns([(month(m.month), m.share_met) for m in promises]),
        drills=drills.drills(session, since, now),
    )


def _duration(delta: timedelta | None) -> str:
    return span(delta) if delta is not None else "none confirmed"


def _csv(text: str, name: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/console/reports/time-to-confirm.csv")
def confirming_csv(
    request: Request,
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
    months: MonthsQuery = 12,
) -> Response:
    since = reports.months_back(services.clock.now(), months)
    confirming = reports.time_to_confirm(session, _centers(request), since)
    return _csv(reports.confirming_csv(confirming), "time-to-confirm.csv")


@router.get("/console/reports/notify-within.csv")
def promises_csv(
    who: UserDep,
    session: SessionDep,
    services: ServicesDep,
    months: MonthsQuery = 12,
) -> Response:
    now = services.clock.now()
    promises = reports.promises_by_month(session, reports.months_back(now, months), now)
    return _csv(reports.promises_csv(promises), "notify-within.csv")


# --- the dev mailbox ------------------------------------------------------------------------------


def _mailbox(services: Services) -> CaptureServer:
    capture = _capture(services)
    if capture is None:
        raise _not_found("The mailbox exists only while the embedded capture server is in use.")
    return capture


@router.get("/console/mailbox", response_class=HTMLResponse)
def mailbox_page(request: Request, who: UserDep, services: ServicesDep) -> HTMLResponse:
    capture = _mailbox(services)
    return page(
        "mailbox.html",
        **_frame(request, who, "mailbox"),
        messages=list(reversed(capture.handler.messages()))[:MAILBOX_SHOWN],
        shown=MAILBOX_SHOWN,
        host=capture.host,
        port=capture.port,
    )


@router.get("/console/mailbox/{number}", response_class=HTMLResponse)
def mailbox_message(
    number: int, request: Request, who: UserDep, services: ServicesDep
) -> HTMLResponse:
    captured = _mailbox(services).handler.get(number)
    if captured is None:
        raise _not_found(f"There is no captured message {number}.")
    shown = ("From", "To", "Date", "Message-ID", "In-Reply-To", "Auto-Submitted")
    return page(
        "mailbox_message.html",
        **_frame(request, who, "mailbox"),
        m=captured,
        headers=[(h, captured.message[h]) for h in shown if captured.message[h]],
        text=captured.part("plain"),
        links=list(dict.fromkeys(_LINK.findall(captured.part("plain")))),
    )


@router.get("/console/mailbox/{number}/html")
def mailbox_message_html(number: int, who: UserDep, services: ServicesDep) -> Response:
    captured = _mailbox(services).handler.get(number)
    if captured is None:
        raise _not_found(f"There is no captured message {number}.")
    return _email_html(captured.part("html"), links_work=True)
