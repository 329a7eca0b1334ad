"""The SMTP sink: a real aiosmtpd server in its own process that notes when each message arrived.

It accepts everything, parses nothing but the Message-ID header, and keeps one message whole as
the sample the raw-SMTP baselines send, so both sides of a ratio are the same size.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from oos_notify.delivery.capture import free_port

_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)")

Arrival = tuple[float, str]
"""When a message was accepted (``time.time()``) and its Message-ID."""


class _Recorder:
    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.sample: bytes | None = None
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.time()
        content = envelope.original_content or b""
        headers = content[: content.find(b"\r\n\r\n")]
        found = _MESSAGE_ID.search(headers)
        with self._arrived:
            self.arrivals.append((at, found.group(1).decode() if found else ""))
            if self.sample is None:
                self.sample = content
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float) -> int:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.arrivals) >= count, timeout=timeout)
            return len(self.arrivals)

    def since(self, start: int) -> list[Arrival]:
        with self._arrived:
            return self.arrivals[start:]


def _serve(control: Connection, port: int) -> None:
    recorder = _Recorder()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=port, data_size_limit=10 * 1024 * 1024
    )
    controller.start()
    control.send("ready")
    try:
        while True:
            command, *args = control.recv()
            if command == "count":
                control.send(len(recorder.since(0)))
            elif command == "wait":
                control.send(recorder.wait_for(*args))
            elif command == "since":
                control.send(recorder.since(*args))
            elif command == "sample":
                control.send(recorder.sample)
            else:
                break
    finally:
        controller.stop()


class Sink:
    """The orchestrator's handle on the sink process."""

    def __init__(self) -> None:
        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self.port), daemon=True)

    def __enter__(self) -> Sink:
        self._process.start()
        if self._ask() != "ready":
            raise RuntimeError("the SMTP sink did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._control.send(("stop",))
        self._process.join(timeout=10)

    def _ask(self, *command: Any) -> Any:
        if command:
            self._control.send(command)
        return self._control.recv()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def count(self) -> int:
        """Messages accepted since the sink started."""
        return int(self._ask("count"))

    def wait_for(self, count: int, timeout: float) -> int:
        """Wait until ``count`` messages arrived in all, or the timeout; return how many did."""
        return int(self._ask("wait", count, timeout))

    def since(self, start: int) -> list[Arrival]:
        """The arrivals after the first ``start``, in order."""
        arrivals: list[Arrival] = self._ask("since", start)
        return arrivals

    def sample(self) -> bytes:
        """The first message accepted, whole."""
        sample: bytes | None = self._ask("sample")
        if sample is None:
            raise RuntimeError("the sink has not received a message yet")
        return sample
