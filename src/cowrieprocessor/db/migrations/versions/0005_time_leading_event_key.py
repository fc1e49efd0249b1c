"""Events are recognised by (event time, content hash); derived rows lose their own key.

The content hash is random, so a unique index on it alone takes each new event to a
random page of a B-tree that soon outgrows the server's buffers. Leading the key with the
event time (a function of the same content) keeps inserts near the index's right edge;
events without a time keep a unique index on the hash alone, limited to them. Commands,
files and login attempts are only written for events their transaction inserted into
``raw_events``, so their own unique hash indexes checked nothing that key does not.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DERIVED = ("commands", "files", "login_attempts")
_UNTIMED = sa.text("event_time IS NULL")


def upgrade() -> None:
    # Batch mode: SQLite cannot drop a constraint in place, so it rebuilds the table.
    with op.batch_alter_table("raw_events") as batch_op:
        batch_op.drop_constraint("uq_raw_events_event_hash", type_="unique")
        batch_op.create_unique_constraint(
            "uq_raw_events_event_time_event_hash", ["event_time", "event_hash"]
        )
    op.create_index(
        "uq_raw_events_event_hash_untimed",
        "raw_events",
        ["event_hash"],
        unique=True,
        postgresql_where=_UNTIMED,
        sqlite_where=_UNTIMED,
    )
    for table in _DERIVED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"uq_{table}_event_hash", type_="unique")


def downgrade() -> None:
    for table in _DERIVED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_unique_constraint(f"uq_{table}_event_hash", ["event_hash"])
    op.drop_index("uq_raw_events_event_hash_untimed", table_name="raw_events")
    with op.batch_alter_table("raw_events") as batch_op:
        batch_op.drop_constraint("uq_raw_events_event_time_event_hash", type_="unique")
        batch_op.create_unique_constraint("uq_raw_events_event_hash", ["event_hash"])
