"""An incident's life after its first notice, over real SMTP: escalation, dispositions and the
physician's decision, updates that move key dates, late results, closing, and the promises kept."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeSerializer
from sqlmodel import Session, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer
from oos_notify.settings import Settings
from oos_notify.store.models import Notification
from tests.agreement_changes import approve_files
from tests.conftest import (
    CONFIG_DIR,
    TEMPLATES_DIR,
    RunningService,
    ack_link,
    received,
    release_failure,
    start_service,
)
from tests.passkeys import enrol_and_decide

QA = "qa@manufacturer.example"
COORDINATOR = "ct-coord@mercy.example"
BACKUP = "ct-coord2@mercy.example"
PHYSICIAN = "ct-md@mercy.example"
CELL_LAB = "celllab@mercy.example"
PHARMACY_DIRECTOR = "rx-director@mercy.example"
ACCOUNT_LEAD = "al-midwest@manufacturer.example"
PROGRAM_DIRECTOR = "ct-director@mercy.example"
NAVIGATOR = "navigator@mercy.example"
QUALITY = "ct-quality@mercy.example"
PHARMACY = "ids-pharmacy@mercy.example"
REGULATORY = "regulatory@manufacturer.example"
MEDICAL_AFFAIRS = "medical-affairs@manufacturer.example"


def follow_up(event_type: str, number: int, **fields: Any) -> dict[str, Any]:
    """A follow-up event about the SPEC's example incident."""
    return {
        "event_id": f"QA-EVT-2026-{number:06d}",
        "type": event_type,
        "incident_ref": "OOS-2026-0142",
        "occurred_at": "2026-11-24T15:10:00Z",
        "center_id": "mercy-general-main",
        **fields,
    }


def sent_to(messages: list[CapturedMessage]) -> Counter[str]:
    return Counter(m.recipients[0] for m in messages)


def subjects(messages: list[CapturedMessage]) -> dict[str, str]:
    return {m.recipients[0]: m.subject for m in messages}


def decision_request(smtp: CaptureServer) -> CapturedMessage:
    """The one email that asks the physician to decide on the offered product."""
    [mail] = [m for m in smtp.handler.messages() if m.subject.startswith("Decision needed: ")]
    return mail


