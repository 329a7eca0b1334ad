"""PostgreSQL stopped under load, for longer than the claim lease, and started again.

    OOS_TEST_DATABASE=postgresql OOS_TEST_PG_URL=... \\
        python -m tests.reliability.outage [--outage 20] [--lease 5]

One ``oos-notify api`` and one ``oos-notify worker`` share a PostgreSQL cluster of their own (the
suite's shared server must stay up for everything else) and send to an aiosmtpd server in this
process. Events are posted at a steady pace, a client reposting each one answered otherwise than
2xx after its ``Retry-After``, while ``/metrics`` of both processes is scraped. The mail server
holds each message for a second as the database is stopped, so that messages are handed to it
while the database goes away. Then the database is started again; one second later an event is
posted and timed until its first notices arrive. Prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from oos_notify.delivery.capture import free_port
from oos_notify.store.db import create_schema, make_engine
from tests.conftest import ROOT, now, release_failure
from tests.served import ServedProcess
from tests.smtp_faults import Fault, FaultySmtpServer

FIRST_NOTICE = {"ct-coord@mercy.example", "ct-md@mercy.example", "celllab@mercy.example"}
"""Who the standard plan's first step notifies at mercy-general-main."""
QUIET = {"OOS_NOTIFY_SWEEP_INTERVAL_SECONDS": "3600"}
"""No sweep during the run: whatever is sent after the outage was woken by the listener."""
PACE_SECONDS = 0.2
"""Between two new events: a steady load that a worker on a busy 2-core machine keeps up with,
so that what is measured after the outage is the recovery, not a backlog of the load itself."""
_REF = re.compile(r"OOS-OUT-\d+")
_RECORDED = re.compile(r"database back: recorded (\d+) outcomes")


class PrivatePostgres:
    """A PostgreSQL 15 cluster of one test's own, on its own port, that it may stop and start,
    made as ``.ci/start-postgres.sh`` makes the suite's (run as root; the server runs as the
    postgres user)."""

    def __init__(self) -> None:
        self.bin = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pgoutage."))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.url = f"postgresql+psycopg://oos:oos@127.0.0.1:{self.port}/oos"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def create(self) -> PrivatePostgres:
        self._as_postgres(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
        )
        self.start()
        self._as_postgres(
            "psql",
            "-h",
            str(self.directory),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            "CREATE ROLE oos LOGIN PASSWORD 'oos'",
            "-c",
            "CREATE DATABASE oos OWNER oos",
        )
        return self

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.directory / "server.log")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Scrapes:
    """What ``/metrics`` answered a process, and the ``oos_notify_database_up`` values seen."""

    answers: Counter[str] = field(default_factory=Counter)
    database_up: Counter[str] = field(default_factory=Counter)


@dataclass
class OutageReport:
    outage_seconds: float
    lease_seconds: float
    events: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    """Every answer to a post: its status code, or what failed instead."""
    answers_during_outage: Counter[str] = field(default_factory=Counter)
    """The answers to posts made and answered while the server was stopped."""
    refusals_without_retry_after_or_json: int = 0
    pages_during_outage: dict[str, str] = field(default_factory=dict)
    """What a person's pages (and /readyz) answered while the database was away."""
    metrics: dict[str, Scrapes] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    """First notices of accepted events that never arrived (incident ref and recipient)."""
    sent_twice: dict[str, int] = field(default_factory=dict)
    """Message-IDs that arrived more than once, and how often."""
    first_send_after_return_seconds: float | None = None
    """From the database accepting connections again to the next message at the mail server."""
    probe_notices_seconds: float | None = None
    """From posting an event one second after the return to its last first notice arriving."""
    sent_before_probe: int = 0
    """Messages that arrived between the return and the last of the probe's: the backlog the
    probe's notices waited behind (the load's, and the events reposted after the outage)."""
    log_lines: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            set(self.answers) <= {"202", "200", "503"}
            and set(self.answers_during_outage) == {"503"}
            and self.refusals_without_retry_after_or_json == 0
            and all(set(s.answers) == {"200"} for s in self.metrics.values())
            and not self.lost
            and not self.sent_twice
            and self.probe_notices_seconds is not None
            and self.probe_notices_seconds < 2.0
        )


