"""A private Postfix relay on a loopback port, from a generated config directory: nothing under
/etc/postfix or /var/spool/postfix is read or written (but Postfix's own list of the files it
installed), and each test has its own queue. ``postfix -c DIR start`` needs root, as Postfix's
master does; elsewhere the tests that use it are skipped.

It is set up as docs/returned-mail.md tells an organisation to set up its relay: the reply
domain relayed to the service's listener, refusing at RCPT the addresses the listener refuses
(``reject_unverified_recipient``). The centers' domains go where each test says: the capture
server, a server that refuses, or a closed port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from oos_notify.delivery.capture import free_port
from tests.private_servers import greets

POSTFIX = "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
MYHOSTNAME = "mx.manufacturer.example"

MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = {myhostname}
mydomain = manufacturer.example
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtputf8_enable = no
biff = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_connect_timeout = 2s
# The documented recipe (docs/returned-mail.md, "SMTP"): the reply domain goes to the listener,
# and a recipient there that the listener refuses is refused at RCPT, before anything is queued.
relay_domains = {reply_domain}
transport_maps = inline:{{ {transports} }}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
    check_recipient_access inline:{{ {{{reply_domain} = reject_unverified_recipient}} }}
unverified_recipient_reject_code = 550
# Short enough that a probe's answer is there for the client that caused it, and a relay that
# cannot deliver gives up within seconds rather than days.
address_verify_poll_delay = 1s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 1s
maximal_queue_lifetime = {queue_lifetime}
# Only the relay's give-up on a center is hurried: its report to the listener is retried as a
# real relay retries it, so a listener that answers 451 on a busy machine still gets it.
bounce_queue_lifetime = 1d
delay_warning_time = 0h
"""

MASTER = """\
{address}:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not os.access(POSTFIX, os.X_OK):
        return "postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private postfix needs root (its master process runs as root)"
    return None


class PrivatePostfix:
    """One Postfix, listening on ``port``, relaying each domain (or address) of ``transports``
    to the ``host:port`` given, and the reply domain to the service's listener."""

    def __init__(
        self,
        reply_domain: str,
        listener_port: int,
        transports: dict[str, int],
        queue_lifetime: str = "1d",
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="oos-postfix-"))
        self.config = self.root / "etc"
        self.port = free_port()
        routes = {reply_domain: listener_port, **transports}
        self._main = MAIN.format(
            root=self.root,
            myhostname=MYHOSTNAME,
            reply_domain=reply_domain,
            transports=", ".join(
                f"{{{key} = smtp:[127.0.0.1]:{port}}}" for key, port in routes.items()
            ),
            queue_lifetime=queue_lifetime,
        )
        self._started = False

    def start(self, timeout: float = 20.0) -> None:
        self.config.mkdir(parents=True)
        (self.root / "data").mkdir()
        (self.root / "queue").mkdir()
        os.chmod(self.root, 0o755)
        (self.config / "main.cf").write_text(self._main)
        (self.config / "master.cf").write_text(MASTER.format(address="127.0.0.1", port=self.port))
        shutil.chown(self.root / "data", "postfix")
        self._postfix("start")
        self._started = True
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if greets(self.port, b"220"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"postfix was not ready in {timeout} s: {self.log()}")

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        pid_file = self.root / "queue" / "pid" / "master.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        self._postfix("stop", check=False)
        until = time.monotonic() + 10
        while pid is not None and time.monotonic() < until:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        if pid is not None:
            self._postfix("abort", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def explain(self, lines: int = 40) -> str:
        """The relay's queue and the end of its log, for a test that timed out waiting on it."""
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"relay queue {self.queued()}; relay log ends:\n{tail}"

    def queued(self) -> list[tuple[str, list[str]]]:
        """The envelope sender and recipients of each message in the queue (active, deferred,
        ...); a bounce's sender is empty."""
        result = subprocess.run(
            [POSTQUEUE, "-c", str(self.config), "-j"],
            capture_output=True,
            text=True,
            check=True,
        )
        messages = [json.loads(line) for line in result.stdout.splitlines() if line]
        return [(m["sender"], [r["address"] for r in m["recipients"]]) for m in messages]

    def _postfix(self, command: str, check: bool = True) -> None:
        result = subprocess.run(
            [POSTFIX, "-c", str(self.config), command],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"postfix {command}: {result.stdout}{result.stderr}{self.log()}")
