"""Bulk writes of parsed events: raw events, their derived rows, sessions, dead letters.

One call of :meth:`BatchWriter.write` is one transaction: the new raw events, the command,
file and login rows derived from them, the session summaries they touch, the dead letters
of the batch and the file checkpoint commit together or not at all. A loader killed at any
moment therefore leaves the database at the last committed checkpoint, and the next run
goes on from there.

Events are recognised by the hash of their content (the unique key of ``raw_events`` is
(``event_time``, ``event_hash``); see :class:`~cowrieprocessor.db.models.RawEvent`). Only
events that this transaction really inserted feed the derived rows and the session
counters, so loading the same events again (same file, renamed or recompressed copy, a
concurrent loader) adds nothing. That is also what keeps the derived tables free of
duplicates: they have no unique key of their own, which would only repeat this check at
the cost of a random index page per row.

Rows go in through :mod:`cowrieprocessor.ingest.bulk` (COPY on PostgreSQL, one
``executemany`` on SQLite); see :meth:`BatchWriter._insert_raw` for how events already
stored are recognised on each database, including under concurrent loaders.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.models import DeadLetterEvent, IngestedFile, table_of
from cowrieprocessor.db.textrule import encode_text
from cowrieprocessor.ingest import bulk
from cowrieprocessor.ingest.events import EventKind, ParsedEvent
from cowrieprocessor.ingest.sessions import update_sessions

log = logging.getLogger(__name__)

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
_COMMAND_COLUMNS = ("event_hash", "sensor", "session_id", "event_time", "kind", "command")
_LOGIN_COLUMNS = (
    "event_hash", "sensor", "session_id", "event_time", "src_ip", "username", "password",
    "password_sha256", "success",
)  # fmt: skip
_FILE_COLUMNS = (
    "event_hash", "sensor", "session_id", "direction", "transfer_ok", "shasum", "url",
    "filename", "first_seen",
)  # fmt: skip
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
    tail_sha256: str | None
    offset: int
    line: int
    finished: bool


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
        #: Skip the optimistic fast path (see :meth:`_insert_raw`); reset per file.
        self.prefer_safe = False

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
        if not self.prefer_safe:
            try:
                return self._write(events, dead_letters, checkpoint, resolved, events_read, False)
            except (IntegrityError, bulk.DuplicateKey):
                # Some events are stored already (a re-read or renamed file, or another
                # loader at work): redo the batch the safe way, and keep doing so for the
                # rest of this file, where more of the same is likely.
                log.debug("batch holds stored events; retrying through the staging table")
                self.prefer_safe = True
        return self._write(events, dead_letters, checkpoint, resolved, events_read, True)

    def _write(
        self,
        events: Sequence[LoadedEvent],
        dead_letters: Sequence[DeadLetter],
        checkpoint: Checkpoint | None,
        resolved: Iterable[tuple[str, int]],
        events_read: int,
        safe: bool,
    ) -> BatchResult:
        now = datetime.now(UTC)
        result = BatchResult()
        unique = _unique_by_hash(events)
        result.duplicates = len(events) - len(unique)
        with self.engine.begin() as conn:
            inserted = self._insert_raw(conn, unique, now, safe=safe)
            result.inserted = len(inserted)
            result.duplicates += len(unique) - len(inserted)
            if inserted:
                self._insert_derived(conn, inserted)
                result.sessions = update_sessions(conn, inserted, now)
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

    def _insert_raw(
        self, conn: Connection, events: list[LoadedEvent], now: datetime, *, safe: bool
    ) -> list[LoadedEvent]:
        """Insert the events not stored yet and return them.

        PostgreSQL, fast path: COPY straight into ``raw_events``. If any event is stored
        already, the unique key aborts the transaction and :meth:`write` retries with
        ``safe``: the rows are staged and moved with ``ON CONFLICT DO NOTHING RETURNING``,
        which is also what makes concurrent loaders safe. SQLite: ask which hashes exist,
        insert the rest; ``BEGIN IMMEDIATE`` serialises writers, so that cannot race.
        """
        if not events:
            return []
        if self.postgres:
            if safe:
                return self._insert_raw_staged(conn, events, now)
            new = events
        else:
            keys = [
                (bulk.sqlite_time(item.event.event_time), item.event.event_hash) for item in events
            ]
            known = bulk.existing_hashes(conn, keys)
            new = [item for item in events if item.event.event_hash not in known]
        rows = (self._raw_row(item, now) for item in new)
        bulk.insert_rows(conn, "raw_events", _RAW_COLUMNS, rows, converted=True)
        return new

    def _insert_raw_staged(
        self, conn: Connection, events: list[LoadedEvent], now: datetime
    ) -> list[LoadedEvent]:
        columns = ", ".join(_RAW_COLUMNS)
        # The staging table copies column types only (no defaults, so it depends on no
        # sequence) and is dropped at commit.
        conn.exec_driver_sql(
            "CREATE TEMP TABLE _stage_raw ON COMMIT DROP AS "
            f"SELECT {columns} FROM raw_events WITH NO DATA"
        )
        staged = (self._raw_row(item, now) for item in events)
        bulk.insert_rows(conn, "_stage_raw", _RAW_COLUMNS, staged, converted=True)
        rows = conn.exec_driver_sql(
            f"INSERT INTO raw_events ({columns}) SELECT {columns} FROM _stage_raw "
            # No conflict target: the key is (event_time, event_hash) for timed events
            # and the hash alone for untimed ones, two indexes.
            "ON CONFLICT DO NOTHING RETURNING event_hash"
        ).all()
        new_hashes = {row[0] for row in rows}
        return [item for item in events if item.event.event_hash in new_hashes]

    def _raw_row(self, item: LoadedEvent, now: datetime) -> tuple[Any, ...]:
        """One ``raw_events`` row in driver form: the payload as its canonical JSON text
        (already made for the hash), timestamps as the dialect stores them."""
        ev = item.event
        if self.postgres:
            when: Any = ev.event_time
            loaded: Any = now
            valid: Any = ev.src_ip_valid
        else:
            when, loaded = bulk.sqlite_time(ev.event_time), bulk.sqlite_time(now)
            valid = None if ev.src_ip_valid is None else int(ev.src_ip_valid)
        return (
            ev.event_hash,
            item.sensor,
            ev.session_id,
            ev.eventid,
            when,
            ev.src_ip,
            valid,
            encode_text(item.source_file),
            item.source_line,
            loaded,
            ev.payload_json,
        )

    # Derived rows -----------------------------------------------------------------------

    def _insert_derived(self, conn: Connection, events: list[LoadedEvent]) -> None:
        commands: list[tuple[Any, ...]] = []
        files: list[tuple[Any, ...]] = []
        logins: list[tuple[Any, ...]] = []
        for item in events:
            ev = item.event
            if ev.session_id is None:
                continue
            key = (ev.event_hash, item.sensor, ev.session_id)
            if ev.kind in _COMMAND_KINDS:
                command = ev.command if ev.command is not None else ""
                commands.append((*key, ev.event_time, _COMMAND_KINDS[ev.kind], command))
            elif ev.kind in _LOGIN_KINDS:
                logins.append(
                    (
                        *key, ev.event_time, ev.src_ip, ev.username, ev.password,
                        ev.password_sha256, _LOGIN_KINDS[ev.kind],
                    )
                )  # fmt: skip
            elif ev.file_direction is not None:
                files.append(
                    (
                        *key, ev.file_direction, bool(ev.transfer_ok), ev.file_shasum,
                        ev.file_url, ev.file_name, ev.event_time,
                    )
                )  # fmt: skip
        for table, columns, rows in (
            ("commands", _COMMAND_COLUMNS, commands),
            ("login_attempts", _LOGIN_COLUMNS, logins),
            ("files", _FILE_COLUMNS, files),
        ):
            if rows:
                # On PostgreSQL these hold driver values already (text, times, flags).
                bulk.insert_rows(conn, table, columns, rows, converted=self.postgres)

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
        table = table_of(DeadLetterEvent)
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
        table = table_of(IngestedFile)
        read, loaded, dead = counts
        insert = (pg_dialect.insert if self.postgres else sqlite_dialect.insert)(table)
        c = table.c
        statement = insert.values(
            path=encode_text(point.path),
            compression=point.compression,
            size_bytes=point.size_bytes,
            head_sha256=point.head_sha256,
            tail_sha256=point.tail_sha256,
            checkpoint_offset=point.offset,
            checkpoint_line=point.line,
            events_read=read,
            events_loaded=loaded,
            dead_letters=dead,
            finished=point.finished,
            first_ingested_at=now,
            last_ingested_at=now,
        ).on_conflict_do_update(
            index_elements=[c.path],
            set_={
                "compression": insert.excluded.compression,
                "size_bytes": insert.excluded.size_bytes,
                "head_sha256": insert.excluded.head_sha256,
                "tail_sha256": insert.excluded.tail_sha256,
                "checkpoint_offset": insert.excluded.checkpoint_offset,
                "checkpoint_line": insert.excluded.checkpoint_line,
                "events_read": c.events_read + insert.excluded.events_read,
                "events_loaded": c.events_loaded + insert.excluded.events_loaded,
                "dead_letters": c.dead_letters + insert.excluded.dead_letters,
                "finished": insert.excluded.finished,
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
            .values(checkpoint_offset=0, checkpoint_line=0, finished=False)
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


__all__ = [
    "BatchResult",
    "BatchWriter",
    "Checkpoint",
    "DeadLetter",
    "LoadedEvent",
    "reset_checkpoint",
]
