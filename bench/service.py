"""The processes under test: ``oos-notify serve`` (or ``api`` and ``worker``) and the bare
baseline app, each on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
from sqlalchemy import create_engine

from oos_notify.delivery.capture import free_port
from oos_notify.ops import config_check
from oos_notify.store.db import upsert
from oos_notify.store.models import ServiceValue
from oos_notify.web.services import TEMPLATE_CHECK

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "bench-secret-key"
"""The benchmark signs acknowledgement links with this key too, to post to them."""


class Server:
    """A server subprocess: started, timed to ready, measured, and stopped."""

    def __init__(self, name: str, workdir: Path, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self._command = command
        self.env = {
            **os.environ,
            **env,
            "OOS_NOTIFY_PORT": str(self.port),
            "OOS_NOTIFY_PUBLIC_BASE_URL": self.base,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._profiler: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, ready_path: str = "/readyz", profile_to: Path | None = None) -> float:
        """Start it; return the seconds from exec to the first 200 on ``ready_path``."""
        self._log = (self.workdir / f"{self.name}.log").open("ab")
        started = time.perf_counter()
        self._process = subprocess.Popen(
            self._command,
            env=self.env,
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        while time.perf_counter() - started < 120:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.workdir / self.name}.log")
            try:
                if httpx.get(self.base + ready_path, timeout=1).status_code == 200:
                    ready = time.perf_counter() - started
                    if profile_to is not None:
                        self._profile(profile_to)
                    return ready
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within 120 s")

    def _profile(self, output: Path) -> None:
        """Sample the process with py-spy until it stops (collapsed stacks, for flame graphs)."""
        self._profiler = subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(self.pid), "--rate", "100", "--format", "raw"),
                *("--output", str(output), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def status(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure in kB (``VmHWM`` is the peak resident set)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise KeyError(field)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._profiler is not None:
            self._profiler.wait(timeout=60)
            self._profiler = None
        if self._log is not None:
            self._log.close()
            self._log = None


def service(
    name: str,
    workdir: Path,
    config_dir: Path,
    smtp_port: int,
    command: str = "serve",
    database_url: str | None = None,
) -> Server:
    """``oos-notify serve`` (or ``api``, or ``worker``: ``command``) on ``database_url``, by
    default a SQLite file of its own (``<name>.db``), sending to the sink."""
    env = {
        "OOS_NOTIFY_DATABASE_URL": database_url or f"sqlite:///{workdir / name}.db",
        "OOS_NOTIFY_INSTANCE_NAME": name,
        "OOS_NOTIFY_CONFIG_DIR": str(config_dir),
        "OOS_NOTIFY_TEMPLATES_DIR": str(ROOT / "templates"),
        "OOS_NOTIFY_SMTP_HOST": "127.0.0.1",
        "OOS_NOTIFY_SMTP_PORT": str(smtp_port),
        # A sink on loopback, without TLS, links to a loopback port: development, as named.
        "OOS_NOTIFY_SMTP_SECURITY": "none",
        "OOS_NOTIFY_DEV_ALLOW_INSECURE_MAIL": "true",
        "OOS_NOTIFY_SECRET_KEY": SECRET_KEY,
        # The per-key event limit (600 a minute by default) and the per-client limit on
        # acknowledgements (60) would measure themselves, not the service: one key on one
        # address posts every event and every acknowledgement here.
        "OOS_NOTIFY_EVENTS_PER_MINUTE": "1000000000",
        "OOS_NOTIFY_EVENTS_BURST": "1000000000",
        "OOS_NOTIFY_ACK_REQUESTS_PER_MINUTE": "1000000000",
    }
    return Server(name, workdir, [sys.executable, "-m", "oos_notify.cli", command], env)


def bare(workdir: Path) -> Server:
    """The baseline: the same model validated by a FastAPI endpoint that touches nothing."""
    return Server("bare", workdir, [sys.executable, "-m", "bench.bare"], {"PYTHONPATH": str(ROOT)})


def create_api_key(server: Server) -> str:
    """A key made the way an operator makes one, in the service's database; the database then
    starts the service as a restart of this version would (``passed_check``)."""
    key = subprocess.run(
        [sys.executable, "-m", "oos_notify.cli", "apikey", "create", "--name", "bench"],
        env=server.env,
        cwd=server.workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    passed_check(server)
    return key


_PASSED: dict[Path, str] = {}


def passed_check(server: Server) -> None:
    """Record in the server's database that these config and template files passed the start-up
    check, as every start of a version but its first finds it. The check renders every template
    for every site (about 19 s of CPU at 100 sites, measured as the first start in the start-up
    section); before every measurement on a database of its own, it took a third of the full
    run. It is run here once, in this process, before its verdict is recorded anywhere."""
    config_dir = Path(server.env["OOS_NOTIFY_CONFIG_DIR"])
    templates_dir = Path(server.env["OOS_NOTIFY_TEMPLATES_DIR"])
    if config_dir not in _PASSED:
        config_check.load_checked(config_dir, templates_dir)
        _PASSED[config_dir] = config_check.inputs_digest(config_dir, templates_dir)
    engine = create_engine(server.env["OOS_NOTIFY_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            upsert(connection, _VALUES, {"name": TEMPLATE_CHECK, "value": _PASSED[config_dir]})
    finally:
        engine.dispose()


_VALUES = ServiceValue.__table__  # type: ignore[attr-defined]
