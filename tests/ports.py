"""Loopback ports for the servers the tests start, from a range of their own.

A port the kernel hands out for ``bind((host, 0))`` and that is closed again may be handed to
anything else before the test's server binds it: another test run on the machine (CI runs the
SQLite and PostgreSQL suites side by side) or any outgoing connection, whose local port comes from
the same ephemeral range. The tests take theirs from ``OOS_TEST_PORTS`` instead (``first-last``,
default 20000-25999): below the kernel's ephemeral range (32768-60999 on Linux), so no outgoing
connection gets one, and two runs given two ranges never meet. Within a run, ports are handed out
in turn from a random start, each checked free when handed out.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading

DEFAULT = "20000-25999"


def _configured() -> range:
    text = os.environ.get("OOS_TEST_PORTS", DEFAULT)
    first, _, last = text.partition("-")
    try:
        ports = range(int(first), int(last) + 1)
    except ValueError:
        raise SystemExit(f"OOS_TEST_PORTS must be first-last, like {DEFAULT}: {text!r}") from None
    if not ports or ports.start < 1024 or ports.stop > 65536:
        raise SystemExit(f"OOS_TEST_PORTS must lie within 1024-65535: {text!r}")
    return ports


_PORTS = _configured()
_start = random.randrange(len(_PORTS))
_turn = itertools.cycle(itertools.chain(_PORTS[_start:], _PORTS[:_start]))
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """The next port of the range that nothing listens on or holds now."""
    for _ in range(len(_PORTS)):
        with _lock:
            port = next(_turn)
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in OOS_TEST_PORTS {_PORTS.start}-{_PORTS.stop - 1}")
