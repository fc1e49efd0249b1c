"""ORM models of the cowrieprocessor database (SQLAlchemy 2.0).

Every text column that can hold attacker-controlled text stores it under the rule of
:mod:`cowrieprocessor.db.textrule`. Every timestamp is aware UTC. The Alembic revisions
under ``db/migrations/versions`` create exactly these tables; ``cowrie-db check`` fails
when the two disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cowrieprocessor.db.types import JSONType, UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; BigInteger keeps 64-bit ids on
# PostgreSQL while staying a rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base; naming conventions keep constraint names stable across databases."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        datetime: UTCDateTime,
    }


Base.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class IngestedFile(Base):
    """One input file as the loader last saw it, with its checkpoint.

    ``head_sha256`` (hash of the first bytes) tells a grown file (same head, larger) from
    one that was truncated or replaced at the same path (different head or smaller).
    ``checkpoint_offset`` is the byte offset in the *decompressed* stream after the last
    complete line whose events are committed; ``checkpoint_line`` is its line number.
    ``finished`` says the last run read the file to its end, problems included (a run
    killed mid-file leaves it False, so the next run resumes even at an unchanged size).
    """

    __tablename__ = "ingested_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    compression: Mapped[str] = mapped_column(String(8))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    head_sha256: Mapped[str] = mapped_column(String(64))
    #: Plain files: SHA-256 of the 4 KiB before ``checkpoint_offset``; None for archives.
    tail_sha256: Mapped[str | None] = mapped_column(String(64))
    checkpoint_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoint_line: Mapped[int] = mapped_column(BigInteger, default=0)
    events_read: Mapped[int] = mapped_column(BigInteger, default=0)
    events_loaded: Mapped[int] = mapped_column(BigInteger, default=0)
    dead_letters: Mapped[int] = mapped_column(BigInteger, default=0)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    first_ingested_at: Mapped[datetime]
    last_ingested_at: Mapped[datetime]


class RawEvent(Base):
    """Every loaded event, as Cowrie wrote it, recognised by the hash of its content.

    The unique key is (``event_time``, ``event_hash``): the time comes from the same
    content, so it is as strict as the hash alone, and it keeps inserts near the right
    edge of the index instead of on random pages. Events without a time are kept unique
    by a partial index on the hash. The time is part of the identity, so a change to how
    timestamps are normalised must come with a migration of the stored times.
    """

    __tablename__ = "raw_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_hash: Mapped[str] = mapped_column(String(64))
    sensor: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(Text)
    eventid: Mapped[str | None] = mapped_column(Text)
    event_time: Mapped[datetime | None]
    src_ip: Mapped[str | None] = mapped_column(Text)
    src_ip_valid: Mapped[bool | None] = mapped_column(Boolean)
    source_file: Mapped[str] = mapped_column(Text)
    source_line: Mapped[int] = mapped_column(BigInteger)
    ingested_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]

    __table_args__ = (
        UniqueConstraint("event_time", "event_hash"),
        Index(
            "uq_raw_events_event_hash_untimed",
            "event_hash",
            unique=True,
            postgresql_where=text("event_time IS NULL"),
            sqlite_where=text("event_time IS NULL"),
        ),
        Index(None, "sensor", "session_id"),
    )


class SessionSummary(Base):
    """One row per Cowrie session, identified by sensor and session id.

    Counters and times are recomputed from the stored events of the session whenever
    new events of it are loaded, so loading files twice or in any order gives one row
    with the same values.
    """

    __tablename__ = "session_summaries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sensor: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    src_ip: Mapped[str | None] = mapped_column(Text)
    src_ip_valid: Mapped[bool | None] = mapped_column(Boolean)
    first_event_at: Mapped[datetime | None]
    last_event_at: Mapped[datetime | None]
    protocol: Mapped[str | None] = mapped_column(String(16))
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    login_attempts: Mapped[int] = mapped_column(Integer, default=0)
    login_successes: Mapped[int] = mapped_column(Integer, default=0)
    success_username: Mapped[str | None] = mapped_column(Text)
    success_password: Mapped[str | None] = mapped_column(Text)
    command_count: Mapped[int] = mapped_column(Integer, default=0)
    download_count: Mapped[int] = mapped_column(Integer, default=0)
    upload_count: Mapped[int] = mapped_column(Integer, default=0)
    client_version: Mapped[str | None] = mapped_column(Text)
    hassh: Mapped[str | None] = mapped_column(String(64))
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    has_connect: Mapped[bool] = mapped_column(Boolean, default=False)
    has_close: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Outcome envelopes keyed by service (``dshield``, ``urlhaus``, ``spur``,
    #: ``virustotal``); see :mod:`cowrieprocessor.enrichment.outcome`.
    enrichment: Mapped[dict[str, Any] | None]
    #: Seen in DShield's attack reports or threat feeds; None until DShield answered.
    dshield_flagged: Mapped[bool | None] = mapped_column(Boolean)
    #: A download or upload of the session is malicious per VirusTotal; None until known.
    vt_flagged: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("sensor", "session_id"),
        Index(None, "first_event_at"),
        Index(None, "src_ip"),
    )


class Command(Base):
    """A command event: ``input`` for what was typed, ``failed``/``success`` verdicts."""

    __tablename__ = "commands"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_hash: Mapped[str] = mapped_column(String(64))
    sensor: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    event_time: Mapped[datetime | None]
    kind: Mapped[str] = mapped_column(String(16))
    command: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index(None, "sensor", "session_id"),)


class File(Base):
    """A download or upload event with the file's sha256 (None when the transfer failed)."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_hash: Mapped[str] = mapped_column(String(64))
    sensor: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(String(8))
    transfer_ok: Mapped[bool] = mapped_column(Boolean)
    shasum: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime | None]
    #: VirusTotal outcome envelope for ``shasum``.
    vt_analysis: Mapped[dict[str, Any] | None]
    #: URLhaus outcome envelope for ``url`` (skipped ``not_applicable`` without one).
    urlhaus: Mapped[dict[str, Any] | None]

    __table_args__ = (Index(None, "sensor", "session_id"), Index(None, "shasum"))


