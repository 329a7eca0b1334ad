"""How close to the machine's limit the service runs: four measurements, each beside a baseline
measured in the same run on the same machine (issue 5).

    python -m bench [--quick] [--output bench-results.json] [--profile DIR]
    python -m bench --database-url postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB [--quick]
    python -m bench --startup [--quick] [--database-url URL]

(The second runs the PostgreSQL measurements of ``bench.postgres`` instead; the third only the
start-up measurements of ``bench.startup``, on SQLite or on that server. Both other runs measure
start-up too.)

1. Ingest: POST /v1/events at 32 concurrent, beside a bare FastAPI endpoint validating the same
   model (``bench.bare``), served by uvicorn the same way.
2. Fan-out: 1,000 release_failure events at 100 centers, 4 contacts each notified at once: first
   POST to the 4,000th message accepted by the sink, beside a plain aiosmtplib loop sending 4,000
   pre-rendered messages of the same size over 8 reused connections to the same sink.
3. Timers: 100,000 notifications due over the next 2 minutes (``bench.pending``: 1,000
   incidents opened through ``events.ingest``, the rest SQL copies of them): lateness of each
   arrival at the sink against its due time, the service's peak RSS, and the time a restart
   takes with them pending (beside the first start, on the empty database); beside an asyncio
   loop sending pre-rendered messages at the same instants. Both are waited for until 30 s
   after the window; messages not at the sink by then count as missing and late by more.
4. Acknowledgement: POST /ack/{token} at 32 concurrent, one first acknowledgement per incident,
   beside the bare app's form endpoint.

The service (``oos-notify serve``), the SMTP sink (aiosmtpd) and the load generator each run in a
process of their own on loopback. Writes a Markdown table to stdout and everything to JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cpu, pending, postgres, report, startup
from bench.centers import FIRST_STEP_ROLES, write_config
from bench.load import (
    description,
    in_child,
    percentile,
    post_acknowledgements,
    post_events,
    smtp_burst,
    smtp_on_time,
)
from bench.report import markdown
from bench.service import Server, bare, create_api_key, service
from bench.sink import Arrival, Sink
from oos_notify.ids import new_id


@dataclass(frozen=True)
class Size:
    centers: int
    ingest_seconds: float
    warmup_seconds: float
    fanout_events: int
    pending: int
    window_seconds: float
    cpu_events: int = 1000
    """Events posted in-process for the CPU per operation (each makes four messages)."""
    burst_events: int = 300
    """Events posted at once for the burst (0: not measured)."""
    startup_runs: int = 5
    """How many times each command's start-up is measured (the median is reported)."""
    concurrency: int = 32
    connections: int = 8
    timers_sample: int = pending.SAMPLE
    """Of the timers' incidents, how many are opened through ``events.ingest`` (the rest are
    SQL copies of them)."""
    timers_lead_seconds: float = 10.0
    """Between placing the pending rows and the first due time: the service starts meanwhile."""
    timers_grace_seconds: float = 30.0
    """How long after the window closes the timers measurements (the service's and the raw
    loop's) wait for the last messages; any not at the sink by then count as missing, late by
    more than they waited."""


FULL = Size(
    centers=100,
    ingest_seconds=20,
    warmup_seconds=2,
    fanout_events=1000,
    pending=100_000,
    window_seconds=120,
)
QUICK = Size(
    centers=10,
    ingest_seconds=3,
    warmup_seconds=1,
    fanout_events=100,
    pending=3_332,
    window_seconds=10,
    cpu_events=100,
    burst_events=0,
    startup_runs=1,
    timers_sample=100,
    timers_lead_seconds=5,
    timers_grace_seconds=5,
)
"""``--quick``: every measurement but the burst, smaller, to finish in under two minutes where
two cores are free (under 100 s of CPU in all); the timers: 333 due a second (the full run's is
833) over 10 s, waiting 5 s for the late ones. The burst, about 20 s on its own, runs in the
full run and in ``--cpu --quick``."""
QUICK_STARTUP = replace(QUICK, startup_runs=3)
"""``--startup --quick``: 10 sites, 3 runs of each command."""
QUICK_CPU = replace(QUICK, centers=25, cpu_events=200, burst_events=300)
"""``--cpu --quick``: CPU per operation over 200 events, and the burst of 300, to 25 sites as
before ``--quick`` shrank."""


