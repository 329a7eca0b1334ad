"""Agreements under change control: the service runs only an approved version; a change is
proposed by one console user and approved by a second qa user with their password and an
effective time; the version in force switches at that time by the service's clock, without a
restart; every incident names the version it opened under."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.settings import Settings
from oos_notify.store import agreement_versions, audit, signatures
from oos_notify.store.db import create_schema, make_engine, transaction
from oos_notify.store.models import AgreementVersion, AuditEntry, Incident
from oos_notify.web.app import create_app
from oos_notify.web.console import accounts
from oos_notify.web.console.roles import Role
from tests.agreement_changes import (
    APPROVER,
    NAMES,
    PASSWORDS,
    PROPOSER,
    VIEWER,
    approve_files,
    create_users,
)
from tests.conftest import (
    CONFIG_DIR,
    START,
    TEMPLATES_DIR,
    RunningService,
    now,
    received,
    release_failure,
    service_settings,
    start_service,
)
from tests.console.conftest import sign_in
from tests.served import COMMAND

COORDINATOR = "ct-coord@mercy.example"
NEW_COORDINATOR = "ct-coord-new@mercy.example"
SECOND_EVENT = {"event_id": "QA-EVT-2026-000900", "incident_ref": "OOS-2026-0150"}


@pytest.fixture
def files(tmp_path: Path, smtp: CaptureServer) -> Settings:
    """Settings over a copy of the agreements that a test edits on disk."""
    shutil.copytree(CONFIG_DIR, tmp_path / "config")
    return service_settings(tmp_path, smtp, config_dir=tmp_path / "config")


def move_the_coordinator(settings: Settings) -> None:
    """The edit on disk: Mercy General's coordinator notices go to a new address."""
    path = settings.config_dir / "health_systems" / "mercy-health.yaml"
    path.write_text(path.read_text().replace(COORDINATOR, NEW_COORDINATOR))


