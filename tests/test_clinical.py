"""What a clinician reads and what the workflow lets happen, over real HTTP and real SMTP: a
result after infusion, a result after the closing, the regulatory path of an accepted OOS product,
who decides and who may stop an escalation, and timing against lymphodepletion."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.ops.config_check import load
from oos_notify.ops.preview import preview
from tests.conftest import CONFIG_DIR, TEMPLATES_DIR, RunningService, ack_link, release_failure
from tests.console.conftest import QA_NAME, add_people, browser, settle_revision, sign_in
from tests.passkeys import enrol_and_decide
from tests.test_lifecycle import (
    ACCOUNT_LEAD,
    BACKUP,
    CELL_LAB,
    COORDINATOR,
    MEDICAL_AFFAIRS,
    NAVIGATOR,
    PHARMACY,
    PHARMACY_DIRECTOR,
    PHYSICIAN,
    PROGRAM_DIRECTOR,
    QA,
    QUALITY,
    REGULATORY,
    advance,
    decision_request,
    detail,
    follow_up,
    post,
    sent_to,
    timeline,
)


def late_sterility(number: int, **fields: Any) -> dict[str, Any]:
    """A sterility culture that grew after the lot was released, as QA reports it."""
    return release_failure(
        event_id=f"QA-EVT-2026-{number:06d}",
        type="late_result",
        severity=None,
        failed_attributes=[
            {
                "attribute": "sterility",
                "specification": "no growth",
                "result": "growth at day 9 (gram-positive cocci)",
                "method": "BacT/ALERT, 14 days",
            }
        ],
        summary="Sterility culture positive after release.",
        **fields,
    )


def mail_to(messages: list[CapturedMessage], recipient: str) -> CapturedMessage:
    [mail] = [m for m in messages if m.recipients[0] == recipient]
    return mail


def plain(message: CapturedMessage) -> str:
    """The text part with its lines joined, so a sentence reads whole across a wrap."""
    return " ".join(message.part("plain").split())


# --- 1. a result that arrives after infusion -------------------------------------------------


async def test_a_sterility_result_after_infusion_asks_to_assess_the_patient_not_to_hold_it(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given a sterility culture that grew after the patient was infused, four days ago
    opened = await post(
        service,
        late_sterility(1, product_status="infused", infused_at="2026-11-20T16:30:00Z"),
    )

    # Then it is critical, and the urgent plan's first step reaches medical affairs at once
    state = await detail(service, opened["incident_id"])
    assert (state["severity"], state["product_status"]) == ("critical", "infused")
    assert state["infused_at"] == "2026-11-20T16:30:00Z"
    first = smtp.handler.messages()
    assert sent_to(first) == {COORDINATOR: 1, PHYSICIAN: 1, CELL_LAB: 1, MEDICAL_AFFAIRS: 1}

    # And the coordinator reads what to do for a patient who has received the product
    mail = mail_to(first, COORDINATOR)
    assert mail.subject == (
        "Assess the patient now: OOS-2026-0142, late OOS result on lot LOT-24-1187"
    )
    text = plain(mail)
    assert "The patient received this product on Fri 20 Nov 2026, 10:30 CST." in text
    assert "1. The treating physician assesses the patient now for signs of infection." in text
    assert "2. Act on what the result means for the patient, under WHAT THE RESULT MEANS" in text
    assert (
        "sterility, for the patient who received it: Assess the patient for signs of infection "
        "now and over the coming days. Take blood cultures before starting antimicrobials" in text
    )
    assert (
        "the organism's identification and its antimicrobial susceptibilities follow from the "
        "manufacturer as soon as they are known." in text
    )
    # And nothing of the pre-release notice: no holding of lymphodepletion, no quarantine
    for wrong in (
        "did not meet its release specification",
        "lymphodepletion should not start",
        "Hold patient communication",
        "do not thaw",
        "INFUSION WINDOW",
    ):
        assert wrong not in text, wrong
    assert "This message holds protected health information" in text
    assert "the only patient reference" not in text
    # And medical affairs gets the same facts, without a link to confirm for the center
    assert "/ack/" not in mail_to(first, MEDICAL_AFFAIRS).part("plain")
    assert "growth at day 9" in mail_to(first, MEDICAL_AFFAIRS).part("html")


async def test_a_late_result_before_infusion_asks_to_quarantine_the_product(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, late_sterility(1, product_status="at_center"))

    mail = mail_to(smtp.handler.messages(), PHYSICIAN)
    assert mail.subject == "Do not infuse: OOS-2026-0142, late OOS result on lot LOT-24-1187"
    text = plain(mail)
    assert "The product has not been infused: it is at the center, not infused." in text
    assert "1. Quarantine the product: do not thaw it and do not infuse it." in text
    assert "assesses the patient" not in text


async def test_a_late_result_with_the_products_state_unknown_gives_both_instructions(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, late_sterility(1))

    text = plain(mail_to(smtp.handler.messages(), COORDINATOR))
    assert "does not know whether the product has been infused" in text
    assert "IF THE PRODUCT HAS BEEN INFUSED 1. The treating physician assesses" in text
    assert "IF THE PRODUCT HAS NOT BEEN INFUSED 1. Quarantine the product" in text


# --- 1b. a late result after the incident was resolved ---------------------------------------


async def test_a_late_result_after_resolved_reopens_the_incident_and_tells_everyone_told(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident the coordinator confirmed and QA resolved: the closing notice promises
    # nothing it cannot keep
    opened = await post(service, release_failure())
    coordinator_mail = mail_to(smtp.handler.messages(), COORDINATOR)
    await service.client.post(ack_link(coordinator_mail), data={"response": "received"})
    await service.settle()
    await post(service, follow_up("resolved", 200))
    closing = [m for m in smtp.handler.messages() if m.subject.startswith("Investigation closed: ")]
    assert sent_to(closing) == {COORDINATOR: 1, PHYSICIAN: 1, CELL_LAB: 1, NAVIGATOR: 1}
    text = plain(closing[0])
    assert "No further messages" not in text
    assert (
        "If a result still outstanding for this lot (a sterility culture, say) comes back out of "
        "specification, the incident is reopened and you will be told at once." in text
    )
    before = len(smtp.handler.messages())

    # When the 14-day sterility culture turns positive eleven days later, after infusion
    clock.advance(timedelta(days=11))
    answer = await service.post_event(
        late_sterility(
            201,
            at=clock.now(),
            product_status="infused",
            infused_at="2026-12-03T15:00:00Z",
        )
    )

    # Then the incident reopens under the urgent plan in a new round, instead of a 409
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "notifying"
    await service.settle()
    state = await detail(service, opened["incident_id"])
    assert (state["status"], state["plan"], state["ack_round"]) == ("notifying", "urgent", 2)
    assert state["severity"] == "critical"
    actions = [e["action"] for e in await timeline(service, opened["incident_id"])]
    assert actions.index("incident_reopened") < actions.index("escalation_restarted")

    # And the first step asks to assess the patient; the liaison told before hears of it too
    after = smtp.handler.messages()[before:]
    assert sent_to(after) == {
        COORDINATOR: 1,
        PHYSICIAN: 1,
        CELL_LAB: 1,
        MEDICAL_AFFAIRS: 1,
        NAVIGATOR: 1,
    }
    assert "assesses the patient now for signs of infection" in plain(mail_to(after, PHYSICIAN))
    liaison = mail_to(after, NAVIGATOR)
    assert liaison.subject == (
        "Tell the physician: OOS-2026-0142, late OOS result on lot LOT-24-1187"
    )
    assert "The patient received this product on Thu 03 Dec 2026, 09:00 CST." in plain(liaison)
    # And the physician's new link confirms the new round
    link = ack_link(mail_to(after, PHYSICIAN))
    confirmed = await service.client.post(link, data={"response": "received"})
    assert "Thank you — acknowledged" in confirmed.text


async def test_a_withdrawn_incident_is_not_reopened_by_a_late_result(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure())
    await post(service, follow_up("withdrawn", 200))

    answer = await service.post_event(late_sterility(201))

    assert answer.status_code == 409
    assert "opens a new incident under a new incident_ref" in answer.json()["detail"]


# --- 2. the regulatory path of an accepted out-of-specification product --------------------


def confirm(number: int, *items: tuple[str, str], **fields: Any) -> dict[str, Any]:
    return follow_up(
        "update",
        number,
        oos_checklist=[{"item": item, "reference": ref} for item, ref in items],
        **fields,
    )


async def test_an_oos_acceptance_runs_through_its_pathway_checklist_before_resolving_as_infused(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a release failure the coordinator confirmed
    opened = await post(service, release_failure())
    incident_id = opened["incident_id"]
    await service.client.post(
        ack_link(mail_to(smtp.handler.messages(), COORDINATOR)), data={"response": "received"}
    )
    await service.settle()
    before = len(smtp.handler.messages())

    # When QA offers the product for release, with its risk assessment already on file
    await post(
        service,
        follow_up(
            "disposition",
            200,
            disposition="oos_release_offered",
            oos_checklist=[{"item": "risk_assessment", "reference": "RA-2026-0142"}],
        ),
    )

    # Then the physician is asked; quality, pharmacy and regulatory affairs are told the pathway
    offered = smtp.handler.messages()[before:]
    assert {QUALITY, PHARMACY, REGULATORY, PHYSICIAN} <= set(sent_to(offered))
    pharmacy = plain(mail_to(offered, PHARMACY))
    assert (
        "REGULATORY PATHWAY: US: single-patient expanded access (IND, 21 CFR 312.310)" in pharmacy
    )
    assert "[x] Manufacturer's risk assessment of the lot: RA-2026-0142, confirmed" in pharmacy
    assert "[ ] Patient's informed consent: not yet on file" in pharmacy
    decision_mail = decision_request(smtp)
    assert "asked of you in person and of nobody else" in plain(decision_mail)
    assert "We need the decision by Fri 27 Nov 2026, 00:00 CST" in plain(decision_mail)

    # And the decision page shows the pathway, its checklist and the meaning of each choice
    link = ack_link(decision_mail)
    page = await service.client.get(link)
    assert "Regulatory pathway: US: single-patient expanded access" in page.text
    assert "FDA single-patient IND / expanded-access authorisation" in page.text
    assert (
        "You sign: I accept use of the out-of-specification product for this patient, under "
        "US: single-patient expanded access (IND, 21 CFR 312.310)." in page.text
    )
    assert "Sign with passkey and record decision" in page.text

    # When the physician accepts without signing with a passkey, nothing is recorded
    unsigned = await service.client.post(link, data={"response": "accept_oos_product"})
    assert unsigned.status_code == 422
    assert "A decision is recorded only when you sign it with your passkey" in unsigned.text
    assert (await detail(service, incident_id))["decision"] is None

    # When the physician sets up a passkey and signs the acceptance with it
    clock.advance(timedelta(minutes=30))
    signed = await enrol_and_decide(service.client, link, "accept_oos_product")
    assert "your decision is recorded" in signed.text
    await service.settle()

    # Then the decision carries the signature manifestation, in QA's receipt and in the API
    receipt = mail_to(smtp.handler.messages()[before:], QA)
    text = plain(receipt)
    assert "Printed name: Dr. Lena Ortiz, CAR-T attending" in text
    assert "Signed: Tue 24 Nov 2026, 09:42 CST" in text
    assert (
        "Meaning: accept use of the out-of-specification product for this patient, under "
        "US: single-patient expanded access (IND, 21 CFR 312.310)" in text
    )
    state = await detail(service, incident_id)
    decided_entry = next(
        e for e in await timeline(service, incident_id) if e["action"] == "decided"
    )
    assert state["decision_signature"] == {
        "printed_name": "Dr. Lena Ortiz, CAR-T attending",
        "signed_at": "2026-11-24T09:42:00-06:00",
        "timezone": "America/Chicago",
        "meaning": "accept use of the out-of-specification product for this patient, under "
        "US: single-patient expanded access (IND, 21 CFR 312.310)",
        "method": "passkey",
        "content_sha256": decided_entry["detail"]["signature"]["content_sha256"],
    }
    [decided] = [a for a in state["acknowledgements"] if a["purpose"] == "decision"]
    assert decided["signature"] == state["decision_signature"]
    assert decided_entry["detail"]["signature"]["printed_name"] == (
        "Dr. Lena Ortiz, CAR-T attending"
    )
    assert decided_entry["detail"]["signature"]["method"] == "passkey"

    # When QA records the infusion with the checklist incomplete
    infusion = follow_up(
        "update",
        201,
        occurred_at="2026-11-25T18:00:00Z",
        product_status="infused",
        infused_at="2026-11-25T17:00:00Z",
    )
    refused = await service.post_event(infusion)

    # Then the infusion is refused, naming what is missing (21 CFR 50.20, 56.103, 312.305)
    assert refused.status_code == 409
    detail_text = refused.json()["detail"]
    assert "cannot be recorded as infused" in detail_text
    for item in ("physician_request", "expanded_access", "irb_approval", "consent"):
        assert item in detail_text
    assert (await detail(service, incident_id))["product_status"] is None

    # When QA confirms the rest of the checklist
    await post(
        service,
        confirm(
            203,
            ("physician_request", "SPR-2026-11-24"),
            ("expanded_access", "IND-123456"),
            ("irb_approval", "IRB-EA-0099"),
            ("consent", "ICF-COI-8K2M-4471"),
        ),
    )
    state = await detail(service, incident_id)
    assert state["oos_release"]["outstanding"] == []

    # Then the infusion is recorded and the incident resolves
    await post(service, infusion)
    resolved = await service.post_event(follow_up("resolved", 204))
    assert resolved.status_code == 202, resolved.text
    assert resolved.json()["status"] == "resolved"


async def test_an_unknown_checklist_item_is_refused_naming_the_field(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))

    answer = await service.post_event(confirm(201, ("ethics_vote", "EC-1")))

    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "oos_checklist", "0", "item"]
    assert "'ethics_vote' is not on the us-expanded-access checklist" in error["msg"]


# --- 3. a decision belongs to one person, and does not dead-end --------------------------------


async def test_call_me_leaves_the_decision_open_and_qa_records_it_after_the_call(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a product offered for release
    opened = await post(service, release_failure())
    incident_id = opened["incident_id"]
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    link = ack_link(decision_request(smtp))
    before = len(smtp.handler.messages())

    # When the physician asks to be called, on a number of their own
    clock.advance(timedelta(minutes=5))
    page = await service.client.post(
        link,
        data={"response": "call_me", "phone": "+1 312 555 0199", "comment": "In clinic until 2"},
    )
    await service.settle()

    # Then the page says the decision is still open, and still offers it
    assert "We will call you — the decision is still open" in page.text
    assert 'value="accept_oos_product"' in page.text
    # And QA gets a callback task with the number to call
    callback = mail_to(smtp.handler.messages()[before:], QA)
    assert callback.subject == (
        "Call the physician: OOS-2026-0142, lot LOT-24-1187, call-back requested"
    )
    text = plain(callback)
    assert "Phone: +1 312 555 0199" in text and "In clinic until 2" in text
    assert "The decision is still open." in text
    state = await detail(service, incident_id)
    assert state["decision"] is None and state["status"] == "acknowledged"
    [task] = state["callback_tasks"]
    assert (task["status"], task["phone"], task["requested_by"]) == (
        "open",
        "+1 312 555 0199",
        PHYSICIAN,
    )
    pending = [n for n in state["notifications"] if n["kind"] == "decision_overdue"]
    assert {n["status"] for n in pending} == {"scheduled"}, "the deadline still stands"

    # When the QA system proposes the decision the physician gave on the phone, with the reason
    clock.advance(timedelta(minutes=40))
    revision = {
        "response": "request_remanufacture",
        "decided_by": "mgm-md",
        "reason": "Decided by telephone after the callback at 10:00 CST.",
        "proposed_for": {"name": "A. Rivera", "email": "qa@manufacturer.example"},
    }
    proposed = await service.client.post(
        f"/v1/incidents/{incident_id}/decision-revisions", json=revision, headers=service.auth
    )
    assert proposed.status_code == 202, proposed.text
    assert proposed.json()["status"] == "pending"
    await service.settle()
    # Then nothing takes effect until a QA user approves it
    assert (await detail(service, incident_id))["decision"] is None
    assert len(smtp.handler.messages()) == before + 2

    # When a QA user approves it in the console, signed with their password
    people = add_people(service)
    async with browser(service) as client:
        await sign_in(client, people.qa)
        approved = await settle_revision(client, incident_id, proposed.json()["id"], "approve")
    assert approved.status_code == 303, approved.text
    await service.settle()

    # Then the decision is the physician's, signed by the approver's name with the reason
    state = await detail(service, incident_id)
    assert state["decision"] == "request_remanufacture"
    assert state["callback_tasks"][0]["status"] == "closed"
    [decided] = [a for a in state["acknowledgements"] if a["purpose"] == "decision"]
    assert (decided["by"], decided["role"]) == (PHYSICIAN, "physician")
    assert decided["revision"]["reason"] == revision["reason"]
    assert decided["signature"]["printed_name"] == QA_NAME
    assert decided["signature"]["meaning"].startswith(
        "record, as Dr. Lena Ortiz, CAR-T attending decided it, the decision to request"
    )
    audit = [e for e in await timeline(service, incident_id) if e["action"] == "decision_revised"]
    assert audit[0]["actor"] == people.qa
    assert {n["status"] for n in state["notifications"] if n["kind"] == "decision_overdue"} == {
        "cancelled"
    }
    # And the physician is told what was recorded in their name, QA gets the receipt
    told = smtp.handler.messages()[before + 2 :]
    recorded_mail = mail_to(told, PHYSICIAN)
    assert recorded_mail.subject == (
        "Check your decision: OOS-2026-0142, lot LOT-24-1187, recorded by QA"
    )
    assert (
        "If this is not what you decided, call Example Therapeutics QA at once on +1 555 0100"
        in (plain(recorded_mail))
    )
    assert "Reason: Decided by telephone after the callback" in plain(mail_to(told, QA))
    # And the physician's own link now shows the decision, asking nothing more
    page = await service.client.get(link)
    assert "Already decided" in page.text and "<form" not in page.text


async def test_call_me_then_the_physician_decides_from_the_same_link(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    link = ack_link(decision_request(smtp))
    await service.client.post(link, data={"response": "call_me"})

    again = await service.client.get(link)
    assert "You asked Example Therapeutics to call you" in again.text
    decided = await enrol_and_decide(service.client, link, "decline_product")

    assert "your decision is recorded" in decided.text
    state = await detail(service, opened["incident_id"])
    assert state["decision"] == "decline_product"
    assert [t["status"] for t in state["callback_tasks"]] == ["closed"]


async def test_a_revision_names_a_decider_who_was_asked(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))

    answer = await service.client.post(
        f"/v1/incidents/{opened['incident_id']}/decision-revisions",
        json={
            "response": "accept_oos_product",
            "decided_by": "mgm-coord",
            "reason": "The coordinator said so.",
        },
        headers=service.auth,
    )

    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "decided_by"]
    assert (await detail(service, opened["incident_id"]))["decision"] is None


async def test_a_revision_names_one_person_with_one_mailbox(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    url = f"/v1/incidents/{opened['incident_id']}/decision-revisions"
    revision = {
        "response": "accept_oos_product",
        "decided_by": "mgm-md",
        "reason": "Decided by telephone.",
    }

    for proposed_for, field in [
        ({"name": "A. Rivera", "email": "qa,evil@manufacturer.example"}, "email"),
        (
            {"name": "A. Rivera", "email": "qa@manufacturer.example?cc=evil%40attacker.example"},
            "email",
        ),
        ({"name": "A. Rivera", "email": "qa@manufacturer.local"}, "email"),
        ({"name": "A. Rivera\r\nBcc: x@evil.example", "email": "qa@manufacturer.example"}, "name"),
    ]:
        answer = await service.client.post(
            url, json={**revision, "proposed_for": proposed_for}, headers=service.auth
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "proposed_for", field]
    assert (await detail(service, opened["incident_id"]))["decision"] is None


async def test_a_typed_printed_name_with_a_line_break_does_not_reach_the_record(
    service: RunningService, smtp: CaptureServer
) -> None:
    """The printed name is the enrolled person's, one line as the agreement gives it: a name
    typed into the form, another person's on a second line, is ignored."""
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))

    page = await enrol_and_decide(
        service.client,
        ack_link(decision_request(smtp)),
        "accept_oos_product",
        printed_name="Lena Ortiz\r\nDr. Someone Else",
    )

    assert page.status_code == 200 and "Someone Else" not in page.text
    state = await detail(service, opened["incident_id"])
    assert state["decision_signature"]["printed_name"] == "Dr. Lena Ortiz, CAR-T attending"


