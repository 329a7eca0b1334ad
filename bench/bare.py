"""The baseline server: FastAPI endpoints that validate what the service's endpoints validate and
answer at once, served by uvicorn exactly as ``oos-notify serve`` is (same logging, access log).

    python -m bench.bare        # listens on OOS_NOTIFY_PORT

The ratio of the service to this says what the service's own work costs on top of the framework.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import uvicorn
from fastapi import FastAPI, Form, status
from fastapi.responses import HTMLResponse

from oos_notify.incidents.acknowledgement import AckForm
from oos_notify.incidents.events import EventIn

app = FastAPI(title="oos-notify bare baseline")


@app.post("/v1/events", status_code=status.HTTP_202_ACCEPTED)
def post_event(event: EventIn) -> dict[str, str]:
    return {"event_id": event.event_id}


@app.post("/ack/{token}", response_class=HTMLResponse)
def confirm(
    token: str,
    response: Annotated[str, Form()] = "received",
    comment: Annotated[str, Form()] = "",
) -> HTMLResponse:
    form = AckForm.model_validate({"response": response, "comment": comment})
    return HTMLResponse(f"<p>Thank you: {form.response}</p>")


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ready"}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    port = int(os.environ["OOS_NOTIFY_PORT"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", log_config=None)


if __name__ == "__main__":
    main()
