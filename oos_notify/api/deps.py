"""Typed dependencies, defined once so every route's signature says what it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from oos_notify import apikeys
from oos_notify.app import Services
from oos_notify.limits import RateLimited
from oos_notify.models import ApiKey


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[Session]:
    """One transaction per request, committed before the response is sent.

    The request waits its turn at the write gate here, on the event loop, holding no thread.
    """
    async with services.write_gate:
        with Session(services.engine, expire_on_commit=False) as session:
            try:
                yield session
                await run_in_threadpool(session.commit)
            except BaseException:
                await run_in_threadpool(session.rollback)
                raise


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key from `oos-notify apikey create`")


def require_api_key(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers=challenge,
        )
    key = apikeys.authenticate(session, credentials.credentials)
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers=challenge
        )
    return key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


def limit_event_rate(key: ApiKeyDep, services: ServicesDep) -> ApiKey:
    """The key, if it has events left in its bucket; 429 with Retry-After otherwise."""
    try:
        services.events_limit.take(key.id, services.clock.now())
    except RateLimited as limited:
        settings = services.settings
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many events for API key {key.name!r}: at most {settings.events_per_minute:g} "
            f"a minute, in bursts of up to {settings.events_burst}; "
            f"retry after {limited.retry_after} s",
            headers={"Retry-After": str(limited.retry_after)},
        ) from None
    return key


RateLimitedKeyDep = Annotated[ApiKey, Depends(limit_event_rate)]
