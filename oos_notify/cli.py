"""The ``oos-notify`` command: serve, check-config, preview, apikey, audit, user."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import inspect
from sqlmodel import Session

from oos_notify import logs
from oos_notify.agreements.config import ConfigError
from oos_notify.clock import SystemClock
from oos_notify.delivery.rendering import RenderError
from oos_notify.errors import ServiceError
from oos_notify.ops.config_check import load_checked
from oos_notify.settings import Settings
from oos_notify.store import apikeys, audit
from oos_notify.store.db import create_schema, make_engine, transaction
from oos_notify.web.console import commands as console_commands


def _print_problems(error: ConfigError) -> int:
    print(f"config is invalid ({len(error.problems)} problems):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from oos_notify.web.app import create_app

    try:
        app = create_app(settings)
    except ConfigError as error:
        return _print_problems(error)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", log_config=None)
    return 0


def _check_config(settings: Settings, _args: argparse.Namespace) -> int:
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
    from oos_notify.ops.preview import PreviewError, preview

    try:
        agreements, renderer = load_checked(settings.config_dir, settings.templates_dir)
        message = preview(
            agreements, renderer, args.center, args.template, args.event, SystemClock().now()
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


def _apikey(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(settings.database_url)
    create_schema(engine)
    now = SystemClock().now()
    try:
        with transaction(engine) as session:
            if args.action == "create":
                key = apikeys.create(session, args.name, now)
                print(key)
                print(f"(API key {args.name!r}: shown once, store it now)", file=sys.stderr)
            elif args.action == "revoke":
                apikeys.revoke(session, args.name, now)
                print(f"revoked {args.name!r}")
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
    finally:
        engine.dispose()
    return 0


def _audit(settings: Settings, _args: argparse.Namespace) -> int:
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
        with Session(engine) as session:
            report = audit.verify(session)
    finally:
        engine.dispose()
    if not report.intact:
        print(
            f"audit trail is broken at entry {report.broken_seq}: {report.problem} "
            f"({report.entries} entries before it are intact)",
            file=sys.stderr,
        )
        return 1
    print(
        f"audit trail is intact: {report.entries} entries, "
        f"head entry {report.head_seq} sha256 {report.head_hash}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="oos-notify",
        description="Out-of-specification notifications for cell and gene therapy lots. "
        "Settings come from OOS_NOTIFY_* environment variables (see README).",
    )
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API and the scheduler").set_defaults(run=_serve)
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
    trail = commands.add_parser("audit", help="check the tamper-evident audit trail")
    trail_actions = trail.add_subparsers(dest="action", required=True)
    trail_actions.add_parser(
        "verify", help="check every entry's hash and link; name the first broken entry"
    )
    trail.set_defaults(run=_audit)
    console_commands.add_parser(commands)
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
