"""What a returned mail is: a bounce (permanent or temporary), an automatic reply, a person's
reply, or another machine's report. Pure functions over the parsed message.

The order matters: Postfix, Exchange and Gmail all mark their bounces ``Auto-Submitted:
auto-replied``, so a message is tested for a bounce before it is tested for an automatic reply.
Bounces are read from their RFC 3464 delivery-status part; the older formats without one (Exim,
qmail and others) are left to flufl.bounce, which knows many.
"""

from __future__ import annotations

import email
import email.policy
import re
import warnings
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.utils import getaddresses
from enum import StrEnum

from flufl.bounce import all_failures

from oos_notify.addresses import mailbox
from oos_notify.inbound.reply_text import body_text, first_lines, own_text


class Kind(StrEnum):
    BOUNCE = "bounce"
    """A permanent delivery failure (5.x.x)."""
    DELAY = "delay"
    """A temporary one (4.x.x): the mail system is still trying."""
    AUTO_REPLY = "auto_reply"
    REPLY = "reply"
    REPORT = "report"
    """Another machine's message that is not a failure: a success report, a spam complaint."""
    UNREADABLE = "unreadable"
    """Could not be processed at all."""


@dataclass(frozen=True)
class Authentication:
    """What the receiving server's ``Authentication-Results`` say of the sender."""

    spf: str | None = None
    dkim: tuple[str, ...] = ()
    dmarc: str | None = None

    @property
    def failed(self) -> bool:
        """The sender is not who it says: DMARC failed, or SPF failed and no DKIM signature
        passed. A message without results (the server checks nothing) is not failed."""
        spf_failed = self.spf in ("fail", "softfail")
        return self.dmarc == "fail" or (spf_failed and "pass" not in self.dkim)

    def summary(self) -> dict[str, str | list[str] | None]:
        return {"spf": self.spf, "dkim": list(self.dkim), "dmarc": self.dmarc}


@dataclass(frozen=True)
class Returned:
    """A returned mail as the service understands it."""

    kind: Kind
    evidence: tuple[str, ...]
    """What showed the kind: headers, the subject, a delivery-status part."""
    message_id: str | None
    sender: str | None
    """The From address, lower case."""
    subject: str
    text: str = ""
    """The person's own text (a reply) or the first lines (an automatic reply)."""
    status: str | None = None
    """A bounce's enhanced status code, e.g. ``5.1.1``."""
    diagnostic: str | None = None
    """A bounce's diagnostic: the remote server's words."""
    smtp_code: int | None = None
    authentication: Authentication = field(default_factory=Authentication)


