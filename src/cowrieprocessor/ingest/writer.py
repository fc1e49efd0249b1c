"""Bulk writes of parsed events: raw events, their derived rows, sessions, dead letters.

One call of :meth:`BatchWriter.write` is one transaction: the new raw events, the command,
file and login rows derived from them, the session summaries they touch, the dead letters
of the batch and the file checkpoint commit together or not at all. A loader killed at any
moment therefore leaves the database at the last committed checkpoint, and the next run
goes on from there.

Events are recognised by the hash of their content (unique ``raw_events.event_hash``).
Only events that this transaction really inserted feed the derived rows and the session
counters, so loading the same events again (same file, renamed or recompressed copy, a
concurrent loader) adds nothing.

PostgreSQL: raw events are COPYed into a temporary table and moved with
``INSERT ... ON CONFLICT DO NOTHING RETURNING``, which is safe against concurrent loaders;
derived rows are COPYed straight in. SQLite: the transaction starts with ``BEGIN
IMMEDIATE`` (one writer at a time), so reading which hashes exist and then inserting the
rest cannot race.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, case, func, select, tuple_, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.models import (
    Command,
    DeadLetterEvent,
    File,
    IngestedFile,
    LoginAttempt,
    RawEvent,
    SessionSummary,
)
from cowrieprocessor.db.textrule import encode_text
from cowrieprocessor.ingest.events import EventKind, ParsedEvent
from cowrieprocessor.ingest.sessions import SessionDelta, deltas_for

_SQLITE_IN_CHUNK = 500
_RAW_COLUMNS = (
    "event_hash",
    "sensor",
    "session_id",
    "eventid",
    "event_time",
    "src_ip",
    "src_ip_valid",
    "source_file",
    "source_line",
    "ingested_at",
    "payload",
)
_COMMAND_KINDS = {
    EventKind.COMMAND_INPUT: "input",
    EventKind.COMMAND_FAILED: "failed",
    EventKind.COMMAND_SUCCESS: "success",
}
_LOGIN_KINDS = {EventKind.LOGIN_SUCCESS: True, EventKind.LOGIN_FAILED: False}


@dataclass(frozen=True, slots=True)
class LoadedEvent:
    """A parsed event with where it came from and the sensor it belongs to."""

    event: ParsedEvent
    sensor: str
    source_file: str
    source_line: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not be loaded. ``raw`` is the original text (any string)."""

    source_file: str
    source_line: int
    reason: str
    detail: str
    raw: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a file stands after this batch; written in the batch's transaction."""

    path: str
    compression: str
    size_bytes: int
    head_sha256: str
    offset: int
    line: int
    complete: bool


@dataclass
class BatchResult:
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    sessions: set[tuple[str, str]] = field(default_factory=set)


