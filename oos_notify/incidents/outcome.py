"""A decision closes the loop: the center's coordinator, cell lab, pharmacy and quality unit (the
plan's ``decision.outcome_to``) each hear what was decided, by whom, what ships when and the
pathway's references, so that the product can be received and dispensed."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from oos_notify.agreements.config import DecisionRule, EffectiveAgreement
from oos_notify.incidents import events, offers
from oos_notify.incidents.planning import PlanResult, SkippedStep, plan_message
from oos_notify.store.lifecycle import NotificationKind
from oos_notify.store.models import Incident
from oos_notify.store.outbox import Addressee

DECISION_OUTCOME_TEMPLATE = "decision_outcome"


def plan_outcome(
    agreement: EffectiveAgreement, rule: DecisionRule, decider_email: str, now: datetime
) -> PlanResult:
    """One message to each holder of the ``outcome_to`` roles, at once; the decider, who has
    the page's confirmation, is not among them. A role nobody holds is skipped and says so."""
    seen = {decider_email.lower()}
    planned = []
    skipped = []
    for recipient in rule.outcome_to:
        contacts = agreement.contacts_for(recipient)
        if not contacts:
            reason = f"nobody has {recipient}: the decision's outcome is not sent to that role"
            skipped.append(SkippedStep(NotificationKind.FOLLOW_UP, 0, reason))
        for contact in contacts:
            if contact.email.lower() in seen:
                continue
            seen.add(contact.email.lower())
            person = Addressee(contact.id, str(recipient), contact.name, contact.email)
            planned.append(plan_message(person, DECISION_OUTCOME_TEMPLATE, now))
    return PlanResult(planned, skipped)


def tell_outcome(
    session: Session,
    incident: Incident,
    agreement: EffectiveAgreement,
    decider_email: str,
    now: datetime,
    mail_domain: str,
) -> None:
    """Schedule the decision's outcome for the center's roles the offer's rule names."""
    if incident.oos_release is None:
        return
    rule = offers.stored_rule(incident.oos_release)
    result = plan_outcome(agreement, rule, decider_email, now)
    events.schedule_plan(session, incident, result, now, mail_domain)
