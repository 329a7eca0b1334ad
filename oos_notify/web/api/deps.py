"""Typed dependencies, defined once so every route's signature says what it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from oos_notify.store import apikeys
from oos_notify.store.db import reads, transaction
from oos_notify.store.models import ApiKey
from oos_notify.web.limits import RateLimited, client_key
from oos_notify.web.services import Services

_T = TypeVar("_T")


async def get_services(request: Request) -> Services:
    """Async, as every dependency that does no I/O: FastAPI runs a plain ``def`` dependency in a
    worker thread, a round trip through the thread pool on every request."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[Session]:
    """A session for reading. Writes go through ``WriterDep``: on SQLite readers never wait for
    the writer (WAL), so a page or a listing does not queue behind a burst of events."""
    with Session(services.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


class Writer:
    """Runs a request's writes as one transaction, committed before the response is sent."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def run(self, work: Callable[[Session], _T]) -> _T:
        """Wait for this request's turn at the write gate on the event loop, holding no thread,
        then do all of the transaction, commit included, in one worker thread: the gate is held
        for the database work alone, not for the event loop's round trips between steps."""
        async with self._services.write_gate:
            return await run_in_threadpool(self._transaction, work)

    def _transaction(self, work: Callable[[Session], _T]) -> _T:
        with transaction(self._services.engine) as session:
            return work(session)


async def get_writer(services: ServicesDep) -> Writer:
    return Writer(services)


WriterDep = Annotated[Writer, Depends(get_writer)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `oos-notify apikey create`")


def client_of(request: Request) -> str:
    return client_key(request.client.host if request.client else None)


def _too_many_failures(services: Services, client: str, limited: RateLimited) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"too many failed authentications from {client}: at most "
        f"{services.settings.auth_failures_per_minute} a minute; "
        f"retry after {limited.retry_after} s",
        headers={"Retry-After": str(limited.retry_after)},
    )


def require_api_key(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The presented key. A client that failed too often is refused before its key is looked
    up, whatever it presents: a flood of wrong keys costs a dictionary lookup, not a query."""
    client = client_of(request)
    now = services.clock.now()
    try:
        services.auth_failures.check(client, now)
    except RateLimited as limited:
        raise _too_many_failures(services, client, limited) from None
    presented = (
        credentials.credentials
        if credentials is not None and credentials.scheme.lower() == "bearer"
        else None
    )
    if presented is not None:
        key = services.live_keys.get(presented, now)
        if key is not None:
            return key
        # A session of its own, closed at once: a request waiting for its turn to write must
        # not hold a pooled connection, or a burst empties the pool that the gate's holder needs.
        with reads(services.engine) as session:
            key = apikeys.authenticate(session, presented)
        if key is not None:
            services.live_keys.keep(presented, key, now)
            return key
    # Another request may have spent the client's last token since the check: this one still
    # gets its 401, the next its 429.
    with suppress(RateLimited):
        services.auth_failures.take(client, now)
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "unknown or revoked API key"
        if presented is not None
        else "missing API key: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


async def limit_event_rate(key: ApiKeyDep, services: ServicesDep) -> ApiKey:
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


async def limit_ack_requests(request: Request, services: ServicesDep) -> None:
    """Count a request to an acknowledgement link against its client. Beyond the limit this
    raises RateLimited, which the app answers with a page (a person follows these links)."""
    services.ack_requests.take(client_of(request), services.clock.now())
