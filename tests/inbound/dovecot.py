"""A private Dovecot IMAP server on a loopback port, from a generated config: nothing under
/etc/dovecot is read or written, and each test has its own (it starts in about 50 ms).

As root (CI), the login and internal processes keep Debian's dovenull and dovecot users and
mail is kept as ``nobody`` (Dovecot refuses uid 0), so the folder must be traversable and the
password file readable by them. As anyone else, every process runs as that user.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from oos_notify.delivery.capture import free_port
from tests.private_servers import die_with_parent, greets, stop_group

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "returns", "returns-secret"
COMMAND = re.compile(r"^[\d.]+ [A-Za-z0-9.]+ (UID [A-Z]+|[A-Z]+)(?: |$)")
"""A command line in a raw log: a timestamp, the client's tag, then the command."""

CONFIG = """\
instance_name = oos-test-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
shutdown_clients = yes
first_valid_uid = 1
{user_settings}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{login_extra}
}}
"""


def available() -> bool:
    return os.access(DOVECOT, os.X_OK)


class PrivateDovecot:
    def __init__(self) -> None:
        # Not pytest's tmp_path: as root it is 0700, and Dovecot's own users could not reach it.
        self.root = Path(tempfile.mkdtemp(prefix="oos-dovecot-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self, extra: str, rawlog: bool) -> Path:
        root = self.root
        for name in ("run", "state", "home"):
            (root / name).mkdir(exist_ok=True)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        os.chmod(root / "passwd", 0o644)
        if os.geteuid() == 0:
            uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
            os.chown(root / "home", uid, gid)
            os.chmod(root, 0o755)
            user_settings = login_extra = ""
        else:
            me = pwd.getpwuid(os.getuid())
            uid, gid = me.pw_uid, me.pw_gid
            group = grp.getgrgid(gid).gr_name
            user_settings = (
                f"default_login_user = {me.pw_name}\ndefault_internal_user = {me.pw_name}\n"
                f"default_internal_group = {group}\n"
            )
            login_extra = "  chroot =\n"
        if rawlog:
            (root / "rawlog").mkdir(exist_ok=True)
            os.chown(root / "rawlog", uid, gid)
            extra += f"protocol imap {{\n  rawlog_dir = {root}/rawlog\n}}\n"
        path = root / "dovecot.conf"
        path.write_text(
            CONFIG.format(
                root=root,
                port=self.port,
                uid=uid,
                gid=gid,
                user_settings=user_settings,
                login_extra=login_extra,
            )
            + extra
        )
        return path

    def start(self, timeout: float = 10.0, extra: str = "", rawlog: bool = False) -> None:
        """``extra`` is appended to the config, for a server unlike the usual one; with
        ``rawlog`` the server keeps what each client sends, for ``commands()``."""
        config = self._write_config(extra, rawlog)
        self._process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group, so stop() ends every child
            preexec_fn=die_with_parent,
        )
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            if greets(self.port, b"* OK"):
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"dovecot was not ready in {timeout} s: {self.log()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_group(process, 5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def commands(self) -> list[str]:
        """The name of each command clients sent since the start (``SELECT``, ``UID SEARCH``,
        ``IDLE``...), from the raw logs the server keeps when started with ``rawlog``."""
        names = []
        for path in sorted((self.root / "rawlog").glob("*.in")):
            for line in path.read_text(errors="replace").splitlines():
                found = COMMAND.match(line)
                if found:
                    names.append(found[1])
        return names

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port)
        client.login(USER, PASSWORD)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver a message into a folder, as the mail server does."""
        client = self.client()
        try:
            crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            status, _ = client.append(folder, None, None, crlf)
            assert status == "OK"
        finally:
            client.logout()

    def messages(self, folder: str) -> list[tuple[bytes, bytes]]:
        """Each message in a folder: its FETCH line (with the flags) and its Message-ID."""
        client = self.client()
        try:
            _, count = client.select(folder, readonly=True)
            if not count or int(count[0] or 0) == 0:
                return []
            _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            return [(item[0], item[1].strip()) for item in data if isinstance(item, tuple)]
        finally:
            client.logout()
