"""Answering while the database is away: a request that meets an unreachable database anywhere
(a route, a dependency, a middleware) gets 503 with ``Retry-After`` instead of a 500 and a
traceback: JSON for the API, a page for people (acknowledgement links, the console). The outage
itself is logged once, when it begins and when it ends (``store.outages``)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oos_notify.store.outages import RETRY_AFTER_SECONDS, availability, unreachable
from oos_notify.web.pages import BASELINE_HEADERS, page
from oos_notify.web.services import Services

_PAGES = ("/ack/", "/console", "/dev/")
"""Where people, not programs, read the answer."""
_API_DETAIL = f"the service cannot reach its database; retry after {RETRY_AFTER_SECONDS} s"


class AnswerWhileDatabaseAway:
    """Turns an unreachable database into a 503 with ``Retry-After``. It must be the outermost
    middleware, so that the errors of every other one reach it. A response already begun (a
    streamed body) cannot be changed and is left to fail as it would."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started or not unreachable(exc):
                raise
            availability(self._services.engine).lost(exc)
            await unavailable(scope["path"])(scope, receive, send)


def unavailable(path: str) -> Response:
    """The 503 for a request to ``path``."""
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if path == "/" or path.startswith(_PAGES):
        link = path.startswith("/ack/")
        response: Response = page(
            "message.html",
            503,
            title="Please try again in a minute",
            message="The service cannot reach its database just now, so this page can neither "
            "be shown nor record an answer. "
            + (
                "Your link still works: open it again in a minute. If you had sent an answer "
                "and it was recorded before the interruption, the page will say so."
                if link
                else "Nothing was changed unless the page says so once it is back."
            ),
        )
        response.headers.update(retry)
        return response
    return JSONResponse(
        {"detail": _API_DETAIL}, status_code=503, headers={**BASELINE_HEADERS, **retry}
    )
