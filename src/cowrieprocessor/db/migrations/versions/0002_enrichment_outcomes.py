"""Enrichment outcomes: session flags, URLhaus envelope on files, password breach rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cowrieprocessor.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "password_enrichment",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("password_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "hibp",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("breached", sa.Boolean(), nullable=True),
        sa.Column("breach_count", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_enrichment")),
        sa.UniqueConstraint(
            "password_sha256", name=op.f("uq_password_enrichment_password_sha256")
        ),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "urlhaus",
                sa.JSON(none_as_null=True).with_variant(
                    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
                ),
                nullable=True,
            )
        )

    with op.batch_alter_table("session_summaries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dshield_flagged", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("vt_flagged", sa.Boolean(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("session_summaries", schema=None) as batch_op:
        batch_op.drop_column("vt_flagged")
        batch_op.drop_column("dshield_flagged")

    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("urlhaus")

    op.drop_table("password_enrichment")
