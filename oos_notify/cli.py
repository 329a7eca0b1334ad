"""The ``oos-notify`` command: serve (or api and worker), check-config, preview, apikey, audit,
passkey, db, user, agreements."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from oos_notify import logs
from oos_notify.clock import SystemClock
from oos_notify.errors import ServiceError
from oos_notify.settings import Settings
from oos_notify.store.db import SchemaNotReady, make_engine
from oos_notify.web.console import agreement_commands
from oos_notify.web.console import commands as console_commands

if TYPE_CHECKING:
    from oos_notify.agreements.config import ConfigError

# Each command imports what only it needs where it runs: the service's models, templates and
# web framework take seconds to import, which `db upgrade` or `db current` should not wait for.


def _print_problems(error: ConfigError) -> int:
    print(f"config is invalid ({len(error.problems)} problems):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from oos_notify.agreements.config import ConfigError
    from oos_notify.web.app import create_app
    from oos_notify.web.services import Role

    try:
        app = create_app(settings, role=Role(args.command))
    except ConfigError as error:
        return _print_problems(error)
    except SchemaNotReady as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", log_config=None)
    return 0


def _check_config(settings: Settings, _args: argparse.Namespace) -> int:
    from oos_notify.agreements.config import ConfigError
    from oos_notify.ops.config_check import load_checked

    try:
        agreements, _ = load_checked(settings.config_dir, settings.templates_dir)
    except ConfigError as error:
        return _print_problems(error)
    sites = agreements.center_ids()
    print(
        f"config is valid: {len(agreements.health_systems)} health systems, {len(sites)} sites, "
        f"{len(agreements.plans)} plans, templates render for every site"
    )
    return 0


def _preview(settings: Settings, args: argparse.Namespace) -> int:
    from oos_notify.agreements.config import ConfigError
    from oos_notify.delivery.rendering import RenderError
    from oos_notify.ops.config_check import load_checked
    from oos_notify.ops.preview import PreviewError, preview

    try:
        agreements, renderer = load_checked(settings.config_dir, settings.templates_dir)
        message = preview(
            agreements,
            renderer,
            args.center,
            args.template,
            args.event,
            SystemClock().now(),
            settings.replies_confirm,
        )
    except ConfigError as error:
        return _print_problems(error)
    except (PreviewError, RenderError) as error:
        print(f"cannot preview: {error}", file=sys.stderr)
        return 2
    html = args.html or Path(f"preview-{args.center}-{args.template}.html")
    html.write_text(message.html, encoding="utf-8")
    print(f"Subject: {message.subject}\n\n{message.text}")
    print(f"(HTML part written to {html})", file=sys.stderr)
    return 0


def _passkey(settings: Settings, args: argparse.Namespace) -> int:
    from oos_notify.store import passkeys
    from oos_notify.store.db import open_schema, transaction

    engine = make_engine(settings.database_url)
    now = SystemClock().now()
    try:
        open_schema(engine, settings.migrate_on_start)
        with transaction(engine) as session:
            if args.action == "remove":
                removed = passkeys.remove(session, args.email, now)
                if not removed:
                    print(f"{args.email} has no passkey that signs", file=sys.stderr)
                    return 1
                print(
                    f"removed {len(removed)} passkey(s) of {passkeys.person_of(args.email)}: "
                    "they sign nothing more; the next decision request lets them enrol again"
                )
            else:
                for row in passkeys.every(session):
                    state = f"removed {row.removed_at:%Y-%m-%d}" if row.removed_at else "active"
                    print(
                        f"{row.person}\t{row.printed_name}\t"
                        f"enrolled {row.enrolled_at:%Y-%m-%d}\t{state}"
                    )
    except SchemaNotReady as error:
        print(f"cannot manage passkeys: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _apikey(settings: Settings, args: argparse.Namespace) -> int:
    from oos_notify.store import apikeys
    from oos_notify.store.db import open_schema, transaction

    engine = make_engine(settings.database_url)
    now = SystemClock().now()
    try:
        open_schema(engine, settings.migrate_on_start)
        with transaction(engine) as session:
            if args.action == "create":
                key = apikeys.create(session, args.name, now)
                print(key)
                print(f"(API key {args.name!r}: shown once, store it now)", file=sys.stderr)
            elif args.action == "revoke":
                apikeys.revoke(session, args.name, now)
                seconds = apikeys.RECHECK_AFTER.total_seconds()
                print(
                    f"revoked {args.name!r}: every running process refuses it within "
                    f"{seconds:.0f} seconds"
                )
            else:
                for key_row in apikeys.list_keys(session):
                    state = (
                        f"revoked {key_row.revoked_at:%Y-%m-%d}" if key_row.revoked_at else "active"
                    )
                    print(
                        f"{key_row.name}\toosk_{key_row.prefix}_…\t"
                        f"created {key_row.created_at:%Y-%m-%d}\t{state}"
                    )
    except ServiceError as error:
        print(error.message, file=sys.stderr)
        return 1
    except SchemaNotReady as error:
        print(f"cannot manage API keys: {error}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    from oos_notify.store import migrate
    from oos_notify.store.db import create_schema

    if args.action == "revision":
        path = migrate.revision(args.message, args.url)
        print(f"wrote {path}: read it, then run tests/test_migrations.py")
        return 0
    engine = make_engine(settings.database_url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        found = migrate.state(engine)
        wanted = migrate.describe(found.head)
        if args.action == "current":
            print(f"{shown}: {migrate.describe(found.revision)}; this version needs {wanted}")
            return 0 if found.at_head else 1
        if found.revision is not None and not migrate.known(found.revision):
            print(
                f"{shown}: {found.revision} is a revision this version does not know "
                f"(it needs {wanted}): a newer version upgraded it",
                file=sys.stderr,
            )
            return 1
        if found.at_head:  # nothing to migrate: every process's start-up starts the audit chain
            print(f"{shown}: already at {wanted}")
            return 0
        done = create_schema(engine)
    finally:
        engine.dispose()
    if done:
        print(f"{shown}: upgraded from {migrate.describe(done.before)} to {wanted}")
    else:
        print(f"{shown}: already at {wanted}")
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import inspect
    from sqlmodel import Session

    from oos_notify.store import audit, migrate

    engine = make_engine(settings.database_url)
    shown = engine.url.render_as_string(hide_password=True)
    database = engine.url.database
    missing = engine.url.get_backend_name() == "sqlite" and not (
        database and Path(database).is_file()
    )
    try:
        if missing or not inspect(engine).has_table("audit_entries"):
            print(f"no audit trail in {shown}: check OOS_NOTIFY_DATABASE_URL", file=sys.stderr)
            return 2
        schema = migrate.state(engine)
        if not schema.at_head:
            print(
                f"{shown} {schema.describe()}; run `oos-notify db upgrade` (after a backup), "
                "then verify",
                file=sys.stderr,
            )
            return 2
        with Session(engine) as session:
            report = audit.verify(session, as_of=args.as_of)
    finally:
        engine.dispose()
    if not report.intact:
        print(
            f"audit trail is broken at entry {report.broken_seq}: {report.problem} "
            f"({report.entries} entries checked before it were intact)",
            file=sys.stderr,
        )
        return 1
    print(
        f"audit trail is intact: {report.entries} entries, up to entry {report.last_seq}; "
        f"as of entry {report.as_of} its digest is sha256 {report.digest}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="oos-notify",
        description="Out-of-specification notifications for cell and gene therapy lots. "
        "Settings come from OOS_NOTIFY_* environment variables (see README).",
    )
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API and the dispatcher").set_defaults(
        run=_serve
    )
    commands.add_parser(
        "api", help="run the HTTP API alone (run any number, beside `worker` processes)"
    ).set_defaults(run=_serve)
    commands.add_parser(
        "worker", help="run the dispatcher alone, with /healthz, /readyz and /metrics"
    ).set_defaults(run=_serve)
    commands.add_parser(
        "check-config", help="validate config/ and templates/ and print every problem"
    ).set_defaults(run=_check_config)
    shown = commands.add_parser(
        "preview", help="render a message exactly as a center would receive it"
    )
    shown.add_argument("--center", required=True, help="a site id from config/")
    shown.add_argument("--template", required=True, help="a template name, e.g. escalation_final")
    shown.add_argument("--event", type=Path, help="an event JSON file (the API's format)")
    shown.add_argument("--html", type=Path, help="where to write the HTML part")
    shown.set_defaults(run=_preview)
    keys = commands.add_parser("apikey", help="manage API keys for manufacturer systems")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    key_actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = key_actions.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    keys.set_defaults(run=_apikey)
    keys_of_deciders = commands.add_parser("passkey", help="deciders' passkeys")
    passkey_actions = keys_of_deciders.add_subparsers(dest="action", required=True)
    passkey_actions.add_parser("list", help="every passkey enrolled, removed ones too")
    removal = passkey_actions.add_parser(
        "remove", help="stop a decider's passkey signing (a lost device); they may enrol again"
    )
    removal.add_argument("email")
    keys_of_deciders.set_defaults(run=_passkey)
    trail = commands.add_parser("audit", help="check the tamper-evident audit trail")
    trail_actions = trail.add_subparsers(dest="action", required=True)
    verify = trail_actions.add_parser(
        "verify", help="check every entry's hash and link; name the first broken entry"
    )
    verify.add_argument(
        "--as-of",
        type=int,
        metavar="ENTRY",
        help="print the trail's digest as it was at this entry number (to compare with one "
        "recorded then); default: the newest entry",
    )
    trail.set_defaults(run=_audit)
    schema = commands.add_parser("db", help="the database schema: migrations")
    schema_actions = schema.add_subparsers(dest="action", required=True)
    schema_actions.add_parser(
        "upgrade", help="migrate the database to this version's schema (back it up first)"
    )
    schema_actions.add_parser(
        "current", help="print the database's revision and this version's; exit 1 if they differ"
    )
    revision = schema_actions.add_parser(
        "revision", help="developers: write the next numbered migration from the models' changes"
    )
    revision.add_argument("message", help="what the migration changes, e.g. 'add users'")
    revision.add_argument("--url", help="compare on this database (default: a scratch SQLite)")
    schema.set_defaults(run=_db)
    console_commands.add_parser(commands)
    agreement_commands.add_parser(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        return _print_bad_settings(error)
    logs.configure(settings.log_format)
    return int(args.run(settings, args))


def _print_bad_settings(error: ValidationError) -> int:
    """Name each wrong variable, never its value: a password pasted into the wrong one stays
    out of terminals and CI logs."""
    problems = error.errors(include_input=False, include_url=False)
    print(f"settings are invalid ({len(problems)} problems):", file=sys.stderr)
    for problem in problems:
        name = "OOS_NOTIFY_" + "_".join(str(part) for part in problem["loc"]).upper()
        print(f"  {name}: {problem['msg']}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
