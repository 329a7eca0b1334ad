"""The load generator, run in a process of its own: HTTP clients and the raw-SMTP baselines.

The HTTP client is a minimal keep-alive HTTP/1.1 client over asyncio streams that writes
pre-built requests. On two shared cores a heavier client (httpx) would spend as much CPU as
the bare baseline it measures and cap its rate, flattering every ratio.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from multiprocessing import get_context
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlencode

import aiosmtplib

from bench.centers import release_failure

_P = ParamSpec("_P")
_T = TypeVar("_T")
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*<[^>\r\n]+>")


def in_child(work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``work`` in a fresh process of its own and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(work, *args, **kwargs).result()


@dataclass
class Load:
    """What a closed-loop load saw: one latency per measured request, and the status codes."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_sent: float = 0.0
    """``time.time()`` when the first request was written."""
    elapsed: float = 0.0
    """Seconds of the measured window (after the warm-up)."""


def request(method: str, path: str, body: bytes, content_type: str, key: str | None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _response_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        raise RuntimeError(f"a response without Content-Length: {head[:200]!r}")
    await reader.readexactly(int(length.group(1)))
    return int(head[9:12])


async def closed_loop(
    port: int | Sequence[int],
    requests: Iterator[bytes],
    concurrency: int,
    duration: float | None,
    warmup: float,
) -> Load:
    """``concurrency`` connections each sending its next request when the last one is answered,
    until the requests run out or ``warmup + duration`` seconds have passed; with several ports
    (one per process serving the API) the connections are dealt out among them in turn."""
    ports = [port] if isinstance(port, int) else list(port)
    load = Load()
    started = time.perf_counter()
    measured_from = started + warmup
    deadline = None if duration is None else measured_from + duration
    last_done = started

    async def connection(port: int) -> None:
        nonlocal last_done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for raw in requests:
                sent = time.perf_counter()
                if deadline is not None and sent >= deadline:
                    break
                if not load.first_sent:
                    load.first_sent = time.time()
                writer.write(raw)
                status = await _response_status(reader)
                last_done = time.perf_counter()
                if sent >= measured_from:
                    load.latencies.append(last_done - sent)
                    load.statuses[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(ports[n % len(ports)]) for n in range(concurrency)))
    load.elapsed = (deadline if deadline is not None else last_done) - measured_from
    return load


def post_events(
    port: int | Sequence[int],
    key: str | None,
    run: str,
    centers: list[str],
    concurrency: int,
    events: int | None = None,
    duration: float | None = None,
    warmup: float = 0.0,
) -> Load:
    """POST distinct release_failure events: ``events`` of them, or for ``duration`` seconds."""
    numbers = range(events) if events is not None else count()
    requests = (
        request(
            "POST",
            "/v1/events",
            json.dumps(release_failure(run, number, centers)).encode(),
            "application/json",
            key,
        )
        for number in numbers
    )
    return asyncio.run(closed_loop(port, requests, concurrency, duration, warmup))


def post_acknowledgements(port: int, tokens: list[str], concurrency: int) -> Load:
    """POST the acknowledgement form once per token, as a coordinator's browser does."""
    body = urlencode({"response": "received", "comment": ""}).encode()
    requests = (
        request("POST", f"/ack/{token}", body, "application/x-www-form-urlencoded", None)
        for token in tokens
    )
    return asyncio.run(closed_loop(port, requests, concurrency, None, 0.0))


# --- the raw SMTP baselines: the same sink, pre-rendered messages, no service ------------------


def copies(sample: bytes, number: int) -> list[bytes]:
    """``number`` copies of a real message, each with a Message-ID of its own."""
    found = _MESSAGE_ID.search(sample)
    assert found is not None, "the sample message has no Message-ID"
    head, tail = sample[: found.start()], sample[found.end() :]
    return [head + f"Message-ID: <raw-{n:08d}@bench>".encode() + tail for n in range(number)]


async def _send_all(
    port: int,
    queue: asyncio.Queue[bytes | None],
    connections: int,
    stop_at: float = math.inf,
) -> None:
    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        while (message := await queue.get()) is not None and time.time() < stop_at:
            await client.sendmail("oos-notify@localhost", ["someone@bench.example"], message)
        await client.quit()

    await asyncio.gather(*(connection() for _ in range(connections)))


def smtp_burst(port: int, sample: bytes, number: int, connections: int) -> float:
    """Send ``number`` pre-rendered messages over ``connections`` reused connections at once;
    return ``time.time()`` at the start (the sink notes when the last one arrived)."""
    messages = copies(sample, number)

    async def run() -> float:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for message in [*messages, *[None] * connections]:
            queue.put_nowait(message)
        started = time.time()
        await _send_all(port, queue, connections)
        return started

    return asyncio.run(run())


def smtp_on_time(
    port: int, sample: bytes, due: list[float], connections: int, stop_at: float
) -> None:
    """Send one pre-rendered message at each due instant (``time.time()``, sorted), like a
    timer wheel with a connection pool: the floor for the service's lateness at the same rate.
    At ``stop_at`` each connection finishes the message in hand and quits; those still queued
    are never sent (the measurement counts them missing)."""
    messages = copies(sample, len(due))

    async def run() -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        sender = asyncio.create_task(_send_all(port, queue, connections, stop_at))
        for at, message in zip(due, messages, strict=True):
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(message)
        for _ in range(connections):
            queue.put_nowait(None)
        await sender

    asyncio.run(run())


def description(load: Load) -> dict[str, Any]:
    """A load's figures: the rate of 2xx answers, p50/p99 latency and the status codes seen."""
    latencies = sorted(load.latencies)
    answered = sum(n for code, n in load.statuses.items() if 200 <= code < 300)
    return {
        "requests": len(latencies),
        # Refusals (a 429 from a rate limit, a 5xx) are not throughput: only 2xx count.
        "per_second": answered / load.elapsed if load.elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
        "statuses": {str(code): n for code, n in sorted(load.statuses.items())},
    }


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]