def agreements(
    settings: Settings, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``oos-notify agreements ...`` as QA runs it on the service's machine; the password, if
    any, piped to its standard input as a script would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    env |= {
        "OOS_NOTIFY_CONFIG_DIR": str(settings.config_dir),
        "OOS_NOTIFY_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "OOS_NOTIFY_DATABASE_URL": settings.database_url,
        "OOS_NOTIFY_LOG_FORMAT": "text",
    }
    return subprocess.run(
        [COMMAND, "agreements", *args],
        env=env,
        input="" if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def adopt_baseline(settings: Settings, clock: ManualClock) -> None:
    """Start the service once, as its first start on the database does, and stop it."""
    create_app(settings, clock).state.services.engine.dispose()


def incident_version(settings: Settings, incident_id: str) -> int | None:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            incident = session.get(Incident, incident_id)
            assert incident is not None
            return incident.agreements_version_id
    finally:
        engine.dispose()


async def open_incident(service: RunningService, **overrides: str) -> str:
    at = service.services.clock.now() - timedelta(minutes=2)
    answer = await service.post_event(release_failure(at=at, **overrides))
    assert answer.status_code == 202, answer.text
    incident_id: str = answer.json()["incident_id"]
    await service.settle()
    return incident_id


def first_notice_to(smtp: CaptureServer, incident_ref: str) -> set[str]:
    """Who received the incident's initial notice (the coordinator, physician and cell lab)."""
    return {
        recipient
        for m in smtp.handler.messages()
        if m.subject.startswith(f"Confirm receipt: {incident_ref},")
        for recipient in m.recipients
    }


def approvals(settings: Settings) -> list[AuditEntry]:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return list(
                session.exec(
                    select(AuditEntry)
                    .where(AuditEntry.action == "agreement_version_approved")
                    .order_by(col(AuditEntry.seq))
                )
            )
    finally:
        engine.dispose()


async def test_an_agreement_edited_on_disk_without_approval_is_not_used_and_start_up_says_so(
    files: Settings, clock: ManualClock, smtp: CaptureServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a service that started once on the shipped agreements (adopted as the baseline)
    adopt_baseline(files, clock)
    capfd.readouterr()

    # When the coordinator's address is edited on disk and the service restarts, unapproved
    move_the_coordinator(files)
    service = await start_service(files, clock)
    try:
        said = capfd.readouterr().err
        # Then start-up says the change is not used and waits to be proposed
        assert "config/ (sha256 " in said
        assert "differs from the version in force and is not used: it is not proposed yet" in said

        # And an incident opened now is planned under the approved version: the old address
        incident_id = await open_incident(service)
        await received(smtp, 3)
        told = first_notice_to(smtp, "OOS-2026-0142")
        assert COORDINATOR in told and NEW_COORDINATOR not in told
        assert incident_version(files, incident_id) == 1
    finally:
        await service.stop()

    # And once proposed, the next start says it waits for approval, naming the version
    create_users(files.database_url, START)
    proposed = agreements(files, "propose", "--as", PROPOSER)
    assert proposed.returncode == 0, proposed.stderr
    capfd.readouterr()
    adopt_baseline(files, clock)
    said = capfd.readouterr().err
    assert "it waits for approval as version #2 (sha256 " in said
    assert "oos-notify agreements approve 2" in said


async def test_an_approved_change_takes_effect_at_its_time_without_a_restart(
    files: Settings, smtp: CaptureServer
) -> None:
    # Given a service running on the baseline, by a clock the test moves (from today's time,
    # since QA's commands run on the wall clock)
    clock = ManualClock(now().replace(microsecond=0))
    service = await start_service(files, clock)
    try:
        create_users(files.database_url, clock.now())
        move_the_coordinator(files)

        # When one qa user proposes the edit and a second approves it to take effect in an hour
        proposed = agreements(files, "propose", "--as", PROPOSER)
        assert proposed.returncode == 0, proposed.stderr
        assert f"-      email: {COORDINATOR}" in proposed.stdout
        assert f"+      email: {NEW_COORDINATOR}" in proposed.stdout
        assert "proposed version #2 (sha256 " in proposed.stderr
        effective = clock.now() + timedelta(hours=1)
        approved = agreements(
            files,
            "approve",
            "2",
            "--effective",
            effective.isoformat(),
            "--as",
            APPROVER,
            password=PASSWORDS[APPROVER],
        )
        assert approved.returncode == 0, approved.stderr
        assert f"takes effect at {effective.astimezone(UTC).isoformat()}" in approved.stdout

        # Then before that time the old version plans: the old coordinator is told
        before = await open_incident(service)
        await received(smtp, 3)
        assert COORDINATOR in first_notice_to(smtp, "OOS-2026-0142")

        # And from that time on, with no restart, the new one does
        clock.advance(timedelta(hours=1))
        after = await open_incident(service, **SECOND_EVENT)
        await received(smtp, 6)
        told = first_notice_to(smtp, "OOS-2026-0150")
        assert NEW_COORDINATOR in told and COORDINATOR not in told
        assert (incident_version(files, before), incident_version(files, after)) == (1, 2)
        shown = await service.client.get(f"/v1/incidents/{after}", headers=service.auth)
        assert shown.json()["agreements_version_id"] == 2

        # And the history says who proposed and approved what, and what it replaced
        history = agreements(files, "history")
        lines = history.stdout.splitlines()
        assert lines[0].startswith("#2\tapproved")
        assert f"proposed by {PROPOSER}" in lines[0] and f"approved by {APPROVER}" in lines[0]
        assert lines[1].startswith("#1\tsuperseded")
        assert agreement_versions.BASELINE_NOTE in lines[1]

        # And the console shows it to a viewer: the history, and each incident's version
        await sign_in(service.client, VIEWER, PASSWORDS[VIEWER])
        page = await service.client.get("/console/centers/agreements/history")
        assert page.status_code == 200
        assert APPROVER in page.text and PROPOSER in page.text
        assert "superseded" in page.text and NEW_COORDINATOR in page.text
        assert agreement_versions.BASELINE_NOTE in html.unescape(page.text)
        for incident_id, version in ((before, "#1 (sha256 "), (after, "#2 (sha256 ")):
            shown = await service.client.get(f"/console/incidents/{incident_id}")
            assert version in shown.text
            record = await service.client.get(f"/console/incidents/{incident_id}/record")
            assert version in record.text
        assert f"approved by {APPROVER} (signed with their password)" in record.text
    finally:
        await service.stop()


def test_only_a_second_qa_user_with_their_password_approves(
    files: Settings, clock: ManualClock
) -> None:
    # Given a proposed change
    adopt_baseline(files, clock)
    create_users(files.database_url, START)
    move_the_coordinator(files)
    assert agreements(files, "propose", "--as", PROPOSER).returncode == 0
    effective = ["--effective", "2030-01-01T06:00:00+01:00"]

    # When its proposer, a viewer, and a qa user with a wrong password try to approve it
    tries = {
        "a second qa user must approve it": (PROPOSER, PASSWORDS[PROPOSER]),
        "only a qa account approves": (VIEWER, PASSWORDS[VIEWER]),
        f"wrong password for {APPROVER}: nothing was approved": (APPROVER, "not-the-password"),
    }
    for says, (who, password) in tries.items():
        refused = agreements(files, "approve", "2", *effective, "--as", who, password=password)

        # Then each is refused, saying why, and nothing is approved
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr
        assert "Traceback" not in refused.stderr
    assert approvals(files) == []
    assert "#2\tproposed\t" in agreements(files, "history").stdout

    # And a rejected change can no longer be approved
    rejected = agreements(files, "reject", "2", "--reason", "wrong address", "--as", APPROVER)
    assert rejected.returncode == 0, rejected.stderr
    late = agreements(
        files, "approve", "2", *effective, "--as", APPROVER, password=PASSWORDS[APPROVER]
    )
    assert (
        late.returncode == 1 and "is rejected: only a proposed version is approved" in late.stderr
    )
    assert approvals(files) == []


def test_the_approval_prints_the_approvers_registered_name_and_needs_one(
    files: Settings, clock: ManualClock
) -> None:
    # Given a proposed change, and a qa account whose operator never set its name
    adopt_baseline(files, clock)
    create_users(files.database_url, START)
    unnamed = "qa-three@manufacturer.example"
    engine = make_engine(files.database_url)
    with transaction(engine) as session:
        accounts.create_user(session, unnamed, Role.QA, "unnamed-password-4", START)
    engine.dispose()
    move_the_coordinator(files)
    assert agreements(files, "propose", "--as", PROPOSER).returncode == 0
    effective = ["--effective", "2030-01-01T06:00:00+01:00"]

    # When the unnamed account approves, then a named one
    refused = agreements(
        files, "approve", "2", *effective, "--as", unnamed, password="unnamed-password-4"
    )
    approved = agreements(
        files, "approve", "2", *effective, "--as", APPROVER, password=PASSWORDS[APPROVER]
    )

    # Then the first signs nothing, saying how to set the name; the second's signature prints
    # the name the account was registered with, never its address
    assert refused.returncode == 2 and "has no name to print on a signature" in refused.stderr
    assert approved.returncode == 0, approved.stderr
    [entry] = approvals(files)
    assert entry.actor == APPROVER
    assert entry.detail["signature"]["printed_name"] == NAMES[APPROVER]
    assert entry.detail["signature"]["signer"] == APPROVER


def test_malformed_and_hostile_commands_are_refused_clearly(
    files: Settings, clock: ManualClock
) -> None:
    adopt_baseline(files, clock)
    create_users(files.database_url, START)
    move_the_coordinator(files)
    assert agreements(files, "propose", "--as", PROPOSER).returncode == 0
    good = ["--effective", "2030-01-01T00:00:00Z", "--as", APPROVER]
    cases = [
        (["approve", "two", *good], "'two' is not a version number"),
        (["approve", "9" * 40, *good], "is not a version number"),
        (["approve", "77", *good], "no agreement version #77"),
        (["approve", "2", "--effective", "tomorrow", "--as", APPROVER], "is not a time"),
        (["approve", "2", "--effective", "2030-01-01T00:00:00", "--as", APPROVER], "no offset"),
        (["approve", "2", "--effective", "2030-01-01T00:00:00Z", "--as", "qa"], "not an email"),
        (
            ["approve", "2", "--effective", "2030-01-01T00:00:00Z", "--as", "\x1b[2Jqa@x.example"],
            "must not contain control characters",
        ),
        (["propose", "--as", "nobody@manufacturer.example"], "is not an active console user"),
        (["reject", "2", "--reason", "   ", "--as", APPROVER], "--reason must say why"),
        (["history", "--diff", "1; DROP TABLE agreement_versions"], "is not a version number"),
    ]
    for argv, says in cases:
        refused = agreements(files, *argv, password=PASSWORDS[APPROVER])
        assert refused.returncode == 2, (argv, refused.stderr)
        assert says in refused.stderr, (argv, refused.stderr)
        assert "Traceback" not in refused.stderr, argv
    assert approvals(files) == []

    # A config made invalid on disk is named, file and field, and nothing is proposed
    plan = files.config_dir / "plans" / "standard.yaml"
    plan.write_text(plan.read_text().replace("after: 2h", "after: soon"))
    broken = agreements(files, "propose", "--as", PROPOSER)
    assert broken.returncode == 2 and "config/ is invalid" in broken.stderr
    assert "standard.yaml" in broken.stderr and "Traceback" not in broken.stderr


def test_a_tampered_approval_signature_fails_audit_verify(
    files: Settings, clock: ManualClock
) -> None:
    # Given an approved change
    adopt_baseline(files, clock)
    move_the_coordinator(files)
    approve_files(files, clock.now() + timedelta(days=1), clock.now())
    [entry] = approvals(files)
    signature = entry.detail[signatures.SIGNATURE]
    assert signature["method"] == "password" and signature["signer"] == APPROVER
    assert signature["meaning"] == agreement_versions.APPROVAL_MEANING

    # When someone writes an approval whose signed content says another effective time
    engine = make_engine(files.database_url)
    forged = {
        **entry.detail,
        signatures.SIGNED_CONTENT: {
            **entry.detail[signatures.SIGNED_CONTENT],
            "effective_at": clock.now().isoformat(),
        },
    }
    with transaction(engine) as session:
        audit.record(session, clock.now(), entry.action, entry.actor, **forged)

    # Then the trail's check names the forged entry, though its chain holds
    with Session(engine) as session:
        report = audit.verify(session)
        forged_seq = max(e.seq or 0 for e in approvals(files))
    assert not report.intact and report.broken_seq == forged_seq
    assert report.problem is not None and "does not match the content it signs" in report.problem

    # And an approval edited in place fails `oos-notify audit verify` at that entry
    edited = (
        """jsonb_set(detail::jsonb, '{signed_content,effective_at}', '"2020-01-01"')::json"""
        if engine.dialect.name == "postgresql"
        else "json_set(detail, '$.signed_content.effective_at', '2020-01-01')"
    )
    with engine.begin() as db:
        db.execute(
            text(f"UPDATE audit_entries SET detail = {edited} WHERE seq = :seq"), {"seq": entry.seq}
        )
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    verify = subprocess.run(
        [COMMAND, "audit", "verify"],
        env=env | {"OOS_NOTIFY_DATABASE_URL": files.database_url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 1
    assert verify.stderr.startswith(f"audit trail is broken at entry {entry.seq}:")


def test_the_first_start_on_an_empty_database_adopts_the_files_and_says_so(
    files: Settings, clock: ManualClock
) -> None:
    adopt_baseline(files, clock)
    engine = make_engine(files.database_url)
    with Session(engine) as session:
        [version] = session.exec(select(AgreementVersion)).all()
        [adopted] = session.exec(
            select(AuditEntry).where(AuditEntry.action == "agreement_version_adopted")
        ).all()
    engine.dispose()
    assert (version.state, version.proposed_by, version.effective_at) == (
        "approved",
        "installation",
        clock.now(),
    )
    assert adopted.detail["note"] == (
        "adopted at installation; its approval is the customer's procedure"
    )


def test_processes_starting_together_on_an_empty_database_adopt_one_baseline(
    files: Settings, clock: ManualClock
) -> None:
    """Replicas started at the same moment on a new database: one baseline, one audit entry."""
    create_schema(make_engine(files.database_url))
    together = threading.Barrier(3)

    def replica() -> None:
        together.wait()
        create_app(files, clock).state.services.engine.dispose()

    with ThreadPoolExecutor(3) as pool:
        for started in [pool.submit(replica) for _ in range(3)]:
            started.result(timeout=300)

    engine = make_engine(files.database_url)
    with Session(engine) as session:
        kept = session.exec(select(AgreementVersion.id)).all()
        adopted = session.exec(
            select(AuditEntry.seq).where(AuditEntry.action == "agreement_version_adopted")
        ).all()
    engine.dispose()
    assert (len(kept), len(adopted)) == (1, 1)
