"""Kill -9 at random moments among several processes on one PostgreSQL database.

    OOS_TEST_DATABASE=postgresql OOS_TEST_PG_URL=postgresql+psycopg://oos:oos@127.0.0.1:55432/oos \\
        python -m tests.reliability.replicas [--incidents 300] [--kills 30] [--starts 10] [--seed N]

Two ``oos-notify api`` and two ``oos-notify worker`` processes share a database and send to an
aiosmtpd server in this process that outlives them all and answers each message after a short
delay, so a kill often lands between a send and its record. Incidents, each with an escalation
plan whose steps are 3 and 6 seconds apart, are posted at a steady pace to the API processes in
turn (a post that dies with its process is posted again to the other one: events are
idempotent) while a random process is SIGKILLed and started again. A killed worker comes back
under its own name half of the time (it takes its claims back at once) and under a new name
otherwise, as a replaced container would (its claims wait for the lease to run out, and the
other worker takes them over). At the end every notification the answers promised must have
arrived, once or several times under one Message-ID, to the right recipient, and none later
than the claim lease (30 s) and a few seconds of sending after its due time; and the database
must record each as sent within the lease of the last arrival (a worker killed between a send
and its record, back under a new name, leaves its claim until the lease runs out: another
worker then sends the message again under its Message-ID and records it).

Then, ``starts`` times, two ``oos-notify serve`` processes are started at the same instant on a
new, empty database: both must become ready. Prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from oos_notify.delivery.capture import free_port
from tests import databases
from tests.reliability.crash import (
    SETTINGS,
    CrashReport,
    Poster,
    _await_delivery,
    _count,
    _workdir_config,
)
from tests.served import COMMAND, ROOT, ServedProcess
from tests.smtp_faults import Fault, FaultySmtpServer

LEASE_SECONDS = 30.0
"""The dispatcher's claim lease (``delivery.dispatch.CLAIM_LEASE``)."""


@dataclass
class ReplicaReport:
    crash: CrashReport
    kills_by_role: dict[str, int] = field(default_factory=dict)
    workers_renamed: int = 0
    """Killed workers started again under a new name: their claims waited for the lease."""
    seconds_until_recorded: float | None = None
    """From the last promised arrival until the database recorded every one as sent (None:
    not within the lease and 15 s)."""
    simultaneous_starts: int = 0
    simultaneous_starts_ok: int = 0
    start_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.crash.ok
            and self.seconds_until_recorded is not None
            and self.crash.max_lateness_seconds <= LEASE_SECONDS + 15
            and self.simultaneous_starts_ok == self.simultaneous_starts
        )


