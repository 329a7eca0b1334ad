"""``oos-notify agreements ...``: the change control of the agreements, for QA on the service's
machine. One console user proposes what ``config/`` says now; a second ``qa`` user approves it
with their password (a signature) and the time it takes effect, or rejects it.

The password is read from a prompt that does not echo it, or from standard input when that is
not a terminal (scripts), never from an option: it would sit in a shell history and a process
list.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from oos_notify.clock import SystemClock
from oos_notify.errors import InvalidFields, NotFound, ServiceError
from oos_notify.settings import Settings
from oos_notify.store.db import SchemaNotReady, make_engine, open_schema, transaction

if TYPE_CHECKING:
    from sqlmodel import Session

    from oos_notify.store.models import AgreementVersion, ConsoleUser

MAX_REASON = 2000


def add_parser(commands: Any) -> None:
    """Register ``agreements`` and its actions on the ``oos-notify`` command's subparsers."""
    agreements = commands.add_parser(
        "agreements", help="change control of the agreements: propose, approve, reject, history"
    )
    actions = agreements.add_subparsers(dest="action", required=True)
    propose = actions.add_parser(
        "propose", help="record config/ as a proposed change and print its diff"
    )
    propose.add_argument(
        "--as", dest="who", required=True, metavar="EMAIL", help="your console address"
    )
    approve = actions.add_parser(
        "approve", help="approve a proposed version with your password (a second qa user)"
    )
    approve.add_argument("version", metavar="ID", help="the version's number, from `history`")
    approve.add_argument(
        "--effective",
        required=True,
        metavar="TIME",
        help="when it takes effect: ISO 8601 with its offset, e.g. 2026-12-01T06:00:00+01:00",
    )
    approve.add_argument(
        "--as", dest="who", required=True, metavar="EMAIL", help="your console address"
    )
    reject = actions.add_parser("reject", help="reject a proposed version, saying why")
    reject.add_argument("version", metavar="ID")
    reject.add_argument("--reason", required=True, help="why it must not run")
    reject.add_argument(
        "--as", dest="who", required=True, metavar="EMAIL", help="your console address"
    )
    history = actions.add_parser("history", help="list every version, the newest first")
    history.add_argument("--diff", metavar="ID", help="print this version's diff too")
    agreements.set_defaults(run=run)


class Refused(Exception):
    """Input the command cannot act on: exit 2 with the message."""


def _version_id(text: str) -> int:
    value = text.strip().lstrip("#")
    if not value.isdigit() or len(value) > 12:
        raise Refused(
            f"{text!r} is not a version number: `oos-notify agreements history` lists them"
        )
    return int(value)


