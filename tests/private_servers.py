"""What the tests' private servers (Dovecot, Postfix, rspamd) share: they end with the test run
that started them, stop as a whole process group, and are ready once their port greets."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess


def die_with_parent() -> None:
    """The server gets SIGTERM if the test run that started it dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """End ``process`` and every child in its group: SIGTERM, then SIGKILL after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def greets(port: int, banner: bytes) -> bool:
    """Whether a server on the loopback ``port`` answers a new connection with ``banner``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
            probe.settimeout(2)
            return probe.recv(100).startswith(banner)
    except OSError:
        return False
