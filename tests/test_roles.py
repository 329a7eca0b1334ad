"""What each process runs: ``oos-notify api`` answers the API, the acknowledgement pages and the
console, and sends nothing nor reads returned mail; ``oos-notify worker`` sends and reads
returned mail, and answers only its operations pages. ``serve`` does all of it (as the rest of
the suite shows)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer, free_port
from oos_notify.settings import Settings
from oos_notify.web.services import Role
from tests.conftest import release_failure, service_settings, start_service


def with_returned_mail(tmp_path: Path, smtp: CaptureServer) -> Settings:
    return service_settings(
        tmp_path,
        smtp,
        reply_domain="reply.manufacturer.example",
        inbound="smtp",
        inbound_smtp_port=free_port(),
    )


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_an_api_process_answers_and_the_console_but_neither_sends_nor_reads_mail(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> None:
    settings = with_returned_mail(tmp_path, smtp)
    api = await start_service(settings, clock, role=Role.API)
    try:
        posted = await api.post_event(release_failure())
        ready = await api.client.get("/readyz")
        console = await api.client.get("/console/sign-in")
        mailbox = await api.client.get("/dev/mailbox")
        assert api.services.dispatcher is None and api.services.inbound is None
        assert not await listening(settings.inbound_smtp_port)
    finally:
        await api.stop()

    assert posted.status_code == 202, posted.text
    assert (ready.status_code, ready.json()["checks"]) == (200, {"database": "ok"})
    assert console.status_code == 200 and "Sign in" in console.text
    assert mailbox.status_code == 404
    assert smtp.handler.count == 0  # the event's notices wait for a worker


async def test_a_worker_sends_and_reads_returned_mail_and_answers_only_operations(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> None:
    settings = with_returned_mail(tmp_path, smtp)
    worker = await start_service(settings, clock, role=Role.WORKER)
    try:
        ready = await worker.client.get("/readyz")
        pages = {
            path: (await worker.client.get(path)).status_code
            for path in ("/v1/incidents", "/console/sign-in", "/console", "/ack/anything")
        }
        assert worker.services.dispatcher is not None and worker.services.dispatcher.running
        assert worker.services.inbound is not None
        assert await listening(settings.inbound_smtp_port)
    finally:
        await worker.stop()

    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"database", "scheduler", "smtp", "inbound"}
    assert pages == dict.fromkeys(pages, 404)
