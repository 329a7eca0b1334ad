"""The test servers' ports come from the run's own range (``tests.ports``)."""

from __future__ import annotations

import socket

from oos_notify.delivery import capture
from tests import ports


def test_ports_come_from_the_range_one_at_a_time_and_free() -> None:
    handed = [capture.free_port() for _ in range(200)]

    assert capture.free_port is ports.free_port
    assert len(set(handed)) == len(handed)
    assert all(port in ports._PORTS for port in handed)
    for port in handed[:5]:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
