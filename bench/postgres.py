"""The benchmark on PostgreSQL: several processes on one database (issue 11).

    python -m bench --database-url postgresql+psycopg://oos:oos@127.0.0.1:55432/oos [--quick]

The URL names a server and a role that may create databases; each measurement gets a database of
its own there, migrated with ``oos-notify db upgrade`` as an operator would, and dropped after.
Reported beside baselines measured in the same run, and beside ``serve`` on SQLite:

1. Ingest: POST /v1/events at 32 concurrent, to one ``oos-notify api`` process, then to two
   (the connections dealt out between them), beside the bare FastAPI endpoint. While the load
   runs, the database's sessions are sampled every 20 ms: how many are busy, and how many of
   those wait on a lock, on the audit chain head's row or on anything else.
2. Fan-out: the same 1,000 release_failure events (4,000 first notices) posted through one
   ``api`` process and sent by one ``oos-notify worker``, then by two: first POST to the
   4,000th message at the sink, beside the plain aiosmtplib loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import create_engine, make_url, text

from bench import startup
from bench.centers import FIRST_STEP_ROLES
from bench.load import description, in_child, post_events
from bench.service import Server, create_api_key, service

_HEAD = "(query LIKE 'UPDATE service_values%%' OR query = 'COMMIT')"
"""A session waiting for the audit chain head: the head is read and moved by an UPDATE on
``service_values`` or, since migration 0003, by the trigger that chains the entries at COMMIT
(the only lock a COMMIT can wait for)."""
_SAMPLE = f"""
SELECT count(*) FILTER (WHERE state = 'active'),
       count(*) FILTER (WHERE wait_event_type = 'Lock' AND {_HEAD}),
       count(*) FILTER (WHERE wait_event_type = 'Lock' AND NOT {_HEAD})
FROM pg_stat_activity
WHERE datname = %(database)s AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


class Databases:
    """Databases of their own for each measurement, on the server ``url`` names."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._admin = create_engine(self._url, isolation_level="AUTOCOMMIT")
        self._prefix = f"oos_bench_{os.getpid()}_"

    @contextmanager
    def fresh(self, name: str) -> Iterator[str]:
        database = self._prefix + name
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        try:
            yield self._url.set(database=database).render_as_string(hide_password=False)
        finally:
            with self._admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    def close(self) -> None:
        self._admin.dispose()


class LockSampler:
    """Samples the database's sessions in a thread while a load runs."""

    def __init__(self, url: str, every: float = 0.02) -> None:
        parsed = make_url(url)
        self._conninfo = parsed.set(drivername="postgresql").render_as_string(False)
        self._database = parsed.database
        self._every = every
        self._samples: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True) as connection:
            while not self._stop.wait(self._every):
                row = connection.execute(_SAMPLE, {"database": self._database}).fetchone()
                assert row is not None
                self._samples.append((int(row[0]), int(row[1]), int(row[2])))

    def summary(self) -> dict[str, Any]:
        samples = len(self._samples) or 1
        busy = sum(s[0] for s in self._samples)
        head = sum(s[1] for s in self._samples)
        other = sum(s[2] for s in self._samples)
        return {
            "samples": len(self._samples),
            "mean_busy_sessions": busy / samples,
            "mean_waiting_on_chain_head": head / samples,
            "mean_waiting_on_other_locks": other / samples,
            "share_of_busy_waiting_on_chain_head": head / busy if busy else 0.0,
        }


def prepared(bench: Any, name: str, url: str) -> tuple[Server, str]:
    """The schema made as an operator makes it, and an API key; the first process to start."""
    first = service(name, bench.workdir, bench.config_dir, bench.sink.port, "api", url)
    subprocess.run(
        [sys.executable, "-m", "oos_notify.cli", "db", "upgrade"],
        env=first.env,
        cwd=bench.workdir,
        check=True,
        capture_output=True,
    )
    return first, create_api_key(first)


def _stop(servers: list[Server]) -> None:
    for server in servers:
        server.stop()


def measure_ingest(bench: Any, databases: Databases, apis: int) -> dict[str, Any]:
    size = bench.size
    with databases.fresh(f"ingest{apis}") as url:
        first, key = prepared(bench, f"ingest{apis}-api-1", url)
        servers = [first] + [
            service(
                f"ingest{apis}-api-{n}",
                bench.workdir,
                bench.config_dir,
                bench.sink.port,
                "api",
                url,
            )
            for n in range(2, apis + 1)
        ]
        try:
            for server in servers:
                server.start()
            cpu = sum(server.cpu_seconds() for server in servers)
            with LockSampler(url) as sampler:
                load = in_child(
                    post_events,
                    [server.port for server in servers],
                    key,
                    f"INGEST{apis}",
                    bench.centers,
                    size.concurrency,
                    duration=size.ingest_seconds,
                    warmup=size.warmup_seconds,
                )
            cpu = sum(server.cpu_seconds() for server in servers) - cpu
        finally:
            _stop(servers)
    return {
        **description(load),
        "processes": apis,
        "service_cpu_seconds": cpu,
        "locks": sampler.summary(),
    }


