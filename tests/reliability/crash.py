"""Kill -9 at random moments, and count what the mail server got.

    python -m tests.reliability.crash [--incidents 300] [--kills 50] [--seed N]

Runs ``oos-notify serve`` as a subprocess on its own database (``tests.databases``) and config
(an escalation plan whose steps are 3 and 6 seconds apart), sending to an aiosmtpd server in
this process that outlives every death of the service and answers each message after a short
delay, so a kill often lands between a send and its record. Incidents are posted at a steady
pace (a post that dies with the service is posted again with the same body: events are
idempotent) while the service is SIGKILLed at random moments and restarted. At the end the mail
server's messages are checked against what the service promised in its answers: every
notification arrived, once or several times under one Message-ID, to the right recipient.
Prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from oos_notify.delivery.capture import CapturedMessage
from tests.conftest import now, release_failure
from tests.served import ServedProcess
from tests.smtp_faults import Fault, FaultySmtpServer

ROOT = Path(__file__).resolve().parents[2]
CENTERS = ("mercy-general-main", "mercy-west", "rhein-uk-bonn")
QUICK_PLAN = """\
id: standard
steps:
  - {after: 0m, notify: [coordinator, cell_lab], template: release_failure_initial}
  - {after: 3s, notify: [coordinator_backup, physician], template: escalation_reminder}
  - after: 6s
    notify: [pharmacy_director, "manufacturer:account_lead"]
    template: escalation_final
patient_communication:
  - {when: acknowledged, after: 0m, notify: [patient_liaison], template: patient_liaison_brief}
"""
SETTINGS = {"OOS_NOTIFY_SWEEP_INTERVAL_SECONDS": "1", "OOS_NOTIFY_RETRY_BASE_SECONDS": "1"}
RESENT = re.compile(r"resending (\d+) notifications interrupted")


@dataclass
class CrashReport:
    kills: int = 0
    """SIGKILLs survived: each followed by a restart that became ready."""
    incidents: int = 0
    expected: int = 0
    """Notifications the service's answers promised."""
    delivered: int = 0
    """Expected notifications that reached the mail server at least once."""
    missing: int = 0
    duplicated_same_id: int = 0
    """Notifications received more than once, every copy under the same Message-ID."""
    duplicated_different_id: int = 0
    """Notifications received under two or more Message-IDs: what must never happen."""
    extra_copies: int = 0
    unexpected: int = 0
    """Messages naming no notification the service promised."""
    wrong_recipient: int = 0
    wrong_message_id: int = 0
    """Messages whose Message-ID is not the one the database gave their notification."""
    not_sent_in_database: int = 0
    reposts: int = 0
    """Posts that died with the service and were sent again."""
    kills_mid_send: int = 0
    """Kills that left notifications claimed for sending (the restart resent them)."""
    resent_at_restart: int = 0
    slowest_restart_seconds: float = 0.0
    max_lateness_seconds: float = 0.0
    """The latest first arrival after a notification's due time (a dead service sends nothing)."""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.duplicated_different_id
            or self.unexpected
            or self.wrong_recipient
            or self.wrong_message_id
            or self.not_sent_in_database
            or self.problems
        )


def event(number: int) -> dict[str, Any]:
    return release_failure(
        at=now(),
        event_id=f"CRASH-EVT-{number:05d}",
        incident_ref=f"OOS-CRASH-{number:05d}",
        center_id=CENTERS[number % len(CENTERS)],
        lot_number=f"LOT-CRASH-{number:05d}",
        chain_of_identity=f"COI-CRASH-{number:05d}",
        severity="critical",
    )


class Poster:
    """Posts the incidents at a steady pace; a post lost with the service is posted again (to the
    next of ``bases``, when several processes serve the API)."""

    def __init__(self, bases: list[str], key: str, count: int, pace_seconds: float) -> None:
        self.bases = bases
        self.headers = {"Authorization": f"Bearer {key}"}
        self.count = count
        self.pace = pace_seconds
        self.promised: dict[str, dict[str, Any]] = {}
        """Notification id -> what the service's answer scheduled (recipient, due_at)."""
        self.reposts = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _post(self, client: httpx.Client, number: int) -> None:
        body = event(number)
        until = time.monotonic() + 120
        for attempt in itertools.count(number):
            if time.monotonic() >= until:
                break
            base = self.bases[attempt % len(self.bases)]
            try:
                answer = client.post(f"{base}/v1/events", json=body, headers=self.headers)
            except httpx.TransportError:
                self.reposts += 1
                time.sleep(0.2)
                continue
            if answer.status_code in (200, 202):
                for item in answer.json()["scheduled"]:
                    self.promised[item["notification_id"]] = item
                return
            self.errors.append(f"{body['event_id']}: HTTP {answer.status_code} {answer.text}")
            return
        self.errors.append(f"{body['event_id']}: never accepted")

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for number in range(self.count):
                self._post(client, number)
                time.sleep(self.pace)


