"""CPU per operation, measured in-process, and the burst: what each event, message and
acknowledgement costs the service in CPU, whatever else the machine is doing.

Each measurement runs in a fresh process of its own (``load.in_child``) that builds the service
as ``oos-notify api`` does (``create_app``, its start-up included) on a database of its own, and
reads ``time.process_time()`` (every thread of the process) around:

1. ingest: ``events`` distinct release_failure events posted one after another to
   ``POST /v1/events`` through an in-process ASGI client (httpx), the route's whole work
   (authentication, rate limit, validation, planning, the transaction and its audit entries);
2. dispatch: the dispatcher the worker runs, started on the notifications those events made
   (four first notices each) and run until none is due, sending over SMTP to the benchmark's
   sink (another process): claim, read, render, sign the link, send, settle;
3. acknowledgement: one ``POST /ack/<token>`` per incident, as the coordinator's browser posts it.

Beside each, in the same process and the same run: the bare app (``bench/bare.py``) under the
same in-process client and the same bodies, and a plain aiosmtplib loop sending the same number
of copies of one of the service's own messages over the same number of connections. The client
is counted on both sides of those ratios.

The burst is measured on the real processes: ``burst`` events posted at 32 concurrent to
``serve`` (SQLite) or to one ``api`` process with one ``worker`` (PostgreSQL), and for each
incident the time from its opening (the instant the service accepted the event) to its first
message at the sink.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlencode

import aiosmtplib
import httpx
from sqlalchemy import create_engine, text

from bench.centers import FIRST_STEP_ROLES, release_failure
from bench.load import copies, description, in_child, percentile, post_events
from bench.service import SECRET_KEY, Server, create_api_key, service
from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.store.models import Notification

_ACK_BODY = urlencode({"response": "received", "comment": ""}).encode()
_FORM = {"content-type": "application/x-www-form-urlencoded"}


def measure(
    server: Server, key: str, sink: Any, centers: list[str], events: int, connections: int
) -> dict[str, Any]:
    """CPU per operation of the service ``server`` is configured as (not started: only its
    environment is used, and ``key``, an API key in its database), in a process of its own;
    then the raw SMTP loop's, in another, with a message the service just sent."""
    figures = in_child(_measure, server.env, key, centers, events, connections)
    raw = in_child(_raw_smtp_cpu, sink.port, sink.sample(), figures["messages"], connections)
    return {**figures, "raw_smtp_ms": raw * 1000 / figures["messages"]}


def _measure(
    env: dict[str, str], key: str, centers: list[str], events: int, connections: int
) -> dict[str, Any]:
    os.environ.update(env)
    return asyncio.run(_measure_async(key, centers, events, connections))


def _raw_smtp_cpu(port: int, sample: bytes, number: int, connections: int) -> float:
    messages = copies(sample, number)
    started = time.process_time()
    asyncio.run(_send_copies(port, messages, connections))
    return time.process_time() - started


async def _cpu(work: Callable[[], Awaitable[object]]) -> float:
    started = time.process_time()
    await work()
    return time.process_time() - started


async def _measure_async(
    key: str, centers: list[str], events: int, connections: int
) -> dict[str, Any]:
    from bench import bare
    from oos_notify.delivery.dispatch import Dispatcher
    from oos_notify.settings import Settings
    from oos_notify.web.app import create_app
    from oos_notify.web.services import Role, Services

    run = f"CPU{os.getpid()}"
    settings = Settings()
    warmup = [json.dumps(release_failure(f"W{run}", n, centers)).encode() for n in range(20)]
    bodies = [json.dumps(release_failure(run, n, centers)).encode() for n in range(events)]
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}

    async def post_all(client: httpx.AsyncClient, bodies: list[bytes] = bodies) -> None:
        for body in bodies:
            answer = await client.post("/v1/events", content=body, headers=auth)
            assert answer.status_code == 202, answer.text

    async def ack_all(client: httpx.AsyncClient, tokens: list[str]) -> None:
        for token in tokens:
            answer = await client.post(f"/ack/{token}", content=_ACK_BODY, headers=_FORM)
            assert answer.status_code == 200, answer.text

    bare_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bare.app), base_url="http://t"
    )
    async with bare_client:
        await post_all(bare_client)  # warm-up: the first calls import and compile
        bare_ingest = await _cpu(lambda: post_all(bare_client))
        bare_ack = await _cpu(lambda: ack_all(bare_client, _sample_tokens(events)))

    app = create_app(settings, role=Role.API)
    services = cast(Services, app.state.services)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        async with client:
            await post_all(client, warmup)
            ingest = await _cpu(lambda: post_all(client))
            assert settings.smtp_host is not None
            dispatcher = Dispatcher(
                services.engine,
                services.write_gate,
                services.clock,
                settings,
                services.renderer,
                services.tokens,
                settings.smtp_host,
                settings.effective_smtp_port,
                services.return_addresses,
                services.signer,
            )

            async def dispatch_all() -> None:
                await dispatcher.start()
                await dispatcher.run_until_idle()
                await dispatcher.stop()

            dispatch = await _cpu(dispatch_all)
            url = services.engine.url.render_as_string(False)
            messages = _sent(url)
            tokens = _ack_tokens(url, run)
            ack = await _cpu(lambda: ack_all(client, tokens))
    ms = 1000
    return {
        "events": events,
        "messages": messages,
        "acknowledgements": len(tokens),
        "ingest_ms": ingest * ms / events,
        "dispatch_ms": dispatch * ms / messages,
        "ack_ms": ack * ms / len(tokens),
        "bare_ingest_ms": bare_ingest * ms / events,
        "bare_ack_ms": bare_ack * ms / events,
    }


