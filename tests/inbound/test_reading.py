"""What a returned mail is taken for, from the hand-written samples and a few edge cases: pure
functions, no server."""

from __future__ import annotations

import time

import pytest

from oos_notify.inbound.classify import Authentication, Kind, authentication, classify, parse
from oos_notify.inbound.handling import confirms
from oos_notify.inbound.reply_text import html_text, own_text
from oos_notify.logs import redact
from oos_notify.return_addresses import Purpose, ReturnAddress, ReturnAddresses
from oos_notify.settings import DEFAULT_CONFIRM_WORDS
from tests.inbound.mail import EXPECTED, sample

KINDS = {"autoreply": Kind.AUTO_REPLY, "human": Kind.REPLY}


@pytest.mark.parametrize("name", sorted(EXPECTED["samples"]))
def test_each_sample_is_taken_for_what_it_is(name: str) -> None:
    expected = EXPECTED["samples"][name]
    found = classify(sample(name))
    if expected["kind"] == "bounce":
        assert found.kind is (Kind.BOUNCE if expected["permanent"] else Kind.DELAY)
        assert found.status == expected["status"] or expected["status"] is None
        assert found.diagnostic
    else:
        assert found.kind is KINDS[expected["kind"]]
    if "first_line" in expected:
        assert found.text.split("\n")[0] == expected["first_line"]
        assert "Release failure for CARTX" not in found.text  # no quoted history


def test_a_bounce_is_a_bounce_though_it_says_auto_replied() -> None:
    raw = sample("dsn-postfix-5.1.1.eml")
    assert b"Auto-Submitted: auto-replied" in raw
    found = classify(raw)
    assert (found.kind, found.status, found.smtp_code) == (Kind.BOUNCE, "5.1.1", 550)


def test_a_relays_give_up_is_a_bounce_though_its_status_is_temporary() -> None:
    # Postfix gives up after its queue lifetime with the status of its last try: Action
    # failed, Status 4.4.1, and a diagnostic without an SMTP code. Nobody will try again.
    found = classify(sample("dsn-postfix-expired-4.4.1.eml"))
    assert (found.kind, found.status, found.smtp_code) == (Kind.BOUNCE, "4.4.1", None)
    assert found.diagnostic is not None
    assert found.diagnostic.endswith("Connection refused")


@pytest.mark.parametrize(
    "sender",
    ["Coordinator <Coord@Bücher.example>", "Coordinator <coord@XN--BCHER-KVA.example>"],
)
def test_a_reply_from_an_internationalised_domain_reads_as_the_address_it_was_sent_to(
    sender: str,
) -> None:
    # Notices go to the domain's IDNA form; a reply may come back with it in Unicode
    # (RFC 6532) or in capitals, and is from the same mailbox all the same.
    raw = f"From: {sender}\r\nSubject: Re: notice\r\n\r\nReceived, thanks\r\n".encode()
    assert classify(raw).sender == "coord@xn--bcher-kva.example"


def test_the_null_sender_of_an_smtp_envelope_marks_an_automatic_reply() -> None:
    raw = b"From: a@b.example\r\nSubject: Thanks for your message\r\n\r\nWe will answer soon.\r\n"
    assert classify(raw).kind is Kind.REPLY
    assert classify(raw, envelope_sender="<>").kind is Kind.AUTO_REPLY


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Received, thanks.", True),
        ("received", True),
        ("OK", True),
        ("Okay, holding lymphodepletion", True),
        ("Bestätigt.", True),
        ("Bien reçu, merci", True),
        ("Recibido, gracias.", True),
        ("Received?", False),
        ("OK, but who do I call?", False),
        ("Not received", False),
        ("Okidoki", False),
        ("Can you resend the lot number", False),
        ("", False),
    ],
)
def test_only_a_first_line_that_confirms_and_asks_nothing_confirms(
    line: str, expected: bool
) -> None:
    assert confirms(f"{line}\nDana", DEFAULT_CONFIRM_WORDS) is expected


