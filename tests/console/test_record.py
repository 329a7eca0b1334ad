"""The incident record: every notification with its Message-ID, the answers, the audit entries
with their hashes and the trail's digest as of the incident's newest entry, which
``oos-notify audit verify --as-of`` confirms; exporting it is itself in the trail."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader
from reportlab.platypus.doctemplate import LayoutError
from sqlmodel import Session, col, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import audit
from oos_notify.store.models import Acknowledgement, AuditEntry, Incident, Notification
from oos_notify.web.console import record
from tests.conftest import START, RunningService, ack_link, received, release_failure
from tests.console.conftest import MovedInfusion, People, browser, sign_in
from tests.passkeys import enrol_and_decide


def audit_verify_as_of(database_url: str, as_of: int) -> str:
    """What ``oos-notify audit verify --as-of`` prints, as an auditor runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "oos-notify"), "audit", "verify", "--as-of", str(as_of)],
        env=env | {"OOS_NOTIFY_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_the_record_holds_the_notifications_the_trail_and_its_digest(
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
        trail = session.exec(
            select(AuditEntry)
            .where(AuditEntry.incident_id == incident_id)
            .order_by(col(AuditEntry.seq))
        ).all()
        exports = [e for e in trail if e.action == "incident_record_exported"]
        page_digest = audit.verify(session, as_of=exports[0].seq).digest
    assert [(e.actor, e.detail["format"]) for e in exports] == [
        (people.viewer, "html"),
        (people.viewer, "pdf"),
    ]
    # The PDF closes with the trail's digest as of the incident's newest entry, its own export,
    # and an auditor's `audit verify --as-of` of that entry prints the same digest
    as_of = exports[-1].seq
    assert as_of is not None and as_of == max(e.seq or 0 for e in trail)
    verified = audit_verify_as_of(service.services.settings.database_url, as_of)
    [digest] = re.findall(rf"as of entry {as_of} its digest is sha256 ([0-9a-f]{{64}})", verified)
    compact = text.replace(" ", "")
    assert f"Asofentry{as_of},sha256{digest}" in compact
    assert f"oos-notifyauditverify--as-of{as_of}" in compact
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
    # The page, exported first, closes with the digest as of its own export
    assert f'As of entry {exports[0].seq}, sha256 <code class="hash">{page_digest}' in page.text


async def test_the_page_and_the_record_show_signatures_callbacks_and_who_stopped_nothing(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    # Given a confirmation from the cell lab (which stops nothing), then the coordinator's
    event = release_failure(product_status="shipped")
    incident_id = (await service.post_event(event)).json()["incident_id"]
    await service.settle()
    first = await received(smtp, 3)
    for recipient in ("celllab@mercy.example", "ct-coord@mercy.example"):
        [notice] = [m for m in first if m.recipients == (recipient,)]
        await service.client.post(ack_link(notice), data={"response": "received"})
    # And a product offered under its pathway, one checklist item on file
    offer = {
        "event_id": "QA-EVT-2026-000200",
        "type": "disposition",
        "incident_ref": "OOS-2026-0142",
        "occurred_at": "2026-11-24T15:10:00Z",
        "center_id": "mercy-general-main",
        "disposition": "oos_release_offered",
        "oos_checklist": [{"item": "risk_assessment", "reference": "RA-2026-0142"}],
    }
    assert (await service.post_event(offer)).status_code == 202
    await service.settle()
    [request] = [m for m in smtp.handler.messages() if m.subject.startswith("Decision needed: ")]
    # And the physician asked to be called, then decided from the same link, signing it
    link = ack_link(request)
    await service.client.post(link, data={"response": "call_me", "phone": "+1 312 555 0199"})
    signed = await enrol_and_decide(service.client, link, "accept_oos_product")
    assert signed.status_code == 200
    with Session(service.services.engine) as session:
        [decision] = session.exec(
            select(Acknowledgement).where(Acknowledgement.purpose == "decision")
        ).all()
    assert decision.signature is not None
    content_hash = decision.signature["content_sha256"]
    name = "Dr. Lena Ortiz, CAR-T attending"

    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = (await client.get(f"/console/incidents/{incident_id}")).text
        record = (await client.get(f"/console/incidents/{incident_id}/record")).text
        pdf = await client.get(f"/console/incidents/{incident_id}/record.pdf")

    meaning = (
        "accept use of the out-of-specification product for this patient, under US: "
        "single-patient expanded access (IND, 21 CFR 312.310)"
    )
    # Then the page shows the signature, the callback task and who stopped nothing
    assert (
        '<strong>Confirmed, stopping nothing</strong> by <bdi title="celllab@mercy.example">'
        "Cell Processing Lab</bdi>" in page
    )
    assert (
        '<strong>Confirmed</strong> by <bdi title="ct-coord@mercy.example">Cell Therapy '
        "Coordinator</bdi>" in page
    )
    assert (
        '<strong>Call requested</strong> by <bdi title="ct-md@mercy.example">Dr. Lena '
        "Ortiz, CAR-T attending</bdi>" in page
    )
    assert f"<dt>signed by (printed name)</dt><dd><bdi>{name}</bdi></dd>" in page
    assert "<dt>signed with</dt><dd><bdi>passkey (WebAuthn) the signer enrolled</bdi></dd>" in page
    assert f"<dt>meaning</dt><dd><bdi>{meaning}</bdi></dd>" in page
    assert (
        "<strong>Closed:</strong> call ct-md@mercy.example (physician) on +1 312 555 0199" in page
    )
    assert "<dt>Product</dt><dd>shipped, not yet received by the center</dd>" in page
    assert "Regulatory pathway: US: single-patient expanded access" in page
    assert "<strong>RA-2026-0142</strong>, confirmed" in page
    assert "Patient&#39;s informed consent: not yet on file" in page
    # And so do the record and its PDF
    assert "Confirmation, stopping nothing by celllab@mercy.example" in record
    assert f"Signed by (printed name): <bdi>{name}</bdi>." in record
    assert "Signed with: <bdi>passkey (WebAuthn) the signer enrolled</bdi>." in record
    assert re.search(
        r"Signed at: <bdi>\w{3} \d\d \w{3} \d{4}, \d\d:\d\d C[SD]T \(America/Chicago\)</bdi>\.",
        record,
    )
    assert f"Signed content SHA-256: <bdi>{content_hash}</bdi>." in record
    assert f"Meaning: <bdi>{meaning}</bdi>." in record
    assert "Closed: call ct-md@mercy.example (physician) on +1 312 555 0199" in record
    text = " ".join(
        " ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf.content)).pages
    )
    compact = text.replace(" ", "")
    for shown in (
        f"Signed by (printed name): {name}.",
        "Signed with: passkey (WebAuthn) the signer enrolled.",
        "(America/Chicago).",
        f"Signed content SHA-256: {content_hash}.",
        "Decision Accept",
        "Closed: call ct-md@mercy.example (physician) on +1 312 555 0199",
        "Confirmation, stopping nothing by celllab@mercy.example",
    ):
        assert shown.replace(" ", "") in compact, shown


async def test_an_incident_stored_with_an_address_now_refused_still_shows(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    # Given an incident whose stored agreement has an address today's checks refuse (a
    # special-use domain the old pattern let through), as an earlier version stored it
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    with Session(service.services.engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        incident.agreement = json.loads(
            json.dumps(incident.agreement).replace("@mercy.example", "@mercy.local")
        )
        session.add(incident)
        session.commit()

    # When QA opens its page, a scheduled email's preview and its record
    async with browser(service) as client:
        await sign_in(client, people.qa)
        page = await client.get(f"/console/incidents/{incident_id}")
        preview = next(
            re.finditer(r'href="(/console/incidents/[^"]+/notifications/[^"]+)"', page.text)
        )
        shown = await client.get(preview.group(1))
        record = await client.get(f"/console/incidents/{incident_id}/record")

    # Then each shows the incident as it was stored
    assert page.status_code == 200 and "OOS-2026-0142" in page.text
    assert shown.status_code == 200 and "OOS-2026-0142" in shown.text
    assert record.status_code == 200 and "OOS-2026-0142" in record.text


def pdf_text(content: bytes) -> str:
    return " ".join(
        " ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(content)).pages
    )


def exports_of(service: RunningService, incident_id: str) -> list[AuditEntry]:
    with Session(service.services.engine) as session:
        return list(
            session.exec(
                select(AuditEntry)
                .where(
                    AuditEntry.incident_id == incident_id,
                    AuditEntry.action == "incident_record_exported",
                )
                .order_by(col(AuditEntry.seq))
            ).all()
        )


@pytest.mark.parametrize(
    "comment",
    ["W" * 2000, "\n".join(["W" * 79] * 25)],
    ids=["one-word-of-2000-characters", "25-lines"],
)
async def test_the_record_renders_whatever_a_comment_holds(
    service: RunningService, smtp: CaptureServer, people: People, comment: str
) -> None:
    # Given the cell lab confirms with a comment as long as the form allows
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    [lab] = [m for m in await received(smtp, 3) if m.recipients == ("celllab@mercy.example",)]
    confirmed = await service.client.post(
        ack_link(lab), data={"response": "received", "comment": comment}
    )
    assert confirmed.status_code == 200

    # When a viewer downloads the record
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        pdf = await client.get(f"/console/incidents/{incident_id}/record.pdf")

    # Then it is a PDF holding the whole comment, its long cells split across pages
    assert pdf.status_code == 200, pdf.text[:300]
    compact = pdf_text(pdf.content).replace(" ", "")
    assert compact.count("W") >= 2 * comment.count("W"), "in the answers and the audit detail"
    assert [e.detail["format"] for e in exports_of(service, incident_id)] == ["pdf"]


async def test_a_record_that_cannot_be_made_leaves_no_export_in_the_trail(
    service: RunningService, smtp: CaptureServer, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an incident, and a PDF renderer that fails (as a layout it cannot handle would)
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()

    def fails(made: record.IncidentRecord) -> bytes:
        raise LayoutError("Flowable <Table> tallest cell 766.0 points, too large on page 2")

    monkeypatch.setattr(record, "pdf", fails)

    # When a viewer asks for the PDF
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        answer = await client.get(f"/console/incidents/{incident_id}/record.pdf")

    # Then it is refused and nothing says the record was exported
    assert answer.status_code == 500
    assert exports_of(service, incident_id) == []


async def test_the_record_gives_times_at_the_center_with_utc_and_its_real_creation_date(
    service: RunningService, smtp: CaptureServer, people: People
) -> None:
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = (await client.get(f"/console/incidents/{incident_id}/record")).text
        pdf = await client.get(f"/console/incidents/{incident_id}/record.pdf")

    # The test clock stands at Tue 24 Nov 2026 15:12 UTC, 09:12 in Chicago
    [_, export] = exports_of(service, incident_id)
    assert export.at == START
    shown = "Tue 24 Nov 2026, 09:12:00 CST (15:12:00 UTC)"
    text = pdf_text(pdf.content)
    assert f"at {shown}" in text
    assert "Times are the center's, in its time zone America/Chicago, with UTC beside them" in text
    assert f"at {shown}" in page and "in its time zone America/Chicago" in page
    # The PDF was created when its export was audited, not on a fixed date
    info = PdfReader(io.BytesIO(pdf.content)).metadata
    assert info is not None and info.creation_date == START

    # And the same record gives the same bytes
    with Session(service.services.engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        made = record.build(session, incident, people.viewer, START)
    assert record.pdf(made) == record.pdf(made) == pdf.content


async def test_the_record_says_what_each_follow_up_changed(
    moved_infusion: MovedInfusion,
) -> None:
    # Given an incident whose planned infusion QA moved with a follow-up from the console
    incident_id, client = moved_infusion.incident_id, moved_infusion.client

    # When the record is read as a page and as a PDF
    page = (await client.get(f"/console/incidents/{incident_id}/record")).text
    pdf = await client.get(f"/console/incidents/{incident_id}/record.pdf")

    # Then both say what the follow-up moved, old and new, and nothing it left alone
    moved = "Planned infusion: Thu 3 Dec 2026 → Sat 5 Dec 2026"
    assert f"<li><bdi>{moved}</bdi></li>" in page
    assert "Lymphodepletion start: " not in page
    text = pdf_text(pdf.content)
    assert moved in text
    assert "Lymphodepletion start: " not in text
