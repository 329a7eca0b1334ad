"""The FastAPI application: the services, the routers, the middleware and the dispatcher's life,
for a process that answers requests, sends mail, or both."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from oos_notify import __version__
from oos_notify.clock import Clock, SystemClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.delivery.dispatch import Dispatcher
from oos_notify.errors import ServiceError
from oos_notify.inbound.service import InboundMail
from oos_notify.settings import InboundMode, Settings
from oos_notify.store.outages import availability
from oos_notify.store.wakeups import Listener
from oos_notify.web.limits import BodySizeLimit, NoNulInAddress, RateLimited
from oos_notify.web.outage import AnswerWhileDatabaseAway
from oos_notify.web.pages import SecurityHeaders, page
from oos_notify.web.services import Role, build_services

log = logging.getLogger(__name__)

_ECHO_ENCODERS: dict[Any, Callable[[Any], Any]] = {
    bytes: lambda raw: raw.decode("utf-8", "replace"),
    float: lambda number: number if math.isfinite(number) else str(number),
}
"""How a 422 echoes input that JSON cannot carry: a raw non-UTF-8 body, NaN and infinities."""


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, role: Role = Role.SERVE
) -> FastAPI:
    """The app for a role; config errors raise here, before the server accepts a connection."""
    settings = settings or Settings()
    services = build_services(settings, clock or SystemClock(), role)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not role.sends:
            try:
                yield
            finally:
                services.engine.dispose()
            return
        if settings.uses_capture_server:
            services.capture = CaptureServer().start()
            host, port = services.capture.host, services.capture.port
            log.info(
                "no SMTP server configured: capturing mail on %s:%d, see /dev/mailbox", host, port
            )
            if not settings.listens_on_loopback:
                log.warning(
                    "OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK is set: /dev/mailbox shows every email, "
                    "links included, to whoever reaches %s:%d; for development only",
                    settings.host,
                    settings.port,
                )
        else:
            assert settings.smtp_host is not None
            host, port = settings.smtp_host, settings.effective_smtp_port
        services.dispatcher = Dispatcher(
            services.engine,
            services.write_gate,
            services.clock,
            settings,
            services.renderer,
            services.tokens,
            host,
            port,
            services.return_addresses,
            services.signer,
        )
        await services.dispatcher.start()
        listener = None
        if services.engine.dialect.name == "postgresql":
            listener = Listener(
                services.engine.url, services.dispatcher.wake, availability(services.engine)
            )
            listener.start()
        if services.return_addresses is not None and settings.inbound is not InboundMode.NONE:
            services.inbound = InboundMail(
                settings,
                services.engine,
                services.clock,
                services.write_gate,
                services.return_addresses,
                services.tokens,
                services.dispatcher.wake,
            )
            await services.inbound.start()
        elif services.return_addresses is not None:
            log.warning(
                "replies and bounces go to %s, but OOS_NOTIFY_INBOUND is none: this process "
                "reads none of them",
                settings.reply_domain,
            )
        try:
            yield
        finally:
            if services.inbound is not None:
                await services.inbound.stop()
            if listener is not None:
                await listener.stop()
            await services.dispatcher.stop()
            if services.capture is not None:
                services.capture.stop()
            services.engine.dispose()

    app = FastAPI(
        title="oos-notify",
        version=__version__,
        summary="Out-of-specification notifications for cell and gene therapy lots.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(NoNulInAddress)
    app.add_middleware(SecurityHeaders)
    # Added last, so outermost: an unreachable database met by any middleware is a 503 too.
    app.add_middleware(AnswerWhileDatabaseAway, services=services)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code)

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> HTMLResponse:
        """A limit met on a page (the acknowledgement links): a person reads when to come back.
        The API's limits answer in JSON themselves."""
        response = page(
            "message.html",
            429,
            title="Too many requests",
            message="Too many requests came from your network in the last minute. "
            f"Please try again in {exc.retry_after} seconds: your link still works.",
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's usual 422, encodable whatever the client sent: NaN, lone surrogates, bytes."""
        detail = jsonable_encoder(exc.errors(), custom_encoder=_ECHO_ENCODERS)
        # ensure_ascii writes a lone surrogate as \udXXX instead of failing to encode it as UTF-8
        content = json.dumps({"detail": detail}, ensure_ascii=True, allow_nan=False)
        return Response(content, status_code=422, media_type="application/json")

    from oos_notify.web.api import ack, call_tasks, events, health, incidents, mailbox, passkeys
    from oos_notify.web.console import routes as console

    if role.answers:
        app.include_router(events.router)
        app.include_router(incidents.router)
        app.include_router(call_tasks.router)
        app.include_router(ack.router)
        app.include_router(passkeys.router)
    app.include_router(health.router)
    if role.sends:
        app.include_router(mailbox.router)  # the capture server lives beside the dispatcher
    if role.answers:
        console.install(app)
    return app
