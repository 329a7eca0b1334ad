"""The incident record: every notification with its Message-ID, the answers, the audit entries
with their hashes and the chain head; exporting it is itself in the trail."""

from __future__ import annotations

import io

from pypdf import PdfReader
from sqlmodel import Session, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit
from oos_notify.store.models import AuditEntry, Notification
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import People, browser, sign_in


async def test_the_record_holds_the_notifications_the_trail_and_its_head(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    coordinator = next(
        m for m in await received(smtp, 3) if m.recipients == ("ct-coord@mercy.example",)
    )
    await service.client.post(
        ack_link(coordinator), data={"response": "call_me", "comment": "Ring 4471"}
    )
    await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = await client.get(f"/console/incidents/{incident_id}/record")
        pdf = await client.get(f"/console/incidents/{incident_id}/record.pdf")

    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert 'filename="incident-record-OOS-2026-0142.pdf"' in pdf.headers["content-disposition"]
    text = " ".join(
        " ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf.content)).pages
    )
    with Session(service.services.engine) as session:
        notifications = session.exec(
            select(Notification).where(Notification.incident_id == incident_id)
        ).all()
        trail = session.exec(select(AuditEntry).where(AuditEntry.incident_id == incident_id)).all()
        head_seq, head_hash = audit.head(session)
    exports = [e for e in trail if e.action == "incident_record_exported"]
    assert [(e.actor, e.detail["format"]) for e in exports] == [
        (people.viewer, "html"),
        (people.viewer, "pdf"),
    ]
    assert head_seq == exports[-1].seq  # the PDF's head is the entry saying who exported it
    compact = text.replace(" ", "")
    assert f"Entry{head_seq},sha256{head_hash}" in compact
    assert "Everyentryaboverecomputestoitshash." in compact
    for n in notifications:
        assert n.message_id in compact
        assert n.message_id.replace("<", "&lt;").replace(">", "&gt;") in page.text
    for e in trail:
        if e.seq is not None and e.seq < exports[0].seq:
            assert e.entry_hash in compact and e.entry_hash in page.text
    # (compared without spaces: where a line wraps depends on the random ids before it)
    assert "Confirmationbyct-coord@mercy.example(coordinator)" in compact
    assert "Comment:Ring4471" in compact
    assert f'Entry {exports[0].seq}, sha256 <code class="hash">{exports[0].entry_hash}' in page.text