def measure_fanout(bench: Any, databases: Databases, workers: int) -> dict[str, Any]:
    size = bench.size
    expected = size.fanout_events * len(FIRST_STEP_ROLES)
    with databases.fresh(f"fanout{workers}") as url:
        api, key = prepared(bench, f"fanout{workers}-api", url)
        senders = [
            service(
                f"fanout{workers}-worker-{n}",
                bench.workdir,
                bench.config_dir,
                bench.sink.port,
                "worker",
                url,
            )
            for n in range(1, workers + 1)
        ]
        servers = [*senders, api]
        try:
            for server in servers:
                server.start()
            mark = bench.sink.count()
            cpu = sum(server.cpu_seconds() for server in servers)
            load = in_child(
                post_events,
                api.port,
                key,
                f"FANOUT{workers}",
                bench.centers,
                size.concurrency,
                events=size.fanout_events,
            )
            arrived = bench.sink.wait_for(mark + expected, timeout=600) - mark
            arrivals = bench.sink.since(mark)
            cpu = sum(server.cpu_seconds() for server in servers) - cpu
        finally:
            _stop(servers)
    return {
        "workers": workers,
        "events": size.fanout_events,
        "messages": expected,
        "arrived": arrived,
        "seconds": arrivals[expected - 1][0] - load.first_sent if arrived >= expected else None,
        "posts": description(load),
        "service_cpu_seconds": cpu,
    }


def run(bench: Any, url: str) -> dict[str, Any]:
    """Ingest with one and two ``api`` processes, fan-out with one and two workers."""
    databases = Databases(url)
    try:
        with databases.fresh("probe") as probe:
            engine = create_engine(probe)
            with engine.connect() as connection:
                server_version = connection.execute(text("SHOW server_version")).scalar()
            engine.dispose()
        return {
            "server_version": server_version,
            "ingest": [measure_ingest(bench, databases, apis) for apis in (1, 2)],
            "fanout": [measure_fanout(bench, databases, workers) for workers in (1, 2)],
        }
    finally:
        databases.close()


def markdown(result: dict[str, Any]) -> str:
    base, pg = result["baselines"], result["postgresql"]
    bare = base["ingest"]["per_second"]
    raw = base["fanout"]
    raw_rate = raw["messages"] / raw["seconds"]
    concurrency = result["size"]["concurrency"]

    def ingest_row(label: str, figures: dict[str, Any]) -> tuple[str, ...]:
        return (
            f"ingest: events/s at {concurrency} concurrent, {label}",
            f"{figures['per_second']:,.0f} (p50 / p99 {figures['p50_ms']:,.0f} / "
            f"{figures['p99_ms']:,.0f} ms)",
            f"bare FastAPI: {bare:,.0f}",
            f"{figures['per_second'] / bare:.1%}",
        )

    def fanout_row(label: str, figures: dict[str, Any]) -> tuple[str, ...]:
        seconds = figures["seconds"]
        rate = figures["messages"] / seconds if seconds else 0.0
        shown = f"{seconds:,.2f} s ({rate:,.0f} msg/s)" if seconds else "not all arrived"
        return (
            f"fan-out: {figures['events']:,} events x 4, first POST to the "
            f"{figures['messages']:,}th message, {label}",
            shown,
            f"aiosmtplib, {raw['connections']} connections: {raw['seconds']:,.2f} s "
            f"({raw_rate:,.0f} msg/s)",
            f"{rate / raw_rate:.1%}",
        )

    rows = [
        ingest_row("SQLite, `serve`", pg["sqlite_ingest"]),
        *(ingest_row(f"PostgreSQL, {f['processes']} `api`", f) for f in pg["ingest"]),
        fanout_row("SQLite, `serve`", pg["sqlite_fanout"]),
        *(fanout_row(f"PostgreSQL, 1 `api` + {f['workers']} `worker`", f) for f in pg["fanout"]),
    ]
    machine = result["machine"]
    locks = [
        f"{f['processes']} api: {f['locks']['mean_busy_sessions']:.1f} busy sessions on average, "
        f"{f['locks']['mean_waiting_on_chain_head']:.2f} of them waiting on the audit chain "
        f"head ({f['locks']['share_of_busy_waiting_on_chain_head']:.0%}), "
        f"{f['locks']['mean_waiting_on_other_locks']:.2f} on other locks "
        f"({f['locks']['samples']} samples); the api processes used "
        f"{f['service_cpu_seconds']:.0f} s of CPU"
        for f in pg["ingest"]
    ]
    return "\n".join(
        [
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['arch']}, "
            f"Python {machine['python']}, PostgreSQL {pg['server_version']}; load average "
            f"{machine['load_average_at_start']:.1f} at the start, "
            f"{machine['load_average_at_end']:.1f} at the end; {result['when']}.",
            "",
            "| measurement | oos-notify | baseline, same run | ratio |",
            "| --- | --- | --- | --- |",
            *(f"| {' | '.join(row)} |" for row in rows),
            "",
            "Database sessions during the ingest runs: " + "; ".join(locks) + ".",
            "",
            startup.table(result["startup"], "PostgreSQL"),
        ]
    )
