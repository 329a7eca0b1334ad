"""A generated ``config/`` with many centers, and the events the benchmark posts to them.

Every site has the same shape as a real one: four people told at once when a lot fails (the
fan-out the issue asks for), a backup coordinator four business hours later, and a patient
liaison briefed on acknowledgement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SITES_PER_SYSTEM = 10
TIMEZONES = ("America/Chicago", "America/New_York", "Europe/Berlin", "America/Denver")
FIRST_STEP_ROLES = ("coordinator", "cell_lab", "physician", "pharmacy")
"""Who hears of a failure at once: four contacts per center."""
PLAN: dict[str, Any] = {
    "id": "bench",
    "description": "Four contacts at once; the backup coordinator after 4 business hours.",
    "steps": [
        {"after": "0m", "notify": list(FIRST_STEP_ROLES), "template": "release_failure_initial"},
        {
            "after": "4h",
            "business_hours": True,
            "notify": ["coordinator_backup"],
            "template": "escalation_reminder",
        },
    ],
    "patient_communication": [
        {
            "when": "acknowledged",
            "after": "0m",
            "notify": ["patient_liaison"],
            "template": "patient_liaison_brief",
        }
    ],
}
LATE_PLAN: dict[str, Any] = {
    **PLAN,
    "id": "bench-late",
    "description": "The bench plan for late results: their own first message.",
    "steps": [{**PLAN["steps"][0], "template": "late_result_initial"}, *PLAN["steps"][1:]],
}
"""Late results get a first message of their own (check-config refuses the pre-release one)."""
MANUFACTURER = {
    "name": "Benchmark Therapeutics",
    "products": [{"code": "CARTX", "name": "examplecel (autologous anti-CD19 CAR-T)"}],
    "contacts": [
        {"id": "qa-desk", "name": "QA Release Desk", "email": "qa@bench.example", "roles": ["qa"]},
        {
            "id": "al",
            "name": "Account Lead",
            "email": "al@bench.example",
            "roles": ["account_lead"],
        },
        {
            "id": "ps",
            "name": "Patient Services",
            "email": "ps@bench.example",
            "roles": ["patient_services"],
        },
    ],
}


def center_id(number: int) -> str:
    return f"bench-site-{number:03d}"


def _site(number: int) -> dict[str, Any]:
    roles = (*FIRST_STEP_ROLES, "coordinator_backup", "patient_liaison")
    site_id = center_id(number)
    return {
        "id": site_id,
        "name": f"Benchmark Cancer Center {number}",
        "contacts": [
            {
                "id": f"{site_id}-{role}",
                "name": f"{role.replace('_', ' ').title()} {number}",
                "email": f"{role}@site{number}.bench.example",
                "roles": [role],
            }
            for role in roles
        ],
    }


def write_config(directory: Path, centers: int) -> list[str]:
    """Write a valid ``config/`` with ``centers`` sites; return their ids."""
    (directory / "plans").mkdir(parents=True)
    (directory / "health_systems").mkdir()
    (directory / "manufacturer.yaml").write_text(yaml.safe_dump(MANUFACTURER))
    (directory / "plans" / "bench.yaml").write_text(yaml.safe_dump(PLAN))
    (directory / "plans" / "bench-late.yaml").write_text(yaml.safe_dump(LATE_PLAN))
    for first in range(0, centers, SITES_PER_SYSTEM):
        system = first // SITES_PER_SYSTEM
        numbers = range(first, min(first + SITES_PER_SYSTEM, centers))
        document = {
            "id": f"bench-system-{system:02d}",
            "name": f"Benchmark Health System {system}",
            "timezone": TIMEZONES[system % len(TIMEZONES)],
            "plans": {"release_failure": "bench", "late_result": "bench-late"},
            "sites": [_site(number) for number in numbers],
        }
        (directory / "health_systems" / f"system-{system:02d}.yaml").write_text(
            yaml.safe_dump(document, sort_keys=False)
        )
    return [center_id(number) for number in range(centers)]


def release_failure(run: str, number: int, centers: list[str]) -> dict[str, Any]:
    """One lot-failure event, opening its own incident at the next center in turn."""
    return {
        "event_id": f"BENCH-{run}-{number}",
        "type": "release_failure",
        "incident_ref": f"OOS-{run}-{number}",
        "occurred_at": "2026-11-24T15:10:00Z",
        "center_id": centers[number % len(centers)],
        "product_code": "CARTX",
        "lot_number": f"LOT-{number}",
        "chain_of_identity": f"COI-{run}-{number}",
        "severity": "major",
        "failed_attributes": [
            {
                "attribute": "viability",
                "specification": ">= 80 %",
                "result": "71 %",
                "method": "flow cytometry 7-AAD",
            }
        ],
        "disposition": "under_investigation",
        "key_dates": {"lymphodepletion_start": "2027-01-30", "planned_infusion": "2027-02-02"},
        "summary": "Final product viability below specification. Investigation opened.",
        "qa_contact": {"name": "A. Rivera", "email": "qa@bench.example", "phone": "+1 555 0100"},
    }
