"""Limits on what a client can make the service do: body size, events per API key, and failed
authentications and acknowledgement requests per client address.

The body limit is enforced while the body streams in (a lying Content-Length too). The rates are
token buckets: kept in memory here, where the one process on a SQLite file counts for itself (a
restart refills every bucket), and in the database on PostgreSQL (``shared_limits``), where
every API process spends from the same ones.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
from collections import OrderedDict
from datetime import datetime
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oos_notify.texts import NUL, REPLACEMENT


class BodySizeLimit:
    """Answer 413 to any request whose body is larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not refused:
                    # Answer now and tell the app the client went away: it stops reading.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        detail = f"request body is larger than the limit of {self.max_bytes} bytes"
        await _answer(send, 413, {"detail": detail})


class NoNulInAddress:
    """Refuse a request whose path or query holds U+0000 (``%00``) before any route reads it.
    No id or name the service stores can hold one (PostgreSQL's text cannot), so nothing is at
    such a path (404), and a query parameter with one is refused by name (422), where a lookup
    would otherwise fail in the database instead of finding nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if NUL in scope["path"]:
                await _answer(send, 404, {"detail": "Not Found"})
                return
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            for name, value in query:
                if NUL in name or NUL in value:
                    problem = {
                        "type": "value_error",
                        "loc": ["query", name.replace(NUL, REPLACEMENT)],
                        "msg": "must not contain U+0000 (NUL), which cannot be stored",
                    }
                    await _answer(send, 422, {"detail": [problem]})
                    return
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, content: object) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RateLimited(Exception):
    """Too many requests for one key; ``retry_after`` is whole seconds until one more is allowed."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"retry after {retry_after} s")


class TokenBuckets:
    """One bucket per key: ``burst`` requests at once, refilled at ``per_minute``.

    Memory stays bounded whatever a flood of client addresses does: a bucket idle long enough
    to be full again is forgotten (a new one starts full, so nothing changes), and beyond
    ``max_keys`` buckets the least recently used go first (such a client starts afresh).
    """

    def __init__(self, per_minute: float, burst: int, max_keys: int = 10_000) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, now: datetime) -> None:
        """Raise RateLimited if ``key`` has no token left, spending none."""
        with self._lock:
            tokens, _ = self._refilled(key, now)
            if tokens < 1:
                raise RateLimited(self._wait(tokens))

    def take(self, key: str, now: datetime) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimited saying when to come back."""
        with self._lock:
            tokens, since = self._refilled(key, now)
            if tokens < 1:
                self._keep(key, tokens, since)
                raise RateLimited(self._wait(tokens))
            self._keep(key, tokens - 1, since)

    def _refilled(self, key: str, now: datetime) -> tuple[float, datetime]:
        tokens, since = self._buckets.get(key, (float(self.burst), now))
        # A clock set back refills nothing, now or when it catches up again
        return self._level(tokens, since, now), max(since, now)

    def _level(self, tokens: float, since: datetime, now: datetime) -> float:
        elapsed = max((now - since).total_seconds(), 0.0)
        return min(float(self.burst), tokens + elapsed * self.per_minute / 60)

    def _wait(self, tokens: float) -> int:
        return max(1, math.ceil((1 - tokens) / (self.per_minute / 60)))

    def _keep(self, key: str, tokens: float, now: datetime) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        # Least recently used first: forget the full ones there, and any beyond the cap
        while self._buckets:
            oldest = next(iter(self._buckets))
            left, since = self._buckets[oldest]
            if len(self._buckets) <= self.max_keys and self._level(left, since, now) < self.burst:
                return
            del self._buckets[oldest]


def client_key(address: str | None) -> str:
    """Whom a per-client limit counts: the peer's address (behind a proxy, what uvicorn's proxy
    headers make of it), an IPv6 peer by its /64, since one host commonly holds a whole /64."""
    if address is None:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