def _sent(url: str) -> int:
    """How many messages the dispatcher sent (the warm-up's included: it sent those too)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            sent = connection.execute(
                text("SELECT count(*) FROM notifications WHERE status = 'sent'")
            ).scalar_one()
    finally:
        engine.dispose()
    return int(sent)


def _ack_tokens(url: str, run: str) -> list[str]:
    """One acknowledgement link per incident of the run, signed as the emails' links are."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT n.id, n.incident_id, n.contact_id FROM notifications n "
                    "JOIN incidents i ON i.id = n.incident_id WHERE n.with_ack_link "
                    "AND n.level = 0 AND n.role = 'coordinator' AND i.incident_ref LIKE :ref"
                ),
                {"ref": f"OOS-{run}-%"},
            ).all()
    finally:
        engine.dispose()
    return tokens_for([(str(r[0]), str(r[1]), str(r[2])) for r in rows])


def _sample_tokens(number: int) -> list[str]:
    return tokens_for([("ntf_bench", "inc_bench", "bench-site-000-coordinator")] * number)


def tokens_for(rows: list[tuple[str, str, str]]) -> list[str]:
    """Acknowledgement links for (notification, incident, contact) ids, signed as the emails'
    links are (the same key)."""
    tokens = AckTokens(SECRET_KEY)
    expires_at = datetime.now(UTC) + timedelta(days=14)
    return [
        tokens.issue(
            cast(Notification, SimpleNamespace(id=nid, incident_id=iid, contact_id=cid)),
            expires_at,
        )
        for nid, iid, cid in rows
    ]


async def _send_copies(port: int, messages: list[bytes], connections: int) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    for message in [*messages, *[None] * connections]:
        queue.put_nowait(message)

    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        while (message := await queue.get()) is not None:
            await client.sendmail("oos-notify@localhost", ["someone@bench.example"], message)
        await client.quit()

    await asyncio.gather(*(connection() for _ in range(connections)))


def measure_burst(
    servers: list[Server], key: str, url: str, sink: Any, centers: list[str], events: int
) -> dict[str, Any]:
    """Start ``servers`` (the first answers the API), post ``events`` at 32 concurrent; for each
    incident, the seconds from its opening to its first message at the sink."""
    try:
        for server in servers:
            server.start()
        return _burst(servers, key, url, sink, centers, events)
    finally:
        for server in servers:
            server.stop()


def _burst(
    servers: list[Server], key: str, url: str, sink: Any, centers: list[str], events: int
) -> dict[str, Any]:
    port = servers[0].port
    expected = events * len(FIRST_STEP_ROLES)
    mark = sink.count()
    load = in_child(post_events, port, key, "BURST", centers, 32, events=events)
    sink.wait_for(mark + expected, timeout=300)
    arrived = dict((m, at) for at, m in sink.since(mark))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT i.id, i.opened_at, n.message_id FROM notifications n "
                    "JOIN incidents i ON i.id = n.incident_id "
                    "WHERE i.incident_ref LIKE 'OOS-BURST-%' AND n.level = 0"
                )
            ).all()
    finally:
        engine.dispose()
    first: dict[str, float] = {}
    opened: dict[str, float] = {}
    for incident_id, opened_at, message_id in rows:
        if isinstance(opened_at, str):
            opened_at = datetime.fromisoformat(opened_at)
        if opened_at.tzinfo is None:
            opened_at = opened_at.replace(tzinfo=UTC)
        opened[incident_id] = opened_at.timestamp()
        if message_id in arrived:
            first[incident_id] = min(first.get(incident_id, float("inf")), arrived[message_id])
    waits = sorted(first[i] - opened[i] for i in first)
    return {
        "events": events,
        "processes": [server.name for server in servers],
        "incidents_with_a_notice": len(first),
        "first_notice_p50_s": percentile(waits, 50),
        "first_notice_p99_s": percentile(waits, 99),
        "first_notice_max_s": waits[-1] if waits else None,
        "posts": description(load),
    }