@dataclass
class Bench:
    size: Size
    workdir: Path
    config_dir: Path
    centers: list[str]
    sink: Sink
    profile_dir: Path | None

    def service(self, name: str) -> Server:
        return service(name, self.workdir, self.config_dir, self.sink.port)

    def profile(self, name: str) -> Path | None:
        return None if self.profile_dir is None else self.profile_dir / f"{name}.txt"


def baselines(bench: Bench) -> dict[str, Any]:
    """The bare app under the ingest load and the acknowledgement load."""
    size = bench.size
    server = bare(bench.workdir)
    server.start()
    try:
        ingest = in_child(
            post_events,
            server.port,
            None,
            "BARE",
            bench.centers,
            size.concurrency,
            duration=size.ingest_seconds,
            warmup=size.warmup_seconds,
        )
        ack = in_child(
            post_acknowledgements, server.port, sample_tokens(size.fanout_events), size.concurrency
        )
    finally:
        server.stop()
    return {"ingest": description(ingest), "ack": description(ack)}


def measure_ingest(bench: Bench) -> dict[str, Any]:
    size = bench.size
    server = bench.service("ingest")
    key = create_api_key(server)
    server.start(profile_to=bench.profile("ingest"))
    try:
        cpu = server.cpu_seconds()
        load = in_child(
            post_events,
            server.port,
            key,
            "INGEST",
            bench.centers,
            size.concurrency,
            duration=size.ingest_seconds,
            warmup=size.warmup_seconds,
        )
        cpu = server.cpu_seconds() - cpu
    finally:
        server.stop()
    return {**description(load), "service_cpu_seconds": cpu}


