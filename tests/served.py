"""``oos-notify serve`` (or ``api``, or ``worker``) as an operator runs it: a subprocess with its
settings in the environment, its log in a file, that a test can start, stop with SIGTERM, or kill
with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from oos_notify.clock import SystemClock
from oos_notify.delivery.capture import free_port
from oos_notify.store import apikeys
from oos_notify.store.db import create_schema, make_engine, transaction
from tests import databases

ROOT = Path(__file__).resolve().parents[1]
COMMAND = str(Path(sys.executable).parent / "oos-notify")


class ServedProcess:
    """The service on a loopback port, its database (``databases.url_for(workdir)``) and its log
    in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        config_dir: Path,
        smtp_port: int,
        settings: Mapping[str, str] | None = None,
        command: str = "serve",
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_url = databases.url_for(workdir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OOS_NOTIFY_")}
        self.env |= {
            "OOS_NOTIFY_DATABASE_URL": self.database_url,
            "OOS_NOTIFY_CONFIG_DIR": str(config_dir),
            "OOS_NOTIFY_TEMPLATES_DIR": str(ROOT / "templates"),
            "OOS_NOTIFY_SMTP_HOST": "127.0.0.1",
            "OOS_NOTIFY_SMTP_PORT": str(smtp_port),
            # A sink on loopback, without TLS, links to a loopback port: development, as named.
            "OOS_NOTIFY_SMTP_SECURITY": "none",
            "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL": "true",
            "OOS_NOTIFY_SECRET_KEY": "served-test-secret",
            "OOS_NOTIFY_PORT": str(self.port),
            "OOS_NOTIFY_PUBLIC_BASE_URL": self.base,
            **(settings or {}),
        }
        self.workdir = workdir
        self.command = command
        self.log = workdir / f"{command}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def api_key(self, name: str = "test-qa-system") -> str:
        """A new API key, written to the service's database as ``oos-notify apikey`` does."""
        engine = make_engine(self.env["OOS_NOTIFY_DATABASE_URL"])
        create_schema(engine)
        try:
            with transaction(engine) as session:
                return apikeys.create(session, name, SystemClock().now())
        finally:
            engine.dispose()

    def start(self, deadline: float = 60) -> None:
        """Start the command and return once /readyz says ready."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [COMMAND, self.command], env=self.env, cwd=self.workdir, stdout=log, stderr=log
            )
        until = time.monotonic() + deadline
        while time.monotonic() < until:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the service did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator stops a container; wait for the exit and return its code."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