async def test_an_unanswered_decision_is_escalated_72_hours_before_lymphodepletion(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a product offered on Tuesday; lymphodepletion starts Monday 30 November
    opened = await post(service, release_failure())
    await service.client.post(
        ack_link(mail_to(smtp.handler.messages(), COORDINATOR)), data={"response": "received"}
    )
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    before = len(smtp.handler.messages())

    # When nobody decides until just before Friday 00:00 in Chicago, nothing more is sent
    deadline = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    await advance(service, clock, seconds=(deadline - clock.now()).total_seconds() - 1)
    assert len(smtp.handler.messages()) == before

    # Then at the deadline the physician is asked again, and the program hears it is missing
    await advance(service, clock, seconds=1)
    overdue = smtp.handler.messages()[before:]
    assert sent_to(overdue) == {
        PHYSICIAN: 1,
        PROGRAM_DIRECTOR: 1,
        COORDINATOR: 1,
        MEDICAL_AFFAIRS: 1,
    }
    director = mail_to(overdue, PROGRAM_DIRECTOR)
    assert director.subject == (
        "Decision overdue: OOS-2026-0142, lot LOT-24-1187 offered for OOS release"
    )
    text = plain(director)
    assert "No decision has been recorded on the out-of-specification product" in text
    assert "by Fri 27 Nov 2026, 00:00 CST" in text
    assert "- Dr. Lena Ortiz, CAR-T attending (physician), +1 312 555 0144" in text
    assert "Only that physician can record the decision." in text
    assert "/ack/" not in text
    # And the physician's reminder carries a link that records the decision
    reminder = mail_to(overdue, PHYSICIAN)
    decided = await enrol_and_decide(service.client, ack_link(reminder), "decline_product")
    assert "your decision is recorded" in decided.text
    assert (await detail(service, opened["incident_id"]))["decision"] == "decline_product"


async def test_a_decision_deadline_follows_lymphodepletion_when_it_moves(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))

    await post(service, follow_up("update", 201, key_dates={"lymphodepletion_start": "2026-12-07"}))

    state = await detail(service, opened["incident_id"])
    overdue = [n for n in state["notifications"] if n["kind"] == "decision_overdue"]
    assert {n["due_at"] for n in overdue if n["status"] == "scheduled"} == {"2026-12-04T06:00:00Z"}
    assert {n["due_at"] for n in overdue if n["status"] == "cancelled"} == {"2026-11-27T06:00:00Z"}