class BatchWriter:
    """Writes batches to one database. Not shared between threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = is_postgres(engine)

    def write(
        self,
        events: Sequence[LoadedEvent],
        dead_letters: Sequence[DeadLetter] = (),
        checkpoint: Checkpoint | None = None,
        *,
        resolved: Iterable[tuple[str, int]] = (),
        events_read: int = 0,
    ) -> BatchResult:
        """Write one batch in one transaction and return what it changed.

        ``resolved`` names (file, line) dead letters that this batch loaded after all;
        ``events_read`` is added to the checkpointed file's total with what was loaded.
        """
        now = datetime.now(UTC)
        result = BatchResult()
        unique = _unique_by_hash(events)
        result.duplicates = len(events) - len(unique)
        with self.engine.begin() as conn:
            if self.postgres:
                inserted = self._insert_raw_pg(conn, unique, now)
            else:
                inserted = self._insert_raw_sqlite(conn, unique, now)
            result.inserted = len(inserted)
            result.duplicates += len(unique) - len(inserted)
            if inserted:
                self._insert_derived(conn, inserted)
                result.sessions = self._update_sessions(conn, inserted, now)
            if dead_letters:
                result.dead_letters = self._insert_dead_letters(conn, dead_letters, now)
            for path, line in resolved:
                conn.execute(
                    update(DeadLetterEvent)
                    .where(
                        DeadLetterEvent.source_file == encode_text(path),
                        DeadLetterEvent.source_line == line,
                        DeadLetterEvent.resolved_at.is_(None),
                    )
                    .values(resolved_at=now)
                )
            if checkpoint is not None:
                counts = (events_read, result.inserted, result.dead_letters)
                self._save_checkpoint(conn, checkpoint, counts, now)
        return result

    # Raw events -------------------------------------------------------------------------

    def _insert_raw_pg(
        self, conn: Connection, events: list[LoadedEvent], now: datetime
    ) -> list[LoadedEvent]:
        if not events:
            return []
        columns = ", ".join(_RAW_COLUMNS)
        # The staging table copies column types only (no defaults, so it depends on no
        # sequence) and lives as long as the pooled connection, emptied at each commit.
        conn.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS _stage_raw ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM raw_events WITH NO DATA"
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY _stage_raw ({columns}) FROM STDIN") as copy:
            for item in events:
                copy.write_row(_raw_row(item, now, json_text=True))
        rows = conn.exec_driver_sql(
            f"INSERT INTO raw_events ({columns}) SELECT {columns} FROM _stage_raw "
            "ON CONFLICT (event_hash) DO NOTHING RETURNING event_hash"
        ).all()
        new_hashes = {row[0] for row in rows}
        return [item for item in events if item.event.event_hash in new_hashes]

    def _insert_raw_sqlite(
        self, conn: Connection, events: list[LoadedEvent], now: datetime
    ) -> list[LoadedEvent]:
        if not events:
            return []
        hashes = [item.event.event_hash for item in events]
        existing: set[str] = set()
        for start in range(0, len(hashes), _SQLITE_IN_CHUNK):
            chunk = hashes[start : start + _SQLITE_IN_CHUNK]
            existing.update(
                conn.scalars(select(RawEvent.event_hash).where(RawEvent.event_hash.in_(chunk)))
            )
        new = [item for item in events if item.event.event_hash not in existing]
        if new:
            conn.execute(
                RawEvent.__table__.insert(),
                [dict(zip(_RAW_COLUMNS, _raw_row(item, now), strict=True)) for item in new],
            )
        return new

    # Derived rows -----------------------------------------------------------------------

    def _insert_derived(self, conn: Connection, events: list[LoadedEvent]) -> None:
        commands: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        logins: list[dict[str, Any]] = []
        for item in events:
            ev = item.event
            if ev.session_id is None:
                continue
            base = {
                "event_hash": ev.event_hash,
                "sensor": item.sensor,
                "session_id": ev.session_id,
            }
            if ev.kind in _COMMAND_KINDS:
                commands.append(
                    base
                    | {
                        "event_time": ev.event_time,
                        "kind": _COMMAND_KINDS[ev.kind],
                        "command": ev.command if ev.command is not None else "",
                    }
                )
            elif ev.kind in _LOGIN_KINDS:
                logins.append(
                    base
                    | {
                        "event_time": ev.event_time,
                        "src_ip": ev.src_ip,
                        "username": ev.username,
                        "password": ev.password,
                        "password_sha256": ev.password_sha256,
                        "success": _LOGIN_KINDS[ev.kind],
                    }
                )
            elif ev.file_direction is not None:
                files.append(
                    base
                    | {
                        "direction": ev.file_direction,
                        "transfer_ok": bool(ev.transfer_ok),
                        "shasum": ev.file_shasum,
                        "url": ev.file_url,
                        "filename": ev.file_name,
                        "first_seen": ev.event_time,
                        "vt_analysis": None,
                    }
                )
        for model, rows in ((Command, commands), (LoginAttempt, logins), (File, files)):
            if rows:
                self._bulk_insert(conn, model.__table__, rows)  # type: ignore[arg-type]

    def _bulk_insert(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        if not self.postgres:
            conn.execute(table.insert(), rows)
            return
        columns = list(rows[0])
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([_copy_value(row[c]) for c in columns])

    # Sessions ---------------------------------------------------------------------------

    def _update_sessions(
        self, conn: Connection, events: list[LoadedEvent], now: datetime
    ) -> set[tuple[str, str]]:
        """Add the new events' contribution to their sessions, then settle the fields that
        must not depend on load order (source address, successful credentials)."""
        deltas = deltas_for(events)
        if not deltas:
            return set()
        table = SessionSummary.__table__
        insert = (pg_dialect.insert if self.postgres else sqlite_dialect.insert)(table)
        excluded = insert.excluded
        c = table.c
        statement = insert.on_conflict_do_update(
            index_elements=[c.sensor, c.session_id],
            set_={
                "event_count": c.event_count + excluded.event_count,
                "login_attempts": c.login_attempts + excluded.login_attempts,
                "login_successes": c.login_successes + excluded.login_successes,
                "command_count": c.command_count + excluded.command_count,
                "download_count": c.download_count + excluded.download_count,
                "upload_count": c.upload_count + excluded.upload_count,
                "first_event_at": _earlier(c.first_event_at, excluded.first_event_at),
                "last_event_at": _later(c.last_event_at, excluded.last_event_at),
                "protocol": _first_known(c.protocol, excluded.protocol),
                "client_version": _first_known(c.client_version, excluded.client_version),
                "hassh": _first_known(c.hassh, excluded.hassh),
                "duration_seconds": _first_known(c.duration_seconds, excluded.duration_seconds),
                "has_connect": c.has_connect | excluded.has_connect,
                "has_close": c.has_close | excluded.has_close,
                "updated_at": excluded.updated_at,
            },
        )
        conn.execute(statement, [delta.as_row(now) for delta in deltas.values()])
        self._settle_ordered_fields(conn, deltas)
        return set(deltas)

    def _settle_ordered_fields(
        self, conn: Connection, deltas: dict[tuple[str, str], SessionDelta]
    ) -> None:
        # The source address and the successful credentials are those of the session's
        # earliest event that has them, whichever file was loaded first; ties go to the
        # smaller event hash so SQLite and PostgreSQL agree. One set-based UPDATE with
        # correlated subqueries per chunk of sessions, not one query per session.
        summary = SessionSummary.__table__
        same_session_raw = (RawEvent.sensor == summary.c.sensor) & (
            RawEvent.session_id == summary.c.session_id
        )

        def first_ip(column: Any) -> Any:
            return (
                select(column)
                .where(same_session_raw, RawEvent.src_ip.is_not(None))
                .order_by(RawEvent.event_time.asc().nulls_last(), RawEvent.event_hash)
                .limit(1)
                .scalar_subquery()
            )

        same_session_login = (LoginAttempt.sensor == summary.c.sensor) & (
            LoginAttempt.session_id == summary.c.session_id
        )

        def first_success(column: Any) -> Any:
            return (
                select(column)
                .where(same_session_login, LoginAttempt.success.is_(True))
                .order_by(LoginAttempt.event_time.asc().nulls_last(), LoginAttempt.event_hash)
                .limit(1)
                .scalar_subquery()
            )

        ip_keys = [key for key, delta in deltas.items() if delta.has_src_ip]
        cred_keys = [key for key, delta in deltas.items() if delta.login_successes]
        key_column = tuple_(summary.c.sensor, summary.c.session_id)
        for start in range(0, len(ip_keys), _SQLITE_IN_CHUNK):
            conn.execute(
                update(summary)
                .where(key_column.in_(ip_keys[start : start + _SQLITE_IN_CHUNK]))
                .values(
                    src_ip=first_ip(RawEvent.src_ip),
                    src_ip_valid=first_ip(RawEvent.src_ip_valid),
                )
            )
        for start in range(0, len(cred_keys), _SQLITE_IN_CHUNK):
            conn.execute(
                update(summary)
                .where(key_column.in_(cred_keys[start : start + _SQLITE_IN_CHUNK]))
                .values(
                    success_username=first_success(LoginAttempt.username),
                    success_password=first_success(LoginAttempt.password),
                )
            )

    # Dead letters and checkpoints -------------------------------------------------------

    def _insert_dead_letters(
        self, conn: Connection, letters: Sequence[DeadLetter], now: datetime
    ) -> int:
        rows = []
        for letter in letters:
            raw = encode_text(letter.raw)
            rows.append(
                {
                    "source_file": encode_text(letter.source_file),
                    "source_line": letter.source_line,
                    "reason": letter.reason,
                    "detail": encode_text(letter.detail),
                    "raw": raw,
                    "raw_sha256": hashlib.sha256(raw.encode("utf-8")).hexdigest(),
                    "created_at": now,
                    "resolved_at": None,
                }
            )
        table = DeadLetterEvent.__table__
        insert = (pg_dialect.insert if self.postgres else sqlite_dialect.insert)(table)
        statement = insert.on_conflict_do_nothing(
            index_elements=[table.c.source_file, table.c.source_line, table.c.raw_sha256]
        )
        result = conn.execute(statement, rows)
        return max(result.rowcount, 0)

    def _save_checkpoint(
        self,
        conn: Connection,
        point: Checkpoint,
        counts: tuple[int, int, int],
        now: datetime,
    ) -> None:
        table = IngestedFile.__table__
        read, loaded, dead = counts
        insert = (pg_dialect.insert if self.postgres else sqlite_dialect.insert)(table)
        c = table.c
        statement = insert.values(
            path=encode_text(point.path),
            compression=point.compression,
            size_bytes=point.size_bytes,
            head_sha256=point.head_sha256,
            checkpoint_offset=point.offset,
            checkpoint_line=point.line,
            events_read=read,
            events_loaded=loaded,
            dead_letters=dead,
            complete=point.complete,
            first_ingested_at=now,
            last_ingested_at=now,
        ).on_conflict_do_update(
            index_elements=[c.path],
            set_={
                "compression": insert.excluded.compression,
                "size_bytes": insert.excluded.size_bytes,
                "head_sha256": insert.excluded.head_sha256,
                "checkpoint_offset": insert.excluded.checkpoint_offset,
                "checkpoint_line": insert.excluded.checkpoint_line,
                "events_read": c.events_read + insert.excluded.events_read,
                "events_loaded": c.events_loaded + insert.excluded.events_loaded,
                "dead_letters": c.dead_letters + insert.excluded.dead_letters,
                "complete": insert.excluded.complete,
                "last_ingested_at": insert.excluded.last_ingested_at,
            },
        )
        conn.execute(statement)


def reset_checkpoint(engine: Engine, path: str) -> None:
    """Forget a file's checkpoint (it was truncated or replaced): read it from the start."""
    with engine.begin() as conn:
        conn.execute(
            update(IngestedFile)
            .where(IngestedFile.path == encode_text(path))
            .values(checkpoint_offset=0, checkpoint_line=0, complete=False)
        )


