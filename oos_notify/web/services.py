"""What the routes and the dispatcher share for the life of the app, built once at start-up:
settings, database, agreements, renderer, signing key and limits."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.engine import Engine

from oos_notify.agreements.config import Agreements, ConfigError, ConfigProblem
from oos_notify.clock import Clock
from oos_notify.delivery import template_sets
from oos_notify.delivery.capture import CaptureServer
from oos_notify.delivery.dispatch import Dispatcher
from oos_notify.delivery.mail import DkimKeyError, DkimSigner
from oos_notify.delivery.rendering import Renderer
from oos_notify.inbound import service as inbound
from oos_notify.inbound.service import InboundMail
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.incidents.signing import Ceremonies
from oos_notify.ops import config_check
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from oos_notify.store import agreement_versions, apikeys
from oos_notify.store.agreement_versions import AgreementsInForce
from oos_notify.store.db import (
    insert_missing,
    make_engine,
    open_schema,
    transaction,
    upsert,
    write_gate,
)
from oos_notify.store.locks import one_at_a_time
from oos_notify.store.models import ServiceValue
from oos_notify.store.passkeys import RelyingParty
from oos_notify.web.console import accounts
from oos_notify.web.limits import TokenBuckets
from oos_notify.web.shared_limits import DatabaseBuckets, shared_limit

log = logging.getLogger(__name__)


class Role(StrEnum):
    """What a process runs: ``serve`` runs both halves; ``api`` and ``worker`` one each, so that
    an operator can run any number of each on one PostgreSQL database."""

    SERVE = "serve"
    API = "api"
    WORKER = "worker"

    @property
    def answers(self) -> bool:
        """Serves the API and the acknowledgement pages."""
        return self is not Role.WORKER

    @property
    def sends(self) -> bool:
        """Runs the dispatcher."""
        return self is not Role.API


@dataclass
class Services:
    """What the routes and the dispatcher share for the life of the app."""

    settings: Settings
    engine: Engine
    agreements: AgreementsInForce
    """The approved agreements in force: ``at(session, now)`` in a transaction, ``now(now)``
    outside one. Never the files on disk unless they are the approved version in force."""
    renderer: Renderer
    tokens: AckTokens
    ceremonies: Ceremonies
    """Deciders' passkey enrolments and signings, for the host of the public base URL."""
    clock: Clock
    write_gate: AbstractAsyncContextManager[object]
    events_limit: TokenBuckets | DatabaseBuckets
    """Events per API key: in the database on PostgreSQL, shared by every api process."""
    auth_failures: TokenBuckets | DatabaseBuckets
    """Failed API authentications per client address: shared on PostgreSQL too."""
    ack_requests: TokenBuckets | DatabaseBuckets
    """Requests to acknowledgement links per client address: shared on PostgreSQL too."""
    live_keys: apikeys.LiveKeys = field(default_factory=apikeys.LiveKeys)
    """API keys found live in the last few seconds (``apikeys.RECHECK_AFTER``)."""
    template_versions: Mapping[str, str] = field(default_factory=dict)
    """Each center's template set as of start-up: what a new incident is rendered with."""
    dispatcher: Dispatcher | None = None
    capture: CaptureServer | None = field(default=None)
    return_addresses: ReturnAddresses | None = None
    """Each notification's own reply and bounce addresses; None without a reply domain."""
    inbound: InboundMail | None = None
    role: Role = Role.SERVE
    password_checks: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(accounts.PASSWORD_CHECKS)
    )
    """Console passwords being checked at once: a burst of sign-ins queues here, not in memory."""
    signer: DkimSigner | None = None
    """Signs outgoing mail with the operator's DKIM key; None when no key is set."""