def run(
    incidents: int,
    kills: int,
    starts: int,
    seed: int,
    max_uptime: float = 2.0,
    idle_seconds: float = LEASE_SECONDS + 15,
) -> ReplicaReport:
    rng = random.Random(seed)
    report = ReplicaReport(CrashReport(incidents=incidents))
    crash = report.crash
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="oos-replicas-") as tmp, FaultySmtpServer() as smtp:
        smtp.handler.set_faults(Fault("DATA", delay=0.02))
        workdir = Path(tmp)
        _workdir_config(workdir)

        def process(command: str, name: str) -> ServedProcess:
            settings = {**SETTINGS, "OOS_NOTIFY_INSTANCE_NAME": name}
            return ServedProcess(workdir, workdir / "config", smtp.port, settings, command)

        apis = [process("api", f"api-{n}") for n in (1, 2)]
        workers = [process("worker", f"worker-{n}") for n in (1, 2)]
        key = apis[0].api_key()
        for served in [*workers, *apis]:
            served.start()
        uptimes = [rng.uniform(0.3, max_uptime) for _ in range(kills)]
        poster = Poster(
            [a.base for a in apis], key, incidents, pace_seconds=sum(uptimes) / incidents / 2
        )
        poster.thread.start()
        renamed = 0
        try:
            for uptime in uptimes:
                time.sleep(uptime)
                victim = rng.choice([*apis, *workers])
                victim.kill()
                role = victim.command
                report.kills_by_role[role] = report.kills_by_role.get(role, 0) + 1
                if role == "worker" and rng.random() < 0.5:
                    renamed += 1
                    victim.env["OOS_NOTIFY_INSTANCE_NAME"] = f"worker-new-{renamed}"
                restarted = time.monotonic()
                victim.start()
                crash.kills += 1
                crash.slowest_restart_seconds = max(
                    crash.slowest_restart_seconds, round(time.monotonic() - restarted, 2)
                )
            poster.thread.join(timeout=300)
            _await_delivery(smtp, poster, idle_seconds)
            report.seconds_until_recorded = _await_recorded(
                apis[0].database_url, set(poster.promised), LEASE_SECONDS + 15
            )
            time.sleep(1)
        finally:
            for served in [*apis, *workers]:
                served.stop()
        report.workers_renamed = renamed
        crash.reposts = poster.reposts
        crash.problems += poster.errors
        _count(crash, poster.promised, smtp.handler.messages(), apis[0].database_url)
        logs = "".join(s.log.read_text(errors="replace") for s in [*workers])
        crash.resent_at_restart = sum(
            int(line.split("resending ", 1)[1].split()[0])
            for line in logs.splitlines()
            if "notifications interrupted by a stop" in line
        )
        if crash.problems:
            tail = "\n".join(logs.splitlines()[-40:])
            crash.problems.append("worker logs tail:\n" + tail)
        for attempt in range(starts):
            simultaneous_start(report, workdir / f"start-{attempt}", workdir / "config")
    crash.seconds = round(time.monotonic() - started, 1)
    return report


def _await_recorded(database_url: str, promised: set[str], timeout: float) -> float | None:
    """Seconds until the database records every promised notification as sent, or None."""
    engine = create_engine(database_url)
    sent = text("SELECT id FROM notifications WHERE status = 'sent'")
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            with engine.connect() as connection:
                if promised <= {row.id for row in connection.execute(sent)}:
                    return round(time.monotonic() - started, 2)
            time.sleep(0.5)
        return None
    finally:
        engine.dispose()


def simultaneous_start(report: ReplicaReport, directory: Path, config_dir: Path) -> None:
    """Two ``serve`` processes started at the same instant on an empty database: both ready."""
    directory.mkdir()
    url = databases.empty_url_for(directory)
    ports = [free_port(), free_port()]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
    processes = [
        subprocess.Popen(
            [COMMAND, "serve"],
            cwd=directory,
            env={
                **clean,
                # No SMTP server: each runs the capture server, and both make the signing key.
                "OOS_NOTIFY_CONFIG_DIR": str(config_dir),
                "OOS_NOTIFY_TEMPLATES_DIR": str(ROOT / "templates"),
                "OOS_NOTIFY_DATABASE_URL": url,
                "OOS_NOTIFY_PORT": str(port),
                "OOS_NOTIFY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "OOS_NOTIFY_INSTANCE_NAME": f"replica-{port}",
                "OOS_NOTIFY_LOG_FORMAT": "text",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for port in ports
    ]
    report.simultaneous_starts += 1
    ready = [False, False]
    deadline = time.monotonic() + 90
    try:
        while not all(ready) and time.monotonic() < deadline:
            for n, port in enumerate(ports):
                if ready[n] or processes[n].poll() is not None:
                    continue
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    ready[n] = answer.status_code == 200
                except httpx.TransportError:
                    pass
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(0.05)
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
        outputs = [p.communicate(timeout=60)[0] for p in processes]
    if all(ready):
        report.simultaneous_starts_ok += 1
    else:
        codes = [p.returncode for p in processes]
        said = " | ".join(f"[{n}] {output[-2000:]}" for n, output in enumerate(outputs))
        report.start_failures.append(f"ready {ready}, exit codes {codes}: {said}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    if not databases.ON_POSTGRESQL:
        sys.exit("set OOS_TEST_DATABASE=postgresql and OOS_TEST_PG_URL (see docs/testing.md)")
    report = run(args.incidents, args.kills, args.starts, args.seed)
    figures = {"seed": args.seed, "ok": report.ok, **asdict(report)}
    print(json.dumps(figures, indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