def on_sqlite(bench: Any) -> dict[str, Any]:
    """Both measurements on SQLite files of their own: the burst through ``serve``."""
    size = bench.size
    server = bench.service("cpu")
    figures = measure(
        server, create_api_key(server), bench.sink, bench.centers, size.cpu_events, size.connections
    )
    if not size.burst_events:
        return {"cpu": figures}
    served = bench.service("burst")
    key = create_api_key(served)
    url = served.env["OOS_NOTIFY_DATABASE_URL"]
    burst = measure_burst([served], key, url, bench.sink, bench.centers, size.burst_events)
    return {"cpu": figures, "burst": burst}


def on_postgresql(bench: Any, databases: Any) -> dict[str, Any]:
    """Both measurements on databases of their own: the burst through one ``api`` process and
    sent by one ``worker``."""
    from bench.postgres import prepared

    size = bench.size
    with databases.fresh("cpu") as url:
        server, key = prepared(bench, "cpu-api", url)
        figures = measure(server, key, bench.sink, bench.centers, size.cpu_events, size.connections)
    if not size.burst_events:
        return {"cpu": figures}
    with databases.fresh("burst") as url:
        api, key = prepared(bench, "burst-api", url)
        worker = service(
            "burst-worker", bench.workdir, bench.config_dir, bench.sink.port, "worker", url
        )
        burst = measure_burst([api, worker], key, url, bench.sink, bench.centers, size.burst_events)
    return {"cpu": figures, "burst": burst}


def table(measured: dict[str, dict[str, Any]]) -> str:
    """The CPU and burst figures of each database measured (``{"SQLite": {...}, ...}``)."""
    names = list(measured)
    rows: list[list[str]] = []

    def row(label: str, key: str, base_key: str, base_label: str, target: str) -> None:
        cells = [f"{m['cpu'][key]:.2f}" for m in measured.values()]
        bases = "; ".join(f"{m['cpu'][base_key]:.2f}" for m in measured.values())
        ratios = "; ".join(f"{m['cpu'][base_key] / m['cpu'][key]:.1%}" for m in measured.values())
        rows.append([label, *cells, f"{base_label}: {bases}", ratios, target])

    row(
        "CPU ms per event ingested",
        "ingest_ms",
        "bare_ingest_ms",
        "bare FastAPI",
        "≤ 1.5 (SQLite), ≤ 3 (PostgreSQL)",
    )
    row("CPU ms per message dispatched", "dispatch_ms", "raw_smtp_ms", "aiosmtplib loop", "≤ 1")
    row("CPU ms per acknowledgement", "ack_ms", "bare_ack_ms", "bare form endpoint", "")
    bursts = {n: m["burst"] for n, m in measured.items() if "burst" in m}
    if bursts:
        waits = [
            f"{b['first_notice_p50_s']:.2f} / {b['first_notice_p99_s']:.2f} s"
            for b in bursts.values()
        ]
        events = next(iter(bursts.values()))["events"]
        rows.append(
            [
                f"burst of {events} events: first notice p50 / p99 after the event",
                *waits,
                "",
                "",
                "p99 < 2 s",
            ]
        )
    header = ["measurement", *names, "baseline, same run and process", "ratio", "target"]
    sizes = next(iter(measured.values()))["cpu"]
    burst = (
        "the burst through "
        + "; ".join(f"{', '.join(b['processes'])} ({n})" for n, b in bursts.items())
        if bursts
        else "no burst (not in --quick)"
    )
    return "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
            f"In-process CPU over {sizes['events']:,} events, {sizes['messages']:,} messages and "
            f"{sizes['acknowledgements']:,} acknowledgements; {burst}.",
        ]
    )
