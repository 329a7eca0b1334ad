"""Which notices a notice that reached nobody brings forward: a pure function of the round's
notices. The standard plan: coordinator, physician and cell lab first; the backup coordinator
and the physician next; the pharmacy director and the account lead last."""

from __future__ import annotations

from oos_notify.incidents.planning import RoundNotice, bring_forward_for_unreached


def notice(
    name: str, role: str, level: int, *, reached: bool = False, may_stop: bool = True
) -> RoundNotice:
    return RoundNotice(name, role, level, reached, waiting=level > 0, may_stop=may_stop)


def round_of(*first: RoundNotice) -> list[RoundNotice]:
    return [
        *first,
        notice("backup-1", "coordinator_backup", 1),
        notice("physician-1", "physician", 1),
        notice("pharmacy-2", "pharmacy_director", 2, may_stop=False),
        notice("account-2", "manufacturer:account_lead", 2, may_stop=False),
    ]


COORDINATOR = notice("coordinator-0", "coordinator", 0, reached=True)
PHYSICIAN = notice("physician-0", "physician", 0, reached=True)
LAB = notice("lab-0", "cell_lab", 0, reached=True, may_stop=False)


def test_an_unreached_coordinator_brings_the_backup_coordinator_forward_only() -> None:
    unreached = notice("coordinator-0", "coordinator", 0)
    forward = bring_forward_for_unreached(unreached, round_of(unreached, PHYSICIAN, LAB))
    assert (forward.notification_ids, forward.level) == (("backup-1",), 1)


def test_an_unreached_physician_brings_the_physicians_next_notice_forward() -> None:
    unreached = notice("physician-0", "physician", 0)
    forward = bring_forward_for_unreached(unreached, round_of(COORDINATOR, unreached, LAB))
    assert forward.notification_ids == ("physician-1",)


def test_a_role_nobody_later_names_waits_while_somebody_who_may_confirm_was_reached() -> None:
    unreached = notice("physician-1", "physician", 1)
    notices = [*round_of(COORDINATOR, notice("physician-0", "physician", 0), LAB)]
    notices = [n for n in notices if n.notification_id != "physician-1"] + [unreached]
    forward = bring_forward_for_unreached(unreached, notices)
    assert forward.notification_ids == ()
    assert forward.reason == (
        "no later step names the physician, and somebody who may confirm was reached"
    )


def test_when_nobody_who_may_confirm_was_reached_the_next_step_comes_forward() -> None:
    # The coordinator's and the physician's first notices failed, then the notices they
    # brought forward failed too: only the cell lab, who stops nothing, was reached
    failed = [
        RoundNotice("coordinator-0", "coordinator", 0, False, False, True),
        RoundNotice("physician-0", "physician", 0, False, False, True),
        RoundNotice("physician-1", "physician", 1, False, False, True),
    ]
    backup = RoundNotice("backup-1", "coordinator_backup", 1, False, False, True)
    final = [
        notice("pharmacy-2", "pharmacy_director", 2, may_stop=False),
        notice("account-2", "manufacturer:account_lead", 2, may_stop=False),
    ]
    forward = bring_forward_for_unreached(backup, [*failed, LAB, backup, *final])
    assert (forward.notification_ids, forward.level) == (("pharmacy-2", "account-2"), 2)


def test_a_role_another_holder_was_reached_in_brings_nothing_forward() -> None:
    unreached = notice("physician-0", "physician", 0)
    colleague = notice("physician-0b", "physician", 0, reached=True)
    forward = bring_forward_for_unreached(unreached, round_of(COORDINATOR, unreached, colleague))
    assert forward.notification_ids == ()
    assert forward.reason == "another physician was reached"
