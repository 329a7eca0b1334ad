"""Characters that change the direction of text (U+200E/F, U+202A-202E, U+2066-2069, U+061C):
a name, or anything else that goes into a header or a signature, refuses them naming the field,
since ``"\\u202eztirO aneL .rD"`` would show as "Dr. Lena Ortiz"; free text keeps them and is
shown isolated, so it cannot reorder what stands around it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlmodel import Session, select

from oos_notify.delivery.capture import CaptureServer
from oos_notify.store.models import Acknowledgement
from tests.conftest import RunningService, ack_link, received, release_failure
from tests.console.conftest import add_people, browser, sign_in
from tests.console.test_accounts import user
from tests.passkeys import enrol_and_decide
from tests.test_lifecycle import decision_request, follow_up, post

OVERRIDE = "\u202e"
REVERSED = f"{OVERRIDE}ztirO aneL .rD"
"""Shows as "Dr. Lena Ortiz"."""


@pytest.mark.parametrize(
    "control", ["\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\u061c"]
)
async def test_a_qa_contact_named_with_a_direction_control_is_refused_by_field(
    service: RunningService, control: str
) -> None:
    event = release_failure()
    event["qa_contact"] = {**event["qa_contact"], "name": f"A. {control}Rivera"}

    answer = await service.post_event(event)

    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "qa_contact", "name"]
    assert f"change the direction of text; it contains U+{ord(control):04X}" in problem["msg"]


async def test_a_revision_proposed_for_a_reversed_name_is_refused_by_field(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))

    answer = await service.client.post(
        f"/v1/incidents/{opened['incident_id']}/decision-revisions",
        json={
            "response": "accept_oos_product",
            "decided_by": "mgm-md",
            "reason": "Decided by telephone.",
            "proposed_for": {"name": REVERSED, "email": "qa@manufacturer.example"},
        },
        headers=service.auth,
    )

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "proposed_for", "name"]
    assert "U+202E" in answer.json()["detail"][0]["msg"]


async def test_a_typed_printed_name_never_reaches_the_signature(
    service: RunningService, smtp: CaptureServer
) -> None:
    """The printed name is the enrolled person's: a name typed into the form, reversed or not,
    neither signs a decision nor ends up on one."""
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    link = ack_link(decision_request(smtp))

    page = await service.client.post(
        link, data={"response": "accept_oos_product", "printed_name": REVERSED}
    )

    assert page.status_code == 422
    assert "A decision is recorded only when you sign it with your passkey" in page.text
    assert REVERSED not in page.text
    with Session(service.services.engine) as session:
        decisions = session.exec(
            select(Acknowledgement).where(
                Acknowledgement.incident_id == opened["incident_id"],
                Acknowledgement.purpose == "decision",
            )
        ).all()
    assert decisions == []

    signed = await enrol_and_decide(
        service.client, link, "accept_oos_product", printed_name=REVERSED
    )

    assert signed.status_code == 200 and REVERSED not in signed.text
    with Session(service.services.engine) as session:
        [decision] = session.exec(
            select(Acknowledgement).where(
                Acknowledgement.incident_id == opened["incident_id"],
                Acknowledgement.purpose == "decision",
            )
        ).all()
    assert decision.signature is not None
    assert decision.signature["printed_name"] == "Dr. Lena Ortiz, CAR-T attending"


def test_a_console_account_with_a_direction_control_is_refused(tmp_path: Path) -> None:
    made = user(
        tmp_path, "create", "--role", "qa", "--email", f"{OVERRIDE}rivera@manufacturer.example"
    )

    assert made.returncode == 1
    assert "change the direction of text; it contains U+202E" in made.stderr


async def test_a_comment_with_a_direction_control_is_shown_isolated(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given the coordinator confirms with a comment holding an unclosed right-to-left override
    people = add_people(service)
    incident_id = (await service.post_event(release_failure())).json()["incident_id"]
    await service.settle()
    [coordinator] = [
        m for m in await received(smtp, 3) if m.recipients == ("ct-coord@mercy.example",)
    ]
    comment = f"{OVERRIDE}Ring 4471"
    confirmed = await service.client.post(
        ack_link(coordinator), data={"response": "received", "comment": comment}
    )

    # Then their page shows it isolated from the sentence around it
    assert f"Comment: <bdi>{comment}</bdi></p>" in confirmed.text
    async with browser(service) as client:
        await sign_in(client, people.viewer)
        page = (await client.get(f"/console/incidents/{incident_id}")).text
        record = (await client.get(f"/console/incidents/{incident_id}/record")).text
        pdf = await client.get(f"/console/incidents/{incident_id}/record.pdf")
    # And so do the console's incident page and record
    assert f"<q><bdi>{comment}</bdi></q>" in page
    assert f"Comment: <q><bdi>{comment}</bdi></q>" in record
    # And the PDF, which cannot isolate it, writes the control out
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "[U+202E]Ring 4471" in text and OVERRIDE not in text
