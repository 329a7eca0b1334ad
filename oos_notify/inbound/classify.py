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
from typing import Any

from flufl.bounce import all_failures

from oos_notify.addresses import mailbox
from oos_notify.inbound.reply_text import body_text, first_lines, own_text


class Kind(StrEnum):
    BOUNCE = "bounce"
    """A permanent delivery failure (``Action: failed``, or 5.x.x)."""
    DELAY = "delay"
    """A temporary one (``Action: delayed``, or 4.x.x): the mail system is still trying."""
    AUTO_REPLY = "auto_reply"
    REPLY = "reply"
    REPORT = "report"
    """Another machine's message that is not a failure: a success report, a spam complaint."""
    UNREADABLE = "unreadable"
    """Could not be processed at all."""


class Verdict(StrEnum):
    VERIFIED = "verified"
    """The operator's receiving server found the From domain authenticated and aligned."""
    UNVERIFIED = "unverified"
    """Nothing trusted says who sent it: no results from the operator's server, or no pass
    aligned with the From domain."""
    FAILED = "failed"
    """The operator's server says the sender is not who it claims: DMARC failed, or SPF failed
    and no DKIM signature of the From domain passed."""


@dataclass(frozen=True)
class Authentication:
    """What the operator's own receiving server (its authserv-id, RFC 8601) put in
    ``Authentication-Results``; results from anywhere else say only what the sender claims."""

    trusted: bool = False
    """A header from the operator's server was found."""
    spf: str | None = None
    spf_domain: str | None = None
    """The domain SPF checked: ``smtp.mailfrom``'s domain, else ``smtp.helo``."""
    dkim: tuple[tuple[str, str | None], ...] = ()
    """Each signature's result and its signing domain (``header.d``)."""
    dmarc: str | None = None
    dmarc_from: str | None = None
    """The From domain DMARC was evaluated for (``header.from``)."""

    def verdict(self, from_domain: str | None) -> tuple[Verdict, str]:
        """Whether the sender of a message From ``from_domain`` is authenticated, and why."""
        if not self.trusted:
            return Verdict.UNVERIFIED, "no Authentication-Results from the receiving server"
        if from_domain is None:
            return Verdict.UNVERIFIED, "no From domain to check"
        dkim_aligned = [d for r, d in self.dkim if r == "pass" and aligned(d, from_domain)]
        if self.dmarc == "fail":
            return Verdict.FAILED, "DMARC failed"
        if self.spf in ("fail", "softfail") and not dkim_aligned:
            return Verdict.FAILED, f"SPF {self.spf} and no DKIM signature of {from_domain} passed"
        if self.dmarc == "pass" and _same_domain(self.dmarc_from, from_domain):
            return Verdict.VERIFIED, f"DMARC pass for {from_domain}"
        if dkim_aligned:
            return Verdict.VERIFIED, f"DKIM pass, header.d={dkim_aligned[0]}"
        if self.spf == "pass" and aligned(self.spf_domain, from_domain):
            return Verdict.VERIFIED, f"SPF pass for {self.spf_domain}"
        return Verdict.UNVERIFIED, f"no DMARC, SPF or DKIM pass aligned with {from_domain}"

    def summary(self) -> dict[str, Any]:
        return {
            "trusted": self.trusted,
            "spf": self.spf,
            "spf_domain": self.spf_domain,
            "dkim": [{"result": r, "domain": d} for r, d in self.dkim],
            "dmarc": self.dmarc,
            "dmarc_from": self.dmarc_from,
        }


def _domain(value: str | None) -> str | None:
    """A domain as results and addresses compare: lower case, IDNA, no trailing dot."""
    if not value:
        return None
    domain = value.rpartition("@")[2].strip().strip(".").lower()
    try:
        return domain.encode("idna").decode("ascii") if domain else None
    except UnicodeError:
        return domain or None


def _same_domain(one: str | None, other: str | None) -> bool:
    first, second = _domain(one), _domain(other)
    return first is not None and first == second


