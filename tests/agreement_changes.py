"""What QA does after editing the agreements on disk: propose the change and approve it as a
second qa user, so that the service runs it (``store.agreement_versions``)."""

from __future__ import annotations

from datetime import datetime

from oos_notify.agreements.config import load_agreements
from oos_notify.settings import Settings
from oos_notify.store import agreement_versions
from oos_notify.store.db import make_engine, transaction
from oos_notify.web.console import accounts
from oos_notify.web.console.roles import Role

PROPOSER = "qa-one@manufacturer.example"
APPROVER = "qa-two@manufacturer.example"
VIEWER = "viewer@manufacturer.example"
NAMES = {PROPOSER: "Quinn Abara", APPROVER: "Rosa Lindqvist", VIEWER: "Vic Okafor"}
"""What each account's signature prints."""
PASSWORDS = {
    PROPOSER: "proposer-password-1",
    APPROVER: "approver-password-2",
    VIEWER: "viewer-password-3",
}


def create_users(database_url: str, now: datetime) -> None:
    """Two qa users and a viewer, with the passwords in ``PASSWORDS``."""
    engine = make_engine(database_url)
    try:
        with transaction(engine) as session:
            for email, password in PASSWORDS.items():
                if accounts.find_user(session, email) is None:
                    role = Role.VIEWER if email == VIEWER else Role.QA
                    accounts.create_user(session, email, role, password, now, NAMES[email])
    finally:
        engine.dispose()


def approve_files(settings: Settings, effective_at: datetime, now: datetime) -> int:
    """Propose ``config/`` as it is on disk and approve it by a second qa user, to take effect
    at ``effective_at``; the new version's number."""
    create_users(settings.database_url, now)
    agreements = load_agreements(settings.config_dir)
    engine = make_engine(settings.database_url)
    try:
        with transaction(engine) as session:
            row = agreement_versions.propose(session, agreements, PROPOSER, now)
            agreement_versions.approve(
                session, row, APPROVER, "qa", effective_at, now, printed_name=NAMES[APPROVER]
            )
            assert row.id is not None
            return row.id
    finally:
        engine.dispose()