def _effective(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Refused(
            f"--effective {text!r} is not a time: write ISO 8601 with its offset, "
            "e.g. 2026-12-01T06:00:00+01:00"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise Refused(
            f"--effective {text!r} has no offset: write it, e.g. 2026-12-01T06:00:00+01:00 "
            "(or Z for UTC), so the time is the same wherever it is read"
        )
    return at


def _password(who: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {who} (to sign the approval): ")
    return sys.stdin.readline().rstrip("\r\n")


def _printable(name: str, text: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text.replace("\n", "")):
        raise Refused(f"{name} must not contain control characters")
    return text


def _user(session: Session, email: str) -> ConsoleUser:
    from oos_notify.web.console import accounts

    _printable("--as", email)
    address = accounts.normalise_email(email)
    user = accounts.find_user(session, address)
    if user is None or user.disabled_at is not None:
        raise Refused(f"{address} is not an active console user (oos-notify user list)")
    return user


def run(settings: Settings, args: argparse.Namespace) -> int:
    from oos_notify.agreements.config import ConfigError

    engine = make_engine(settings.database_url)
    try:
        open_schema(engine, settings.migrate_on_start)
        if args.action == "propose":
            return _propose(settings, engine, args)
        if args.action == "approve":
            return _approve(engine, args)
        if args.action == "reject":
            return _reject(engine, args)
        return _history(engine, args)
    except ConfigError as error:
        print(f"config/ is invalid ({len(error.problems)} problems):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except Refused as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    except (InvalidFields, NotFound) as error:
        print(f"refused: {error.message}", file=sys.stderr)
        return 2
    except ServiceError as error:
        print(f"refused: {error.message}", file=sys.stderr)
        return 1
    except SchemaNotReady as error:
        print(f"cannot manage the agreements: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


def _propose(settings: Settings, engine: Any, args: argparse.Namespace) -> int:
    from oos_notify.ops.config_check import load_checked
    from oos_notify.store import agreement_versions

    agreements, _ = load_checked(settings.config_dir, settings.templates_dir)
    now = SystemClock().now()
    with transaction(engine) as session:
        proposer = _user(session, args.who)
        row = agreement_versions.propose(session, agreements, proposer.email, now)
    print(row.diff, end="" if row.diff.endswith("\n") else "\n")
    print(
        f"proposed version {agreement_versions.named(row)} by {row.proposed_by}: it runs once a "
        f"second qa user approves it (oos-notify agreements approve {row.id} --effective <time> "
        "--as <address>)",
        file=sys.stderr,
    )
    return 0


def _approve(engine: Any, args: argparse.Namespace) -> int:
    from oos_notify.store import agreement_versions
    from oos_notify.web.console import accounts

    version_id = _version_id(args.version)
    effective = _effective(args.effective)
    with transaction(engine) as session:
        row = agreement_versions.get(session, version_id)
        user = _user(session, args.who)
        agreement_versions.check_approval(row, user.email, user.role, effective)
        if not user.name:
            raise Refused(
                f"{user.email} has no name to print on a signature: nothing was approved (set it "
                f"with oos-notify user set-name {user.email} --name ...)"
            )
        password_hash = user.password_hash
        email, role, name = user.email, user.role, user.name
    # Asked only once the approval is allowed: nobody types a password for nothing.
    password = _password(email)
    if not accounts.password_matches(password_hash, password):
        raise Refused(f"wrong password for {email}: nothing was approved")
    now = SystemClock().now()
    with transaction(engine) as session:
        row = agreement_versions.get(session, version_id)
        row = agreement_versions.approve(
            session, row, email, role, effective, now, printed_name=name
        )
    assert row.effective_at is not None
    print(
        f"approved version {agreement_versions.named(row)} by {email} (proposed by "
        f"{row.proposed_by}); it takes effect at {row.effective_at.isoformat()}"
    )
    return 0


def _reject(engine: Any, args: argparse.Namespace) -> int:
    from oos_notify.store import agreement_versions

    version_id = _version_id(args.version)
    reason = _printable("--reason", args.reason).strip()
    if not reason or len(reason) > MAX_REASON:
        raise Refused(f"--reason must say why, in 1 to {MAX_REASON} characters")
    now = SystemClock().now()
    with transaction(engine) as session:
        row = agreement_versions.get(session, version_id)
        user = _user(session, args.who)
        row = agreement_versions.reject(session, row, user.email, user.role, reason, now)
    print(f"rejected version {agreement_versions.named(row)} by {row.rejected_by}: {reason}")
    return 0


def _history(engine: Any, args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from oos_notify.store import agreement_versions

    shown = _version_id(args.diff) if args.diff is not None else None
    now = SystemClock().now()
    with Session(engine) as session:
        rows = agreement_versions.history(session)
        current = agreement_versions.in_force(session, now)
        diff = agreement_versions.get(session, shown).diff if shown is not None else None
    if not rows:
        print("no agreement version yet: the first start of the service adopts config/")
    for row in rows:
        print(_line(row, current))
    if diff is not None:
        print()
        print(diff, end="")
    return 0


def _line(row: AgreementVersion, current: AgreementVersion | None) -> str:
    from oos_notify.store import agreement_versions

    parts = [
        f"#{row.id}",
        row.state + (" (in force)" if current is not None and row.id == current.id else ""),
        f"sha256 {agreement_versions.short(row.content_sha256)}",
        f"proposed by {row.proposed_by} {row.proposed_at.isoformat()}",
    ]
    if row.approved_by is not None and row.effective_at is not None:
        parts.append(f"approved by {row.approved_by}, effective {row.effective_at.isoformat()}")
    if row.rejected_by is not None:
        parts.append(f"rejected by {row.rejected_by}: {row.reason}")
    if row.proposed_by == agreement_versions.INSTALLATION:
        parts.append(agreement_versions.BASELINE_NOTE)
    return "\t".join(parts)
