"""Events are rate-limited per API key: one runaway integration cannot crowd out the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from oos_notify.clock import ManualClock
from oos_notify.delivery.capture import CaptureServer
from oos_notify.store import apikeys
from oos_notify.store.db import transaction
from tests.conftest import RunningService, release_failure, service_settings, start_service


@pytest.fixture
async def limited(
    tmp_path: Path, smtp: CaptureServer, clock: ManualClock
) -> AsyncIterator[RunningService]:
    """A service that takes bursts of 3 events per key, refilled at one a second."""
    settings = service_settings(tmp_path, smtp, events_per_minute=60, events_burst=3)
    running = await start_service(settings, clock)
    try:
        yield running
    finally:
        await running.stop()


def event(number: int) -> dict[str, object]:
    return release_failure(event_id=f"QA-EVT-RL-{number}", incident_ref=f"OOS-RL-{number}")


async def test_a_key_past_its_burst_gets_429_with_retry_after_and_nothing_is_stored(
    limited: RunningService, clock: ManualClock
) -> None:
    # Given a key that has sent its burst
    for number in range(3):
        assert (await limited.post_event(event(number))).status_code == 202

    # When it sends one more at once
    refused = await limited.post_event(event(3))

    # Then it is told to wait a second, and the event is not taken
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "at most 60 a minute" in refused.json()["detail"]
    assert limited.api_key not in refused.text
    listed = await limited.client.get("/v1/incidents", headers=limited.auth)
    assert listed.status_code == 200  # reading is not limited
    assert len(listed.json()["items"]) == 3

    # And once that second has passed, the key may send again
    clock.advance(timedelta(seconds=1))
    assert (await limited.post_event(event(3))).status_code == 202
    assert (await limited.post_event(event(4))).status_code == 429


async def test_the_limit_is_per_key(limited: RunningService, clock: ManualClock) -> None:
    for number in range(3):
        assert (await limited.post_event(event(number))).status_code == 202
    assert (await limited.post_event(event(3))).status_code == 429

    # Another manufacturer system, with its own key, is not held back
    with transaction(limited.services.engine) as session:
        other = apikeys.create(session, "other-qa-system", clock.now())
    answer = await limited.client.post(
        "/v1/events", json=event(3), headers={"Authorization": f"Bearer {other}"}
    )
    assert answer.status_code == 202, answer.text


async def test_a_request_without_a_valid_key_is_401_not_429(limited: RunningService) -> None:
    for number in range(3):
        assert (await limited.post_event(event(number))).status_code == 202
    unknown = await limited.client.post(
        "/v1/events", json=event(3), headers={"Authorization": "Bearer oosk_0000000000_nope"}
    )
    assert unknown.status_code == 401
