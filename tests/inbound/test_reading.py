"""What a returned mail is taken for, from the hand-written samples and a few edge cases: pure
functions, no server."""

from __future__ import annotations

import pytest

from oos_notify.inbound.classify import Authentication, Kind, authentication, classify, parse
from oos_notify.inbound.handling import confirms
from oos_notify.inbound.reply_text import own_text
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
    ("results", "failed"),
    [
        ("mx.example; spf=pass smtp.mailfrom=a.example; dkim=pass header.d=a.example", False),
        ("mx.example; spf=fail smtp.mailfrom=a.example; dkim=none", True),
        ("mx.example; spf=softfail smtp.mailfrom=a.example; dkim=fail header.d=a.example", True),
        ("mx.example; spf=fail smtp.mailfrom=a.example; dkim=pass header.d=a.example", False),
        ("mx.example; dmarc=fail header.from=a.example", True),
        ("mx.example; none", False),
    ],
)
def test_authentication_fails_when_spf_fails_without_a_passing_dkim_or_dmarc_fails(
    results: str, failed: bool
) -> None:
    message = parse(f"Authentication-Results: {results}\r\nFrom: a@a.example\r\n\r\nx".encode())
    assert authentication(message).failed is failed


def test_only_the_topmost_authentication_results_count() -> None:
    raw = (
        b"Authentication-Results: mx.manufacturer.example; spf=fail smtp.mailfrom=x; dkim=none\r\n"
        b"Authentication-Results: forged.example; spf=pass; dkim=pass\r\n\r\nx"
    )
    assert authentication(parse(raw)) == Authentication(spf="fail", dkim=("none",), dmarc=None)


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
