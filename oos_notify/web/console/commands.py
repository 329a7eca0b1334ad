"""``oos-notify user ...``: console accounts, managed by the operator on the service's machine.

A password is generated and printed once unless one is piped in with ``--password-stdin``, so
no password ever sits in a shell history or a process list.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from oos_notify.clock import SystemClock
from oos_notify.errors import ServiceError
from oos_notify.settings import Settings
from oos_notify.store.db import SchemaNotReady, make_engine, open_schema, transaction
from oos_notify.web.console.roles import MIN_PASSWORD_LENGTH, Role


def add_parser(commands: Any) -> None:
    """Register ``user`` and its actions on the ``oos-notify`` command's subparsers."""
    users = commands.add_parser("user", help="manage console accounts (people who sign in)")
    actions = users.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create an account and print its password once")
    create.add_argument("--email", required=True)
    create.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="viewer reads; qa may also post follow-ups and sign decision revisions",
    )
    create.add_argument(
        "--name", help="the person's full name, printed on what they sign (needed to sign)"
    )
    _password_option(create)
    actions.add_parser("list", help="list accounts (never their passwords)")
    disable = actions.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("email")
    enable = actions.add_parser("enable", help="enable a disabled account again")
    enable.add_argument("email")
    rename = actions.add_parser(
        "set-name", help="set the full name printed on what the account's person signs"
    )
    rename.add_argument("email")
    rename.add_argument("--name", required=True)
    reset = actions.add_parser(
        "reset-password", help="set a new password (printed once) and end the account's sessions"
    )
    reset.add_argument("email")
    _password_option(reset)
    users.set_defaults(run=run)


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from standard input (at least "
        f"{MIN_PASSWORD_LENGTH} characters) instead of generating one",
    )


def _password(args: argparse.Namespace) -> tuple[str, str | None]:
    """The password to set, and the same again if it was generated (and so must be shown)."""
    from oos_notify.web.console import accounts

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), None
    generated = accounts.new_password()
    return generated, generated


def run(settings: Settings, args: argparse.Namespace) -> int:
    from oos_notify.web.console import accounts

    engine = make_engine(settings.database_url)
    now = SystemClock().now()
    email = getattr(args, "email", "").strip().lower()
    shown: str | None = None
    try:
        open_schema(engine, settings.migrate_on_start)
        with transaction(engine) as session:
            if args.action == "create":
                password, shown = _password(args)
                user = accounts.create_user(
                    session, email, Role(args.role), password, now, name=args.name
                )
                print(f"created {user.role} {user.email}", file=sys.stderr)
            elif args.action == "reset-password":
                password, shown = _password(args)
                accounts.reset_password(session, email, password, now)
                print(f"new password set for {email}", file=sys.stderr)
            elif args.action == "set-name":
                accounts.set_name(session, email, args.name, now)
                print(f"{email} signs as {args.name.strip()}")
            elif args.action == "disable":
                accounts.disable_user(session, email, now)
                print(f"disabled {email}")
            elif args.action == "enable":
                accounts.enable_user(session, email, now)
                print(f"enabled {email}")
            else:
                for row in accounts.list_users(session):
                    state = f"disabled {row.disabled_at:%Y-%m-%d}" if row.disabled_at else "active"
                    print(
                        f"{row.email}\t{row.role}\t{row.name or '(no name: cannot sign)'}\t"
                        f"created {row.created_at:%Y-%m-%d}\t{state}"
                    )
    except ServiceError as error:
        print(error.message, file=sys.stderr)
        return 1
    except SchemaNotReady as error:
        print(f"cannot manage console accounts: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    if shown is not None:
        print(shown)
        print("(the password is shown once: hand it over now)", file=sys.stderr)
    return 0