_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245]\d\d)[\s-]")
_DAEMON = re.compile(
    r"mailer-daemon|postmaster|mail delivery (subsystem|system)|microsoftexchange", re.IGNORECASE
)
_FAILURE_SUBJECT = re.compile(
    r"undeliver(able|ed)|returned mail|delivery status notification|delivery (failure|has failed)|"
    r"failed delivery|failure notice|mail delivery failed|could not be delivered|"
    r"delayed mail|warning: could not send|non remis|non distribu|unzustellbar|"
    r"nicht zustellbar|no se puede entregar|no entregado|permanent delivery failure",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(
    r"\bdelay|still being retried|will be retried|warning|verz[öo]gert|retard|retrasad",
    re.IGNORECASE,
)
_DIAGNOSTIC_LINES = (
    re.compile(r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b"),
    re.compile(
        r"mailbox (is )?full|no (such )?(mailbox|user)|user unknown|does not exist|quota|"
        r"unknown (user|recipient)|rejected|refused|timed? ?out",
        re.IGNORECASE,
    ),
    re.compile(r"permanent error|could not be delivered|failed", re.IGNORECASE),
)
"""What a line giving a bounce's reason looks like, most telling first: a status code, a
reason, a bare verdict."""
_ORIGINAL_COPY = re.compile(
    r"^-+ ?(this is a copy|below this line|original message)|^------ This is a copy",
    re.IGNORECASE | re.MULTILINE,
)
AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic|matische)?[ -]?(reply|antwort|response)|autoreply|out of (the )?office|"
    r"abwesenheitsnotiz|abwesenheit|abwesend|r[ée]ponse automatique|absence|absent\b|"
    r"respuesta autom[áa]tica|fuera de la oficina|ausente)\b",
    re.IGNORECASE,
)
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponse", "X-Auto-Reply")
_AUTHENTICATION = re.compile(r"(?:^|[;\s])(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _header(message: Message, name: str) -> str:
    """A header as one line of text; a header too broken to parse is read as it came."""
    try:
        value = message.get(name)
    except (ValueError, IndexError, AttributeError):
        value = None
    return " ".join(str(value or "").split())


def sender_address(message: Message) -> str | None:
    """The From address in the form notices are addressed in (``addresses.mailbox``: the
    domain's IDNA form), lower-cased, so a reply compares with the address it answers."""
    addresses = [a for _, a in getaddresses([_header(message, "From")]) if "@" in a]
    if not addresses:
        return None
    try:
        address = mailbox(addresses[0])
    except ValueError:
        address = addresses[0]
    return address.lower()[:320]


def authentication(message: Message) -> Authentication:
    """The results the receiving server put on top; those below it came with the message and
    say only what its sender claims."""
    headers = message.get_all("Authentication-Results") or []
    if not headers:
        return Authentication()
    results: dict[str, list[str]] = {}
    for method, result in _AUTHENTICATION.findall(str(headers[0])):
        results.setdefault(method.lower(), []).append(result.lower())
    return Authentication(
        spf=next(iter(results.get("spf", [])), None),
        dkim=tuple(results.get("dkim", [])),
        dmarc=next(iter(results.get("dmarc", [])), None),
    )


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a delivery-status part."""

    action: str
    status: str
    diagnostic: str

    @property
    def permanent(self) -> bool | None:
        """True for a failure, False while the mail system still tries, None for a success."""
        if self.action.startswith("delayed") or self.status.startswith("4"):
            return False
        if self.action.startswith(("failed", "error")) or self.status.startswith("5"):
            return True
        return None


def delivery_statuses(message: Message) -> list[RecipientStatus]:
    """The per-recipient blocks of every ``message/delivery-status`` part (the per-message
    block, with Reporting-MTA and Arrival-Date, names no recipient and is left out)."""
    found: list[RecipientStatus] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if isinstance(blocks, str):
            blocks = [HeaderParser().parsestr(b) for b in re.split(r"\n\s*\n", blocks)]
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, Message):
                continue
            if not (_header(block, "Final-Recipient") or _header(block, "Original-Recipient")):
                continue
            found.append(
                RecipientStatus(
                    action=_header(block, "Action").lower(),
                    status=_header(block, "Status"),
                    diagnostic=_header(block, "Diagnostic-Code"),
                )
            )
    return found


def _is_daemon(message: Message, envelope_sender: str | None) -> bool:
    null_sender = envelope_sender in ("", "<>") or _header(message, "Return-Path").lower() in (
        "<>",
        "<mailer-daemon>",
    )
    return null_sender or bool(_DAEMON.search(_header(message, "From")))


def _flufl_failures(raw: bytes) -> tuple[bool, bool]:
    """Whether flufl.bounce finds (temporary, permanent) failed addresses in a message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        temporary, permanent = all_failures(email.message_from_bytes(raw))
    return bool(temporary), bool(permanent)


def _is_report(message: Message, report_type: str) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == report_type
    )


