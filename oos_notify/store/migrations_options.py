"""The options Alembic runs and compares with: ``migrations/env.py`` and ``migrate.drift`` use the
same ones, so the drift check sees exactly what autogenerating a revision would write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, DateTime, String
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from oos_notify.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Write the models' own column types as plain SQLAlchemy ones: a migration is frozen history
    and must not import application code that may change or go away later."""
    if type_ == "type":
        if isinstance(obj, AutoString):
            return "sa.String()" if obj.length is None else f"sa.String(length={obj.length})"
        if isinstance(obj, TypeDecorator) and isinstance(obj.impl, DateTime):
            return "sa.DateTime()"
        if isinstance(obj, TypeDecorator) and isinstance(obj.impl, String):
            return "sa.String()"
    return False


def context_options(connection: Connection) -> dict[str, Any]:
    return {
        "target_metadata": SQLModel.metadata,
        # SQLite cannot alter most of a table: Alembic copies it into a new one instead.
        "render_as_batch": connection.dialect.name == "sqlite",
        "render_item": render_item,
        "compare_type": True,
        "compare_server_default": True,
    }
