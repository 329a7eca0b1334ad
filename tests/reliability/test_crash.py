"""SPEC 7: a kill -9 at any moment loses no notification and sends none twice under another
Message-ID. CI runs a small run; ``OOS_CRASH_FULL=1`` runs the full size (see the README)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

from tests.reliability.crash import run

FULL = os.environ.get("OOS_CRASH_FULL") == "1"


def test_kill_minus_nine_at_random_moments_loses_nothing_and_doubles_nothing() -> None:
    incidents, kills, max_uptime = (300, 50, 3.0) if FULL else (16, 10, 1.0)
    seed = int(os.environ.get("OOS_CRASH_SEED", time.time()))
    report = run(incidents, kills, seed, max_uptime)
    summary = json.dumps({"seed": seed, **asdict(report)}, indent=2)
    print(summary)
    assert report.kills == kills, summary
    assert report.expected == incidents * 6, summary
    assert report.missing == 0, summary
    assert report.duplicated_different_id == 0, summary
    assert report.delivered == report.expected, summary
    assert report.unexpected == 0 and report.wrong_recipient == 0, summary
    assert report.wrong_message_id == 0 and report.not_sent_in_database == 0, summary
    assert report.ok, summary
