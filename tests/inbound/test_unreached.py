"""A notice that reached nobody, whether the mail server refused it at RCPT or accepted it and
a bounce came back, means one thing: that person was not reached. The escalation moves forward
for their role (its backup, or the role's next step), not for the whole plan while others of
the step were reached. The standard plan names the physician in its first two steps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oos_notify.return_addresses import Purpose
from oos_notify.settings import Settings
from tests.conftest import RunningService, release_failure
from tests.inbound.conftest import (
    BACKUP_COORDINATOR,
    COORDINATOR,
    PHYSICIAN,
    QA,
    addresses,
    detail,
    open_incident,
    sent_since,
)
from tests.inbound.mail import deliver, returned
from tests.smtp_faults import Fault, FaultySmtpServer

FINAL = {"rx-director@mercy.example", "al-midwest@manufacturer.example"}
"""Who the standard plan's last step, the final escalation, goes to."""
PHYSICIAN_NAME = "Dr. Lena Ortiz, CAR-T attending"
USER_UNKNOWN = "550 5.1.1 <ct-md@mercy.example>: Recipient address rejected: User unknown"


@pytest.fixture
def smtp() -> Iterator[FaultySmtpServer]:
    """The centers' mail server, which a test may make refuse an address at RCPT."""
    server = FaultySmtpServer().up()
    try:
        yield server
    finally:
        server.down()


def words(text: str) -> str:
    return " ".join(text.split())


def waiting(incident: dict[str, object], recipients: set[str]) -> set[str]:
    notifications = incident["notifications"]
    assert isinstance(notifications, list)
    return {
        n["recipient"]
        for n in notifications
        if n["recipient"] in recipients and n["status"] == "scheduled"
    }


async def test_a_bounce_of_the_physicians_notice_brings_the_physicians_next_step_not_the_final(
    service: RunningService, smtp: FaultySmtpServer, settings: Settings
) -> None:
    # Given an incident whose first notices went out, the coordinator's among them
    opened = await open_incident(service, smtp)
    [first] = [m for m in smtp.handler.messages() if m.recipients == (PHYSICIAN,)]
    before = smtp.handler.count

    # When the physician's notice bounces
    notice = str(first.message["X-OOS-Notification"])
    bounce = returned("dsn-postfix-5.1.1.eml", addresses(service), notice, PHYSICIAN)
    await deliver(
        settings.inbound_smtp_port, bounce, addresses(service).address(notice, Purpose.BOUNCE)
    )
    await service.settle()

    # Then the physician's own next notice goes at once, and QA hears what was brought forward
    new = sent_since(smtp, before)
    assert sorted(m.recipients[0] for m in new) == sorted([PHYSICIAN, QA])
    [reminder] = [m for m in new if m.recipients == (PHYSICIAN,)]
    assert reminder.subject.startswith("Confirm now: OOS-2026-0142")
    [report] = [m for m in new if m.recipients == (QA,)]
    assert f"Brought forward at once: the notice to {PHYSICIAN_NAME} (physician)." in words(
        report.part("plain")
    )

    # When that one bounces too
    before = smtp.handler.count
    again = str(reminder.message["X-OOS-Notification"])
    bounce = returned("dsn-postfix-5.1.1.eml", addresses(service), again, PHYSICIAN)
    await deliver(
        settings.inbound_smtp_port, bounce, addresses(service).address(again, Purpose.BOUNCE)
    )
    await service.settle()

    # Then only QA hears: the coordinator had the first notice, so the backup coordinator and
    # the final escalation keep their times
    new = sent_since(smtp, before)
    assert [m.recipients[0] for m in new] == [QA]
    assert "No other notice was brought forward." in words(new[0].part("plain"))
    incident = await detail(service, opened.incident_id)
    assert waiting(incident, FINAL | {BACKUP_COORDINATOR}) == FINAL | {BACKUP_COORDINATOR}


async def test_a_refusal_at_rcpt_of_the_physicians_notice_follows_the_same_rule(
    service: RunningService, smtp: FaultySmtpServer
) -> None:
    # Given a mail server that refuses the physician's address at RCPT
    smtp.handler.set_faults(Fault("RCPT", USER_UNKNOWN, PHYSICIAN))

    # When an incident opens
    answer = await service.post_event(release_failure())
    assert answer.status_code == 202, answer.text
    await service.settle()

    # Then the coordinator is told, the physician's next notice is tried at once (and refused
    # too), and QA hears of each, with what it brought forward
    delivered = [m.recipients[0] for m in smtp.handler.messages()]
    assert COORDINATOR in delivered
    assert not FINAL & set(delivered) and BACKUP_COORDINATOR not in delivered
    incident = await detail(service, answer.json()["incident_id"])
    physician = [n for n in incident["notifications"] if n["recipient"] == PHYSICIAN]
    assert sorted((n["level"], n["status"]) for n in physician) == [(0, "failed"), (1, "failed")]
    reports = [words(m.part("plain")) for m in smtp.handler.messages() if m.recipients == (QA,)]
    assert len(reports) == 2
    assert any(
        f"Brought forward at once: the notice to {PHYSICIAN_NAME} (physician)." in r
        for r in reports
    )
    assert any("No other notice was brought forward." in r for r in reports)
    assert waiting(incident, FINAL | {BACKUP_COORDINATOR}) == FINAL | {BACKUP_COORDINATOR}
