"""Server-rendered pages (acknowledgement, dev mailbox): autoescaped, strict security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    # The pages ship with the service: each is compiled once, not checked on disk per request.
    auto_reload=False,
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The acknowledgement token is in the URL: never hand it to another site as a referrer.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


SCRIPT_CSP = "script-src 'self'; connect-src 'self'; "
"""What a page that runs the service's own script adds (passkeys need JavaScript): scripts and
requests to this origin only, never inline."""


def page(
    template: str, status_code: int = 200, *, scripts: bool = False, **context: Any
) -> HTMLResponse:
    html = _environment.get_template(template).render(**context)
    headers = dict(SECURITY_HEADERS)
    if scripts:
        headers["Content-Security-Policy"] = SCRIPT_CSP + headers["Content-Security-Policy"]
    return HTMLResponse(html, status_code=status_code, headers=headers)


BASELINE_HEADERS = {
    name: SECURITY_HEADERS[name]
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")
}
"""What every response carries, the JSON API and FastAPI's /docs included."""


class SecurityHeaders:
    """Adds the baseline headers to every response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASELINE_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