def measure_fanout_and_ack(bench: Bench) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lot-wide failure, then every incident acknowledged once, on the same service."""
    size = bench.size
    server = bench.service("fanout")
    key = create_api_key(server)
    server.start(profile_to=bench.profile("fanout"))
    expected = size.fanout_events * len(FIRST_STEP_ROLES)
    try:
        mark = bench.sink.count()
        cpu = server.cpu_seconds()
        load = in_child(
            post_events,
            server.port,
            key,
            "FANOUT",
            bench.centers,
            size.concurrency,
            events=size.fanout_events,
        )
        arrived = bench.sink.wait_for(mark + expected, timeout=600) - mark
        arrivals = bench.sink.since(mark)
        fanout = {
            "events": size.fanout_events,
            "messages": expected,
            "arrived": arrived,
            "seconds": arrivals[expected - 1][0] - load.first_sent if arrived >= expected else None,
            "posts": description(load),
            "service_cpu_seconds": server.cpu_seconds() - cpu,
        }
        tokens = ack_tokens(bench.workdir / "fanout.db")
        ack = description(in_child(post_acknowledgements, server.port, tokens, size.concurrency))
    finally:
        server.stop()
    return fanout, ack


def measure_raw_fanout(bench: Bench, messages: int) -> dict[str, Any]:
    mark = bench.sink.count()
    started = in_child(
        smtp_burst, bench.sink.port, bench.sink.sample(), messages, bench.size.connections
    )
    bench.sink.wait_for(mark + messages, timeout=300)
    arrivals = bench.sink.since(mark)
    return {
        "messages": messages,
        "connections": bench.size.connections,
        "message_bytes": len(bench.sink.sample()),
        "seconds": arrivals[messages - 1][0] - started,
    }


def measure_timers(bench: Bench) -> dict[str, Any]:
    size = bench.size
    database = bench.workdir / "timers.db"
    server = bench.service("timers")
    # The first start makes the database and renders every template for every center; the
    # start measured below is a restart with the rows pending, as after a deployment.
    first_start = server.start()
    server.stop()
    loading = time.perf_counter()
    loaded = pending.load(
        database,
        bench.config_dir,
        bench.centers,
        size.pending,
        size.window_seconds,
        size.timers_sample,
    )
    loading = time.perf_counter() - loading
    opens = pending.place(database, size.timers_lead_seconds)
    due = pending.first_notices(database)
    mark = bench.sink.count()
    startup = server.start(profile_to=bench.profile("timers"))
    slack = opens - time.time()
    deadline = opens + size.window_seconds + size.timers_grace_seconds
    try:
        bench.sink.wait_for(mark + len(due), timeout=max(deadline - time.time(), 1))
        peak_rss_mb = server.status("VmHWM") / 1024
    finally:
        server.stop()
    arrivals = bench.sink.since(mark)
    copies = [m for m in due if m not in loaded.sample_message_ids]
    copies_sent = len({m for at, m in arrivals if at <= deadline} & set(copies))
    return {
        "pending": len(due),
        "window_seconds": size.window_seconds,
        "load_seconds": loading,
        "incidents_ingested": loaded.ingested,
        "incidents_copied": loaded.copied,
        "copies_first_notices": len(copies),
        "copies_first_notices_sent": copies_sent,
        "first_start_seconds": first_start,
        "startup_seconds": startup,
        "ready_before_first_due_seconds": slack,
        "peak_rss_mb": peak_rss_mb,
        **lateness(arrivals, due, deadline),
    }


def measure_raw_timers(bench: Bench, offsets: list[float]) -> dict[str, Any]:
    """The same due instants, kept by a bare asyncio loop with 8 connections, which stops
    sending when the same grace after the window has passed."""
    size = bench.size
    opens = time.time() + 2
    due_at = [opens + offset for offset in offsets]
    deadline = opens + size.window_seconds + size.timers_grace_seconds
    mark = bench.sink.count()
    in_child(smtp_on_time, bench.sink.port, bench.sink.sample(), due_at, size.connections, deadline)
    bench.sink.wait_for(mark + len(due_at), timeout=max(deadline - time.time(), 1))
    due = {f"<raw-{n:08d}@bench>": at for n, at in enumerate(due_at)}
    return lateness(bench.sink.since(mark), due, deadline)


def lateness(arrivals: list[Arrival], due: dict[str, float], deadline: float) -> dict[str, Any]:
    """How late each expected message arrived at the sink, against its due instant, over all
    expected messages: one not at the sink by ``deadline`` is missing, and late by more than
    ``deadline`` minus its due instant. So each percentile is exact only while it falls on a
    message that arrived; ``*_at_least_s`` is the percentile with every missing message at its
    bound (a lower bound of the true one), and the plain figure the one with every missing
    message infinitely late (an upper bound; None when infinite). They are equal when exact."""
    arrived = {m: at for at, m in arrivals if m in due and at <= deadline}
    bound = [deadline - at for m, at in due.items() if m not in arrived]
    late = sorted(at - due[m] for m, at in arrived.items())
    low = sorted(late + bound)
    high = late + [math.inf] * len(bound)

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    figures: dict[str, Any] = {
        "expected": len(due),
        "sent": len(late),
        "missing": len(bound),
    }
    for name, p in (("p50", 50), ("p99", 99), ("max", 100)):
        figures[f"lateness_{name}_s"] = finite(percentile(high, p)) if due else None
        figures[f"lateness_{name}_at_least_s"] = percentile(low, p) if due else None
    return figures


def ack_tokens(database: Path) -> list[str]:
    """One acknowledgement link per incident, signed as the emails' links are (same key)."""
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT id, incident_id, contact_id FROM notifications "
            "WHERE with_ack_link AND level = 0 AND role = 'coordinator' ORDER BY created_at"
        ).fetchall()
    return cpu.tokens_for(rows)


def sample_tokens(number: int) -> list[str]:
    """Links of the same shape for the bare app, which reads none of them."""
    return cpu.tokens_for([(new_id("ntf"), new_id("inc"), "bench-site-000-coordinator")] * number)


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
    }


