"""Why the timeline reads in causal order, and what each follow-up changed.

Everything one request or one run does is recorded in one transaction, and the audit trail
writes a transaction's entries at one instant, one after the other on one chain, each linked to
the one before (``store.audit``). Those runs of entries are the timeline's causes and effects: an
event received, or an answer from the center, is the cause; the status it changed, the steps it
cancelled and the notices it sent at once are its effects. The entry that records the cause is
written last (the service records an event once it has done what it asks), so the time order of
the trail alone puts effects before their cause.

What a follow-up changed is in the ``incident_updated`` entry of its run (the new values); the old
ones are those of the events before it, replayed from the event that opened the incident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from oos_notify.agreements.vocabulary import Disposition, KeyDate, ProductStatus
from oos_notify.delivery.rendering import DISPOSITION_LABELS, KEY_DATE_LABELS, local_time
from oos_notify.store.models import AuditEntry, Event
from oos_notify.web.console import fmt

OPENED = "incident_opened"
UPDATED = "incident_updated"
NOT_GIVEN = "not given"


@dataclass(frozen=True)
class Change:
    """One fact a follow-up changed: ``Planned infusion: Wed 16 Dec 2026 → Fri 18 Dec 2026``."""

    fact: str
    old: str
    new: str

    @property
    def text(self) -> str:
        """The change as one line, for the record: the old value left out where there was
        none (a checklist item newly on file)."""
        return f"{self.fact}: {self.old} → {self.new}" if self.old else f"{self.fact}: {self.new}"


def runs(trail: Sequence[AuditEntry]) -> dict[int, int]:
    """Each entry's seq mapped to the seq of the first entry of its run: the entries one
    transaction recorded (same instant, same chain, each linked to the one before)."""
    first: dict[int, int] = {}
    previous: AuditEntry | None = None
    start = 0
    for entry in trail:
        seq = entry.seq or 0
        linked = (
            previous is not None
            and entry.at == previous.at
            and entry.chain == previous.chain
            and entry.prev_hash == previous.entry_hash
        )
        if not linked:
            start = seq
        first[seq] = start
        previous = entry
    return first


def opening_runs(trail: Sequence[AuditEntry], first: Mapping[int, int]) -> set[int]:
    """The runs that opened the incident: everything after comes from them, so nothing is
    folded under them."""
    return {first[e.seq or 0] for e in trail if e.action == OPENED}


def changes(
    events: Sequence[Event], trail: Sequence[AuditEntry], timezone: str
) -> dict[str, list[Change]]:
    """What each event changed, old and new, by event id; an event that changed nothing (or the
    one that opened the incident) has none."""
    first = runs(trail)
    received = {e.detail.get("event_id"): e.seq or 0 for e in trail if e.action == "event_received"}
    updates = {first[e.seq or 0]: e.detail for e in trail if e.action == UPDATED}
    opened = opening_runs(trail, first)
    state: dict[str, Any] = {}
    found: dict[str, list[Change]] = {}
    for event in sorted(events, key=lambda e: (received.get(e.event_id, 0), e.received_at)):
        run = first.get(received.get(event.event_id, -1))
        if run in opened or not state:
            state = _facts(event.payload)
            continue
        update = updates.get(run) if run is not None else None
        if update:
            found[event.event_id] = list(_changed(state, update, timezone))
    return found


def _facts(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The facts an opening event gave, in the shape ``incident_updated`` records them."""
    return {
        "key_dates": dict(payload.get("key_dates") or {}),
        "disposition": payload.get("disposition"),
        "product_status": payload.get("product_status"),
        "infused_at": payload.get("infused_at"),
        "indication": payload.get("indication"),
        "oos_pathway": payload.get("oos_pathway"),
        "remanufacture": dict(payload.get("remanufacture") or {}),
    }


def _changed(state: dict[str, Any], update: Mapping[str, Any], timezone: str) -> list[Change]:
    """The changes ``update`` records against ``state``, which it then moves on."""
    shown: list[Change] = []
    moved = update.get("key_dates") or {}
    for key in KeyDate:
        if key.value in moved:
            old = state["key_dates"].get(key.value)
            shown.append(
                Change(KEY_DATE_LABELS[key], _day(old), _day(moved[key.value])),
            )
            state["key_dates"][key.value] = moved[key.value]
    simple = {
        "disposition": ("Disposition", _disposition),
        "product_status": ("Product", _product),
        "infused_at": ("Infused at", lambda v: _instant(v, timezone)),
        "indication": ("Indication", _name),
        "oos_pathway": ("Regulatory pathway", _name),
    }
    for name, (label, words) in simple.items():
        if name in update:
            shown.append(Change(label, words(state.get(name)), words(update[name])))
            state[name] = update[name]
    if update.get("failed_attributes"):
        count = int(update["failed_attributes"])
        shown.append(Change("Failed attributes", "", f"{count} more on file"))
    for item, reference in (update.get("oos_checklist") or {}).items():
        shown.append(Change(f"Checklist: {fmt.words(item)}", "not yet on file", str(reference)))
    for key, value in (update.get("remanufacture") or {}).items():
        old = state["remanufacture"].get(key)
        shown.append(Change(f"Re-manufacture: {fmt.words(key)}", _text(old), _text(value)))
        state["remanufacture"][key] = value
    for key, value in (update.get("within_spec_basis") or {}).items():
        shown.append(Change(f"Released within specification: {fmt.words(key)}", "", _text(value)))
    return shown


def _day(value: str | None) -> str:
    return fmt.day(date.fromisoformat(value)) if value else NOT_GIVEN


def _instant(value: str | None, timezone: str) -> str:
    return local_time(datetime.fromisoformat(value), timezone) if value else NOT_GIVEN


def _disposition(value: str | None) -> str:
    return DISPOSITION_LABELS[Disposition(value)] if value else NOT_GIVEN


def _product(value: str | None) -> str:
    return ProductStatus(value).label if value else NOT_GIVEN


def _name(value: str | None) -> str:
    return fmt.words(value) if value else NOT_GIVEN


def _text(value: object) -> str:
    if value is None:
        return NOT_GIVEN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