def secret_key(settings: Settings, engine: Engine) -> str:
    """The signing key: configured, or generated once and kept in the database for local use."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if not settings.uses_capture_server:
        raise ConfigError(
            [
                ConfigProblem(
                    "environment",
                    "OOS_NOTIFY_SECRET_KEY",
                    "required when a real SMTP server is configured",
                )
            ]
        )
    with transaction(engine) as session:
        generated = {"name": "secret_key", "value": secrets.token_urlsafe(48)}
        insert_missing(session, _VALUES, [generated])
        stored = session.get(ServiceValue, "secret_key")
        assert stored is not None
        return stored.value


def refuse_exposed_mailbox(settings: Settings) -> None:
    """Without an SMTP server every email lands in the capture mailbox, and /dev/mailbox shows
    it, links included, to whoever reaches the port: refuse that on a non-loopback bind unless
    the operator asked for it by name."""
    if not settings.exposes_mailbox:
        return
    raise ConfigError(
        [
            ConfigProblem(
                "environment",
                "OOS_NOTIFY_HOST",
                f"{settings.host} is not a loopback address and no SMTP server is configured: "
                "every email, acknowledgement links included, would be shown at /dev/mailbox "
                "to whoever reaches the port\n"
                "    for real use, set OOS_NOTIFY_SMTP_HOST (and OOS_NOTIFY_SMTP_PORT, _USERNAME, "
                "_PASSWORD, _SECURITY as your server needs), OOS_NOTIFY_MAIL_FROM, "
                "OOS_NOTIFY_SECRET_KEY and OOS_NOTIFY_PUBLIC_BASE_URL\n"
                "    for a demo, listen on loopback (OOS_NOTIFY_HOST=127.0.0.1), or in a "
                "container set OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true and publish the port on "
                "the host's loopback only: docker run -e OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true "
                "-p 127.0.0.1:8000:8000 oos-notify",
            )
        ]
    )


TEMPLATE_CHECK = "template_check_passed"
"""The ``config_check.inputs_digest`` of the files and code that last passed the template check."""
CHECKED = "config and templates checked"
REUSED = "config and templates unchanged since they passed the check: not rendered"
_PASSED_HERE: set[str] = set()
"""The digests this process has rendered and passed: a process that builds the app again with
the same files (the test suite does, hundreds of times, each on a new database) renders once."""


def check_templates(
    engine: Engine, settings: Settings, agreements: Agreements, renderer: Renderer
) -> None:
    """Render every template for every center, as ``check-config`` does, unless these very files
    and this code passed the check before: with a hundred sites that takes seconds, and a
    restart should not keep pending notifications waiting for it."""
    digest = config_check.inputs_digest(settings.config_dir, settings.templates_dir)
    with transaction(engine) as session:
        # On PostgreSQL, replicas of one version starting together render once: the others
        # wait here for the first one's transaction and then find the check passed. A check
        # that fails frees the lock with its rollback, and the next process renders again.
        one_at_a_time(session, "template check", digest)
        passed = session.get(ServiceValue, TEMPLATE_CHECK)
        if passed is not None and passed.value == digest:
            log.info(REUSED)
            return
        if digest not in _PASSED_HERE:
            config_check.check_templates(agreements, renderer)
            _PASSED_HERE.add(digest)
        upsert(session, _VALUES, {"name": TEMPLATE_CHECK, "value": digest})
    log.info(
        "%s: every template renders for every site (%d sites); kept until a file changes",
        CHECKED,
        len(agreements.center_ids()),
    )


_VALUES = ServiceValue.__table__  # type: ignore[attr-defined]


def refuse_untrusted_mail(settings: Settings) -> None:
    """Mail from ``localhost``, with http links, or with a password sent in clear would land in
    junk folders or leak: refuse to start with it, naming the setting to change."""
    problems = [ConfigProblem("environment", name, why) for name, why in settings.mail_problems()]
    if problems:
        raise ConfigError(problems)


def dkim_signer(settings: Settings) -> DkimSigner | None:
    """The signer for the configured key, checked now rather than at the first message."""
    if settings.dkim_key_file is None:
        if settings.dkim_selector is not None:
            raise ConfigError(
                [
                    ConfigProblem(
                        "environment",
                        "OOS_NOTIFY_DKIM_KEY_FILE",
                        "is not set, but OOS_NOTIFY_DKIM_SELECTOR is: give the private key file",
                    )
                ]
            )
        return None
    if settings.dkim_selector is None:
        raise ConfigError(
            [
                ConfigProblem(
                    "environment",
                    "OOS_NOTIFY_DKIM_SELECTOR",
                    "is not set, but OOS_NOTIFY_DKIM_KEY_FILE is: give the selector the public "
                    "key is published under (<selector>._domainkey.<domain>)",
                )
            ]
        )
    try:
        return DkimSigner.load(
            settings.dkim_key_file,
            settings.dkim_selector,
            settings.dkim_domain or settings.mail_domain,
        )
    except DkimKeyError as exc:
        raise ConfigError(
            [ConfigProblem("environment", "OOS_NOTIFY_DKIM_KEY_FILE", str(exc))]
        ) from None


def change_control(
    engine: Engine, on_disk: Agreements, in_force: AgreementsInForce, clock: Clock
) -> tuple[Agreements, bool]:
    """Adopt the baseline on an empty database, and say which agreements run and whether the
    files on disk wait for approval: in the log and on standard error, where an operator
    starting the service looks. Returns the agreements in force now, and whether they are the
    files on disk."""
    now = clock.now()
    with transaction(engine) as session:
        report = agreement_versions.start(session, on_disk, now)
        running = in_force.at(session, now)
    said = report.sentence()
    if report.adopted or report.on_disk_runs:
        log.info("%s", said)
    else:
        log.warning("%s", said)
        print(said, file=sys.stderr, flush=True)
    return running, report.on_disk_runs


def build_services(settings: Settings, clock: Clock, role: Role = Role.SERVE) -> Services:
    """Check the config and open the database; raise ConfigError before anything starts."""
    refuse_exposed_mailbox(settings)
    refuse_untrusted_mail(settings)
    signer = dkim_signer(settings)
    if problems := inbound.problems(settings):
        raise ConfigError(problems)
    agreements, renderer = config_check.load(settings.config_dir, settings.templates_dir)
    engine = make_engine(settings.database_url)
    changed = open_schema(engine, settings.migrate_on_start)
    if changed:
        log.info("database: %s", changed)
    check_templates(engine, settings, agreements, renderer)
    in_force = AgreementsInForce(engine)
    running, on_disk_runs = change_control(engine, agreements, in_force, clock)
    key = secret_key(settings, engine)
    tokens = AckTokens(key)
    relying_party = RelyingParty.of(
        settings.public_base_url, f"{agreements.manufacturer.name} notifications"
    )
    if not relying_party.usable:
        log.warning(
            "OOS_NOTIFY_PUBLIC_BASE_URL %s is an IP address: browsers refuse passkeys there, so "
            "deciders cannot sign decisions; use a host name (http://localhost:%s on this machine)",
            settings.public_base_url,
            settings.port,
        )
    versions = template_sets.record(engine, renderer, running, clock.now())
    if not on_disk_runs:
        # The files on disk are what a later approval runs: their centers get template sets too.
        versions.update(template_sets.record(engine, renderer, agreements, clock.now()))
    renderer.keep_snapshots(template_sets.source(engine))
    gate = write_gate(engine)
    auth_failures = settings.auth_failures_per_minute
    ack_requests = settings.ack_requests_per_minute
    return Services(
        settings,
        engine,
        in_force,
        renderer,
        tokens,
        Ceremonies(key, relying_party),
        clock,
        gate,
        events_limit=shared_limit(
            engine, "events", settings.events_per_minute, settings.events_burst
        ),
        # A whole minute's allowance at once: "N a minute" is what an operator reads and sets
        auth_failures=shared_limit(engine, "auth", auth_failures, auth_failures),
        ack_requests=shared_limit(engine, "ack", ack_requests, ack_requests),
        template_versions=versions,
        return_addresses=inbound.return_addresses(settings, key),
        role=role,
        signer=signer,
    )
