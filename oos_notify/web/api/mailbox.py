"""``/dev/mailbox``: what the embedded capture server received, served only while it is in use.

The service starts with the capture server only on a loopback bind, or when the operator set
``OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK`` (see ``services.refuse_exposed_mailbox``): this page shows
every email, acknowledgement links included.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from oos_notify.delivery.capture import CaptureServer
from oos_notify.web.api.deps import ServicesDep
from oos_notify.web.pages import page

router = APIRouter(prefix="/dev/mailbox", tags=["development"], include_in_schema=False)

_LINK = re.compile(r"https?://[^\s<>\"']+")
_SHOWN_HEADERS = ("From", "To", "Date", "Message-ID", "In-Reply-To", "Auto-Submitted")


def _capture(services: ServicesDep) -> CaptureServer:
    if services.capture is None:
        raise HTTPException(
            404, "the mailbox exists only while the embedded capture server is in use"
        )
    return services.capture


@router.get("", response_class=HTMLResponse)
def mailbox(services: ServicesDep) -> HTMLResponse:
    capture = _capture(services)
    messages = list(reversed(capture.handler.messages()))
    return page("mailbox.html", messages=messages, host=capture.host, port=capture.port)


@router.get("/{number}", response_class=HTMLResponse)
def message(number: int, services: ServicesDep) -> HTMLResponse:
    captured = _capture(services).handler.get(number)
    if captured is None:
        raise HTTPException(404, f"no captured message {number}")
    text = captured.part("plain")
    return page(
        "mailbox_message.html",
        m=captured,
        headers=[(h, captured.message[h]) for h in _SHOWN_HEADERS if captured.message[h]],
        text=text,
        html=captured.part("html"),
        links=list(dict.fromkeys(_LINK.findall(text))),
    )