def aligned(authenticated: str | None, from_domain: str | None) -> bool:
    """Relaxed alignment (RFC 7489), approximated without the public suffix list: the same
    domain, or one a subdomain of the other. Stricter than DMARC's organisational domain (two
    sibling subdomains do not align), never looser: two registrants under one public suffix
    (``a.co.uk``, ``b.co.uk``) never align."""
    first, second = _domain(authenticated), _domain(from_domain)
    if first is None or second is None:
        return False
    return first == second or first.endswith(f".{second}") or second.endswith(f".{first}")


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
    """The SMTP reply code the diagnostic gives; None when it gives none."""
    authentication: Authentication = field(default_factory=Authentication)
    sender_problem: str | None = None
    """Why the From header cannot be taken as naming one sender: parse defects, several
    addresses, an address in the display name."""


_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_LEADING_CODE = re.compile(r"^\s*(?:[\w-]+\s*;\s*)?#?([245]\d\d)(?=[\s-]|$)")
_CODE_BEFORE_STATUS = re.compile(r"(?<![\d.])([245]\d\d)[ -]#?[245]\.\d{1,3}\.\d{1,3}\b")
_CODE_SAID = re.compile(r"\bsaid:\s*([245]\d\d)\b", re.IGNORECASE)
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
_PROPERTY = re.compile(r'([\w.\-/]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)')


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


def header_values(message: Message, name: str) -> list[str]:
    """Every ``name`` header as one line of text each, topmost first."""
    try:
        values = message.get_all(name) or []
    except (ValueError, IndexError, AttributeError):
        values = []
    return [" ".join(str(value).split()) for value in values]


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


def sender_problem(message: Message) -> str | None:
    """Why the From header does not name exactly one sender, or None. Mail clients show a
    display name, parsers read addresses: ``From: ct-coord@mercy.example <x@evil.example>``
    shows one, and a receiving server may have checked the other."""
    try:
        headers = message.get_all("From") or []
        if len(headers) != 1:
            return "no From header" if not headers else "several From headers"
        defects = list(getattr(headers[0], "defects", ()))
        addresses = list(getattr(headers[0], "addresses", ()))
    except (ValueError, IndexError, AttributeError, TypeError):
        return "the From header cannot be parsed"
    if defects:
        return "the From header does not parse cleanly"
    if len(addresses) != 1:
        return "the From header names several addresses"
    if "@" in addresses[0].display_name:
        return "the From header's display name holds an address"
    return None


