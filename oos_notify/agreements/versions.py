"""A whole set of agreements as one value: its content, the hash that names it, the diff between
two of them, and the agreements read back from it.

Change control (``store.agreement_versions``) keeps each version of ``config/`` by this content:
the validated models, not the files, so a comment or a reformatted file is no change, and a
version approved earlier can run again whatever the files say now.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

import yaml

from oos_notify.addresses import STORED
from oos_notify.agreements.config import Agreements, HealthSystem, Manufacturer, Plan


def content(agreements: Agreements) -> dict[str, Any]:
    """The validated config in one JSON value: the manufacturer, each health system with its
    sites, each plan (health systems and plans in order of their ids)."""
    return {
        "manufacturer": agreements.manufacturer.model_dump(mode="json"),
        "health_systems": [
            agreements.health_systems[key].model_dump(mode="json")
            for key in sorted(agreements.health_systems)
        ],
        "plans": [
            agreements.plans[key].model_dump(mode="json") for key in sorted(agreements.plans)
        ],
    }


def content_hash(value: dict[str, Any]) -> str:
    """SHA-256 of the content in its canonical JSON form: the same agreements, the same hash."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def restore(value: dict[str, Any], version_id: int | None = None) -> Agreements:
    """The agreements a stored version holds, as they were approved: their names and addresses
    passed the checks of the day they were proposed, and are not checked again."""
    systems = [HealthSystem.model_validate(s, context=STORED) for s in value["health_systems"]]
    plans = [Plan.model_validate(p, context=STORED) for p in value["plans"]]
    return Agreements(
        manufacturer=Manufacturer.model_validate(value["manufacturer"], context=STORED),
        health_systems={system.id: system for system in systems},
        plans={plan.id: plan for plan in plans},
        files={},
        version_id=version_id,
    )


def readable(value: dict[str, Any]) -> list[str]:
    """The content as YAML lines a reviewer reads, in a stable order."""
    text = yaml.safe_dump(value, sort_keys=True, allow_unicode=True, width=100)
    return text.splitlines(keepends=True)


def diff(
    before: dict[str, Any] | None, after: dict[str, Any], before_name: str, after_name: str
) -> str:
    """What changes from ``before`` (None: nothing yet) to ``after``, as a unified diff."""
    old = readable(before) if before is not None else []
    return "".join(
        difflib.unified_diff(old, readable(after), fromfile=before_name, tofile=after_name, n=3)
    )