def _bounce(
    message: Message, raw: bytes, envelope_sender: str | None
) -> tuple[Kind, list[str], RecipientStatus | None] | None:
    """A bounce's kind, evidence and the status that decides it; None if it is no bounce."""
    statuses = delivery_statuses(message)
    evidence: list[str] = []
    if _is_report(message, "delivery-status") or statuses:
        evidence.append("delivery-status report")
    if _header(message, "X-Failed-Recipients"):
        evidence.append("X-Failed-Recipients")
    daemon = _is_daemon(message, envelope_sender)
    if daemon and _FAILURE_SUBJECT.search(_header(message, "Subject")):
        evidence.append("failure subject from a mail system")
    temporary = permanent = False
    if daemon and not statuses:
        temporary, permanent = _flufl_failures(raw)
        if temporary or permanent:
            evidence.append("flufl.bounce")
    if not evidence:
        return None
    failures = [s for s in statuses if s.permanent is not None]
    if statuses and not failures:
        return Kind.REPORT, evidence, statuses[0]
    if failures:
        deciding = next((s for s in failures if s.permanent), failures[0])
        return (Kind.BOUNCE if deciding.permanent else Kind.DELAY), evidence, deciding
    if permanent:
        return Kind.BOUNCE, evidence, None
    if temporary or _DELAY_SUBJECT.search(_header(message, "Subject")):
        return Kind.DELAY, evidence, None
    # A mail system says it failed and nothing says it will try again: treated as permanent,
    # the safer mistake (the next step starts early) than waiting for someone never reached.
    return Kind.BOUNCE, evidence, None


def _text_diagnostic(message: Message) -> str | None:
    """A non-standard bounce's reason: the first line of its text that looks like one, before
    the copy of the original message."""
    text = body_text(message)
    copy = _ORIGINAL_COPY.search(text)
    if copy:
        text = text[: copy.start()]
    lines = [" ".join(line.split()) for line in text.split("\n")]
    for pattern in _DIAGNOSTIC_LINES:
        found = next((line for line in lines if line and pattern.search(line)), None)
        if found:
            return found[:500]
    return None


def auto_reply_evidence(message: Message, envelope_sender: str | None) -> list[str]:
    """Why a message is an automatic reply; empty for a person's. ``X-Auto-Response-Suppress``
    is no evidence: it asks others not to answer, and people's clients set it too."""
    evidence: list[str] = []
    auto = _header(message, "Auto-Submitted").split(";")[0].strip().lower()
    if auto and auto != "no":
        evidence.append(f"Auto-Submitted: {auto}")
    evidence += [name for name in _AUTO_REPLY_HEADERS if message.get(name) is not None]
    precedence = _header(message, "Precedence").lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        evidence.append(f"Precedence: {precedence}")
    if message.get("X-MS-Exchange-Inbox-Rules-Loop") is not None:
        evidence.append("X-MS-Exchange-Inbox-Rules-Loop")
    if AUTO_REPLY_SUBJECT.search(_header(message, "Subject")):
        evidence.append("subject")
    if envelope_sender in ("", "<>") or _header(message, "Return-Path") == "<>":
        evidence.append("null sender")
    return evidence


def classify(raw: bytes, envelope_sender: str | None = None) -> Returned:
    """What ``raw`` is; ``envelope_sender`` is the SMTP MAIL FROM when the message came over
    SMTP (``<>`` for a bounce or an automatic reply), None when it was read from a mailbox."""
    message = parse(raw)
    read = Returned(
        Kind.REPLY,
        (),
        message_id=_header(message, "Message-ID") or None,
        sender=sender_address(message),
        subject=_header(message, "Subject")[:300],
        authentication=authentication(message),
    )
    if _is_report(message, "feedback-report"):
        return replace(read, kind=Kind.REPORT, evidence=("feedback report",))
    bounce = _bounce(message, raw, envelope_sender)
    if bounce is not None:
        kind, evidence, deciding = bounce
        diagnostic = (deciding.diagnostic if deciding else None) or _text_diagnostic(message)
        status = deciding.status if deciding and deciding.status else None
        if status is None and diagnostic:
            found = _STATUS.search(diagnostic)
            status = found.group(0) if found else None
        code = _SMTP_CODE.search(f"{diagnostic} ") if diagnostic else None
        return replace(
            read,
            kind=kind,
            evidence=tuple(evidence),
            status=status,
            diagnostic=diagnostic,
            smtp_code=int(code.group(1)) if code else None,
        )
    text = body_text(message)
    evidence = auto_reply_evidence(message, envelope_sender)
    if evidence:
        return replace(read, kind=Kind.AUTO_REPLY, evidence=tuple(evidence), text=first_lines(text))
    return replace(read, text=own_text(text))
