"""What the routes and the dispatcher share for the life of the app, built once at start-up:
settings, database, agreements, renderer, signing key and limits."""

from __future__ import annotations

import logging
import secrets
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
from oos_notify.delivery.rendering import Renderer
from oos_notify.inbound import service as inbound
from oos_notify.inbound.service import InboundMail
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.ops import config_check
from oos_notify.return_addresses import ReturnAddresses
from oos_notify.settings import Settings
from oos_notify.store.db import (
    insert_missing,
    make_engine,
    open_schema,
    transaction,
    upsert,
    write_gate,
)
from oos_notify.store.models import ServiceValue
from oos_notify.web.limits import TokenBuckets
from oos_notify.web.shared_limits import DatabaseBuckets, event_limit

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
    agreements: Agreements
    renderer: Renderer
    tokens: AckTokens
    clock: Clock
    write_gate: AbstractAsyncContextManager[object]
    events_limit: TokenBuckets | DatabaseBuckets
    """Events per API key: in the database on PostgreSQL, shared by every api process."""
    auth_failures: TokenBuckets
    """Failed API authentications per client address."""
    ack_requests: TokenBuckets
    """Requests to acknowledgement links per client address."""
    template_versions: Mapping[str, str] = field(default_factory=dict)
    """Each center's template set as of start-up: what a new incident is rendered with."""
    dispatcher: Dispatcher | None = None
    capture: CaptureServer | None = field(default=None)
    return_addresses: ReturnAddresses | None = None
    """Each notification's own reply and bounce addresses; None without a reply domain."""
    inbound: InboundMail | None = None
    role: Role = Role.SERVE


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
                "_PASSWORD, _SECURITY as your server needs), OOS_NOTIFY_SECRET_KEY and "
                "OOS_NOTIFY_PUBLIC_BASE_URL\n"
                "    for a demo, listen on loopback (OOS_NOTIFY_HOST=127.0.0.1), or in a "
                "container set OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true and publish the port on "
                "the host's loopback only: docker run -e OOS_NOTIFY_DEV_MAILBOX_ON_NETWORK=true "
                "-p 127.0.0.1:8000:8000 oos-notify",
            )
        ]
    )


TEMPLATE_CHECK = "template_check_passed"
"""The ``config_check.inputs_digest`` of the files and code that last passed the template check."""


def check_templates(
    engine: Engine, settings: Settings, agreements: Agreements, renderer: Renderer
) -> None:
    """Render every template for every center, as ``check-config`` does, unless these very files
    and this code passed the check before: with a hundred sites that takes seconds, and a
    restart should not keep pending notifications waiting for it."""
    digest = config_check.inputs_digest(settings.config_dir, settings.templates_dir)
    with transaction(engine) as session:
        passed = session.get(ServiceValue, TEMPLATE_CHECK)
        if passed is not None and passed.value == digest:
            log.info("config and templates unchanged since they passed the check: not rendered")
            return
    config_check.check_templates(agreements, renderer)
    with transaction(engine) as session:
        upsert(session, _VALUES, {"name": TEMPLATE_CHECK, "value": digest})


_VALUES = ServiceValue.__table__  # type: ignore[attr-defined]


def build_services(settings: Settings, clock: Clock, role: Role = Role.SERVE) -> Services:
    """Check the config and open the database; raise ConfigError before anything starts."""
    refuse_exposed_mailbox(settings)
    if problems := inbound.problems(settings):
        raise ConfigError(problems)
    agreements, renderer = config_check.load(settings.config_dir, settings.templates_dir)
    engine = make_engine(settings.database_url)
    changed = open_schema(engine, settings.migrate_on_start)
    if changed:
        log.info("database: %s", changed)
    check_templates(engine, settings, agreements, renderer)
    key = secret_key(settings, engine)
    tokens = AckTokens(key)
    versions = template_sets.record(engine, renderer, agreements, clock.now())
    renderer.keep_snapshots(template_sets.source(engine))
    gate = write_gate(engine)
    events_limit = event_limit(engine, settings.events_per_minute, settings.events_burst)
    return Services(
        settings,
        engine,
        agreements,
        renderer,
        tokens,
        clock,
        gate,
        events_limit=events_limit,
        # A whole minute's allowance at once: "N a minute" is what an operator reads and sets
        auth_failures=TokenBuckets(
            settings.auth_failures_per_minute, settings.auth_failures_per_minute
        ),
        ack_requests=TokenBuckets(
            settings.ack_requests_per_minute, settings.ack_requests_per_minute
        ),
        template_versions=versions,
        return_addresses=inbound.return_addresses(settings, key),
        role=role,
    )
