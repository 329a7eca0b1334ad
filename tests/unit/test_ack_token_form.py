"""An acknowledgement link's token starts with a letter or a digit: a path that starts with a
dot reads as hidden to spam filters (rspamd's URI_HIDDEN_PATH). Links sent before, whose token
starts with the dot, still open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from itsdangerous import URLSafeSerializer

from oos_notify.incidents.acknowledgement import AckTokens
from oos_notify.store.models import Notification

SECRET = "token-form-secret"
NOW = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)


def notification() -> Notification:
    return Notification(
        id="ntf_01JDXQ4N8W6R5T3V2X1Y0Z9A8B",
        incident_id="inc_01JDXQ4N8W6R5T3V2X1Y0Z9A8C",
        contact_id="mercy-coordinator",
    )


def test_a_token_starts_with_a_letter_or_digit_and_reads_back() -> None:
    tokens = AckTokens(SECRET)
    token = tokens.issue(notification(), NOW + timedelta(days=3))
    assert token[0].isalnum(), token
    assert tokens.read(token, NOW).notification_id == notification().id


def test_a_link_sent_with_a_leading_dot_still_opens() -> None:
    # Given a token as the service issued it before: itsdangerous's compressed form, with a dot
    payload = {
        "n": notification().id,
        "i": notification().incident_id,
        "c": "mercy-coordinator",
        "x": int((NOW + timedelta(days=3)).timestamp()),
        "r": 1,
    }
    old = URLSafeSerializer(SECRET, salt="oos-notify.ack.v1").dumps(payload)
    assert old.startswith(".")

    # Then it still reads as the same link
    claims = AckTokens(SECRET).read(old, NOW)
    assert (claims.notification_id, claims.contact_id) == (notification().id, "mercy-coordinator")