def run(
    size: Size,
    profile_dir: Path | None,
    database_url: str | None = None,
    only_startup: bool = False,
    only_cpu: bool = False,
) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "size": asdict(size),
    }
    with tempfile.TemporaryDirectory(prefix="oos-bench-") as tmp, Sink() as sink:
        workdir = Path(tmp)
        centers = write_config(workdir / "config", size.centers)
        bench = Bench(size, workdir, workdir / "config", centers, sink, profile_dir)
        if only_cpu:
            result["per_operation"] = per_operation(bench, database_url)
            return _finished(result, started)
        if database_url is None:
            result["startup"] = startup.measure(bench, size.startup_runs, startup.sqlite())
        else:
            databases = postgres.Databases(database_url)
            try:
                fresh = databases.fresh("startup")
                result["startup"] = startup.measure(bench, size.startup_runs, fresh)
            finally:
                databases.close()
        if only_startup:
            return _finished(result, started)
        result["baselines"] = baselines(bench)
        if database_url is not None:
            result["postgresql"] = {
                "sqlite_ingest": measure_ingest(bench),
                "sqlite_fanout": measure_fanout_and_ack(bench)[0],
                **postgres.run(bench, database_url),
            }
            result["per_operation"] = per_operation(bench, database_url)
            messages = size.fanout_events * len(FIRST_STEP_ROLES)
            result["baselines"]["fanout"] = measure_raw_fanout(bench, messages)
            return _finished(result, started)
        result["ingest"] = measure_ingest(bench)
        result["fanout"], result["ack"] = measure_fanout_and_ack(bench)
        result["baselines"]["fanout"] = measure_raw_fanout(bench, result["fanout"]["messages"])
        result["per_operation"] = per_operation(bench, None)
        result["timers"] = measure_timers(bench)
        offsets = sorted(
            size.window_seconds * n / (size.pending // len(FIRST_STEP_ROLES))
            for n in range(size.pending // len(FIRST_STEP_ROLES))
            for _ in FIRST_STEP_ROLES
        )
        result["baselines"]["timers"] = measure_raw_timers(bench, offsets)
    return _finished(result, started)


def per_operation(bench: Bench, database_url: str | None) -> dict[str, Any]:
    """CPU per event, message and acknowledgement, and the burst: on SQLite, and on the
    PostgreSQL server when one is given."""
    measured = {"SQLite": cpu.on_sqlite(bench)}
    if database_url is not None:
        databases = postgres.Databases(database_url)
        try:
            measured["PostgreSQL"] = cpu.on_postgresql(bench, databases)
        finally:
            databases.close()
    return measured


def _finished(result: dict[str, Any], started: float) -> dict[str, Any]:
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    result["seconds"] = time.perf_counter() - started
    return result


def cpu_seconds() -> float:
    """CPU time this process and every process it has waited for have used so far (the
    service, the sink, the load generators): what the run costs whatever else the machine does."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run without the burst (under 2 minutes where two cores are free)",
    )
    parser.add_argument(
        "--startup",
        action="store_true",
        help="measure start-up only: serve, api and worker to ready, a no-op db upgrade "
        "(with --quick, 10 sites and 3 runs each: about 35 s of CPU)",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="measure CPU per operation and the burst only (with --database-url, on SQLite and "
        "on PostgreSQL)",
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy each service run into DIR"
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="a PostgreSQL server and a role that may create databases: measure on it instead",
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    size = (
        FULL
        if not args.quick
        else QUICK_STARTUP
        if args.startup
        else QUICK_CPU
        if args.cpu
        else QUICK
    )
    result = run(size, args.profile, args.database_url, args.startup, args.cpu)
    result["cpu_seconds"] = cpu_seconds()
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    database = "PostgreSQL" if args.database_url else "SQLite"
    if args.startup:
        print(f"{report.machine_line(result)}\n\n{startup.table(result['startup'], database)}")
    elif args.cpu:
        print(f"{report.machine_line(result)}\n\n{cpu.table(result['per_operation'])}")
    else:
        print(postgres.markdown(result) if args.database_url else markdown(result))
        print(f"\n{cpu.table(result['per_operation'])}")
    print(
        f"\n(JSON in {args.output}; {result['seconds']:.0f} s in all, "
        f"{result['cpu_seconds']:.0f} s of CPU)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
