"""The console's pages: Jinja2, autoescaped, under a policy that runs only the service's own
script and stylesheet, and the static files themselves, named by content so they can be cached."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from oos_notify.web.console import fmt

HERE = Path(__file__).parent

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
"""The acknowledgement pages' policy, opened only as far as the console's own files need:
its script and stylesheet, the live refreshes (connect), and email previews framed from itself."""

EMAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
    "sandbox allow-same-origin"
)
"""An email's HTML part shown in a frame: its inline styles apply, nothing in it runs; it keeps
the console's origin so that the console's script can size the frame to show it whole."""

PAGE_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    version: str


def _static_files() -> dict[str, StaticFile]:
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    files = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.suffix in types:
            body = path.read_bytes()
            files[path.name] = StaticFile(
                body, types[path.suffix], hashlib.sha256(body).hexdigest()[:12]
            )
    return files


STATIC = _static_files()


def static_url(name: str) -> str:
    """A static file's URL with its content hash: a new release is never served a stale copy."""
    return f"/console/static/{name}?v={STATIC[name].version}"


def static_response(name: str) -> Response:
    found = STATIC.get(name)
    if found is None:
        return Response(status_code=404)
    return Response(
        found.body,
        media_type=found.media_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


_environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.globals["static_url"] = static_url
_environment.filters.update(
    in_zone=fmt.instant,
    when=fmt.when,
    day=fmt.day,
    month=fmt.month,
    person=fmt.person,
    status=fmt.status,
    clock_in_zone=fmt.clock_in_zone,
    zoned=fmt.zoned,
    iso=fmt.iso,
    span=fmt.span,
    words=fmt.words,
    sentence=fmt.sentence,
    role=fmt.role,
    answer=fmt.answer,
)
_environment.globals["relative"] = fmt.relative
_environment.globals["days_until"] = fmt.days_until


def render(template: str, **context: Any) -> str:
    return _environment.get_template(template).render(**context)


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(template, **context), status_code=status_code, headers=PAGE_HEADERS)


def fragment(template: str, etag: str, **context: Any) -> HTMLResponse:
    """A live region's new content, tagged so an unchanged one answers 304 next time."""
    headers = {**PAGE_HEADERS, "ETag": etag}
    return HTMLResponse(render(template, **context), headers=headers)