class Poster:
    """Posts new events at a steady pace and reposts each refused one after its Retry-After,
    as a client following the API's advice does, until every one is accepted."""

    def __init__(self, base: str, key: str, report: OutageReport, outage: threading.Event):
        self._client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self._report = report
        self._outage = outage
        self._retries: list[tuple[float, dict[str, Any]]] = []
        self.accepted: dict[str, str] = {}
        """incident_ref -> event_id of every event answered 2xx."""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, deadline: float) -> None:
        """Stop posting new events; wait for the reposts to be accepted."""
        self._stop.set()
        self._thread.join(timeout=max(deadline - time.monotonic(), 1))
        self._client.close()

    def post(self, event: dict[str, Any]) -> httpx.Response | None:
        """One post, its answer counted; None when the connection failed."""
        during = self._outage.is_set()
        try:
            answer = self._client.post("/v1/events", json=event)
        except httpx.TransportError as error:
            outcome, answer = f"closed: {type(error).__name__}", None
        else:
            outcome = str(answer.status_code)
            if answer.status_code == 503 and not _refusal_is_right(answer):
                with self._lock:
                    self._report.refusals_without_retry_after_or_json += 1
        with self._lock:
            self._report.answers[outcome] += 1
            if during and self._outage.is_set():
                self._report.answers_during_outage[outcome] += 1
        if answer is not None and answer.status_code in (200, 202):
            with self._lock:
                self.accepted[event["incident_ref"]] = event["event_id"]
        else:
            wait = float(answer.headers.get("Retry-After", 1)) if answer is not None else 1.0
            with self._lock:
                self._retries.append((time.monotonic() + wait, event))
        return answer

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set() or self._retries:
            with self._lock:
                due = [e for at, e in self._retries if at <= time.monotonic()]
                self._retries = [(at, e) for at, e in self._retries if at > time.monotonic()]
            for event in due:
                self.post(event)
            if not self._stop.is_set():
                number += 1
                self._report.events += 1
                self.post(event_number(number))
            time.sleep(PACE_SECONDS)


def event_number(number: int) -> dict[str, Any]:
    return release_failure(
        at=now(), event_id=f"QA-OUT-{number}", incident_ref=f"OOS-OUT-{number:05d}"
    )


def _refusal_is_right(answer: httpx.Response) -> bool:
    if not answer.headers.get("Retry-After", "").isdigit():
        return False
    try:
        return isinstance(answer.json().get("detail"), str)
    except ValueError:
        return False


class Scraper:
    """Scrapes ``/metrics`` of each process four times a second."""

    def __init__(self, processes: dict[str, ServedProcess], report: OutageReport) -> None:
        self._processes = processes
        self._report = report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        for name in processes:
            report.metrics[name] = Scrapes()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                for name, process in self._processes.items():
                    scrapes = self._report.metrics[name]
                    try:
                        answer = client.get(f"{process.base}/metrics")
                    except httpx.TransportError as error:
                        scrapes.answers[f"closed: {type(error).__name__}"] += 1
                        continue
                    scrapes.answers[str(answer.status_code)] += 1
                    if answer.status_code == 200:
                        for family in text_string_to_metric_families(answer.text):
                            if family.name == "oos_notify_database_up":
                                scrapes.database_up[str(family.samples[0].value)] += 1
                time.sleep(0.25)


def pages_now(api: ServedProcess, ack_path: str) -> dict[str, str]:
    """What a person's pages answer now: status, media type and Retry-After."""
    found = {}
    with httpx.Client(base_url=api.base, timeout=10) as client:
        for label, request in {
            f"GET {ack_path[:5]}…": client.build_request("GET", ack_path),
            f"POST {ack_path[:5]}…": client.build_request(
                "POST", ack_path, data={"response": "received"}
            ),
        }.items():
            try:
                answer = client.send(request)
            except httpx.TransportError as error:
                found[label] = f"closed: {type(error).__name__}"
                continue
            media = answer.headers.get("content-type", "").split(";")[0]
            retry = answer.headers.get("Retry-After", "-")
            found[label] = f"{answer.status_code} {media} Retry-After={retry}"
        try:
            found["GET /readyz"] = client.get("/readyz").text
        except httpx.TransportError as error:
            found["GET /readyz"] = f"closed: {type(error).__name__}"
    return found