def test_a_reply_written_below_the_quote_has_no_own_text_above_it() -> None:
    text = "On Tue, 24 Nov 2026, QA wrote:\n> Release failure\n\nReceived."
    assert own_text(text) == ""


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        ("mx.example; spf=pass smtp.mailfrom=a.example; dkim=pass header.d=a.example", "verified"),
        ("mx.example; spf=pass smtp.mailfrom=bounces.a.example", "verified"),
        ("mx.example; dkim=pass header.d=a.example header.s=s1", "verified"),
        ("mx.example; dmarc=pass header.from=a.example", "verified"),
        ("mx.example; spf=fail smtp.mailfrom=a.example; dkim=none", "failed"),
        ("mx.example; spf=softfail smtp.mailfrom=a.example; dkim=fail", "failed"),
        ("mx.example; spf=fail smtp.mailfrom=a.example; dkim=pass header.d=a.example", "verified"),
        ("mx.example; dmarc=fail header.from=a.example", "failed"),
        ("mx.example; spf=pass smtp.mailfrom=evil.example", "unverified"),
        ("mx.example; dmarc=pass header.from=evil.example", "unverified"),
        ("mx.example; spf=pass smtp.mailfrom=b.example; dkim=pass header.d=b.a", "unverified"),
        ("mx.example; none", "unverified"),
        ("other.example; dmarc=pass header.from=a.example", "unverified"),
    ],
)
def test_only_a_pass_aligned_with_the_from_domain_from_the_own_server_verifies(
    results: str, verdict: str
) -> None:
    message = parse(f"Authentication-Results: {results}\r\nFrom: a@a.example\r\n\r\nx".encode())
    assert authentication(message, "mx.example").verdict("a.example")[0] == verdict


def test_results_from_the_own_server_count_wherever_they_stand_and_others_never() -> None:
    raw = (
        b"Authentication-Results: forged.example; spf=pass smtp.mailfrom=a.example\r\n"
        b"Authentication-Results: MX.example (comment; with a semicolon) 1;\r\n"
        b" spf=fail smtp.mailfrom=a.example; dkim=none\r\n"
        b"Authentication-Results: mx.example; dmarc=pass header.from=a.example\r\n\r\nx"
    )
    found = authentication(parse(raw), "mx.example")
    assert found == Authentication(True, "fail", "a.example", (("none", None),), None, None)
    assert authentication(parse(raw), None) == Authentication()


def test_a_return_address_survives_case_folding_and_nothing_else() -> None:
    addresses = ReturnAddresses("secret", "Reply.Example")
    notification = "ntf_01KB2X8M3Q7R9T5V6W4Y2Z0A1C"
    bounce = addresses.address(notification, Purpose.BOUNCE)
    local, _, domain = bounce.partition("@")
    assert len(local) <= 64 and domain == "reply.example"
    assert addresses.find(f"<{bounce.upper()}>") == ReturnAddress(notification, Purpose.BOUNCE)
    changed = local[:-1] + ("0" if local[-1] != "0" else "1")
    assert addresses.find(f"{changed}@{domain}") is None
    assert addresses.find(bounce.replace("bounce+", "oos+")) is None  # the other purpose
    assert ReturnAddresses("another secret", "reply.example").find(bounce) is None


def test_logs_never_show_a_return_address_token() -> None:
    bounce = ReturnAddresses("secret", "reply.example").address(
        "ntf_01KB2X8M3Q7R9T5V6W4Y2Z0A1C", Purpose.BOUNCE
    )
    assert redact(f"returned to <{bounce}>") == "returned to <bounce+…@reply.example>"


@pytest.mark.parametrize(
    ("diagnostic", "code"),
    [
        ("smtp; 550 5.1.1 <ct-coord@mercy.example>: Recipient address rejected", 550),
        ("smtp;550 #5.1.0 Address rejected", 550),
        ("X-Postfix; host mx.mercy.example[192.0.2.7] said: 552 mailbox full", 552),
        ("Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'", 550),
        ("X-Postfix; connect to mx.mercy.example[192.0.2.25]:25: Connection refused", None),
        ("X-Postfix; connect to 192.0.2.250 port 25: Connection refused", None),
        ("X-Unix; delivery failed after 450 attempts", None),
    ],
)
def test_the_smtp_code_is_the_one_the_diagnostic_gives_and_none_otherwise(
    diagnostic: str, code: int | None
) -> None:
    raw = (
        "From: MAILER-DAEMON@relay.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe mail system\r\n\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.example\r\n\r\n"
        "Final-Recipient: rfc822; ct-coord@mercy.example\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n\r\n--b--\r\n"
    ).encode()
    found = classify(raw)
    assert (found.kind, found.smtp_code, found.diagnostic) == (Kind.BOUNCE, code, diagnostic)


def test_html_is_read_in_time_linear_in_its_size() -> None:
    # html.parser took 0.5 s for 10 KB of "<a", 7.7 s for 40 KB, 37 s for 80 KB; counted in
    # this process's CPU, which another process's load on the machine does not stretch
    started = time.process_time()
    assert html_text("<a" * 500_000) == ""
    assert time.process_time() - started < 1.0
    html = (
        "<html><head><style>p {}</style></head><body><p>Received &amp; thanks</p>"
        "<div>Dana<br>Mercy</div><blockquote>quoted</blockquote>after"
        '<div class="gmail_quote">On Tue ... wrote:</div>never</body></html>'
    )
    assert html_text(html) == "\nReceived & thanks\nDana\nMercyafter"
