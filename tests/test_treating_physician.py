"""The patient's own physician and a decision that closes the loop, over real HTTP and real SMTP:
a treating physician who is not a site contact is told first, asked and decides; a coordinator's
confirmation leaves the physician's own step scheduled; the decision reaches the center's
coordinator, cell lab, pharmacy and quality unit; an automatic reply to a decision request tells
QA and asks the deputy; reminders go out at the times the plan lists; an incident opened already
offering a product asks its deciders."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer, free_port
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import (
    CONFIG_DIR,
    ROOT,
    RunningService,
    ack_link,
    command_env,
    release_failure,
    service_settings,
    start_service,
)
from tests.console.conftest import add_people, browser, sign_in
from tests.inbound.conftest import REPLY_DOMAIN, addresses
from tests.inbound.mail import deliver, returned
from tests.passkeys import enrol_and_decide
from tests.test_lifecycle import (
    CELL_LAB,
    COORDINATOR,
    PHARMACY,
    PHYSICIAN,
    QA,
    QUALITY,
    advance,
    detail,
    follow_up,
    post,
    sent_to,
)

TREATING = {
    "name": "Dr. Ada Moreno",
    "email": "a.moreno@partner-oncology.example",
    "phone": "+1 312 555 0199",
}
"""The patient's own physician, at a practice outside the site's contact list."""
PHYSICIAN_STEP_AT = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
"""96 hours before lymphodepletion starts (Mon 30 Nov 2026, 00:00 in Chicago)."""
REMINDER_AFTER_OFFER_HOURS = 4
DEADLINE = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
"""The decision deadline: 72 hours before lymphodepletion."""


def physician_config(directory: Path) -> Path:
    """The example config, with the standard plan giving the treating physician a step of
    their own before lymphodepletion, decision reminders, and site deciders as deputies."""
    config = directory / "config"
    shutil.copytree(CONFIG_DIR, config)
    plan_file = config / "plans" / "standard.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    plan["treating_physician"] = [
        {"after": "0m", "template": "release_failure_initial"},
        {"before": "lymphodepletion_start", "by": "96h", "template": "physician_reminder"},
    ]
    plan["decision"] |= {
        "reminders": [
            {"after": f"{REMINDER_AFTER_OFFER_HOURS}h"},
            {"before": "lymphodepletion_start", "by": "96h"},
        ],
        "deputies": "when_absent",
    }
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    return config


@pytest.fixture
def settings(tmp_path: Path, smtp: CaptureServer) -> Settings:
    return service_settings(
        tmp_path,
        smtp,
        config_dir=physician_config(tmp_path),
        reply_domain=REPLY_DOMAIN,
        inbound="smtp",
        inbound_smtp_port=free_port(),
    )


@pytest.fixture
async def service(settings: Settings, clock: ManualClock) -> AsyncIterator[RunningService]:
    running = await start_service(settings, clock)
    try:
        yield running
    finally:
        await running.stop()


def mail_to(messages: list[CapturedMessage], recipient: str) -> CapturedMessage:
    [mail] = [m for m in messages if m.recipients[0] == recipient]
    return mail


def plain(message: CapturedMessage) -> str:
    return " ".join(message.part("plain").split())


def since(smtp: CaptureServer, count: int) -> list[CapturedMessage]:
    return smtp.handler.messages()[count:]


def offer(number: int, **fields: Any) -> dict[str, Any]:
    return follow_up(
        "disposition",
        number,
        disposition="oos_release_offered",
        oos_checklist=[{"item": "risk_assessment", "reference": "RA-2026-0142"}],
        key_dates={"product_shipment": "2026-11-27"},
        **fields,
    )


async def test_a_treating_physician_who_is_not_a_site_contact_is_told_asked_and_decides(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a release failure naming the patient's own physician, who is no contact of the site
    opened = await post(service, release_failure(treating_physician=TREATING))

    # Then the physician gets the first notice at once, with a link of their own
    assert {"recipient": TREATING["email"], "template": "release_failure_initial"} in [
        {"recipient": s["recipient"], "template": s["template"]} for s in opened["scheduled"]
    ]
    notice = mail_to(smtp.handler.messages(), TREATING["email"])
    assert notice.subject == "Confirm receipt: OOS-2026-0142, lot LOT-24-1187 failed release"
    assert "/ack/" in ack_link(notice)
    assert "Dr. Ada Moreno" not in notice.subject
    state = await detail(service, opened["incident_id"])
    assert state["treating_physician"] == {**TREATING, "confirmed": False, "confirmed_at": None}

    # When QA offers the product for release
    before = smtp.handler.count
    await post(service, offer(200))

    # Then the treating physician is the one asked to decide; the site's decider is not
    asked = [m for m in since(smtp, before) if m.subject.startswith("Decision needed: ")]
    assert [m.recipients[0] for m in asked] == [TREATING["email"]]
    site_decider = mail_to(since(smtp, before), PHYSICIAN)
    assert "/ack/" not in site_decider.part("plain")
    assert not site_decider.subject.startswith("Decision needed: ")

    # And the request tells the physician to set up the passkey they sign with, in their name
    assert "SET UP YOUR PASSKEY FIRST (ONCE)" in plain(asked[0])
    assert f"for Dr. Ada Moreno <{TREATING['email']}>: your decisions are then" in plain(asked[0])

    # When the physician sets up a passkey and signs an acceptance on the decision page
    clock.advance(timedelta(minutes=30))
    before = smtp.handler.count
    decided = await enrol_and_decide(service.client, ack_link(asked[0]), "accept_oos_product")
    assert decided.status_code == 200 and "your decision is recorded" in decided.text
    await service.settle()

    # Then the center's coordinator, cell lab, pharmacy and quality unit each get the outcome:
    # what was decided, by whom, what ships when, and the pathway's references
    told = since(smtp, before)
    outcomes = [m for m in told if m.subject.startswith("Decision made: ")]
    assert sorted(m.recipients[0] for m in outcomes) == sorted(
        [COORDINATOR, CELL_LAB, PHARMACY, QUALITY]
    )
    for mail in outcomes:
        assert mail.subject == (
            "Decision made: OOS-2026-0142, lot LOT-24-1187: OOS product accepted"
        )
        text = plain(mail)
        assert (
            f"Accept the out-of-specification product, decided by {TREATING['email']} "
            "(physician) on Tue 24 Nov 2026, 09:42 CST." in text
        )
        assert "Signed by Dr. Ada Moreno, Tue 24 Nov 2026, 09:42 CST" in text
        assert "The product is planned to ship on Fri 27 Nov 2026." in text
        assert "[x] Manufacturer's risk assessment of the lot: RA-2026-0142" in text
        assert "/ack/" not in text
    # And QA has the decision, and the physician counts as having confirmed
    assert "Printed name: Dr. Ada Moreno" in plain(mail_to(told, QA))
    state = await detail(service, opened["incident_id"])
    assert state["decision"] == "accept_oos_product"
    assert state["treating_physician"]["confirmed"] is True
    own_steps = [n for n in state["notifications"] if n["template"] == "physician_reminder"]
    assert [n["status"] for n in own_steps] == ["cancelled"]
    assert not [
        n
        for n in state["notifications"]
        if n["status"] == "scheduled" and n["recipient"] == TREATING["email"]
    ]


async def test_a_coordinators_confirmation_leaves_the_physicians_own_step_scheduled(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given an incident naming the treating physician, whose first notice went out
    opened = await post(service, release_failure(treating_physician=TREATING))
    incident_id = opened["incident_id"]

    # When the coordinator confirms
    confirmed = await service.client.post(
        ack_link(mail_to(smtp.handler.messages(), COORDINATOR)), data={"response": "received"}
    )
    assert confirmed.status_code == 200
    await service.settle()

    # Then the center's reminders stop, but the physician's own step stays scheduled
    state = await detail(service, incident_id)
    assert state["status"] == "acknowledged"
    assert state["treating_physician"]["confirmed"] is False
    async with browser(service) as client:
        await sign_in(client, add_people(service).viewer)
        page = await client.get(f"/console/incidents/{incident_id}")
    assert (
        f"<dt>Treating physician</dt><dd>Dr. Ada Moreno &lt;{TREATING['email']}&gt;, "
        "not confirmed yet</dd>" in page.text
    )
    steps = {n["template"]: n for n in state["notifications"] if n["kind"] != "receipt"}
    assert steps["escalation_reminder"]["status"] == "cancelled"
    assert steps["physician_reminder"]["status"] == "scheduled"
    assert steps["physician_reminder"]["recipient"] == TREATING["email"]
    assert steps["physician_reminder"]["due_at"] == "2026-11-26T06:00:00Z"

    # When the clock reaches just before it, the physician hears nothing more
    before = smtp.handler.count
    await advance(service, clock, seconds=(PHYSICIAN_STEP_AT - clock.now()).total_seconds() - 1)
    assert TREATING["email"] not in sent_to(since(smtp, before))

    # Then at its time the physician is asked to confirm, told that the center has
    await advance(service, clock, seconds=1)
    [step] = [m for m in since(smtp, before) if m.recipients[0] == TREATING["email"]]
    assert step.subject == "Please confirm: OOS-2026-0142, OOS notice on lot LOT-24-1187"
    text = plain(step)
    assert "You are named as the patient's treating physician" in text
    assert "Mercy General — Main Campus has confirmed it (Cell Therapy Coordinator" in text

    # When the physician confirms with its link, their confirmation shows on the incident
    page = await service.client.post(ack_link(step), data={"response": "received"})
    assert page.status_code == 200
    state = await detail(service, incident_id)
    assert state["treating_physician"]["confirmed"] is True
    assert state["treating_physician"]["confirmed_at"] == "2026-11-26T06:00:00Z"
    [own] = [a for a in state["acknowledgements"] if a["by"] == TREATING["email"]]
    assert own["stopped_escalation"] is False


async def test_the_physicians_confirmation_stops_the_escalation_and_their_own_steps(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure(treating_physician=TREATING))

    page = await service.client.post(
        ack_link(mail_to(smtp.handler.messages(), TREATING["email"])),
        data={"response": "received"},
    )
    assert page.status_code == 200 and "acknowledged" in page.text.lower()
    await service.settle()

    state = await detail(service, opened["incident_id"])
    assert state["status"] == "acknowledged"
    assert state["treating_physician"]["confirmed"] is True
    assert not [n for n in state["notifications"] if n["status"] == "scheduled"]
    assert "Confirmed by the center: OOS-2026-0142" in mail_to(since(smtp, 0), QA).subject


async def test_an_out_of_office_reply_to_a_decision_request_tells_qa_and_asks_the_deputy(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # Given a product offered to the treating physician, with the site's decider as deputy
    opened = await post(service, release_failure(treating_physician=TREATING))
    before = smtp.handler.count
    await post(service, offer(200))
    request = mail_to(
        [m for m in since(smtp, before) if m.subject.startswith("Decision needed: ")],
        TREATING["email"],
    )
    notification_id = str(request.message["X-OOS-Notification"])

    # When the physician's mailbox answers with an automatic reply
    before = smtp.handler.count
    away = returned(
        "autoreply-outlook-en.eml", addresses(service), notification_id, TREATING["email"]
    )
    await deliver(
        settings.inbound_smtp_port,
        away,
        addresses(service).address(notification_id, Purpose.REPLY),
    )
    await service.settle()

    # Then QA is told at once, with the reply, and the deputy decider is asked with a link
    told = since(smtp, before)
    assert sent_to(told) == {QA: 1, PHYSICIAN: 1}
    qa = mail_to(told, QA)
    assert qa.subject == "Decider away: OOS-2026-0142, lot LOT-24-1187, automatic reply"
    text = plain(qa)
    assert f"From: Dr. Ada Moreno <{TREATING['email']}> (physician)" in text
    assert "- Dr. Lena Ortiz, CAR-T attending (physician), +1 312 555 0144" in text
    assert "/ack/" not in text
    deputy = mail_to(told, PHYSICIAN)
    assert deputy.subject.startswith("Decision needed: OOS-2026-0142")
    state = await detail(service, opened["incident_id"])
    assert state["oos_release"]["asked"] == [TREATING["email"], PHYSICIAN]

    # And the deputy's link records the decision
    decided = await enrol_and_decide(service.client, ack_link(deputy), "decline_product")
    assert "your decision is recorded" in decided.text
    assert (await detail(service, opened["incident_id"]))["decision"] == "decline_product"


async def test_decision_reminders_go_out_at_the_times_the_plan_lists(
    service: RunningService, smtp: CaptureServer, clock: ManualClock
) -> None:
    # Given a product offered to the site's decider (no treating physician named)
    opened = await post(service, release_failure())
    await service.client.post(
        ack_link(mail_to(smtp.handler.messages(), COORDINATOR)), data={"response": "received"}
    )
    await post(service, offer(200))
    offered_at = clock.now()

    def reminders_since(count: int) -> list[CapturedMessage]:
        return [m for m in since(smtp, count) if m.subject.startswith("Decision reminder: ")]

    # Then nothing reminds before the first time the plan lists
    before = smtp.handler.count
    first = offered_at + timedelta(hours=REMINDER_AFTER_OFFER_HOURS)
    await advance(service, clock, seconds=(first - clock.now()).total_seconds() - 1)
    assert reminders_since(before) == []

    # When it comes, the decider is reminded with a link that decides
    await advance(service, clock, seconds=1)
    [reminder] = reminders_since(before)
    assert reminder.recipients[0] == PHYSICIAN
    assert reminder.subject == (
        "Decision reminder: OOS-2026-0142, lot LOT-24-1187 offered for OOS release"
    )
    assert "We need the decision by Fri 27 Nov 2026, 00:00 CST" in plain(reminder)
    assert "/ack/" in ack_link(reminder)

    # And the second one at 96 hours before lymphodepletion, then the deadline's escalation
    before = smtp.handler.count
    await advance(service, clock, seconds=(PHYSICIAN_STEP_AT - clock.now()).total_seconds() - 1)
    assert reminders_since(before) == []
    await advance(service, clock, seconds=1)
    assert [m.recipients[0] for m in reminders_since(before)] == [PHYSICIAN]
    before = smtp.handler.count
    await advance(service, clock, seconds=(DEADLINE - clock.now()).total_seconds())
    assert any(m.subject.startswith("Decision overdue: ") for m in since(smtp, before))
    state = await detail(service, opened["incident_id"])
    reminded = [n for n in state["notifications"] if n["template"] == "decision_reminder"]
    assert [(n["due_at"], n["status"]) for n in reminded] == [
        ((first).strftime("%Y-%m-%dT%H:%M:%SZ"), "sent"),
        ("2026-11-26T06:00:00Z", "sent"),
    ]


async def test_a_decision_cancels_the_reminders_still_waiting(
    service: RunningService, smtp: CaptureServer
) -> None:
    opened = await post(service, release_failure())
    before = smtp.handler.count
    await post(service, offer(200))
    [request] = [m for m in since(smtp, before) if m.subject.startswith("Decision needed: ")]

    decided = await enrol_and_decide(service.client, ack_link(request), "request_remanufacture")
    assert "your decision is recorded" in decided.text

    state = await detail(service, opened["incident_id"])
    reminded = [n for n in state["notifications"] if n["template"] == "decision_reminder"]
    assert [n["status"] for n in reminded] == ["cancelled", "cancelled"]


async def test_an_incident_opened_already_offering_a_product_asks_its_deciders(
    service: RunningService, smtp: CaptureServer
) -> None:
    # When a release failure opens with the product already offered for OOS release
    opened = await post(
        service,
        release_failure(disposition="oos_release_offered", oos_pathway="us-expanded-access"),
    )

    # Then the site's decider is asked at once, with the pathway, and the others are told
    asked = [m for m in smtp.handler.messages() if m.subject.startswith("Decision needed: ")]
    assert [m.recipients[0] for m in asked] == [PHYSICIAN]
    assert "/ack/" in ack_link(asked[0])
    state = await detail(service, opened["incident_id"])
    assert state["oos_release"]["pathway"] == "us-expanded-access"
    assert state["oos_release"]["asked"] == [PHYSICIAN]


async def test_a_treating_physician_cannot_change_in_a_follow_up(
    service: RunningService, smtp: CaptureServer
) -> None:
    await post(service, release_failure(treating_physician=TREATING))

    refused = await service.post_event(
        follow_up("update", 200, treating_physician={**TREATING, "email": "other@x.example"})
    )

    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"][-1] == "treating_physician"
    assert "opens the incident" in error["msg"]


def test_check_config_validates_the_physician_steps_and_the_decision_loop(tmp_path: Path) -> None:
    # Given the example config, with a physician step naming a missing template, reminders
    # without a deadline, an unknown deputies mode, and an outcome role nobody holds
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    standard = tmp_path / "config" / "plans" / "standard.yaml"
    standard_plan = yaml.safe_load(standard.read_text())
    standard_plan["treating_physician"] = [{"after": "0m", "template": "physician_note"}]
    standard.write_text(
        yaml.safe_dump(
            {**standard_plan, "decision": {**standard_plan["decision"], "deputies": "sometimes"}},
            sort_keys=False,
        )
    )
    urgent = tmp_path / "config" / "plans" / "urgent.yaml"
    plan = yaml.safe_load(urgent.read_text())
    plan["decision"] = {"ask": ["physician"], "reminders": [{"after": "4h"}]}
    urgent.write_text(yaml.safe_dump(plan, sort_keys=False))

    # When the operator checks it
    first = check_config(tmp_path)

    # Then each problem is named with its file and field
    assert first.returncode != 0
    assert "config/plans/urgent.yaml: decision: 'reminders' needs 'due'" in first.stderr
    assert "config/plans/standard.yaml: decision.deputies: Input should be" in first.stderr

    # When those are fixed, the outcome role nobody holds shows
    standard.write_text(yaml.safe_dump(standard_plan, sort_keys=False))
    plan["decision"] = {"ask": ["physician"], "outcome_to": ["apheresis_unit"]}
    urgent.write_text(yaml.safe_dump(plan, sort_keys=False))
    second = check_config(tmp_path)
    assert second.returncode != 0
    assert (
        "plan 'urgent' notifies apheresis_unit but no contact of site 'mercy-general-main'"
        in second.stderr
    )

    # And once the agreements are valid, the physician step's missing template
    plan["decision"] = {"ask": ["physician"]}
    urgent.write_text(yaml.safe_dump(plan, sort_keys=False))
    third = check_config(tmp_path)
    assert third.returncode != 0
    assert "template 'physician_note' (used for mercy-general-main)" in third.stderr


def check_config(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "oos-notify"), "check-config"],
        cwd=workspace,
        env=command_env(workspace),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