async def detail(service: RunningService, incident_id: str) -> dict[str, Any]:
    response = await service.client.get(f"/v1/incidents/{incident_id}", headers=service.auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def timeline(service: RunningService, incident_id: str) -> list[dict[str, Any]]:
    response = await service.client.get(
        f"/v1/incidents/{incident_id}/timeline", headers=service.auth
    )
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


async def advance(service: RunningService, clock: ManualClock, **delta: float) -> None:
    clock.advance(timedelta(**delta))
    await service.settle()


async def post(service: RunningService, event: dict[str, Any]) -> dict[str, Any]:
    response = await service.post_event(event)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    await service.settle()
    return answer


# --- the full incident the issue asks for ----------------------------------------------------


async def test_a_full_incident_from_failure_to_physician_decision_to_closing(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a release failure nobody at the center acknowledges (Tuesday 09:12 in Chicago)
    opened = await post(service, release_failure())
    incident_id = opened["incident_id"]
    first = await received(smtp, 3)
    assert sent_to(first) == {COORDINATOR: 1, PHYSICIAN: 1, CELL_LAB: 1}

    # Then the escalation goes on at 11:12 and 13:12 local time, as the standard plan says
    await advance(service, clock, hours=2)
    reminders = smtp.handler.messages()[3:]
    assert sent_to(reminders) == {BACKUP: 1, PHYSICIAN: 1}
    await advance(service, clock, hours=2)
    finals = smtp.handler.messages()[5:]
    assert sent_to(finals) == {PHARMACY_DIRECTOR: 1, ACCOUNT_LEAD: 1}
    assert (await detail(service, incident_id))["status"] == "escalated"

    # When the manufacturer offers the out-of-specification product for release
    clock.advance(timedelta(minutes=18))
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))

    # Then the physician is asked for a decision, quality, pharmacy and regulatory affairs hear
    # of the offer, and everyone else told hears the disposition
    offered = smtp.handler.messages()[7:]
    assert sent_to(offered) == {
        PHYSICIAN: 1,
        COORDINATOR: 1,
        CELL_LAB: 1,
        BACKUP: 1,
        PHARMACY_DIRECTOR: 1,
        ACCOUNT_LEAD: 1,
        QUALITY: 1,
        PHARMACY: 1,
        REGULATORY: 1,
    }
    by_recipient = {m.recipients[0]: m for m in offered}
    decision_mail = by_recipient[PHYSICIAN]
    assert decision_mail.subject == (
        "Decision needed: OOS-2026-0142, lot LOT-24-1187 offered for OOS release"
    )
    assert "RECORD YOUR DECISION" in decision_mail.part("plain")
    assert "You, Dr. Lena Ortiz, CAR-T attending, sign your decision there with your passkey" in (
        decision_mail.part("plain")
    )
    notice = by_recipient[COORDINATOR]
    assert notice.subject == "Prepare for OOS release: OOS-2026-0142, lot LOT-24-1187"
    assert "/ack/" not in notice.part("plain")

    # And the decision page offers the physician's choices, changing nothing when opened
    link = ack_link(decision_mail)
    page = await service.client.get(link)
    assert page.status_code == 200
    assert "Decision needed" in page.text and 'value="accept_oos_product"' in page.text
    assert (await detail(service, incident_id))["decision"] is None

    # When the physician accepts the product
    clock.advance(timedelta(minutes=30))
    answer = await enrol_and_decide(
        service.client, link, "accept_oos_product", comment="Benefit outweighs risk."
    )
    assert answer.status_code == 200 and "your decision is recorded" in answer.text
    await service.settle()

    # Then QA receives the decision, the incident is acknowledged, the liaison is briefed, and
    # the center's coordinator, cell lab, pharmacy and quality unit get the outcome
    decided = smtp.handler.messages()[16:]
    assert sent_to(decided) == {
        QA: 1,
        NAVIGATOR: 1,
        COORDINATOR: 1,
        CELL_LAB: 1,
        PHARMACY: 1,
        QUALITY: 1,
    }
    receipt = {m.recipients[0]: m for m in decided}[QA]
    assert receipt.subject == (
        "Act on decision: OOS-2026-0142, lot LOT-24-1187: OOS product accepted"
    )
    assert "Benefit outweighs risk." in receipt.part("plain")
    state = await detail(service, incident_id)
    assert state["decision"] == "accept_oos_product"
    assert state["status"] == "acknowledged"
    [decision] = state["acknowledgements"]
    assert (decision["purpose"], decision["by"]) == ("decision", PHYSICIAN)

    # When the manufacturer closes the investigation
    await post(service, follow_up("resolved", 201))

    # Then everyone told hears it once, and nothing at all is sent afterwards
    closing = smtp.handler.messages()[22:]
    assert sent_to(closing) == {
        COORDINATOR: 1,
        CELL_LAB: 1,
        BACKUP: 1,
        PHYSICIAN: 1,
        PHARMACY_DIRECTOR: 1,
        ACCOUNT_LEAD: 1,
        NAVIGATOR: 1,
        QUALITY: 1,
        PHARMACY: 1,
        REGULATORY: 1,
    }
    assert all(m.subject == "Investigation closed: OOS-2026-0142, lot LOT-24-1187" for m in closing)
    await advance(service, clock, days=10)
    assert len(smtp.handler.messages()) == 32
    state = await detail(service, incident_id)
    assert state["status"] == "resolved"
    assert {n["status"] for n in state["notifications"]} == {"sent", "cancelled"}
    again = await service.client.post(link, data={"response": "decline_product"})
    assert "This incident is closed" in again.text
    assert (await detail(service, incident_id))["decision"] == "accept_oos_product"


