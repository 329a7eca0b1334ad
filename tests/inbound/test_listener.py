"""Returned mail taken in by the SMTP listener: real MIME messages over real SMTP, and their
effect on the incident."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest
import yaml
from sqlmodel import Session

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CapturedMessage, CaptureServer, free_port
from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from oos_notify.store.models import Incident
from tests.conftest import CONFIG_DIR, START, RunningService, service_settings, start_service
from tests.inbound.conftest import (
    BACKUP_COORDINATOR,
    COORDINATOR,
    LEVEL_ONE,
    QA,
    REPLY_DOMAIN,
    addresses,
    detail,
    open_incident,
    sent_since,
    timeline,
)
from tests.inbound.mail import deliver, reply, returned


def words(text: str) -> str:
    """Text with its line breaks and runs of spaces as single spaces."""
    return " ".join(text.split())


DSNS = {
    "postfix": ("dsn-postfix-5.1.1.eml", "5.1.1"),
    "exchange": ("ndr-exchange-online-5.1.10.eml", "5.1.10"),
    "gmail": ("dsn-gmail-failure-5.1.1.eml", "5.1.1"),
}


@pytest.mark.parametrize("shape", DSNS)
async def test_a_bounce_fails_the_first_notice_tells_qa_and_brings_the_backup_forward(
    service: RunningService, smtp: CaptureServer, settings: Settings, shape: str
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    sample, status = DSNS[shape]
    bounce = returned(sample, addresses(service), opened.notification_id, COORDINATOR)
    bounce_to = addresses(service).address(opened.notification_id, Purpose.BOUNCE)

    await deliver(settings.inbound_smtp_port, bounce, bounce_to)
    await service.settle()

    incident = await detail(service, opened.incident_id)
    notice = next(
        n for n in incident["notifications"] if n["notification_id"] == opened.notification_id
    )
    assert notice["status"] == "failed"
    assert status in notice["last_error"]
    new = sent_since(smtp, before)
    # The clock has not moved: the backup coordinator hears now, not two hours later; the
    # physician, who had the first notice, keeps the step's time.
    assert {m.recipients[0] for m in new} == {BACKUP_COORDINATOR, QA}
    report = next(m for m in new if m.recipients == (QA,))
    assert report.subject == (
        "Reach the center: OOS-2026-0142, lot LOT-24-1187, notice not delivered"
    )
    assert "returned as undeliverable" in words(report.part("plain"))
    assert (
        "Brought forward at once: the notice to Backup Coordinator (coordinator_backup)."
        in words(report.part("plain"))
    )
    assert "Server reply: 550 " in words(report.part("plain"))
    assert incident["returned_mail_counts"]["bounce"] == 1
    [mail] = incident["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("bounce", "notice_failed")
    actions = [e["action"] for e in await timeline(service, opened.incident_id)]
    assert "notification_bounced" in actions and "escalation_advanced" in actions


async def test_a_bounce_with_nobody_at_qa_to_tell_says_so_as_returned_mail(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # An incident with no QA contact on its event, whose agreement names no QA desk
    opened = await open_incident(service, smtp, qa_contact=None)
    with Session(service.services.engine) as db:
        incident = db.get(Incident, opened.incident_id)
        assert incident is not None
        agreement = dict(incident.agreement)
        agreement["manufacturer_contacts"] = {
            role: people
            for role, people in agreement["manufacturer_contacts"].items()
            if role != "qa"
        }
        incident.agreement = agreement
        db.add(incident)
        db.commit()
    bounce = returned(DSNS["postfix"][0], addresses(service), opened.notification_id, COORDINATOR)
    bounce_to = addresses(service).address(opened.notification_id, Purpose.BOUNCE)

    await deliver(settings.inbound_smtp_port, bounce, bounce_to)
    await service.settle()

    entries = await timeline(service, opened.incident_id)
    [not_told] = [e for e in entries if e["action"] == "qa_not_told"]
    assert not_told["actor"] == "returned mail"
    assert not_told["notification_id"] == opened.notification_id
    assert not_told["detail"]["because"] == "there is no QA contact to tell"


async def test_a_delayed_delivery_is_recorded_and_changes_nothing(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    delay = returned(
        "dsn-postfix-delayed-4.4.1.eml", addresses(service), opened.notification_id, COORDINATOR
    )

    await deliver(
        settings.inbound_smtp_port,
        delay,
        addresses(service).address(opened.notification_id, Purpose.BOUNCE),
    )
    await service.settle()

    incident = await detail(service, opened.incident_id)
    statuses = {n["notification_id"]: n["status"] for n in incident["notifications"]}
    assert statuses[opened.notification_id] == "sent"
    assert sent_since(smtp, before) == []
    assert incident["returned_mail_counts"]["delay"] == 1
    delayed = [
        e for e in await timeline(service, opened.incident_id) if e["action"] == "delivery_delayed"
    ]
    assert delayed[0]["detail"]["status"] == "4.4.1"


async def test_the_listener_refuses_every_recipient_but_a_genuine_return_address(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    genuine = addresses(service).address(opened.notification_id, Purpose.BOUNCE)
    local, _, domain = genuine.partition("@")
    changed = local[:-1] + ("0" if local[-1] != "0" else "1")
    as_reply = genuine.replace("bounce+", "oos+")
    for recipient in (f"{changed}@{domain}", as_reply, f"postmaster@{REPLY_DOMAIN}"):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await deliver(settings.inbound_smtp_port, b"Subject: x\r\n\r\nx\r\n", recipient)
        assert refused.value.recipients[0].code == 550
    assert (await detail(service, opened.incident_id))["returned_mail"] == []


@pytest.mark.parametrize(
    "sample", ["autoreply-outlook-en.eml", "autoreply-gmail-vacation.eml"], ids=["outlook", "gmail"]
)
async def test_an_out_of_office_reply_starts_the_next_step_now_and_is_never_answered(
    service: RunningService, smtp: CaptureServer, settings: Settings, sample: str
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    away = returned(sample, addresses(service), opened.notification_id, COORDINATOR)

    await deliver(
        settings.inbound_smtp_port,
        away,
        addresses(service).address(opened.notification_id, Purpose.REPLY),
    )
    await service.settle()

    assert {m.recipients[0] for m in sent_since(smtp, before)} == LEVEL_ONE
    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "escalated" and incident["acknowledged_at"] is None
    entries = await timeline(service, opened.incident_id)
    auto = next(e for e in entries if e["action"] == "auto_reply_received")
    assert "away until 1 December" in auto["detail"]["first_lines"] or (
        "out of the office until Monday" in auto["detail"]["first_lines"]
    )
    assert incident["returned_mail"][0]["outcome"] == "escalated"


async def test_a_plan_that_says_record_only_records_an_out_of_office_reply(
    tmp_path: Path, smtp: CaptureServer
) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    plan_file = config / "plans" / "standard.yaml"
    plan = yaml.safe_load(plan_file.read_text())
    plan_file.write_text(yaml.safe_dump({**plan, "on_out_of_office": "record"}))
    port = free_port()
    settings = service_settings(
        tmp_path,
        smtp,
        config_dir=config,
        reply_domain=REPLY_DOMAIN,
        inbound="smtp",
        inbound_smtp_port=port,
    )
    service = await start_service(settings, ManualClock(START))
    try:
        opened = await open_incident(service, smtp)
        before = smtp.handler.count
        away = returned(
            "autoreply-outlook-en.eml", addresses(service), opened.notification_id, COORDINATOR
        )
        await deliver(port, away, addresses(service).address(opened.notification_id, Purpose.REPLY))
        await service.settle()

        assert sent_since(smtp, before) == []
        incident = await detail(service, opened.incident_id)
        assert incident["returned_mail"][0]["outcome"] == "recorded"
        assert incident["returned_mail"][0]["detail"]["reason"] == "the plan says record"
    finally:
        await service.stop()


async def test_received_thanks_above_the_quoted_original_acknowledges_as_the_link_would(
    service: RunningService, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    answer = reply(
        f"Cell Therapy Coordinator <{COORDINATOR}>",
        addresses(service).address(opened.notification_id, Purpose.REPLY),
        "Received, thanks. We are holding lymphodepletion.",
        quoting=opened.notice.part("plain"),
    )

    await deliver(
        settings.inbound_smtp_port,
        answer,
        addresses(service).address(opened.notification_id, Purpose.REPLY),
        sender=COORDINATOR,
    )
    await service.settle()

    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "acknowledged"
    [ack] = incident["acknowledgements"]
    assert ack["by"] == COORDINATOR and ack["response"] == "received"
    assert ack["comment"] == "Received, thanks. We are holding lymphodepletion."
    new = sent_since(smtp, before)
    # QA also gets the reply forwarded (it reports on lymphodepletion), in either order
    [receipt] = [m for m in new if m.recipients == (QA,) and m.subject.startswith("Confirmed")]
    assert receipt.subject == "Confirmed by the center: OOS-2026-0142, lot LOT-24-1187"
    assert "We are holding lymphodepletion." in receipt.part("plain")
    assert "navigator@mercy.example" in {m.recipients[0] for m in new}  # the acknowledged step
    clock.advance(timedelta(hours=6))
    await service.settle()
    assert not LEVEL_ONE & {m.recipients[0] for m in sent_since(smtp, before)}


async def test_a_reply_with_a_nul_is_kept_with_a_replacement_and_still_acknowledges(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # A broken mailer's NUL cannot be stored as it is (PostgreSQL), nor refused (it came by
    # mail): it is kept as U+FFFD, and the reply does what it says
    opened = await open_incident(service, smtp)
    address = addresses(service).address(opened.notification_id, Purpose.REPLY)
    answer = reply(COORDINATOR, address, "Received\x00 thanks.")

    await deliver(settings.inbound_smtp_port, answer, address, sender=COORDINATOR)
    await service.settle()

    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "acknowledged"
    [ack] = incident["acknowledgements"]
    assert ack["by"] == COORDINATOR and ack["comment"] == "Received\ufffd thanks."


async def test_a_question_is_forwarded_to_qa_and_the_escalation_goes_on(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    question = reply(
        COORDINATOR,
        to,
        "Who should we call about moving the infusion date?\nThanks, Dana",
        quoting=opened.notice.part("plain"),
    )

    await deliver(settings.inbound_smtp_port, question, to, sender=COORDINATOR)
    await service.settle()

    [forward] = sent_since(smtp, before)
    assert forward.recipients == (QA,)
    assert forward.subject == "Answer the center's reply: OOS-2026-0142, lot LOT-24-1187"
    text = words(forward.part("plain"))
    assert "| Who should we call about moving the infusion date?" in text
    assert "because it does not confirm" in text
    assert "wrote:" not in text  # the quoted original is not forwarded
    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "notifying" and incident["acknowledgements"] == []
    assert incident["returned_mail"][0]["outcome"] == "forwarded"
    assert incident["returned_mail_counts"]["reply"] == 1


@pytest.mark.parametrize("case", ["forged sender", "failed authentication", "closed incident"])
async def test_a_reply_that_must_not_count_changes_nothing(
    service: RunningService, smtp: CaptureServer, settings: Settings, case: str
) -> None:
    opened = await open_incident(service, smtp)
    sender = "someone.else@mercy.example" if case == "forged sender" else COORDINATOR
    authentication = (
        "mx.manufacturer.example; spf=fail smtp.mailfrom=mercy.example; dkim=none"
        if case == "failed authentication"
        else "passed"
    )
    if case == "closed incident":
        closing = {"event_id": "QA-EVT-CLOSE", "type": "resolved", "incident_ref": "OOS-2026-0142"}
        closing["occurred_at"] = "2026-11-24T15:10:00Z"
        closing["center_id"] = "mercy-general-main"
        assert (await service.post_event(closing)).status_code == 202
        await service.settle()
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    answer = reply(sender, to, "Received.", authentication=authentication)

    await deliver(settings.inbound_smtp_port, answer, to, sender=sender)
    await service.settle()

    incident = await detail(service, opened.incident_id)
    assert incident["acknowledgements"] == []
    assert incident["status"] == ("resolved" if case == "closed incident" else "notifying")
    assert sent_since(smtp, before) == []
    [mail] = incident["returned_mail"]
    assert mail["outcome"] == ("recorded" if case == "closed incident" else "flagged")
    flagged = [
        e for e in await timeline(service, opened.incident_id) if e["action"] == "reply_flagged"
    ]
    assert len(flagged) == (0 if case == "closed incident" else 1)


CELL_LAB = "celllab@mercy.example"
"""In the standard plan's first step, but not among the roles that stop its escalation."""