class LoginAttempt(Base):
    """A login event. ``password_sha256`` hashes the exact original password (UTF-8,
    surrogates passed through) so identical passwords group however they are stored."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_hash: Mapped[str] = mapped_column(String(64))
    sensor: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    event_time: Mapped[datetime | None]
    src_ip: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str | None] = mapped_column(Text)
    password: Mapped[str | None] = mapped_column(Text)
    password_sha256: Mapped[str | None] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (Index(None, "sensor", "session_id"), Index(None, "password_sha256"))


class PasswordEnrichment(Base):
    """The breach record of one distinct password, found through
    ``login_attempts.password_sha256``. ``hibp`` holds the outcome envelope; ``breached``
    and ``breach_count`` repeat its answer for queries and stay None until HIBP answered.
    """

    __tablename__ = "password_enrichment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    password_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    hibp: Mapped[dict[str, Any] | None]
    breached: Mapped[bool | None] = mapped_column(Boolean)
    breach_count: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class DeadLetterEvent(Base):
    """Input that could not be loaded, with where it came from and why.

    ``resolved_at`` is set when a later run loads it after all (a live file's cut-off
    last line that has since been completed).
    """

    __tablename__ = "dead_letter_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_file: Mapped[str] = mapped_column(Text)
    source_line: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    raw_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("source_file", "source_line", "raw_sha256"),
        Index(None, "reason"),
    )


def table_of(model: type[Base]) -> Table:
    """The Core ``Table`` behind ``model`` (``__table__`` is typed too loosely for mypy)."""
    return cast(Table, model.__table__)


class EnrichmentCacheEntry(Base):
    """One cached outcome of the database cache (see ``enrichment/cache/database.py``).

    Looked up by (``service``, ``cache_key_hash``), the SHA-256 of the exact key's UTF-8
    (lone surrogates passed through), because keys can be longer than ``cache_key`` or
    hold text a database cannot store. ``cache_key`` is the key under the text rule, cut
    to 128 characters with a marker, for people reading the table. ``payload`` is the
    entry's record (exact key, times, outcome envelope) under the text rule; the other
    columns repeat parts of it for queries. ``migration_id`` names the disk migration that
    inserted the row; any later store clears it, so a rollback never removes a row a
    worker wrote.
    """

    __tablename__ = "enrichment_cache"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    service: Mapped[str] = mapped_column(String(32))
    cache_key: Mapped[str] = mapped_column(String(128))
    cache_key_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    response_status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    accessed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    api_response_code: Mapped[int | None] = mapped_column(Integer)
    api_latency_ms: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    hit_count: Mapped[int] = mapped_column(BigInteger, default=0)
    migration_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        UniqueConstraint("service", "cache_key_hash"),
        Index(None, "expires_at"),
        Index(None, "migration_id"),
        # Containment searches in the services' answers (``payload -> 'outcome' ->
        # 'data' @> '{...}'``), on PostgreSQL only: SQLite has no index for them.
        Index(
            "ix_enrichment_cache_answer",
            text("(payload -> 'outcome' -> 'data') jsonb_path_ops"),
            postgresql_using="gin",
        ).ddl_if(dialect="postgresql"),
    )


class EnrichmentClaim(Base):
    """A refresh worker's claim on one row it is enriching (see ``enrichment/claims.py``).

    ``kind`` is ``sessions``, ``files`` or ``passwords``; ``row_key`` the row's id (as
    text) or its ``password_sha256``. A claim is live while ``lease_until`` lies ahead;
    ``finished_at`` is set in the transaction that writes the row's outcomes, so a claim
    is finished exactly when its row is written. ``run_id`` names the refresh the claim
    belongs to: a finished claim keeps the other workers of that run off the row.
    """

    __tablename__ = "enrichment_claims"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    row_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    claimed_by: Mapped[str] = mapped_column(String(64))
    lease_until: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "lease_until"),)


class EnrichmentFlight(Base):
    """One lookup in flight for a (service, key) among many workers (single flight).

    On SQLite ``owner`` and ``lease_until`` mark the pending lookup that the other
    workers wait for; on PostgreSQL an advisory lock does that and the row only keeps
    the last failure. ``failed_at`` and ``failure`` (the error outcome's envelope under
    the text rule) let the workers that waited for a failed lookup take its error
    instead of all asking the provider again.
    """

    __tablename__ = "enrichment_flights"

    service: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    failure: Mapped[dict[str, Any] | None]