def _workdir_config(workdir: Path) -> None:
    shutil.copytree(ROOT / "config", workdir / "config")
    (workdir / "config/plans/standard.yaml").write_text(QUICK_PLAN, encoding="utf-8")


def _count(
    report: CrashReport,
    promised: dict[str, dict[str, Any]],
    messages: list[CapturedMessage],
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, status, message_id FROM notifications")).all()
    engine.dispose()
    stored = {row.id: row for row in rows}
    copies: dict[str, list[CapturedMessage]] = {}
    for message in messages:
        copies.setdefault(str(message.message["X-OOS-Notification"]), []).append(message)
    report.expected = len(promised)
    report.unexpected = sum(len(v) for k, v in copies.items() if k not in promised)
    for notification_id, item in promised.items():
        received = copies.get(notification_id, [])
        if not received:
            report.missing += 1
            report.problems.append(f"{notification_id} never arrived")
            continue
        report.delivered += 1
        ids = {m.message_id for m in received}
        if len(ids) > 1:
            report.duplicated_different_id += 1
        elif len(received) > 1:
            report.duplicated_same_id += 1
        report.extra_copies += len(received) - 1
        row = stored.get(notification_id)
        if row is None or row.status != "sent":
            report.not_sent_in_database += 1
        if row is None or ids != {row.message_id}:
            report.wrong_message_id += 1
        if any(m.recipients != (item["recipient"],) for m in received):
            report.wrong_recipient += 1
        due = datetime.fromisoformat(item["due_at"].replace("Z", "+00:00"))
        first = min(m.received_at for m in received)
        report.max_lateness_seconds = max(
            report.max_lateness_seconds, round((first - due).total_seconds(), 2)
        )


def _await_delivery(smtp: FaultySmtpServer, poster: Poster, idle_seconds: float) -> None:
    """Wait while messages keep arriving, until every promised notification has arrived.

    Only new arrivals are looked at on each pass: this process also runs the mail server, and
    re-reading thousands of messages every pass would slow the server the service is sending to.
    """
    arrived: set[str] = set()
    seen = 0
    last_progress = time.monotonic()
    while time.monotonic() - last_progress < idle_seconds:
        messages = smtp.handler.messages()
        if len(messages) > seen:
            arrived |= {str(m.message["X-OOS-Notification"]) for m in messages[seen:]}
            seen, last_progress = len(messages), time.monotonic()
        if poster.promised.keys() <= arrived and not poster.thread.is_alive():
            return
        time.sleep(0.25)


def run(
    incidents: int, kills: int, seed: int, max_uptime: float = 2.0, idle_seconds: float = 30
) -> CrashReport:
    """Post ``incidents`` while killing the service ``kills`` times, each after 0.3 s to
    ``max_uptime`` seconds of being ready; count what arrived once nothing more arrives for
    ``idle_seconds`` (or everything promised has)."""
    rng = random.Random(seed)
    report = CrashReport(incidents=incidents)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oos-crash-") as tmp, FaultySmtpServer() as smtp:
        # A short pause before each answer widens the window between a send and its record.
        smtp.handler.set_faults(Fault("DATA", delay=0.02))
        workdir = Path(tmp)
        _workdir_config(workdir)
        service = ServedProcess(workdir, workdir / "config", smtp.port, SETTINGS)
        key = service.api_key()
        service.start()
        # Kills every 0.3 to 2 s of uptime; posts spread over about the same stretch.
        uptimes = [rng.uniform(0.3, max_uptime) for _ in range(kills)]
        poster = Poster([service.base], key, incidents, pace_seconds=sum(uptimes) / incidents / 2)
        poster.thread.start()
        try:
            for uptime in uptimes:
                time.sleep(uptime)
                service.kill()
                restarted = time.monotonic()
                service.start()
                report.kills += 1
                report.slowest_restart_seconds = max(
                    report.slowest_restart_seconds, round(time.monotonic() - restarted, 2)
                )
            poster.thread.join(timeout=300)
            _await_delivery(smtp, poster, idle_seconds)
            time.sleep(1)  # anything still in flight lands, so duplicates are counted too
        finally:
            service.stop()
        report.reposts = poster.reposts
        report.problems += poster.errors
        if report.kills < kills:
            report.problems.append(f"only {report.kills} of {kills} kills happened")
        _count(report, poster.promised, smtp.handler.messages(), service.database_url)
        resent = [int(n) for n in RESENT.findall(service.log.read_text(errors="replace"))]
        report.kills_mid_send, report.resent_at_restart = len(resent), sum(resent)
        if report.problems:
            tail = service.log.read_text(errors="replace").splitlines()[-40:]
            report.problems.append("service log tail:\n" + "\n".join(tail))
    report.seconds = round(time.monotonic() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    report = run(args.incidents, args.kills, args.seed)
    print(json.dumps({"seed": args.seed, "ok": report.ok, **asdict(report)}, indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
