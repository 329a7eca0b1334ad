"""When a ``notify_within`` promise is met, read from the notices: on delivery, not hand-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from oos_notify.store.promises import Notice, met_at

T0 = datetime(2026, 11, 24, 15, 12, tzinfo=UTC)


def sent(role: str, minutes: int, *, first: bool = True, step: bool = True) -> Notice:
    return Notice(role, "sent", T0 + timedelta(minutes=minutes), first, step)


def bounced(role: str, minutes: int) -> Notice:
    return Notice(role, "failed", T0 + timedelta(minutes=minutes), True)


def test_the_first_delivery_meets_it() -> None:
    assert met_at([sent("coordinator", 0), sent("physician", 1)]) == T0


def test_a_bounced_first_notice_leaves_it_unmet_whoever_else_was_reached() -> None:
    assert met_at([sent("coordinator", 0), bounced("cell_lab", 0)]) is None


def test_a_later_notice_to_the_bounced_role_meets_it_then() -> None:
    notices = [sent("coordinator", 0), bounced("physician", 0), sent("physician", 30)]
    assert met_at(notices) == T0 + timedelta(minutes=30)


def test_the_backup_standing_in_for_the_role_meets_it() -> None:
    notices = [bounced("coordinator", 0), sent("physician", 0), sent("coordinator_backup", 5)]
    assert met_at(notices) == T0 + timedelta(minutes=5)


def test_a_follow_up_alone_does_not_meet_it() -> None:
    assert met_at([sent("coordinator", 10, first=False, step=False)]) is None


def test_every_first_notice_bounced_is_met_once_each_role_is_reached_by_a_later_step() -> None:
    notices = [
        bounced("coordinator", 0),
        bounced("physician", 0),
        sent("physician", 120, first=False),
        sent("coordinator_backup", 120, first=False),
    ]
    assert met_at(notices) == T0 + timedelta(hours=2)
