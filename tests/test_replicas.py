"""Several processes on one PostgreSQL database, as a manufacturer runs it: ``oos-notify api`` and
``oos-notify worker`` processes (or several ``serve``), no coordinator but the database.

A worker hears of a commit made by any process at once (LISTEN/NOTIFY), a dead worker's
claims are taken over within the lease, a repost of one event through any process is a duplicate
and never a conflict, the per-key event limit holds across processes, and replicas started
together on an empty database all start.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oos_notify.delivery.capture import CaptureServer
from tests import databases
from tests.conftest import ROOT, now, release_failure
from tests.served import ServedProcess
from tests.smtp_faults import Fault, FaultySmtpServer

pytestmark = databases.needs_postgresql

QUIET = {"OOS_NOTIFY_SWEEP_INTERVAL_SECONDS": "3600"}
"""A sweep that never comes during a test: whatever is sent was woken by a notification."""
FIRST_NOTICE = {"ct-coord@mercy.example", "ct-md@mercy.example", "celllab@mercy.example"}
"""Who the standard plan's first step notifies at mercy-general-main."""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


@pytest.fixture
def processes() -> Iterator[list[ServedProcess]]:
    started: list[ServedProcess] = []
    yield started
    for process in started:
        process.stop()


def start(
    processes: list[ServedProcess],
    workdir: Path,
    command: str,
    smtp_port: int,
    name: str,
    **settings: str,
) -> ServedProcess:
    process = ServedProcess(
        workdir,
        workdir / "config",
        smtp_port,
        {"OOS_NOTIFY_INSTANCE_NAME": name, **settings},
        command=command,
    )
    processes.append(process)
    process.start()
    return process


def post(base: str, key: str, event: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def test_a_worker_is_woken_by_an_event_taken_by_an_api_process(
    workdir: Path, processes: list[ServedProcess]
) -> None:
    with CaptureServer() as smtp:
        worker = start(processes, workdir, "worker", smtp.port, "worker-1", **QUIET)
        api = start(processes, workdir, "api", smtp.port, "api-1", **QUIET)
        key = api.api_key()
        assert httpx.get(f"{worker.base}/v1/incidents", timeout=5).status_code == 404  # no API
        time.sleep(0.5)  # the worker's first run at start is over

        # The sweep comes once an hour: a notice that arrives at all was woken by the commit
        answer = post(api.base, key, release_failure(at=now()))
        messages = smtp.handler.wait_for(len(FIRST_NOTICE), timeout=120)

    assert answer.status_code == 202, answer.text
    assert sorted(m.recipients[0] for m in messages) == sorted(FIRST_NOTICE)


def test_a_dead_workers_claims_are_sent_by_another_within_the_lease(
    workdir: Path, processes: list[ServedProcess]
) -> None:
    # Given two workers and a mail server that answers each message after 2 seconds
    with FaultySmtpServer() as smtp:
        smtp.handler.set_faults(Fault("DATA", delay=2.0))
        fast = {"OOS_NOTIFY_SWEEP_INTERVAL_SECONDS": "1", "OOS_NOTIFY_SMTP_CONNECTIONS": "1"}
        first = start(processes, workdir, "worker", smtp.port, "worker-1", **fast)
        api = start(processes, workdir, "api", smtp.port, "api-1", **QUIET)
        key = api.api_key()
        # When the worker that claimed an incident's first notices dies in the middle of a send
        # (taken before the post, so before the claim: load can only make it earlier)
        before_claim = time.monotonic()
        assert post(api.base, key, release_failure(at=now())).status_code == 202
        assert smtp.handler.data_begun.wait(timeout=30)
        first.kill()
        second = start(processes, workdir, "worker", smtp.port, "worker-2", **fast)

        # Then the other worker sends them, and not before the 30 s lease has run out (the
        # first sent 30 s after the claim at the earliest, the others 2 s apart behind it)
        deadline = time.monotonic() + 120
        while smtp.handler.count < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        late = time.monotonic() - before_claim
        while smtp.handler.count < len(FIRST_NOTICE) and time.monotonic() < deadline:
            time.sleep(0.1)
        # (a send is logged once it is recorded, a moment after the server has the message)
        while not logged_sent(second, FIRST_NOTICE) and time.monotonic() < deadline:
            time.sleep(0.1)

    recipients = Counter(m.recipients[0] for m in smtp.handler.messages())
    assert recipients == Counter(FIRST_NOTICE), recipients
    assert late >= 30, f"first sent {late:.1f} s after the claim, inside its lease"
    # Sent by the second worker, which took them over as another process's expired claims,
    # not released as its own predecessor's
    assert logged_sent(second, FIRST_NOTICE), second.log.read_text()
    assert "interrupted by a stop" not in second.log.read_text()


def logged_sent(process: ServedProcess, recipients: set[str]) -> bool:
    log = process.log.read_text()
    return all(re.search(rf'"sent \S+ to {re.escape(r)}"', log) for r in recipients)


def test_a_restarted_worker_sends_what_it_held_at_once(
    workdir: Path, processes: list[ServedProcess]
) -> None:
    with FaultySmtpServer() as smtp:
        smtp.handler.set_faults(Fault("DATA", delay=2.0))
        # A lease far longer than the wait below: what arrives was resent by the restarted
        # worker, not taken over once the lease ran out, however long a loaded machine takes to
        # start it again
        fast = {
            "OOS_NOTIFY_SWEEP_INTERVAL_SECONDS": "1",
            "OOS_NOTIFY_SMTP_CONNECTIONS": "1",
            "OOS_NOTIFY_CLAIM_LEASE_SECONDS": "600",
        }
        worker = start(processes, workdir, "worker", smtp.port, "worker-1", **fast)
        api = start(processes, workdir, "api", smtp.port, "api-1", **QUIET)
        key = api.api_key()
        assert post(api.base, key, release_failure(at=now())).status_code == 202
        assert smtp.handler.data_begun.wait(timeout=30)

        worker.kill()
        worker.start()
        deadline = time.monotonic() + 120
        while smtp.handler.count < len(FIRST_NOTICE) and time.monotonic() < deadline:
            time.sleep(0.1)

    assert smtp.handler.count == len(FIRST_NOTICE)
    assert "resending 3 notifications interrupted by a stop" in worker.log.read_text()


def test_reposts_of_one_event_through_two_api_processes_are_duplicates_never_conflicts(
    workdir: Path, processes: list[ServedProcess]
) -> None:
    with CaptureServer() as smtp:
        apis = [start(processes, workdir, "api", smtp.port, f"api-{n}", **QUIET) for n in (1, 2)]
        key = apis[0].api_key()
        events = [
            release_failure(at=now(), event_id=f"QA-REPOST-{n}", incident_ref=f"OOS-REPOST-{n}")
            for n in range(16)
        ]

        async def burst(round_of: list[dict[str, Any]]) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{apis[copy % 2].base}/v1/events",
                            json=event,
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        for copy in range(25)
                        for event in round_of
                    )
                )

        # Two rounds of 200 posts: 8 events, each posted 25 times at once through both
        answers = [*asyncio.run(burst(events[:8])), *asyncio.run(burst(events[8:]))]

    by_event: dict[str, Counter[int]] = {}
    incidents: dict[str, set[str]] = {}
    for answer in answers:
        body = answer.json()
        event_id = body.get("event_id", f"HTTP {answer.status_code}: {answer.text}")
        by_event.setdefault(event_id, Counter())[answer.status_code] += 1
        incidents.setdefault(event_id, set()).add(body.get("incident_id"))
    assert by_event == {e["event_id"]: Counter({202: 1, 200: 24}) for e in events}
    assert all(len(found) == 1 for found in incidents.values())


