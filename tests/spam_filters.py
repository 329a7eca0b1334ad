"""Real spam filters, run privately: rspamd from a generated config on a loopback port, and
SpamAssassin's command line with its local rules only.

Nothing under /etc/rspamd is changed: Debian's config is read, with this module's ``local.d``
and ``override.d`` beside it (loopback sockets, no fuzzy or network checks, DNS to a closed
port so every lookup fails at once). Rspamd compiles its regular expressions with Hyperscan at
the first start (a minute on a busy machine); the compiled cache is kept per rspamd version
under ``~/.cache/oos-notify-tests`` so later starts take seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from oos_notify.delivery.capture import free_port
from tests.private_servers import die_with_parent, stop_group

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
SPAMASSASSIN = shutil.which("spamassassin") or "/usr/bin/spamassassin"

RELAY_IP = "192.0.2.25"
"""Where the messages come from as the receiving server sees them: the manufacturer's relay
(a documentation address, so no list holds it)."""
RELAY_NAME = "relay.manufacturer.example"


UNDER_FAKETIME = "faketime" in os.environ.get("LD_PRELOAD", "")
"""The suite runs with the clock moved (docs/testing.md): rspamd's allocator then recurses into
libfaketime's clock_gettime and hangs, and without libfaketime rspamd would read every message's
Date as years ahead."""


def available() -> bool:
    return os.access(RSPAMD, os.X_OK) and os.access(SPAMASSASSIN, os.X_OK)


@dataclass(frozen=True)
class Verdict:
    score: float
    symbols: dict[str, float]

    def __str__(self) -> str:
        named = ", ".join(f"{k} {v:g}" if v else k for k, v in sorted(self.symbols.items()))
        return f"{self.score:.2f} ({named})"


def _version() -> str:
    found = re.search(rb"version ([\w.]+)", subprocess.check_output([RSPAMD, "--version"]))
    return found[1].decode() if found else "unknown"


class PrivateRspamd:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="oos-rspamd-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        root = self.root
        for name in ("local.d", "override.d", "db", "run", "log"):
            (root / name).mkdir(exist_ok=True)
        cache = Path.home() / ".cache" / "oos-notify-tests" / f"rspamd-{_version()}"
        cache.mkdir(parents=True, exist_ok=True)
        (root / "local.d" / "options.inc").write_text(
            f'hs_cache_dir = "{cache}";\n'
            'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 0; }\n'
        )
        override = root / "override.d"
        (override / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.port}";\ncount = 1;\n'
        )
        (override / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{free_port()}";\ncount = 1;\n'
        )
        (override / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{free_port()}";\n')
        (override / "worker-fuzzy.inc").write_text("enabled = false;\n")
        for module in ("fuzzy_check", "rbl", "neural", "ratelimit", "replies", "greylist"):
            (override / f"{module}.conf").write_text("enabled = false;\n")
        (override / "classifier-bayes.conf").write_text("enabled = false;\n")
        # hfilter's checks that resolve the HELO name, the relay's host name and the From
        # domain: with DNS off they fail for any name; the records docs/deliverability.md
        # lists make them pass. Its checks of the message itself stay on.
        (override / "hfilter.conf").write_text(
            "helo_enabled = false;\nhostname_enabled = false;\nfrom_enabled = false;\n"
        )

    def start(self, timeout: float = 300.0) -> None:
        self._write_config()
        root = self.root
        self._process = subprocess.Popen(
            [
                RSPAMD,
                "-f",
                "-i",
                *(["-u", "root", "-g", "root"] if os.geteuid() == 0 else []),
                "-c",
                "/etc/rspamd/rspamd.conf",
                f"--var=LOCAL_CONFDIR={root}",
                f"--var=DBDIR={root}/db",
                f"--var=RUNDIR={root}/run",
                f"--var=LOGDIR={root}/log",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group, so stop() ends every worker
            preexec_fn=die_with_parent,
        )
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self._process.poll() is not None:
                raise RuntimeError(f"rspamd exited: {self.log()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ping", timeout=1).text.strip() == (
                    "pong"
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"rspamd was not ready in {timeout} s: {self.log()[-2000:]}")

    def check(self, message: bytes, envelope_from: str, recipient: str) -> Verdict:
        """What rspamd makes of a message arriving from the manufacturer's relay."""
        answer = httpx.post(
            f"http://127.0.0.1:{self.port}/checkv2",
            content=message,
            # As the receiving server passes them: the relay's address, its name as reverse DNS
            # gives it (docs/deliverability.md), and its EHLO.
            headers={
                "From": envelope_from,
                "Rcpt": recipient,
                "IP": RELAY_IP,
                "Hostname": RELAY_NAME,
                "Helo": RELAY_NAME,
            },
            timeout=60,
        )
        answer.raise_for_status()
        result = answer.json()
        symbols = {name: float(s["score"]) for name, s in result["symbols"].items()}
        return Verdict(float(result["score"]), symbols)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_group(process, 10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "log" / "rspamd.log"
        return path.read_text(errors="replace") if path.exists() else ""


_STATUS = re.compile(
    r"^X-Spam-Status: \w+, score=(-?[\d.]+) .*?tests=([\w,\s]*?)\s*autolearn", re.M
)


def spamassassin(messages: list[bytes]) -> list[Verdict]:
    """SpamAssassin's verdicts (local tests only: no network, no Bayes) on each message, in one
    run over an mbox of them all."""
    mbox = b"".join(
        b"From oos-notify@manufacturer.example Mon Dec  7 00:00:00 2026\n"
        + message.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ")
        + b"\n"
        for message in messages
    )
    with tempfile.TemporaryDirectory(prefix="oos-sa-") as home:
        result = subprocess.run(
            [SPAMASSASSIN, "-L", "--mbox", "-t", "--cf=use_bayes 0", "--cf=use_auto_whitelist 0"],
            input=mbox,
            capture_output=True,
            env={**os.environ, "HOME": home},
            timeout=600,
            check=True,
        )
    output = re.sub(r"\n[ \t]+", " ", result.stdout.decode("utf-8", "replace"))
    verdicts = []
    for score, tests in _STATUS.findall(output):
        names = [t for t in re.split(r"[,\s]+", tests) if t and t != "none"]
        verdicts.append(Verdict(float(score), dict.fromkeys(names, 0.0)))
    assert len(verdicts) == len(messages), result.stderr.decode()[-2000:]
    return verdicts
