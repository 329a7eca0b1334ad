"""The per-key token bucket, with a clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oos_notify.web.limits import RateLimited, TokenBuckets, client_key

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


def test_check_refuses_an_empty_bucket_and_spends_nothing() -> None:
    buckets = TokenBuckets(per_minute=60, burst=2)
    for _ in range(5):
        buckets.check("client", T0)
    buckets.take("client", T0)
    buckets.take("client", T0)
    with pytest.raises(RateLimited) as limited:
        buckets.check("client", T0)
    assert limited.value.retry_after == 1
    buckets.check("client", T0 + timedelta(seconds=1))


def test_buckets_idle_until_full_again_are_forgotten() -> None:
    buckets = TokenBuckets(per_minute=60, burst=3)
    for number in range(1000):
        buckets.take(f"10.0.{number // 256}.{number % 256}", T0)
    assert len(buckets) == 1000

    # Three seconds refill every one of those: the next request forgets them
    buckets.take("192.0.2.1", T0 + timedelta(seconds=3))
    assert len(buckets) == 1


def test_a_flood_of_addresses_cannot_grow_the_buckets_past_their_cap() -> None:
    buckets = TokenBuckets(per_minute=1, burst=1, max_keys=100)
    for number in range(10_000):
        buckets.take(f"2001:db8:{number:x}::", T0)
    assert len(buckets) == 100

    # The most recent clients are still counted
    with pytest.raises(RateLimited):
        buckets.take(f"2001:db8:{9_999:x}::", T0)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, "unknown"),
    ],
)
def test_a_client_is_its_address_an_ipv6_one_its_64(address: str | None, key: str) -> None:
    assert client_key(address) == key
