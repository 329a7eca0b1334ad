"""The per-key token bucket, with a clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oos_notify.web.limits import RateLimited, TokenBuckets

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def test_a_bucket_refills_at_the_rate_up_to_the_burst_and_no_further() -> None:
    buckets = TokenBuckets(per_minute=30, burst=2)  # one token every 2 s
    buckets.take("key", T0)
    buckets.take("key", T0)
    with pytest.raises(RateLimited) as limited:
        buckets.take("key", T0)
    assert limited.value.retry_after == 2

    # An hour idle refills the burst, not 1800 tokens
    later = T0 + timedelta(hours=1)
    buckets.take("key", later)
    buckets.take("key", later)
    with pytest.raises(RateLimited):
        buckets.take("key", later)


def test_a_clock_set_back_refills_nothing() -> None:
    buckets = TokenBuckets(per_minute=60, burst=1)
    buckets.take("key", T0)
    with pytest.raises(RateLimited):
        buckets.take("key", T0 - timedelta(hours=1))
    with pytest.raises(RateLimited):
        buckets.take("key", T0 + timedelta(milliseconds=500))
    buckets.take("key", T0 + timedelta(seconds=1))
