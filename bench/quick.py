"""A quick measurement: events accepted per second, and seconds from POST to the first email.

    python -m bench.quick [--events 500] [--concurrency 16]

Starts ``oos-notify serve`` as a subprocess on loopback with its own SQLite file, sending to an
aiosmtpd sink in this process, and reports the figures beside the machine's description.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from oos_notify.capture import CaptureServer, free_port

ROOT = Path(__file__).resolve().parents[1]
CENTERS = ["mercy-general-main", "mercy-west", "rhein-uk-bonn"]


def event(number: int, run: str) -> dict[str, Any]:
    return {
        "event_id": f"BENCH-{run}-{number}",
        "type": "release_failure",
        "incident_ref": f"OOS-BENCH-{run}-{number}",
        "occurred_at": "2026-11-24T15:10:00Z",
        "center_id": CENTERS[number % len(CENTERS)],
        "product_code": "CARTX",
        "lot_number": f"LOT-{number}",
        "chain_of_identity": f"COI-BENCH-{number}",
        "severity": "major",
        "failed_attributes": [
            {"attribute": "viability", "specification": ">= 80 %", "result": "71 %"}
        ],
        "key_dates": {"lymphodepletion_start": "2027-01-30"},
    }


def start_service(workdir: Path, smtp_port: int) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {
        **os.environ,
        "OOS_NOTIFY_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "OOS_NOTIFY_CONFIG_DIR": str(ROOT / "config"),
        "OOS_NOTIFY_TEMPLATES_DIR": str(ROOT / "templates"),
        "OOS_NOTIFY_SMTP_HOST": "127.0.0.1",
        "OOS_NOTIFY_SMTP_PORT": str(smtp_port),
        "OOS_NOTIFY_SECRET_KEY": "bench-secret",
        "OOS_NOTIFY_PORT": str(port),
        "OOS_NOTIFY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    command = [sys.executable, "-m", "oos_notify.cli"]
    key = subprocess.run(
        [*command, "apikey", "create", "--name", "bench"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    process = subprocess.Popen(
        [*command, "serve"],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base, key
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the service did not become ready")


async def ingest_rate(base: str, key: str, count: int, concurrency: int) -> dict[str, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(count):
        queue.put_nowait(number)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            number = queue.get_nowait()
            started = time.perf_counter()
            answer = await client.post("/v1/events", json=event(number, "rate"), headers=headers)
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 202, answer.text

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "events": count,
        "events_per_second": count / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def first_email_latency(base: str, key: str, sink: CaptureServer, runs: int) -> dict[str, float]:
    seconds = []
    for number in range(runs):
        before = sink.handler.count
        started = time.perf_counter()
        answer = httpx.post(
            f"{base}/v1/events",
            json=event(number, "latency"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        sink.handler.wait_for(before + 1, timeout=30)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {"runs": runs, "median_s": statistics.median(seconds), "max_s": seconds[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, CaptureServer() as sink:
        process, base, key = start_service(Path(workdir), sink.port)
        try:
            latency = first_email_latency(base, key, sink, args.latency_runs)
            rate = asyncio.run(ingest_rate(base, key, args.events, args.concurrency))
        finally:
            process.terminate()
            process.wait(timeout=30)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    result = {
        "machine": f"{machine}, Python {platform.python_version()}",
        "ingest": rate,
        "post_to_first_email": latency,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
