"""The FastAPI application: wiring of settings, database, agreements, renderer and dispatcher."""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine

from oos_notify import __version__, config_check, template_sets
from oos_notify.acknowledgement import AckTokens
from oos_notify.agreements import Agreements, ConfigError, ConfigProblem
from oos_notify.capture import CaptureServer
from oos_notify.clock import Clock, SystemClock
from oos_notify.db import create_schema, make_engine, transaction, write_gate
from oos_notify.dispatch import Dispatcher
from oos_notify.errors import ServiceError
from oos_notify.limits import BodySizeLimit, TokenBuckets
from oos_notify.models import ServiceValue
from oos_notify.pages import SecurityHeaders
from oos_notify.rendering import Renderer
from oos_notify.settings import Settings

log = logging.getLogger(__name__)

_ECHO_ENCODERS: dict[Any, Callable[[Any], Any]] = {
    bytes: lambda raw: raw.decode("utf-8", "replace"),
    float: lambda number: number if math.isfinite(number) else str(number),
}
"""How a 422 echoes input that JSON cannot carry: a raw non-UTF-8 body, NaN and infinities."""


@dataclass
class Services:
    """What the routes and the dispatcher share for the life of the app."""

    settings: Settings
    engine: Engine
    agreements: Agreements
    renderer: Renderer
    tokens: AckTokens
    clock: Clock
    write_gate: AbstractAsyncContextManager[object]
    events_limit: TokenBuckets
    template_versions: Mapping[str, str] = field(default_factory=dict)
    """Each center's template set as of start-up: what a new incident is rendered with."""
    dispatcher: Dispatcher | None = None
    capture: CaptureServer | None = field(default=None)


def secret_key(settings: Settings, engine: Engine) -> str:
    """The signing key: configured, or generated once and kept in the database for local use."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if not settings.uses_capture_server:
        raise ConfigError(
            [
                ConfigProblem(
                    "environment",
                    "OOS_NOTIFY_SECRET_KEY",
                    "required when a real SMTP server is configured",
                )
            ]
        )
    with transaction(engine) as session:
        stored = session.get(ServiceValue, "secret_key")
        if stored is None:
            stored = ServiceValue(name="secret_key", value=secrets.token_urlsafe(48))
            session.add(stored)
        return stored.value


TEMPLATE_CHECK = "template_check_passed"
"""The ``config_check.inputs_digest`` of the files and code that last passed the template check."""


def check_templates(
    engine: Engine, settings: Settings, agreements: Agreements, renderer: Renderer
) -> None:
    """Render every template for every center, as ``check-config`` does, unless these very files
    and this code passed the check before: with a hundred sites that takes seconds, and a
    restart should not keep pending notifications waiting for it."""
    digest = config_check.inputs_digest(settings.config_dir, settings.templates_dir)
    with transaction(engine) as session:
        passed = session.get(ServiceValue, TEMPLATE_CHECK)
        if passed is not None and passed.value == digest:
            log.info("config and templates unchanged since they passed the check: not rendered")
            return
    config_check.check_templates(agreements, renderer)
    with transaction(engine) as session:
        session.merge(ServiceValue(name=TEMPLATE_CHECK, value=digest))


def build_services(settings: Settings, clock: Clock) -> Services:
    """Check the config and open the database; raise ConfigError before anything starts."""
    agreements, renderer = config_check.load(settings.config_dir, settings.templates_dir)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    check_templates(engine, settings, agreements, renderer)
    tokens = AckTokens(secret_key(settings, engine))
    versions = template_sets.record(engine, renderer, agreements, clock.now())
    renderer.keep_snapshots(template_sets.source(engine))
    gate = write_gate(engine)
    events_limit = TokenBuckets(settings.events_per_minute, settings.events_burst)
    return Services(
        settings, engine, agreements, renderer, tokens, clock, gate, events_limit, versions
    )


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """The app; config errors raise here, before the server accepts a connection."""
    settings = settings or Settings()
    services = build_services(settings, clock or SystemClock())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.uses_capture_server:
            services.capture = CaptureServer().start()
            host, port = services.capture.host, services.capture.port
            log.info(
                "no SMTP server configured: capturing mail on %s:%d, see /dev/mailbox", host, port
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
        )
        await services.dispatcher.start()
        try:
            yield
        finally:
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
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's usual 422, encodable whatever the client sent: NaN, lone surrogates, bytes."""
        detail = jsonable_encoder(exc.errors(), custom_encoder=_ECHO_ENCODERS)
        # ensure_ascii writes a lone surrogate as \udXXX instead of failing to encode it as UTF-8
        content = json.dumps({"detail": detail}, ensure_ascii=True, allow_nan=False)
        return Response(content, status_code=422, media_type="application/json")

    from oos_notify.api import ack, events, health, incidents, mailbox

    app.include_router(events.router)
    app.include_router(incidents.router)
    app.include_router(ack.router)
    app.include_router(health.router)
    app.include_router(mailbox.router)
    return app
