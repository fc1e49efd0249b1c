"""Repair SQLite times written with a year of fewer than four digits.

Until the loader and the cache formatted SQLite times with one function, rows they wrote
below the ORM took the year from ``strftime('%Y')``, which the C library does not pad:
year 999 became ``999-01-01 ...`` instead of ``0999-01-01 ...``. SQLAlchemy cannot read
that text back (one such row made every query over its table fail) and it sorts after
every later year. This rewrites such values in every ``DATETIME`` column of every table
with the padded year; the rest of the text was already right. Rows written correctly
have their first ``-`` at position 5 and are not touched. PostgreSQL stores real
timestamps and has nothing to repair.

No event can be stored twice because of the repair: the loader looked events up with
the same unpadded text it wrote, so the old text was never stored beside the new one,
and the code that writes the new text refuses a database older than this revision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    tables = bind.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).scalars()
    for table in list(tables):
        columns = bind.exec_driver_sql(f"PRAGMA table_info({_quoted(table)})").all()
        for column in columns:
            if str(column[2]).upper() != "DATETIME":
                continue
            name = _quoted(str(column[1]))
            # "999-01-01 ..." -> "0999-01-01 ...": the year is the text before the first
            # "-", re-written with four digits.
            bind.exec_driver_sql(
                f"UPDATE {_quoted(table)} SET {name} = "
                f"printf('%04d', CAST(substr({name}, 1, instr({name}, '-') - 1) AS INTEGER))"
                f" || substr({name}, instr({name}, '-')) "
                f"WHERE typeof({name}) = 'text' AND instr({name}, '-') BETWEEN 2 AND 4"
            )


def downgrade() -> None:
    # The padded text is what SQLAlchemy itself writes, so older code reads it as well.
    pass