def notice_to(smtp: CaptureServer, recipient: str) -> tuple[CapturedMessage, str]:
    """The one notice ``recipient`` received, and its notification id."""
    [notice] = [m for m in smtp.handler.messages() if m.recipients == (recipient,)]
    return notice, str(notice.message["X-OOS-Notification"])


async def test_received_from_the_cell_lab_is_recorded_and_stops_nothing_as_on_the_page(
    service: RunningService, smtp: CaptureServer, settings: Settings, clock: ManualClock
) -> None:
    opened = await open_incident(service, smtp)
    lab, lab_notification = notice_to(smtp, CELL_LAB)
    to = addresses(service).address(lab_notification, Purpose.REPLY)
    before = smtp.handler.count

    # When the cell lab replies "received", and again
    for _ in range(2):
        answer = reply(CELL_LAB, to, "Received, thanks.", quoting=lab.part("plain"))
        await deliver(settings.inbound_smtp_port, answer, to, sender=CELL_LAB)
        await service.settle()

    # Then its confirmation is recorded once, stopping nothing: nobody is told, nothing forwarded
    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "notifying"
    [confirmation] = incident["acknowledgements"]
    assert (confirmation["by"], confirmation["role"]) == (CELL_LAB, "cell_lab")
    assert confirmation["stopped_escalation"] is False
    assert sent_since(smtp, before) == []
    assert [(m["outcome"], m["detail"]["reason"]) for m in incident["returned_mail"]] == [
        ("recorded", "a confirmation from a role that does not stop the escalation"),
        ("recorded", "already confirmed"),
    ]

    # And the escalation goes on: the backup and the physician hear two hours in
    clock.advance(timedelta(hours=2))
    await service.settle()
    assert {m.recipients[0] for m in sent_since(smtp, before)} == LEVEL_ONE

    # And the coordinator's own reply still acknowledges, with QA's receipt
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)
    await deliver(
        settings.inbound_smtp_port, reply(COORDINATOR, to, "Received."), to, sender=COORDINATOR
    )
    await service.settle()
    assert (await detail(service, opened.incident_id))["status"] == "acknowledged"
    assert QA in {m.recipients[0] for m in sent_since(smtp, before)}