def test_the_event_limit_of_a_key_holds_across_api_processes(
    workdir: Path, processes: list[ServedProcess]
) -> None:
    # One event back every 100 minutes: however slowly a loaded machine posts, none comes back
    # during the test
    limit = {"OOS_NOTIFY_EVENTS_BURST": "10", "OOS_NOTIFY_EVENTS_PER_MINUTE": "0.01", **QUIET}
    with CaptureServer() as smtp:
        apis = [start(processes, workdir, "api", smtp.port, f"api-{n}", **limit) for n in (1, 2)]
        key = apis[0].api_key()
        codes = Counter(
            post(
                apis[n % 2].base,
                key,
                release_failure(at=now(), event_id=f"QA-LIMIT-{n}", incident_ref=f"OOS-L-{n}"),
            ).status_code
            for n in range(24)
        )

    assert codes == Counter({202: 10, 429: 14})


def test_a_clients_limits_hold_across_api_processes(
    workdir: Path, processes: list[ServedProcess]
) -> None:
    # Given two api processes, each allowing a client 1 failed authentication and 1 request to
    # acknowledgement links a minute (one back after 60 s: however slowly a loaded machine
    # answers, none comes back during the test)
    limits = {
        "OOS_NOTIFY_AUTH_FAILURES_PER_MINUTE": "1",
        "OOS_NOTIFY_ACK_REQUESTS_PER_MINUTE": "1",
        **QUIET,
    }
    with CaptureServer() as smtp:
        apis = [start(processes, workdir, "api", smtp.port, f"api-{n}", **limits) for n in (1, 2)]
        # When one client alternates between them with wrong keys and made-up links
        wrong_keys = [
            post(apis[n % 2].base, "not-a-key", release_failure(at=now())).status_code
            for n in range(4)
        ]
        links = [
            httpx.get(f"{apis[n % 2].base}/ack/not-a-token", timeout=30).status_code
            for n in range(4)
        ]

    # Then the client has the budget of one process, not of two
    assert wrong_keys == [401] + [429] * 3
    assert links[1:] == [429] * 3 and links[0] != 429
