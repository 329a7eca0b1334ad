"""Several processes on one PostgreSQL database: kill -9 of any of them at any moment loses no
notification, sends none under another Message-ID, and delays none by more than the claim lease;
replicas started together on an empty database all start. CI runs a small run;
``OOS_CRASH_FULL=1`` runs the full size (see docs/testing.md)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

from tests import databases
from tests.reliability.replicas import LEASE_SECONDS, run

FULL = os.environ.get("OOS_CRASH_FULL") == "1"


@databases.needs_postgresql
def test_kill_minus_nine_among_two_api_and_two_worker_processes_loses_nothing() -> None:
    incidents, kills, starts, max_uptime = (300, 30, 10, 3.0) if FULL else (24, 8, 3, 1.5)
    seed = int(os.environ.get("OOS_CRASH_SEED", time.time()))
    report = run(incidents, kills, starts, seed, max_uptime)
    crash = report.crash
    summary = json.dumps({"seed": seed, **asdict(report)}, indent=2)
    print(summary)
    assert crash.kills == kills, summary
    assert crash.expected == incidents * 6, summary
    assert crash.missing == 0 and crash.delivered == crash.expected, summary
    assert crash.duplicated_different_id == 0, summary
    assert crash.unexpected == 0 and crash.wrong_recipient == 0, summary
    assert report.seconds_until_recorded is not None, summary
    assert crash.wrong_message_id == 0 and crash.not_sent_in_database == 0, summary
    assert crash.max_lateness_seconds <= LEASE_SECONDS + 15, summary
    assert report.simultaneous_starts_ok == report.simultaneous_starts == starts, summary
    assert report.ok, summary
