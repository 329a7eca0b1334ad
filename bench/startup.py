"""Start-up: how long ``serve``, ``api`` and ``worker`` take from exec to the first 200 on
``/readyz``, and a ``db upgrade`` with nothing to do to its exit (issue 20).

    python -m bench --startup [--quick] [--database-url URL]

Each figure is the median of a few runs, beside baselines measured in the same run:

- for the three servers, a bare FastAPI app: the same interpreter importing FastAPI and
  uvicorn, building an app and answering ``/readyz`` through uvicorn as ``oos-notify`` does,
  with none of the service's own work (its models, config, templates, database or dispatcher).
  What the service takes beyond it is what it adds;
- for ``db upgrade``, a Python process that imports SQLAlchemy, connects to the same database
  and reads ``alembic_version``: the least any command that checks the schema must do.

Every process starts on a database already made (one for the whole run: a SQLite file, or a
database of its own on the PostgreSQL server), with the run's generated ``config/``. The first
``serve`` on it renders every template for every site (``check-config``'s check) and is
reported on its own; the starts measured after it find that check passed for these very files
and this code, as a restart or a rolling deployment of the same version does.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from bench.service import Server, service

COMMANDS = ("serve", "api", "worker")
TARGET_READY_SECONDS = 3.0
TARGET_UPGRADE_SECONDS = 1.0
_BARE = """
import os
import uvicorn
from fastapi import FastAPI
app = FastAPI()
app.get("/readyz")(lambda: {"ready": True})
port = int(os.environ["OOS_NOTIFY_PORT"])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", log_config=None)
"""
_READ_REVISION = """
import sys
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1])
with engine.connect() as connection:
    connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
"""


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
    }


def _ready(server: Server) -> dict[str, float]:
    """One start: seconds from exec to ready, and the CPU time the process had used by then."""
    try:
        seconds = server.start()
        return {"seconds": seconds, "cpu_seconds": server.cpu_seconds()}
    finally:
        server.stop()


def _exited(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """One run of a command to its exit: seconds, and the CPU time it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu}


def measure(bench: Any, runs: int, database: AbstractContextManager[str | None]) -> dict[str, Any]:
    """Every command's start ``runs`` times on one database, and the baselines as often."""
    with database as url:
        first = service("startup", bench.workdir, bench.config_dir, bench.sink.port, "serve", url)
        subprocess.run(
            [sys.executable, "-m", "oos_notify.cli", "db", "upgrade"],
            env=first.env,
            cwd=bench.workdir,
            check=True,
            capture_output=True,
        )
        result: dict[str, Any] = {"first_serve": _ready(first)}
        for command in COMMANDS:
            server = service(
                f"startup-{command}", bench.workdir, bench.config_dir, bench.sink.port, command, url
            )
            server.env["OOS_NOTIFY_DATABASE_URL"] = first.env["OOS_NOTIFY_DATABASE_URL"]
            result[command] = _median([_ready(server) for _ in range(runs)])
        upgrade = [sys.executable, "-m", "oos_notify.cli", "db", "upgrade"]
        result["db_upgrade"] = _median(
            [_exited(upgrade, first.env, bench.workdir) for _ in range(runs)]
        )
        revision = [sys.executable, "-c", _READ_REVISION, first.env["OOS_NOTIFY_DATABASE_URL"]]
        result["baseline_db_read"] = _median(
            [_exited(revision, first.env, bench.workdir) for _ in range(runs)]
        )
    bare = Server("bare-startup", bench.workdir, [sys.executable, "-c", _BARE], {})
    result["baseline_bare"] = _median([_ready(bare) for _ in range(runs)])
    result["runs"] = runs
    result["sites"] = len(bench.centers)
    result["load_average"] = os.getloadavg()[0]
    return result


def sqlite() -> AbstractContextManager[str | None]:
    """The default: each process's own SQLite file in the run's folder, ``startup.db``."""
    return nullcontext(None)


def markdown(figures: dict[str, Any], label: str) -> list[tuple[str, ...]]:
    """Rows of the results table: measurement, oos-notify, baseline, ratio, target."""
    bare, read = figures["baseline_bare"], figures["baseline_db_read"]
    runs = figures["runs"]
    label = f"{label}, {figures['sites']} sites"

    def shown(entry: dict[str, Any]) -> str:
        return f"{entry['seconds']:,.2f} s (CPU {entry['cpu_seconds']:,.2f} s)"

    def verdict(entry: dict[str, Any], target: float) -> str:
        """Judged on CPU time: on an idle machine the wall time is close to it, and on a shared
        one the wall time is mostly waiting for a core."""
        met = entry["cpu_seconds"] <= target
        return f"≤ {target:.0f} s of CPU: " + ("met" if met else "**missed**")

    rows = [
        (
            f"start-up: `{command}` exec to /readyz 200, {label}, median of {runs}",
            shown(figures[command]),
            f"bare FastAPI + uvicorn: {shown(bare)}",
            f"{figures[command]['cpu_seconds'] / bare['cpu_seconds']:.1f}x CPU",
            verdict(figures[command], TARGET_READY_SECONDS),
        )
        for command in COMMANDS
    ]
    rows.append(
        (
            f"start-up: `db upgrade` with nothing to do, {label}, median of {runs}",
            shown(figures["db_upgrade"]),
            f"SQLAlchemy reading alembic_version: {shown(read)}",
            f"{figures['db_upgrade']['cpu_seconds'] / read['cpu_seconds']:.1f}x CPU",
            verdict(figures["db_upgrade"], TARGET_UPGRADE_SECONDS),
        )
    )
    rows.append(
        (
            f"start-up: first `serve` of this version, every template rendered, {label}",
            shown(figures["first_serve"]),
            "",
            "",
            "",
        )
    )
    return rows


def table(figures: dict[str, Any], label: str) -> str:
    lines = [
        "| measurement | oos-notify | baseline, same run | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        *("| " + " | ".join(row) + " |" for row in markdown(figures, label)),
    ]
    return "\n".join(lines)
