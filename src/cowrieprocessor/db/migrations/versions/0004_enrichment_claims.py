"""Many refresh workers: row claims with leases, and single-flight lookups.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cowrieprocessor.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:

    op.create_table(
        "enrichment_claims",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("row_key", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=False),
        _time("lease_until", False),
        _time("finished_at", True),
        sa.PrimaryKeyConstraint("kind", "row_key", name=op.f("pk_enrichment_claims")),
    )
    op.create_index(
        op.f("ix_enrichment_claims_lease_until"),
        "enrichment_claims",
        ["lease_until"],
        unique=False,
    )
    op.create_table(
        "enrichment_flights",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        _time("lease_until", True),
        _time("failed_at", True),
        sa.Column(
            "failure",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("service", "key_hash", name=op.f("pk_enrichment_flights")),
    )


def downgrade() -> None:

    op.drop_table("enrichment_flights")
    op.drop_index(op.f("ix_enrichment_claims_lease_until"), table_name="enrichment_claims")
    op.drop_table("enrichment_claims")