async def test_the_cell_labs_out_of_office_reply_brings_no_step_forward(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    opened = await open_incident(service, smtp)
    _, lab_notification = notice_to(smtp, CELL_LAB)
    before = smtp.handler.count
    away = returned("autoreply-outlook-en.eml", addresses(service), lab_notification, CELL_LAB)

    await deliver(
        settings.inbound_smtp_port,
        away,
        addresses(service).address(lab_notification, Purpose.REPLY),
    )
    await service.settle()

    # Nobody who could stop the escalation is away: the next step keeps its time
    assert sent_since(smtp, before) == []
    incident = await detail(service, opened.incident_id)
    assert incident["status"] == "notifying"
    [mail] = incident["returned_mail"]
    assert (mail["kind"], mail["outcome"]) == ("auto_reply", "recorded")
    assert mail["detail"]["reason"] == "its recipient's confirmation would not stop the escalation"


async def test_a_question_about_an_incident_stored_under_older_address_rules_is_forwarded(
    service: RunningService, smtp: CaptureServer, settings: Settings
) -> None:
    # Given an incident whose stored agreement has an address today's checks refuse
    opened = await open_incident(service, smtp)
    with Session(service.services.engine) as session:
        incident = session.get(Incident, opened.incident_id)
        assert incident is not None
        incident.agreement = json.loads(
            json.dumps(incident.agreement).replace("@mercy.example", "@mercy.local")
        )
        session.add(incident)
        session.commit()
    before = smtp.handler.count
    to = addresses(service).address(opened.notification_id, Purpose.REPLY)

    # When the coordinator asks a question by reply
    question = reply(COORDINATOR, to, "Who should we call about the infusion date?")
    await deliver(settings.inbound_smtp_port, question, to, sender=COORDINATOR)
    await service.settle()

    # Then it reaches QA as for any incident
    [forward] = sent_since(smtp, before)
    assert forward.recipients == (QA,)
    incident_now = await detail(service, opened.incident_id)
    assert incident_now["returned_mail"][0]["outcome"] == "forwarded"