def run(workdir: Path, outage_seconds: float, lease_seconds: float) -> OutageReport:
    """The whole story on a cluster of its own; the report says what happened."""
    report = OutageReport(outage_seconds, lease_seconds)
    shutil.copytree(ROOT / "config", workdir / "config", dirs_exist_ok=True)
    server = PrivatePostgres().create()
    processes: dict[str, ServedProcess] = {}
    try:
        engine = make_engine(server.url)
        create_schema(engine)
        engine.dispose()
        with FaultySmtpServer() as smtp:
            settings = {
                "OOS_NOTIFY_DATABASE_URL": server.url,
                "OOS_NOTIFY_CLAIM_LEASE_SECONDS": str(lease_seconds),
                "OOS_NOTIFY_INSTANCE_NAME": "worker-1",
                **QUIET,
            }
            for command in ("worker", "api"):
                process = ServedProcess(
                    workdir, workdir / "config", smtp.port, settings, command=command
                )
                processes[command] = process
                process.start()
            api = processes["api"]
            outage = threading.Event()
            seen = Arrivals(smtp)
            poster = Poster(api.base, api.api_key(), report, outage)
            scraper = Scraper(processes, report)
            poster.start()
            scraper.start()
            time.sleep(3)
            messages = smtp.handler.wait_for(3, timeout=30)
            ack_path = "/" + _ack_link(messages).split("/", 3)[3]

            # Messages held at the mail server as the database goes away
            smtp.handler.set_faults(Fault("DATA", delay=1.0))
            smtp.handler.data_begun.clear()
            smtp.handler.data_begun.wait(timeout=30)
            server.stop()
            outage.set()
            time.sleep(1.5)
            smtp.handler.set_faults()
            time.sleep(1.0)
            report.pages_during_outage = pages_now(api, ack_path)
            time.sleep(max(outage_seconds - 2.5, 0))
            outage.clear()
            server.start()
            back, back_wall = time.monotonic(), datetime.now(UTC)

            time.sleep(1.0)
            probe = release_failure(at=now(), event_id="QA-OUT-PROBE", incident_ref="OOS-OUT-PROBE")
            posted_wall = datetime.now(UTC)
            assert poster.post(probe) is not None
            arrivals = seen.wait_for_ref("OOS-OUT-PROBE", len(FIRST_NOTICE), timeout=15)
            if len(arrivals) == len(FIRST_NOTICE):
                report.probe_notices_seconds = (max(arrivals) - posted_wall).total_seconds()
            time.sleep(2.0)
            poster.finish(deadline=back + 60)
            expected = {(ref, r) for ref in poster.accepted for r in FIRST_NOTICE}
            seen.wait_until(expected, timeout=30)
            scraper.stop()

            after = [at for at in seen.times if at >= back_wall]
            if len(arrivals) == len(FIRST_NOTICE):
                ahead = [at for at in after if at <= max(arrivals)]
                report.sent_before_probe = len(ahead) - len(arrivals)
            if after:
                report.first_send_after_return_seconds = (min(after) - back_wall).total_seconds()
            report.lost = sorted(f"{ref} {to}" for ref, to in expected - seen.delivered())
            twice = {mid: count for mid, count in seen.message_ids.items() if count > 1}
            report.sent_twice = twice
    finally:
        for process in processes.values():
            process.stop()
        server.remove()
    for name, process in processes.items():
        report.log_lines[name] = _log_counts(process.log.read_text())
    return report


def _ack_link(messages: list[Any]) -> str:
    from tests.conftest import ack_link

    return ack_link(messages[0])


def _ref(subject: str) -> str:
    found = _REF.search(subject)
    return found.group(0) if found else ("OOS-OUT-PROBE" if "OOS-OUT-PROBE" in subject else "")


class Arrivals:
    """The messages at the mail server by incident reference, read incrementally: parsing every
    subject again on each look would take the mail server's thread the time it needs."""

    def __init__(self, smtp: FaultySmtpServer) -> None:
        self._smtp = smtp
        self._seen = 0
        self.by_ref: dict[str, list[tuple[str, datetime]]] = {}
        self.message_ids: Counter[str] = Counter()
        self.times: list[datetime] = []

    def update(self) -> None:
        messages = self._smtp.handler.messages()
        for message in messages[self._seen :]:
            ref = _ref(message.subject)
            self.by_ref.setdefault(ref, []).append((message.recipients[0], message.received_at))
            self.message_ids[message.message_id] += 1
            self.times.append(message.received_at)
        self._seen = len(messages)

    def delivered(self) -> set[tuple[str, str]]:
        return {(ref, to) for ref, found in self.by_ref.items() for to, _ in found}

    def wait_for_ref(self, ref: str, count: int, timeout: float) -> list[datetime]:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            self.update()
            if len(self.by_ref.get(ref, [])) >= count:
                break
            time.sleep(0.02)
        return [at for _, at in self.by_ref.get(ref, [])]

    def wait_until(self, expected: set[tuple[str, str]], timeout: float) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            self.update()
            if expected <= self.delivered():
                return
            time.sleep(0.2)


def _log_counts(text: str) -> dict[str, int]:
    lines = text.splitlines()
    return {
        "database unreachable": sum("database unreachable" in line for line in lines),
        "database reachable again": sum("database reachable again" in line for line in lines),
        "outcomes recorded after the outage": sum(
            int(found.group(1)) for found in map(_RECORDED.search, lines) if found
        ),
        "failed runs logged": sum("dispatch run failed" in line for line in lines),
        "tracebacks": sum("Traceback" in line for line in lines),
        "lines": len(lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=20.0, help="seconds without PostgreSQL")
    parser.add_argument("--lease", type=float, default=5.0, help="the claim lease, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        report = run(Path(directory), args.outage, args.lease)
    print(json.dumps({**vars(report), "ok": report.ok}, indent=2, default=vars))


if __name__ == "__main__":
    main()
