"""Ingest tables: raw events, sessions, commands, files, logins, dead letters, files read.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cowrieprocessor.db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "commands",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("sensor", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column(
            "event_time", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
        sa.UniqueConstraint("event_hash", name=op.f("uq_commands_event_hash")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_commands_sensor_session_id"), ["sensor", "session_id"], unique=False
        )

    op.create_table(
        "dead_letter_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=False),
        sa.Column("source_line", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "resolved_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter_events")),
        sa.UniqueConstraint(
            "source_file",
            "source_line",
            "raw_sha256",
            name=op.f("uq_dead_letter_events_source_file_source_line_raw_sha256"),
        ),
    )
    with op.batch_alter_table("dead_letter_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letter_events_reason"), ["reason"], unique=False)

    op.create_table(
        "files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("sensor", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("transfer_ok", sa.Boolean(), nullable=False),
        sa.Column("shasum", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column(
            "first_seen", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "vt_analysis",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("event_hash", name=op.f("uq_files_event_hash")),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_files_sensor_session_id"), ["sensor", "session_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_files_shasum"), ["shasum"], unique=False)

    op.create_table(
        "ingested_files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("compression", sa.String(length=8), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("head_sha256", sa.String(length=64), nullable=False),
        sa.Column("tail_sha256", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_offset", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_line", sa.BigInteger(), nullable=False),
        sa.Column("events_read", sa.BigInteger(), nullable=False),
        sa.Column("events_loaded", sa.BigInteger(), nullable=False),
        sa.Column("dead_letters", sa.BigInteger(), nullable=False),
        sa.Column("finished", sa.Boolean(), nullable=False),
        sa.Column(
            "first_ingested_at",
            cowrieprocessor.db.types.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column(
            "last_ingested_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingested_files")),
        sa.UniqueConstraint("path", name=op.f("uq_ingested_files_path")),
    )
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("sensor", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column(
            "event_time", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("src_ip", sa.Text(), nullable=True),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("password_sha256", sa.String(length=64), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
        sa.UniqueConstraint("event_hash", name=op.f("uq_login_attempts_event_hash")),
    )
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_attempts_password_sha256"), ["password_sha256"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_login_attempts_sensor_session_id"),
            ["sensor", "session_id"],
            unique=False,
        )

    op.create_table(
        "raw_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("sensor", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("eventid", sa.Text(), nullable=True),
        sa.Column(
            "event_time", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("src_ip", sa.Text(), nullable=True),
        sa.Column("src_ip_valid", sa.Boolean(), nullable=True),
        sa.Column("source_file", sa.Text(), nullable=False),
        sa.Column("source_line", sa.BigInteger(), nullable=False),
        sa.Column(
            "ingested_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_events")),
        sa.UniqueConstraint("event_hash", name=op.f("uq_raw_events_event_hash")),
    )
    with op.batch_alter_table("raw_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_raw_events_sensor_session_id"), ["sensor", "session_id"], unique=False
        )

    op.create_table(
        "session_summaries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sensor", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("src_ip", sa.Text(), nullable=True),
        sa.Column("src_ip_valid", sa.Boolean(), nullable=True),
        sa.Column(
            "first_event_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_event_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("protocol", sa.String(length=16), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("login_attempts", sa.Integer(), nullable=False),
        sa.Column("login_successes", sa.Integer(), nullable=False),
        sa.Column("success_username", sa.Text(), nullable=True),
        sa.Column("success_password", sa.Text(), nullable=True),
        sa.Column("command_count", sa.Integer(), nullable=False),
        sa.Column("download_count", sa.Integer(), nullable=False),
        sa.Column("upload_count", sa.Integer(), nullable=False),
        sa.Column("client_version", sa.Text(), nullable=True),
        sa.Column("hassh", sa.String(length=64), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("has_connect", sa.Boolean(), nullable=False),
        sa.Column("has_close", sa.Boolean(), nullable=False),
        sa.Column(
            "enrichment",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column(
            "updated_at", cowrieprocessor.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_summaries")),
        sa.UniqueConstraint(
            "sensor", "session_id", name=op.f("uq_session_summaries_sensor_session_id")
        ),
    )
    with op.batch_alter_table("session_summaries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_session_summaries_first_event_at"), ["first_event_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_session_summaries_src_ip"), ["src_ip"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("session_summaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_summaries_src_ip"))
        batch_op.drop_index(batch_op.f("ix_session_summaries_first_event_at"))

    op.drop_table("session_summaries")
    with op.batch_alter_table("raw_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_events_sensor_session_id"))

    op.drop_table("raw_events")
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_attempts_sensor_session_id"))
        batch_op.drop_index(batch_op.f("ix_login_attempts_password_sha256"))

    op.drop_table("login_attempts")
    op.drop_table("ingested_files")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_shasum"))
        batch_op.drop_index(batch_op.f("ix_files_sensor_session_id"))

    op.drop_table("files")
    with op.batch_alter_table("dead_letter_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letter_events_reason"))

    op.drop_table("dead_letter_events")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_sensor_session_id"))

    op.drop_table("commands")
