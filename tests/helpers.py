"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from cowrieprocessor.db.models import Base


def count(engine: Engine, model: type[Base], *where: Any) -> int:
    """Rows of ``model`` matching ``where``."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def table_rows(engine: Engine, model: type[Base], skip: tuple[str, ...] = ()) -> list[tuple]:
    """Every row of ``model`` as a sorted list of tuples, minus columns that differ by
    design between databases or runs (ids, load times)."""
    table = model.__table__  # type: ignore[attr-defined]
    columns = [c for c in table.c if c.name not in {"id", *skip}]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns)).all()
    return sorted((tuple(row) for row in rows), key=repr)
