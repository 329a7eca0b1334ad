"""Which binds may serve the capture mailbox: only this machine's, unless asked for by name."""

from __future__ import annotations

from typing import Any

import pytest

from oos_notify.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("host", "exposed"),
    [
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("::1", False),
        ("localhost", False),
        ("LOCALHOST", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("fe80::1", True),
        ("oos.example.org", True),
        ("", True),
    ],
)
def test_without_smtp_only_a_loopback_bind_may_serve_the_mailbox(host: str, exposed: bool) -> None:
    assert settings(host=host).exposes_mailbox is exposed


def test_the_development_opt_in_or_a_real_smtp_server_allows_any_bind() -> None:
    assert not settings(host="0.0.0.0", dev_mailbox_on_network=True).exposes_mailbox
    assert not settings(host="0.0.0.0", smtp_host="smtp.example.org").exposes_mailbox
