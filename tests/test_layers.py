"""The package's floors: each folder imports only the floors below it, so the tree keeps saying
where new code goes. A lower floor that imports a higher one fails here, naming file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "oos_notify"

FLOORS = {
    "agreements": 1,
    "store": 2,
    "incidents": 3,
    "delivery": 4,
    "inbound": 4,
    "ops": 5,
    "web": 6,
    "cli": 7,
}
"""Floor by top-level module or folder; the package root's modules (settings, clock, errors,
logs, ids) are floor 0. Folders on one floor (delivery, inbound) do not import each other."""


def room(module: str) -> str:
    """The folder (or ``cli``) a dotted ``oos_notify`` module is in; "" for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else ""


def floor(module: str) -> int:
    return FLOORS.get(room(module), 0)


def module_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"]
    return ".".join(parts)


def imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every ``oos_notify`` module a file imports, anywhere in it, with the line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("oos_notify")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("oos_notify"):
            assert node.module is not None
            # ``from oos_notify.store import audit`` imports oos_notify.store.audit
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def violations(path: Path, source: str) -> list[str]:
    """The imports in ``source`` (the file ``path``) that reach a floor it may not import."""
    importer = module_of(path)
    problems = []
    for line, imported in imports(ast.parse(source)):
        if room(imported) == room(importer) or floor(imported) < floor(importer):
            continue
        problems.append(
            f"{path.relative_to(PACKAGE.parent)}:{line}: {room(importer) or 'the package root'} "
            f"(floor {floor(importer)}) imports {imported} (floor {floor(imported)})"
        )
    return problems


def test_no_floor_imports_a_floor_above_it() -> None:
    problems = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in violations(path, path.read_text(encoding="utf-8"))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("store/outbox.py", "from oos_notify.incidents.planning import plan_to_qa\n"),
        ("agreements/config.py", "def f():\n    from oos_notify.store import models\n"),
        ("delivery/dispatch.py", "import oos_notify.inbound.bounces\n"),
        ("clock.py", "from oos_notify.agreements.durations import Duration\n"),
    ],
)
def test_an_import_from_a_floor_above_is_reported(path: str, source: str) -> None:
    [problem] = violations(PACKAGE / path, source)
    assert problem.startswith(f"oos_notify/{path}:")
