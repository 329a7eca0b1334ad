"""Addresses are one mailbox, in the form that goes on the wire; names are one line."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from oos_notify.addresses import BREAKING, is_breaking, mailbox, one_line, sender
from oos_notify.settings import Settings


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        pytest.param("qa@manufacturer.example", "qa@manufacturer.example", id="plain"),
        pytest.param("QA.Desk@Manufacturer.EXAMPLE", "QA.Desk@manufacturer.example", id="case"),
        pytest.param("qa@bücher.example", "qa@xn--bcher-kva.example", id="idn-domain"),
        pytest.param("qa@xn--bcher-kva.example", "qa@xn--bcher-kva.example", id="idna-domain"),
        pytest.param("o'brien+oos@x.example", "o'brien+oos@x.example", id="apostrophe-plus"),
        pytest.param("qa?cc=x&b=y@x.example", "qa?cc=x&b=y@x.example", id="url-characters"),
    ],
)
def test_a_mailbox_is_kept_in_its_ascii_form(given: str, kept: str) -> None:
    # The local part's case is the mailbox owner's business; the domain's is not
    assert mailbox(given) == kept


@pytest.mark.parametrize(
    ("given", "says"),
    [
        pytest.param("qa,evil@x.example", "invalid characters before the @-sign", id="comma"),
        pytest.param("qa@x.example;evil.example", "after the @-sign contains", id="semicolon"),
        pytest.param("qa@x.example?cc=evil%40y.example", "after the @-sign contains", id="query"),
        pytest.param("A <qa@x.example>", "display name", id="display-name"),
        pytest.param('"q a"@x.example', "Quoting", id="quoted"),
        pytest.param("qa@[192.0.2.1]", "bracketed IP address", id="ip-literal"),
        pytest.param("qa@localhost", "It should have a period", id="localhost"),
        pytest.param("qa@mail.local", "special-use or reserved", id="special-use"),
        pytest.param("jörg@x.example", "SMTPUTF8", id="non-ascii-local-part"),
        pytest.param("qa@x.example\r\nBcc: y@z.example", "after the @-sign contains", id="crlf"),
        pytest.param("", "must have an @-sign", id="empty"),
    ],
)
def test_anything_but_one_mailbox_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(ValueError, match="address") as refused:
        mailbox(given)
    assert says in str(refused.value)


def test_the_from_address_may_be_at_localhost_for_the_capture_server() -> None:
    assert sender("oos-notify@localhost") == "oos-notify@localhost"
    assert sender("oos@Bücher.example") == "oos@xn--bcher-kva.example"
    with pytest.raises(ValueError, match="not an email address"):
        sender("oos,evil@localhost")


def test_the_from_setting_is_checked_and_its_domain_names_the_message_ids() -> None:
    settings = Settings(_env_file=None, mail_from="oos@Bücher.example")
    assert settings.mail_from == "oos@xn--bcher-kva.example"
    assert settings.mail_domain == "xn--bcher-kva.example"
    assert Settings(_env_file=None).mail_from == "oos-notify@localhost"
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, mail_from="OOS <oos@x.example>")
    [error] = refused.value.errors()
    assert error["loc"] == ("mail_from",)


@pytest.mark.parametrize(
    "char", ["\r", "\n", "\x00", "\t", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029"]
)
def test_a_name_with_a_control_character_is_refused(char: str) -> None:
    with pytest.raises(ValueError, match=f"it contains U\\+{ord(char):04X}"):
        one_line(f"A. Rivera{char}Bcc: attacker@evil.example")


def test_a_name_may_hold_what_a_header_can_quote_or_encode() -> None:
    for name in ("Rivera, A. <a@b.example>", "Jörg Müller", "=?utf-8?q?x?=", "O'Brien \\ Co"):
        assert one_line(name) == name


def test_the_breaking_pattern_finds_exactly_the_breaking_characters() -> None:
    # Headers are checked and subjects cleaned with the pattern, names one character at a time:
    # both must refuse the same characters, every one Unicode has
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert BREAKING.findall(every) == [c for c in every if is_breaking(c)]
