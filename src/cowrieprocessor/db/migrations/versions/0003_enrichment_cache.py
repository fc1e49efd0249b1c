"""The database cache: enrichment_cache, one row per cached outcome.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cowrieprocessor.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "enrichment_cache",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("cache_key", sa.String(length=128), nullable=False),
        sa.Column("cache_key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("response_status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "accessed_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "expires_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("api_response_code", sa.Integer(), nullable=True),
        sa.Column("api_latency_ms", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("hit_count", sa.BigInteger(), nullable=False),
        sa.Column("migration_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrichment_cache")),
        sa.UniqueConstraint(
            "service",
            "cache_key_hash",
            name=op.f("uq_enrichment_cache_service_cache_key_hash"),
        ),
    )
    op.create_index(
        op.f("ix_enrichment_cache_expires_at"), "enrichment_cache", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_enrichment_cache_migration_id"),
        "enrichment_cache",
        ["migration_id"],
        unique=False,
    )
    # GIN on PostgreSQL; on SQLite a partial index that never holds a row (WHERE 0).
    op.create_index(
        "ix_enrichment_cache_payload",
        "enrichment_cache",
        ["payload"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"payload": "jsonb_path_ops"},
        sqlite_where=sa.text("0"),
    )


def downgrade() -> None:

    op.drop_index("ix_enrichment_cache_payload", table_name="enrichment_cache")
    op.drop_index(op.f("ix_enrichment_cache_migration_id"), table_name="enrichment_cache")
    op.drop_index(op.f("ix_enrichment_cache_expires_at"), table_name="enrichment_cache")
    op.drop_table("enrichment_cache")