async def test_a_second_decision_is_not_recorded_and_says_who_decided(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    link = ack_link(decision_request(smtp))

    first = await enrol_and_decide(service.client, link, "request_remanufacture")
    second = await service.client.post(link, data={"response": "accept_oos_product"})

    assert first.status_code == 200 and second.status_code == 200
    assert "Already decided" in second.text and PHYSICIAN in second.text
    incident = (await service.client.get("/v1/incidents", headers=service.auth)).json()
    assert incident["items"][0]["decision"] == "request_remanufacture"


async def test_a_decision_needs_a_choice_from_the_decision_list(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure())
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    link = ack_link(decision_request(smtp))

    # "received" acknowledges a notice; it is not an answer to the release offer
    refused = await service.client.post(link, data={"response": "received"})

    assert refused.status_code == 422
    incident = (await service.client.get("/v1/incidents", headers=service.auth)).json()
    assert incident["items"][0]["decision"] is None
    assert incident["items"][0]["status"] == "notifying"


# --- dispositions that do not ask for a decision ------------------------------------------------


async def test_a_cancelled_lot_is_told_to_everyone_told_and_the_escalation_goes_on(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    await post(service, release_failure())

    await post(service, follow_up("disposition", 200, disposition="cancelled"))

    notices = smtp.handler.messages()[3:]
    assert sent_to(notices) == {COORDINATOR: 1, PHYSICIAN: 1, CELL_LAB: 1}
    assert all(
        m.subject == "Do not lymphodeplete: OOS-2026-0142, lot LOT-24-1187 cancelled"
        for m in notices
    )
    assert "Do not start lymphodepletion for this lot" in notices[0].part("plain")
    # Nobody has acknowledged yet, so the reminder still goes out at 11:12
    await advance(service, clock, hours=2)
    assert sent_to(smtp.handler.messages()[6:]) == {BACKUP: 1, PHYSICIAN: 1}


# --- updates that move key dates --------------------------------------------------------------


def due_of(state: dict[str, Any], template: str, status: str) -> list[str]:
    return [
        n["due_at"]
        for n in state["notifications"]
        if n["template"] == template and n["status"] == status
    ]


async def test_moving_lymphodepletion_moves_the_liaison_alert_and_tells_everyone_told(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an unacknowledged incident: the liaison is alerted 48 h before lymphodepletion
    # (Nov 30 in Chicago), i.e. at midnight Nov 28 local time
    opened = await post(service, release_failure())
    state = await detail(service, opened["incident_id"])
    assert set(due_of(state, "patient_liaison_urgent", "scheduled")) == {"2026-11-28T06:00:00Z"}

    # When QA moves lymphodepletion a week later
    await post(
        service,
        follow_up("update", 200, key_dates={"lymphodepletion_start": "2026-12-07"}),
    )

    # Then the alert follows the date, the old one is cancelled, and those told get the update
    state = await detail(service, opened["incident_id"])
    assert set(due_of(state, "patient_liaison_urgent", "scheduled")) == {"2026-12-05T06:00:00Z"}
    assert set(due_of(state, "patient_liaison_urgent", "cancelled")) == {"2026-11-28T06:00:00Z"}
    assert state["key_dates"]["lymphodepletion_start"] == "2026-12-07"
    updates = smtp.handler.messages()[3:]
    assert sent_to(updates) == {COORDINATOR: 1, PHYSICIAN: 1, CELL_LAB: 1}
    assert updates[0].subject == (
        "Check the key dates: OOS-2026-0142, lot LOT-24-1187, new information"
    )
    assert "Mon 07 Dec 2026" in updates[0].part("plain")

    # And nothing reaches the liaison at the old time, but it does at the new one
    clock.advance(timedelta(days=3, hours=15))  # Nov 28, 06:12 UTC
    await service.settle()
    assert NAVIGATOR not in sent_to(smtp.handler.messages())
    clock.advance(timedelta(days=7))  # Dec 5, 06:12 UTC
    await service.settle()
    assert sent_to(smtp.handler.messages())[NAVIGATOR] == 1


async def test_a_key_date_that_arrives_later_plans_the_step_that_waited_for_it(
    service: RunningService, smtp: CaptureServer
) -> None:
    # Given an incident opened before lymphodepletion was scheduled: the step was skipped
    opened = await post(service, release_failure(key_dates={}))
    state = await detail(service, opened["incident_id"])
    assert due_of(state, "patient_liaison_urgent", "scheduled") == []

    # When the date becomes known, three days out (so its 48 h alert is due tomorrow)
    await post(
        service,
        follow_up("update", 200, key_dates={"lymphodepletion_start": "2026-11-27"}),
    )

    state = await detail(service, opened["incident_id"])
    assert set(due_of(state, "patient_liaison_urgent", "scheduled")) == {"2026-11-25T06:00:00Z"}


async def test_an_update_after_the_alert_was_sent_does_not_send_it_again(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given lymphodepletion tomorrow: the liaison alert is due at once and goes out
    opened = await post(service, release_failure(key_dates={"lymphodepletion_start": "2026-11-25"}))
    assert sent_to(smtp.handler.messages())[NAVIGATOR] == 1

    # When the date moves by two days
    await post(
        service,
        follow_up("update", 200, key_dates={"lymphodepletion_start": "2026-11-27"}),
    )

    # Then the liaison hears of the update, but the alert is not planned a second time
    state = await detail(service, opened["incident_id"])
    urgent = [n for n in state["notifications"] if n["template"] == "patient_liaison_urgent"]
    assert [n["status"] for n in urgent if n["recipient"] == NAVIGATOR] == ["sent"]
    to_liaison = [m.subject for m in smtp.handler.messages() if m.recipients[0] == NAVIGATOR]
    assert [subject.partition(":")[0] for subject in to_liaison] == [
        "Call the center today",
        "Check the key dates",
    ]


# --- late results -------------------------------------------------------------------------------


def late_sterility(number: int) -> dict[str, Any]:
    return follow_up(
        "late_result",
        number,
        product_code="CARTX",
        lot_number="LOT-24-1187",
        chain_of_identity="COI-8K2M-4471",
        failed_attributes=[
            {"attribute": "sterility", "specification": "no growth", "result": "growth at day 9"}
        ],
    )


async def test_a_late_result_restarts_the_escalation_under_the_urgent_plan(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident the coordinator acknowledged, so the liaison was briefed
    opened = await post(service, release_failure())
    coordinator_mail = next(m for m in smtp.handler.messages() if m.recipients[0] == COORDINATOR)
    acked = await service.client.post(ack_link(coordinator_mail), data={"response": "received"})
    assert acked.status_code == 200
    await service.settle()
    assert sent_to(smtp.handler.messages()[3:]) == {QA: 1, NAVIGATOR: 1}

    # When a late sterility result arrives, without a severity
    clock.advance(timedelta(hours=1))
    await post(service, late_sterility(200))

    # Then it is critical by the agreement's rule, and the urgent plan starts again at once
    state = await detail(service, opened["incident_id"])
    assert state["severity"] == "critical"
    assert state["severity_rule"] == "late safety result (sterility, mycoplasma, endotoxin)"
    assert (state["status"], state["plan"], state["ack_round"]) == ("notifying", "urgent", 2)
    restarted = smtp.handler.messages()[5:]
    assert sent_to(restarted) == {
        COORDINATOR: 1,
        PHYSICIAN: 1,
        CELL_LAB: 1,
        MEDICAL_AFFAIRS: 1,
        NAVIGATOR: 1,
    }
    by_recipient = {m.recipients[0]: m for m in restarted}
    assert by_recipient[COORDINATOR].subject == (
        "Quarantine or assess: OOS-2026-0142, late OOS result on lot LOT-24-1187"
    )
    assert "growth at day 9" in by_recipient[COORDINATOR].part("plain")
    assert by_recipient[NAVIGATOR].subject == (
        "Tell the physician: OOS-2026-0142, late OOS result on lot LOT-24-1187"
    )
    assert "/ack/" not in by_recipient[NAVIGATOR].part("plain")

    # And the urgent plan escalates after 30 min, around the clock, until somebody confirms
    await advance(service, clock, minutes=30)
    assert sent_to(smtp.handler.messages()[10:]) == {BACKUP: 1, PROGRAM_DIRECTOR: 1}
    physician_mail = by_recipient[PHYSICIAN]
    confirmed = await service.client.post(ack_link(physician_mail), data={"response": "call_me"})
    assert "Thank you" in confirmed.text
    state = await detail(service, opened["incident_id"])
    assert state["status"] == "acknowledged"
    assert [(a["round"], a["by"]) for a in state["acknowledgements"]] == [
        (1, COORDINATOR),
        (2, PHYSICIAN),
    ]
    await advance(service, clock, hours=2)
    assert PHARMACY_DIRECTOR not in sent_to(smtp.handler.messages())


# --- links from before a late result ------------------------------------------------------------

SHOWN_ROUND = re.compile(r'<input type="hidden" name="round" value="(\d+)">')


def shown_round(page: httpx.Response) -> int | None:
    """The round the page's form answers for, as the browser will post it."""
    found = SHOWN_ROUND.findall(page.text)
    return int(found[0]) if found else None


async def confirmed_then_late(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> tuple[str, str]:
    """The coordinator confirms the first notice; an hour later a late sterility result starts
    round 2. Returns the incident and the cell lab's round-1 link, never used."""
    opened = await post(service, release_failure())
    first = {m.recipients[0]: m for m in smtp.handler.messages()}
    acked = await service.client.post(ack_link(first[COORDINATOR]), data={"response": "received"})
    assert "Thank you — acknowledged" in acked.text
    await service.settle()
    clock.advance(timedelta(hours=1))
    await post(service, late_sterility(200))
    assert len(smtp.handler.messages()) == 10
    return opened["incident_id"], ack_link(first[PHYSICIAN])


async def test_a_first_round_link_posted_after_a_late_result_records_nothing(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given round 2 started by a late result, and the physician's link from round 1
    incident_id, old_link = await confirmed_then_late(service, smtp, clock)

    # When the old link is posted, bare or from a page opened before the late result
    for form in ({"response": "received"}, {"response": "received", "round": "1"}):
        page = await service.client.post(old_link, data=form)

        # Then nothing is recorded, and the page says so with the new facts and a fresh form
        assert page.status_code == 409
        assert "Nothing was recorded — this incident has changed" in page.text
        assert "Thank you" not in page.text
        assert "sterility: result growth at day 9 (specification no growth)" in page.text
        assert '<span class="badge">critical</span>' in page.text
        assert shown_round(page) == 2
    await service.settle()
    state = await detail(service, incident_id)
    assert (state["status"], state["ack_round"]) == ("notifying", 2)
    assert [(a["round"], a["by"]) for a in state["acknowledgements"]] == [(1, COORDINATOR)]

    # And QA gets no receipt, while round 2's escalation fires at its time, 30 minutes on
    await advance(service, clock, minutes=29, seconds=59)
    assert len(smtp.handler.messages()) == 10
    await advance(service, clock, seconds=1)
    assert sent_to(smtp.handler.messages()[10:]) == {BACKUP: 1, PROGRAM_DIRECTOR: 1}


async def test_a_first_round_link_shows_the_late_result_and_confirms_the_new_round(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given round 2 started by a late result, and the physician's link from round 1
    incident_id, old_link = await confirmed_then_late(service, smtp, clock)

    # When the physician opens it
    page = await service.client.get(old_link)

    # Then the page says what changed since the email: the late result, severity and status
    assert page.status_code == 200
    assert "This incident changed after your email was sent" in page.text
    assert "What changed since your email of Tue 24 Nov 2026, 09:12 CST" in page.text
    assert page.text.count("Late test result") == 1
    assert "sterility: result growth at day 9 (specification no growth)" in page.text
    assert '<strong>Severity now:</strong> <span class="badge">critical</span>' in page.text
    assert "<strong>Status now:</strong> waiting for confirmation" in page.text
    # And it asks to confirm the current round, with labelled choices
    assert shown_round(page) == 2
    assert '<label class="choice"><input type="radio" name="response" value="received"' in (
        page.text
    )
    assert '<label for="comment"' in page.text and 'name="viewport"' in page.text
    # And opening it changed nothing
    state = await detail(service, incident_id)
    assert [(a["round"], a["by"]) for a in state["acknowledgements"]] == [(1, COORDINATOR)]

    # When the physician confirms from that page
    confirmed = await service.client.post(
        old_link, data={"response": "received", "round": str(shown_round(page))}
    )
    await service.settle()

    # Then round 2 is acknowledged: QA gets the receipt and the escalation stops
    assert confirmed.status_code == 200 and "Thank you — acknowledged" in confirmed.text
    state = await detail(service, incident_id)
    assert state["status"] == "acknowledged"
    assert [(a["round"], a["by"]) for a in state["acknowledgements"]] == [
        (1, COORDINATOR),
        (2, PHYSICIAN),
    ]
    assert sent_to(smtp.handler.messages()[10:]) == {QA: 1, NAVIGATOR: 1}
    await advance(service, clock, hours=2)
    assert len(smtp.handler.messages()) == 12

    # And the coordinator's first link now says who confirmed round 2, asking nothing
    coordinator_mail = next(m for m in smtp.handler.messages() if m.recipients[0] == COORDINATOR)
    again = await service.client.get(ack_link(coordinator_mail))
    assert "Already acknowledged" in again.text and PHYSICIAN in again.text
    assert "Late test result" in again.text and shown_round(again) is None


async def test_a_link_from_the_current_round_acknowledges_as_before(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given the coordinator's email of round 2
    incident_id, _ = await confirmed_then_late(service, smtp, clock)
    [new_mail] = [m for m in smtp.handler.messages()[5:] if m.recipients[0] == COORDINATOR]
    link = ack_link(new_mail)

    # When the coordinator opens and confirms it
    page = await service.client.get(link)
    assert "please confirm" in page.text and "What changed" not in page.text
    assert shown_round(page) == 2
    confirmed = await service.client.post(link, data={"response": "received", "round": "2"})
    await service.settle()

    # Then round 2 is acknowledged and its escalation stops
    assert confirmed.status_code == 200 and "Thank you — acknowledged" in confirmed.text
    state = await detail(service, incident_id)
    assert [(a["round"], a["by"]) for a in state["acknowledgements"]] == [
        (1, COORDINATOR),
        (2, COORDINATOR),
    ]
    await advance(service, clock, hours=2)
    assert sent_to(smtp.handler.messages()[10:]) == {QA: 1, NAVIGATOR: 1}


async def test_a_page_left_open_across_a_second_late_result_records_nothing(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given the coordinator's round-2 page, opened before a second late result starts round 3
    incident_id, _ = await confirmed_then_late(service, smtp, clock)
    [new_mail] = [m for m in smtp.handler.messages()[5:] if m.recipients[0] == COORDINATOR]
    link = ack_link(new_mail)
    assert shown_round(await service.client.get(link)) == 2
    clock.advance(timedelta(minutes=10))
    mycoplasma = late_sterility(201)
    mycoplasma["failed_attributes"] = [
        {"attribute": "mycoplasma", "specification": "negative", "result": "positive"}
    ]
    await post(service, mycoplasma)

    # When the page's form is posted
    page = await service.client.post(link, data={"response": "received", "round": "2"})

    # Then nothing is recorded, and only the result the page did not show is listed as new
    assert page.status_code == 409 and "Nothing was recorded" in page.text
    assert "mycoplasma: result positive" in page.text
    assert page.text.count("Late test result") == 1 and shown_round(page) == 3
    state = await detail(service, incident_id)
    assert (state["status"], state["ack_round"]) == ("notifying", 3)
    assert len(state["acknowledgements"]) == 1


async def test_a_decision_link_from_before_a_late_result_decides_nothing_until_seen_again(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given the physician asked to decide on the offered product, then a late sterility result
    opened = await post(service, release_failure())
    clock.advance(timedelta(minutes=10))
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    decision_mail = decision_request(smtp)
    clock.advance(timedelta(hours=1))
    await post(service, late_sterility(201))
    sent = len(smtp.handler.messages())

    # When the physician accepts the product from the decision email
    link = ack_link(decision_mail)
    page = await service.client.post(link, data={"response": "accept_oos_product"})

    # Then no decision is recorded: the page shows the late result and asks again
    assert page.status_code == 409 and "Nothing was recorded" in page.text
    assert "sterility: result growth at day 9" in page.text
    assert 'value="accept_oos_product"' in page.text and shown_round(page) == 2
    await service.settle()
    state = await detail(service, opened["incident_id"])
    assert (state["decision"], state["acknowledgements"]) == (None, [])
    assert len(smtp.handler.messages()) == sent

    # When the physician decides from that page
    decided = await enrol_and_decide(
        service.client, link, "decline_product", round=str(shown_round(page))
    )
    await service.settle()

    # Then the decision is recorded in round 2, which it acknowledges, and QA hears of it
    assert decided.status_code == 200 and "your decision is recorded" in decided.text
    state = await detail(service, opened["incident_id"])
    assert (state["status"], state["decision"]) == ("acknowledged", "decline_product")
    assert [(a["purpose"], a["round"]) for a in state["acknowledgements"]] == [("decision", 2)]
    receipt = next(m for m in smtp.handler.messages()[sent:] if m.recipients[0] == QA)
    assert receipt.subject == "Act on decision: OOS-2026-0142, lot LOT-24-1187: product declined"

    # And a round-1 link of the cell lab lists the decision among what changed
    cell_lab_mail = next(m for m in smtp.handler.messages() if m.recipients[0] == CELL_LAB)
    cell_lab_page = await service.client.get(ack_link(cell_lab_mail))
    assert f"Decision recorded</strong> by {PHYSICIAN}: Decline the product" in cell_lab_page.text


async def test_a_link_signed_before_rounds_counts_as_the_first_round(
    service: RunningService, smtp: CaptureServer, clock: ManualClock, settings: Settings
) -> None:
    # Given a link as the service signed them before it signed the round, from round 1
    incident_id, _ = await confirmed_then_late(service, smtp, clock)
    with Session(service.services.engine) as session:
        notification = session.exec(
            select(Notification).where(
                Notification.incident_id == incident_id,
                Notification.recipient_email == CELL_LAB,
                Notification.template == "release_failure_initial",
            )
        ).first()
    assert notification is not None
    signer = URLSafeSerializer(settings.secret_key.get_secret_value(), salt="oos-notify.ack.v1")
    token = signer.dumps(
        {
            "n": notification.id,
            "i": incident_id,
            "c": notification.contact_id,
            "x": int((clock.now() + timedelta(days=14)).timestamp()),
        }
    )

    # Then it shows what changed and records nothing when posted
    assert "Late test result" in (await service.client.get(f"/ack/{token}")).text
    posted = await service.client.post(f"/ack/{token}", data={"response": "received"})
    assert posted.status_code == 409
    assert len((await detail(service, incident_id))["acknowledgements"]) == 1


@pytest.mark.parametrize(
    ("shown", "status"),
    [
        pytest.param("3", 409, id="a-round-not-yet-started"),
        pytest.param("two", 422, id="not-a-number"),
        pytest.param("0", 422, id="zero"),
        pytest.param("", 409, id="empty-reads-as-missing"),
    ],
)
async def test_a_form_with_a_round_the_page_never_showed_records_nothing(
    service: RunningService, smtp: CaptureServer, clock: ManualClock, shown: str, status: int
) -> None:
    incident_id, old_link = await confirmed_then_late(service, smtp, clock)

    page = await service.client.post(old_link, data={"response": "received", "round": shown})

    assert page.status_code == status and "Thank you" not in page.text
    if status == 422:
        assert "Open the link from the email again" in page.text
    assert len((await detail(service, incident_id))["acknowledgements"]) == 1


# --- withdrawn ---------------------------------------------------------------------------------


async def test_withdrawing_tells_everyone_told_and_cancels_everything_else(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    opened = await post(service, release_failure())
    await advance(service, clock, hours=2)

    await post(service, follow_up("withdrawn", 200))

    withdrawn = smtp.handler.messages()[5:]
    assert sent_to(withdrawn) == {COORDINATOR: 1, CELL_LAB: 1, BACKUP: 1, PHYSICIAN: 1}
    assert "Disregard the earlier messages" in withdrawn[0].part("plain")
    await advance(service, clock, days=10)
    assert len(smtp.handler.messages()) == 9
    state = await detail(service, opened["incident_id"])
    assert state["status"] == "withdrawn"
    assert {n["status"] for n in state["notifications"]} == {"sent", "cancelled"}


# --- the notify_within promise ----------------------------------------------------------------


async def test_the_first_notice_on_time_keeps_the_promise(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    opened = await post(service, release_failure())

    state = await detail(service, opened["incident_id"])

    # Mercy Health promises a major incident's first notice within 4 h
    assert state["notify_within"] == {
        "deadline": "2026-11-24T19:12:00Z",
        "first_delivered_at": "2026-11-24T15:12:00Z",
        "state": "met",
    }
    listed = await service.client.get("/v1/incidents?breached=true", headers=service.auth)
    assert listed.json()["items"] == []
    kept = await service.client.get("/v1/incidents?breached=false", headers=service.auth)
    assert [i["incident_id"] for i in kept.json()["items"]] == [opened["incident_id"]]


async def test_a_first_notice_that_cannot_be_delivered_in_time_is_a_breach(
    settings: Settings, clock: ManualClock
) -> None:
    # Given a mail server that is down when the incident opens (not listening yet)
    smtp = CaptureServer()
    settings = settings.model_copy(update={"smtp_port": smtp.port})
    service = await start_service(settings, clock)
    try:
        opened = await post(service, release_failure(severity="critical"))
        incident_id = opened["incident_id"]
        state = await detail(service, incident_id)
        assert state["notify_within"]["state"] == "pending"
        assert state["notify_within"]["deadline"] == "2026-11-24T16:12:00Z"  # critical: 1 h

        # When the deadline passes with nothing delivered, the incident is listed as breached
        clock.advance(timedelta(hours=1, minutes=1))
        listed = await service.client.get("/v1/incidents?breached=true", headers=service.auth)
        assert [i["incident_id"] for i in listed.json()["items"]] == [incident_id]

        # And when the mail server is back, the late delivery is recorded as the breach it is
        with smtp:
            clock.advance(timedelta(minutes=30))
            await service.settle()
            await received(smtp, 2)
        state = await detail(service, incident_id)
        assert state["notify_within"]["state"] == "breached"
        assert state["notify_within"]["first_delivered_at"] > "2026-11-24T16:12:00Z"
        actions = [e["action"] for e in await timeline(service, incident_id)]
        assert "notify_within_breached" in actions
    finally:
        await service.stop()


# --- the agreement in force --------------------------------------------------------------------


async def edit_and_restart(
    settings: Settings, clock: ManualClock, edit: Callable[[], None]
) -> tuple[RunningService, str, str]:
    """Open the example incident, stop, ``edit`` the files, start again and open another one:
    the service running again, and the two incidents' ids (before and after the edit)."""
    service = await start_service(settings, clock)
    first = await post(service, release_failure())
    await service.stop()
    edit()
    service = await start_service(settings, clock, service.api_key)
    second = await post(
        service, release_failure(event_id="QA-EVT-2026-000900", incident_ref="OOS-2026-0150")
    )
    return service, first["incident_id"], second["incident_id"]


async def opened_entry(service: RunningService, incident_id: str) -> dict[str, Any]:
    [entry] = [e for e in await timeline(service, incident_id) if e["action"] == "incident_opened"]
    return entry


async def test_a_config_edit_changes_new_incidents_only_and_the_timeline_says_which_applied(
    tmp_path: Path, settings: Settings, clock: ManualClock, smtp: CaptureServer
) -> None:
    # Given an incident opened under the standard plan (first reminder 2 business hours later),
    # when the plan is edited to remind after 1 hour, the change approved, and the service
    # restarts
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    plan = config / "plans" / "standard.yaml"

    def remind_sooner() -> None:
        edited = plan.read_text().replace(
            "{after: 2h, business_hours", "{after: 1h, business_hours"
        )
        plan.write_text(edited)

    def remind_sooner_approved() -> None:
        remind_sooner()
        approve_files(settings, clock.now(), clock.now())

    settings = settings.model_copy(update={"config_dir": config})
    service, first, second = await edit_and_restart(settings, clock, remind_sooner_approved)
    try:
        # Then the first incident keeps its promised times; the new one follows the new plan
        old, new = await detail(service, first), await detail(service, second)
        assert set(due_of(old, "escalation_reminder", "scheduled")) == {"2026-11-24T17:12:00Z"}
        assert set(due_of(new, "escalation_reminder", "scheduled")) == {"2026-11-24T16:12:00Z"}
        assert old["agreement_version"] != new["agreement_version"]
        for state in (old, new):
            entry = await opened_entry(service, state["incident_id"])
            assert entry["detail"]["agreement_version"] == state["agreement_version"]
            assert entry["detail"]["plan"] == "standard"
    finally:
        await service.stop()


async def test_a_template_edit_changes_the_wording_for_new_incidents_only(
    tmp_path: Path, settings: Settings, clock: ManualClock, smtp: CaptureServer
) -> None:
    # Given an incident opened with the default reminder wording, when the reminder's subject
    # is reworded and the service restarts
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    subject = templates / "escalation_reminder" / "subject.txt"

    def reword() -> None:
        subject.write_text("[OOS REMINDER v2] {{ incident.ref }} still unconfirmed\n")

    settings = settings.model_copy(update={"templates_dir": templates})
    service, first, second = await edit_and_restart(settings, clock, reword)
    try:
        await advance(service, clock, hours=2)

        # Then the open incident's reminder keeps the wording it was planned with
        reminders = sorted(m.subject for m in smtp.handler.messages() if m.recipients[0] == BACKUP)
        assert reminders == [
            "Confirm now: OOS-2026-0142, notice on lot LOT-24-1187 unconfirmed",
            "[OOS REMINDER v2] OOS-2026-0150 still unconfirmed",
        ]
        old, new = await detail(service, first), await detail(service, second)
        assert old["template_version"] != new["template_version"]
        entry = await opened_entry(service, first)
        assert entry["detail"]["template_version"] == old["template_version"]
    finally:
        await service.stop()


async def test_a_decision_after_the_notice_was_acknowledged_reaches_qa_and_changes_no_round(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given the coordinator confirmed the first notice (QA receipt and liaison brief sent)
    opened = await post(service, release_failure())
    coordinator_mail = next(m for m in smtp.handler.messages() if m.recipients[0] == COORDINATOR)
    await service.client.post(ack_link(coordinator_mail), data={"response": "received"})
    await service.settle()
    assert len(smtp.handler.messages()) == 5

    # When the product is offered for release and the physician declines it
    await post(service, follow_up("disposition", 200, disposition="oos_release_offered"))
    declined = await enrol_and_decide(
        service.client, ack_link(decision_request(smtp)), "decline_product"
    )
    assert "your decision is recorded" in declined.text
    await service.settle()

    # Then QA and the center's four roles hear of it (the latter after the offer's notice),
    # and the incident stays acknowledged in its first round
    after = smtp.handler.messages()[5:]
    assert sent_to(after) == {
        PHYSICIAN: 1,
        COORDINATOR: 2,
        CELL_LAB: 2,
        NAVIGATOR: 1,
        QUALITY: 2,
        PHARMACY: 2,
        REGULATORY: 1,
        QA: 1,
    }
    outcomes = [m.recipients[0] for m in after if m.subject.startswith("Decision made: ")]
    assert sorted(outcomes) == sorted([COORDINATOR, CELL_LAB, PHARMACY, QUALITY])
    receipt = next(m for m in after if m.recipients[0] == QA)
    assert receipt.subject == "Act on decision: OOS-2026-0142, lot LOT-24-1187: product declined"
    state = await detail(service, opened["incident_id"])
    assert (state["status"], state["ack_round"], state["decision"]) == (
        "acknowledged",
        1,
        "decline_product",
    )
    assert [(a["purpose"], a["by"]) for a in state["acknowledgements"]] == [
        ("acknowledgement", COORDINATOR),
        ("decision", PHYSICIAN),
    ]


async def test_the_trail_records_the_status_an_acknowledgement_ends(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident that escalated: nobody at the center confirmed within two hours
    opened = await post(service, release_failure())
    await advance(service, clock, hours=2)
    [notice] = [m for m in smtp.handler.messages() if m.recipients[0] == COORDINATOR]

    # When the coordinator confirms
    confirmed = await service.client.post(ack_link(notice), data={"response": "received"})
    assert confirmed.status_code == 200

    # Then the trail says the incident went from escalated to acknowledged
    changes = [
        (e["detail"]["status_from"], e["detail"]["status_to"])
        for e in await timeline(service, opened["incident_id"])
        if e["action"] == "incident_status_changed"
    ]
    assert changes == [("notifying", "escalated"), ("escalated", "acknowledged")]
