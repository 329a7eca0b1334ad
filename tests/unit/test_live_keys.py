"""The API keys a process trusts without reading them again, with a clock passed in: a revoked
key stops working within ``RECHECK_AFTER``, whatever the clock does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from oos_notify.store.apikeys import RECHECK_AFTER, LiveKeys
from oos_notify.store.models import ApiKey

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
PRESENTED = "oosk_0123456789_secret"


def qa_key() -> ApiKey:
    return ApiKey(id="key_qa", name="qa-system", prefix="0123456789", key_hash="h", created_at=T0)


def test_a_key_found_live_is_read_again_once_the_recheck_time_has_passed() -> None:
    keys = LiveKeys()
    keys.keep(PRESENTED, qa_key(), T0)

    assert keys.get(PRESENTED, T0 + RECHECK_AFTER - timedelta(seconds=1)) is not None
    # From then on the key is read from the database again, where a revocation shows
    assert keys.get(PRESENTED, T0 + RECHECK_AFTER) is None


def test_only_the_key_presented_is_trusted() -> None:
    keys = LiveKeys()
    keys.keep(PRESENTED, qa_key(), T0)

    assert keys.get(PRESENTED + "x", T0) is None
    assert keys.get("oosk_0123456789_other", T0) is None


def test_a_clock_set_back_trusts_nothing_found_later() -> None:
    keys = LiveKeys()
    keys.keep(PRESENTED, qa_key(), T0)

    assert keys.get(PRESENTED, T0 - timedelta(seconds=1)) is None


def test_a_flood_of_keys_keeps_memory_bounded() -> None:
    keys = LiveKeys(max_keys=3)
    for n in range(10):
        keys.keep(f"{PRESENTED}{n}", qa_key(), T0)

    assert sum(keys.get(f"{PRESENTED}{n}", T0) is not None for n in range(10)) <= 3
    assert keys.get(f"{PRESENTED}9", T0) is not None
