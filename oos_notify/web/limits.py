"""Limits on what a client can make the service do: body size, and events per API key.

The body limit is enforced while the body streams in (a lying Content-Length too). The event rate
is a token bucket per API key, kept in memory: each process counts for itself, so N replicas
allow up to N times the rate, and a restart refills every bucket.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        body = json.dumps(
            {"detail": f"request body is larger than the limit of {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
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
    """One bucket per key: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._buckets: dict[str, tuple[float, datetime]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: datetime) -> None:
        """Spend one token of ``key``'s bucket, or raise RateLimited saying when to come back."""
        per_second = self.per_minute / 60
        with self._lock:
            tokens, since = self._buckets.get(key, (float(self.burst), now))
            # A clock set back refills nothing, now or when it catches up again
            elapsed = max((now - since).total_seconds(), 0.0)
            tokens = min(float(self.burst), tokens + elapsed * per_second)
            since = max(since, now)
            if tokens < 1:
                self._buckets[key] = (tokens, since)
                raise RateLimited(max(1, math.ceil((1 - tokens) / per_second)))
            self._buckets[key] = (tokens - 1, since)