# Helpers --------------------------------------------------------------------------------


def _unique_by_hash(events: Sequence[LoadedEvent]) -> list[LoadedEvent]:
    seen: set[str] = set()
    unique: list[LoadedEvent] = []
    for item in events:
        event_hash = item.event.event_hash
        if event_hash not in seen:
            seen.add(event_hash)
            unique.append(item)
    return unique


def _raw_row(item: LoadedEvent, now: datetime, *, json_text: bool = False) -> tuple[Any, ...]:
    ev = item.event
    payload: Any = orjson.dumps(ev.payload).decode("utf-8") if json_text else ev.payload
    return (
        ev.event_hash,
        item.sensor,
        ev.session_id,
        ev.eventid,
        ev.event_time,
        ev.src_ip,
        ev.src_ip_valid,
        encode_text(item.source_file),
        item.source_line,
        now,
        payload,
    )


def _copy_value(value: Any) -> Any:
    if isinstance(value, dict):
        return orjson.dumps(value).decode("utf-8")
    return value


def _earlier(current: Any, new: Any) -> Any:
    return case(
        (current.is_(None), new),
        (new.is_(None), current),
        (new < current, new),
        else_=current,
    )


def _later(current: Any, new: Any) -> Any:
    return case(
        (current.is_(None), new),
        (new.is_(None), current),
        (new > current, new),
        else_=current,
    )


def _first_known(current: Any, new: Any) -> Any:
    return func.coalesce(current, new)


__all__ = [
    "BatchResult",
    "BatchWriter",
    "Checkpoint",
    "DeadLetter",
    "LoadedEvent",
    "reset_checkpoint",
]