def _split_results(value: str) -> list[str]:
    """An ``Authentication-Results`` value split at its semicolons, without its comments
    (parentheses, which nest) and keeping quoted strings whole: one pass over the text."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                current.append(char)
        elif char == "\\":
            escaped = True
            if depth == 0:
                current.append(char)
        elif quoted:
            current.append(char)
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char == '"':
            quoted = True
            current.append(char)
        elif char == ";":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def authentication(message: Message, authserv_id: str | None) -> Authentication:
    """The results of the topmost ``Authentication-Results`` of the operator's own receiving
    server (``authserv_id``), which strips any that arrive claiming its name (RFC 8601 §5);
    those of any other server are not trusted. Without an id nothing is trusted."""
    if not authserv_id:
        return Authentication()
    for value in header_values(message, "Authentication-Results"):
        parts = _split_results(value)
        server = parts[0].split()
        if not server or _unquoted(server[0]).lower() != authserv_id.lower():
            continue
        return _results(parts[1:])
    return Authentication()


def _results(parts: list[str]) -> Authentication:
    spf = spf_domain = dmarc = dmarc_from = None
    dkim: list[tuple[str, str | None]] = []
    for part in parts:
        found = _PROPERTY.findall(part)
        if not found:
            continue
        method = found[0][0].split("/")[0].lower()
        result = _unquoted(found[0][1]).lower()
        properties = {name.lower(): _unquoted(value) for name, value in found[1:]}
        if method == "spf" and spf is None:
            spf = result
            spf_domain = _domain(properties.get("smtp.mailfrom") or properties.get("smtp.helo"))
        elif method == "dkim":
            dkim.append((result, _domain(properties.get("header.d"))))
        elif method == "dmarc" and dmarc is None:
            dmarc, dmarc_from = result, _domain(properties.get("header.from"))
    return Authentication(True, spf, spf_domain, tuple(dkim), dmarc, dmarc_from)


def smtp_code(diagnostic: str | None) -> int | None:
    """The SMTP reply code a bounce's diagnostic gives: where it starts (RFC 3464's
    ``smtp; 550 5.1.1 ...``), stands before an enhanced status code (``... returned '550
    5.1.10 ...'``) or after ``said:``. Anything else is no reply code: Postfix's ``X-Postfix;
    connect to mx.example[192.0.2.25]:25: Connection refused`` gives none, nor do the
    numbers of an address, a port or a count."""
    if not diagnostic:
        return None
    for pattern in (_LEADING_CODE, _CODE_BEFORE_STATUS, _CODE_SAID):
        found = pattern.search(diagnostic)
        if found:
            return int(found.group(1))
    return None


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a delivery-status part."""

    action: str
    status: str
    diagnostic: str

    @property
    def permanent(self) -> bool | None:
        """True for a failure, False while the mail system still tries, None for a success.
        The action decides before the status: a relay that gives up after its queue lifetime
        says ``Action: failed`` with the 4.x.x status of its last try (Postfix: ``4.4.1``,
        connection refused), and nobody will try again."""
        if self.action.startswith(("failed", "error")):
            return True
        if self.action.startswith("delayed") or self.status.startswith("4"):
            return False
        if self.status.startswith("5"):
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


def _flufl_failures(message: Message) -> tuple[bool, bool]:
    """Whether flufl.bounce finds (temporary, permanent) failed addresses in a message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        temporary, permanent = all_failures(message)
    return bool(temporary), bool(permanent)


def _is_report(message: Message, report_type: str) -> bool:
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == report_type
    )


def _bounce(
    message: Message, envelope_sender: str | None
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
        temporary, permanent = _flufl_failures(message)
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


def classify(
    raw: bytes, envelope_sender: str | None = None, authserv_id: str | None = None
) -> Returned:
    """What ``raw`` is; see ``classify_message``."""
    return classify_message(parse(raw), envelope_sender, authserv_id)


def classify_message(
    message: EmailMessage, envelope_sender: str | None = None, authserv_id: str | None = None
) -> Returned:
    """What a parsed message is; ``envelope_sender`` is the SMTP MAIL FROM when it came over
    SMTP (``<>`` for a bounce or an automatic reply), None when it was read from a mailbox;
    ``authserv_id`` names the receiving server whose ``Authentication-Results`` are trusted."""
    read = Returned(
        Kind.REPLY,
        (),
        message_id=_header(message, "Message-ID") or None,
        sender=sender_address(message),
        subject=_header(message, "Subject")[:300],
        authentication=authentication(message, authserv_id),
        sender_problem=sender_problem(message),
    )
    if _is_report(message, "feedback-report"):
        return replace(read, kind=Kind.REPORT, evidence=("feedback report",))
    bounce = _bounce(message, envelope_sender)
    if bounce is not None:
        kind, evidence, deciding = bounce
        diagnostic = (deciding.diagnostic if deciding else None) or _text_diagnostic(message)
        status = deciding.status if deciding and deciding.status else None
        if status is None and diagnostic:
            found = _STATUS.search(diagnostic)
            status = found.group(0) if found else None
        return replace(
            read,
            kind=kind,
            evidence=tuple(evidence),
            status=status,
            diagnostic=diagnostic,
            smtp_code=smtp_code(diagnostic),
        )
    text = body_text(message)
    evidence = auto_reply_evidence(message, envelope_sender)
    if evidence:
        return replace(read, kind=Kind.AUTO_REPLY, evidence=tuple(evidence), text=first_lines(text))
    return replace(read, text=own_text(text))