# --- 4. who may stop the escalation ------------------------------------------------------------


async def test_a_cell_lab_confirmation_is_recorded_and_stops_nothing(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given the first notice, which now tells the physician too
    opened = await post(service, release_failure())
    incident_id = opened["incident_id"]
    first = smtp.handler.messages()
    assert sent_to(first) == {COORDINATOR: 1, PHYSICIAN: 1, CELL_LAB: 1}
    assert (
        "a confirmation from the cell therapy coordinator, the backup coordinator or the "
        "treating physician stops the escalation" in plain(mail_to(first, CELL_LAB))
    )

    # When the cell lab confirms
    clock.advance(timedelta(minutes=20))
    lab_link = ack_link(mail_to(first, CELL_LAB))
    page = await service.client.get(lab_link)
    assert "it does not stop the escalation" in page.text
    assert 'value="received"' in page.text and 'name="response" value="call_me"' not in page.text
    confirmed = await service.client.post(lab_link, data={"response": "received"})
    await service.settle()

    # Then it is recorded and shown, but nothing stops: no receipt, no liaison brief
    assert "Thank you — your confirmation is recorded" in confirmed.text
    assert "only the cell therapy coordinator, the backup coordinator or the treating" in (
        confirmed.text
    )
    assert len(smtp.handler.messages()) == 3
    state = await detail(service, incident_id)
    assert (state["status"], state["acknowledged_at"]) == ("notifying", None)
    [lab] = state["acknowledgements"]
    assert (lab["by"], lab["stopped_escalation"]) == (CELL_LAB, False)
    again = await service.client.get(lab_link)
    # Only the page's report form is left: nothing more to confirm
    assert "You have confirmed this notice" in again.text
    assert 'name="response"' not in again.text

    # And the reminder still goes out at 11:12, saying who has seen it
    await advance(service, clock, hours=1, minutes=40)
    reminders = smtp.handler.messages()[3:]
    assert sent_to(reminders) == {BACKUP: 1, PHYSICIAN: 1}
    assert (
        "Seen so far by (this does not stop the escalation): - Cell Processing Lab "
        "<celllab@mercy.example> (cell_lab), Tue 24 Nov 2026, 09:32 CST" in plain(reminders[0])
    )

    # When the physician confirms, the escalation stops and the liaison is briefed
    await service.client.post(
        ack_link(mail_to(reminders, PHYSICIAN)), data={"response": "received"}
    )
    await service.settle()
    assert sent_to(smtp.handler.messages()[5:]) == {QA: 1, NAVIGATOR: 1}
    await advance(service, clock, hours=3)
    assert PHARMACY_DIRECTOR not in sent_to(smtp.handler.messages())
    assert ACCOUNT_LEAD not in sent_to(smtp.handler.messages())


async def test_the_final_escalation_names_the_numbers_to_call(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    await post(service, release_failure())

    await advance(service, clock, hours=4)

    final = mail_to(smtp.handler.messages(), PHARMACY_DIRECTOR)
    text = plain(final)
    assert "CALL Mercy General — Main Campus on-call line: +1 312 555 0100" in text
    assert "Dr. Lena Ortiz, CAR-T attending (treating physician): +1 312 555 0144" in text


# --- 5. timing against lymphodepletion ---------------------------------------------------------


async def test_an_update_moving_lymphodepletion_within_72_hours_speeds_the_escalation_up(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a major incident opened Tuesday 16:12 in Chicago: the reminder waits for Wednesday
    # 09:12, two business hours later
    clock.advance(timedelta(hours=7))
    opened = await post(service, release_failure(at=clock.now() - timedelta(minutes=2)))
    incident_id = opened["incident_id"]
    state = await detail(service, incident_id)
    assert state["severity"] == "major"
    reminders = [n for n in state["notifications"] if n["template"] == "escalation_reminder"]
    assert {n["due_at"] for n in reminders} == {"2026-11-25T15:12:00Z"}

    # When QA moves lymphodepletion to Thursday, within 72 hours
    clock.advance(timedelta(minutes=18))
    await post(
        service,
        follow_up(
            "update",
            200,
            occurred_at="2026-11-24T22:29:00Z",
            key_dates={"lymphodepletion_start": "2026-11-26", "lymphodepletion_end": "2026-11-28"},
        ),
    )

    # Then it is critical by the agreement's rule, audited, and those told hear it
    state = await detail(service, incident_id)
    assert state["severity"] == "critical"
    assert state["severity_rule"] == "lymphodepletion starts within 72 hours"
    [changed] = [
        e for e in await timeline(service, incident_id) if e["action"] == "severity_changed"
    ]
    assert (changed["detail"]["severity_from"], changed["detail"]["severity_to"]) == (
        "major",
        "critical",
    )
    update = mail_to(smtp.handler.messages()[3:], COORDINATOR)
    text = plain(update)
    assert "(critical: lymphodepletion starts within 72 hours)" in text
    assert (
        "B-cell precursor acute lymphoblastic leukaemia (ALL): infuse 2 days to 14 days after "
        "lymphodepletion ends, that is Mon 30 Nov 2026 to Sat 12 Dec 2026." in text
    )
    assert "is the treating physician's decision" in text
    assert "has to be repeated" not in text

    # And the escalation runs on the faster clock: the reminder at 18:12 tonight
    reminders = [
        n
        for n in state["notifications"]
        if n["template"] == "escalation_reminder" and n["status"] == "scheduled"
    ]
    assert {n["due_at"] for n in reminders} == {"2026-11-25T00:12:00Z"}
    sent = len(smtp.handler.messages())
    await advance(service, clock, hours=1, minutes=41)  # 18:11 CST
    assert len(smtp.handler.messages()) == sent
    await advance(service, clock, minutes=1)
    tonight = smtp.handler.messages()[sent:]
    assert sent_to(tonight) == {BACKUP: 1, PHYSICIAN: 1}
    assert all(
        m.subject == "Confirm now: OOS-2026-0142, notice on lot LOT-24-1187 unconfirmed"
        for m in tonight
    )


# --- 6. what messages must also carry --------------------------------------------------------


async def test_remanufacture_says_whether_apheresis_and_bridging_are_needed_and_when(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure())

    await post(
        service,
        follow_up(
            "disposition",
            200,
            disposition="remanufacture",
            remanufacture={"new_apheresis_needed": False, "expected_release": "2026-12-14"},
        ),
    )

    text = plain(mail_to(smtp.handler.messages()[3:], COORDINATOR))
    assert "New apheresis needed: no" in text
    assert "Expected release of new lot: Mon 14 Dec 2026" in text
    assert "Bridging therapy needed: not yet known: the treating physician decides" in text


async def test_released_within_spec_states_its_basis(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure())

    await post(
        service,
        follow_up(
            "disposition",
            200,
            disposition="released_within_spec",
            within_spec_basis={
                "assignable_cause": "Viability stain expired; re-test with a new lot of stain",
                "certificate_of_analysis": "COA-LOT-24-1187-R1",
            },
        ),
    )

    text = plain(mail_to(smtp.handler.messages()[3:], PHYSICIAN))
    assert "The failing result was invalidated by a laboratory investigation" in text
    assert "Assignable laboratory cause: Viability stain expired" in text
    assert "New certificate of analysis: COA-LOT-24-1187-R1" in text
    assert "meets its release specification after all" not in text


async def test_released_within_spec_without_a_basis_says_to_ask_for_it(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure())

    await post(service, follow_up("disposition", 200, disposition="released_within_spec"))

    text = plain(mail_to(smtp.handler.messages()[3:], PHYSICIAN))
    assert "has not stated the basis" in text
    assert "Ask QA for the laboratory investigation's assignable cause" in text


async def test_an_infusion_record_needs_its_time_and_a_release_failure_cannot_be_infused(
    service: RunningService,
) -> None:
    missing = await service.post_event(release_failure(product_status="infused"))
    assert missing.status_code == 422
    assert {tuple(e["loc"]) for e in missing.json()["detail"]} == {
        ("body", "infused_at"),
        ("body", "product_status"),
    }


def test_preview_shows_the_severity_and_the_link_validity_the_live_service_sends(
    tmp_path: Path,
) -> None:
    agreements, renderer = load(CONFIG_DIR, TEMPLATES_DIR)
    now = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)
    event = tmp_path / "late.json"
    event.write_text(json.dumps(late_sterility(1, at=now)), encoding="utf-8")

    # A late sterility result without a severity previews as the service sends it: critical
    rendered = preview(
        agreements, renderer, "mercy-general-main", "late_result_initial", event, now
    )
    assert rendered.subject.startswith("Quarantine or assess: OOS-2026-0142")
    assert "Incident:              OOS-2026-0142 (critical: " in rendered.text
    assert "works\nuntil Tue 08 Dec 2026, 09:12 CST" in rendered.text

    # And the sample's link is valid for the center's 14 days, not until its own send time
    sample = preview(agreements, renderer, "mercy-general-main", "escalation_reminder", None, now)
    assert "Reported:              Tue 24 Nov 2026, 09:12 CST" in sample.text
    assert re.search(r"works\s+until Tue 08 Dec 2026, 09:12 CST", sample.text)
