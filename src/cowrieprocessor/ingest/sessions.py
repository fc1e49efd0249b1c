"""Session summaries: what a batch of newly stored events adds to each session.

A :class:`SessionDelta` is the contribution of some events to one session: counters add
up, times take the earliest and latest, single-valued attributes (protocol, client
version, HASSH, duration) take the first value known, and the source address and
successful credentials are those of the batch's earliest event that has them. Deltas are
only built from events that the same transaction inserted, so every stored event counts
exactly once.

:func:`update_sessions` merges deltas into ``session_summaries`` with one upsert. For a
session first seen in this batch the delta is the whole truth. For a session that already
had a row (its events spread over batches or files), the source address and credentials
are settled from the stored events, so the row is the same whichever file came first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    case,
    func,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from cowrieprocessor.db.models import LoginAttempt, RawEvent, SessionSummary, table_of
from cowrieprocessor.ingest import bulk
from cowrieprocessor.ingest.events import EventKind

if TYPE_CHECKING:
    from cowrieprocessor.ingest.writer import LoadedEvent

_IN_CHUNK = 500


@dataclass(slots=True)
class SessionDelta:
    sensor: str
    session_id: str
    event_count: int = 0
    login_attempts: int = 0
    login_successes: int = 0
    command_count: int = 0
    download_count: int = 0
    upload_count: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    src_ip: str | None = None
    src_ip_valid: bool | None = None
    success_username: str | None = None
    success_password: str | None = None
    protocol: str | None = None
    client_version: str | None = None
    hassh: str | None = None
    duration_seconds: float | None = None
    has_connect: bool = False
    has_close: bool = False

    def add(self, item: LoadedEvent) -> None:
        """Add one event; events must come in (time, hash) order."""
        ev = item.event
        self.event_count += 1
        when = ev.event_time
        if when is not None:
            if self.first_event_at is None or when < self.first_event_at:
                self.first_event_at = when
            if self.last_event_at is None or when > self.last_event_at:
                self.last_event_at = when
        kind = ev.kind
        if kind is EventKind.LOGIN_SUCCESS:
            self.login_attempts += 1
            self.login_successes += 1
            if self.login_successes == 1:
                self.success_username, self.success_password = ev.username, ev.password
        elif kind is EventKind.LOGIN_FAILED:
            self.login_attempts += 1
        elif kind is EventKind.COMMAND_INPUT:
            self.command_count += 1
        elif kind is EventKind.SESSION_CONNECT:
            self.has_connect = True
        elif kind is EventKind.SESSION_CLOSED:
            self.has_close = True
        if ev.file_direction == "download":
            self.download_count += 1
        elif ev.file_direction == "upload":
            self.upload_count += 1
        if self.src_ip is None and ev.src_ip is not None:
            self.src_ip, self.src_ip_valid = ev.src_ip, ev.src_ip_valid
        if self.protocol is None:
            self.protocol = ev.protocol
        if self.client_version is None:
            self.client_version = ev.client_version
        if self.hassh is None:
            self.hassh = ev.hassh
        if self.duration_seconds is None:
            self.duration_seconds = ev.duration_seconds

    def as_row(self, now: datetime) -> dict[str, Any]:
        """The row for a session first seen in this batch (also the upsert input)."""
        row = {name: getattr(self, name) for name in self.__slots__}
        return row | {
            "enrichment": None,
            "dshield_flagged": None,
            "vt_flagged": None,
            "updated_at": now,
        }


def deltas_for(events: Iterable[LoadedEvent]) -> dict[tuple[str, str], SessionDelta]:
    """Group events by (sensor, session id) in (time, hash) order; events without a session
    are left out (they stay in ``raw_events``)."""
    with_session = [item for item in events if item.event.session_id is not None]
    with_session.sort(key=_event_order)
    deltas: dict[tuple[str, str], SessionDelta] = {}
    for item in with_session:
        session_id = item.event.session_id
        assert session_id is not None
        key = (item.sensor, session_id)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = SessionDelta(sensor=item.sensor, session_id=session_id)
        delta.add(item)
    return deltas


_NO_TIME = datetime.min.replace(tzinfo=UTC)


def _event_order(item: LoadedEvent) -> tuple[bool, datetime, str]:
    when = item.event.event_time
    # Events without a time sort last, as NULLS LAST does in the settling queries.
    return (when is None, when or _NO_TIME, item.event.event_hash)


def update_sessions(
    conn: Connection, events: list[LoadedEvent], now: datetime
) -> set[tuple[str, str]]:
    """Merge the new events into their sessions; return the (sensor, session id) touched."""
    deltas = deltas_for(events)
    if not deltas:
        return set()
    existing = bulk.existing_sessions(conn, list(deltas))
    # The deltas go into a staging table in bulk, then one INSERT ... SELECT ... ON
    # CONFLICT merges them: far cheaper than a parameterised upsert per session.
    stage = _stage_table(conn)
    rows = [delta.as_row(now) for delta in deltas.values()]
    staged = ([row[c] for c in _COLUMNS] for row in rows)
    # On PostgreSQL the rows hold driver values already (no JSON but a null enrichment).
    postgres = conn.dialect.name == "postgresql"
    bulk.insert_rows(conn, stage.name, _COLUMNS, staged, converted=postgres)
    conn.execute(_merge_statement(conn.dialect.name, stage))
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(f"DROP TABLE temp.{stage.name}")
    _settle(conn, [k for k in existing if deltas[k].src_ip is not None], _FIRST_IP)
    _settle(conn, [k for k in existing if deltas[k].login_successes], _FIRST_SUCCESS)
    return set(deltas)


_COLUMNS = tuple(c.name for c in table_of(SessionSummary).c if c.name != "id")
# The name carries a digest of the column list, so a connection that outlives a schema
# change (tests upgrade and downgrade) never reuses a table of other columns.
_STAGE_NAME = "_stage_sessions_" + hashlib.sha256(",".join(_COLUMNS).encode()).hexdigest()[:8]
_STAGE = Table(
    _STAGE_NAME,
    MetaData(),
    *(Column(c.name, c.type) for c in table_of(SessionSummary).c if c.name != "id"),
    prefixes=["TEMPORARY"],
)


def _stage_table(conn: Connection) -> Table:
    """The staging table of this connection, empty.

    PostgreSQL: made once per connection and emptied at every commit (creating and
    dropping it per batch cost about 5 ms of catalog work, 1 us per loaded event). The
    table is the connection's own, so concurrent loaders do not see each other's rows.
    SQLite: made for this batch and dropped right after use.
    """
    columns = ", ".join(_COLUMNS)
    if conn.dialect.name == "postgresql":
        known = conn.exec_driver_sql(
            "SELECT 1 FROM pg_class WHERE relname = %(name)s "
            "AND relnamespace = pg_my_temp_schema()",
            {"name": _STAGE_NAME},
        ).first()
        if known is None:
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE {_STAGE_NAME} ON COMMIT DELETE ROWS AS "
                f"SELECT {columns} FROM session_summaries WHERE 1 = 0"
            )
        return _STAGE
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {_STAGE_NAME} AS SELECT {columns} FROM session_summaries WHERE 1 = 0"
    )
    return _STAGE


@cache
def _merge_statement(dialect_name: str, stage: Table) -> Any:
    table = table_of(SessionSummary)
    dialect = pg_dialect if dialect_name == "postgresql" else sqlite_dialect
    # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join.
    source = select(*(stage.c[name] for name in _COLUMNS)).where(true())
    insert = dialect.insert(table).from_select(list(_COLUMNS), source)
    new, c = insert.excluded, table.c
    return insert.on_conflict_do_update(
        index_elements=[c.sensor, c.session_id],
        set_={
            "event_count": c.event_count + new.event_count,
            "login_attempts": c.login_attempts + new.login_attempts,
            "login_successes": c.login_successes + new.login_successes,
            "command_count": c.command_count + new.command_count,
            "download_count": c.download_count + new.download_count,
            "upload_count": c.upload_count + new.upload_count,
            "first_event_at": _pick(c.first_event_at, new.first_event_at, earlier=True),
            "last_event_at": _pick(c.last_event_at, new.last_event_at, earlier=False),
            "src_ip": func.coalesce(c.src_ip, new.src_ip),
            "src_ip_valid": func.coalesce(c.src_ip_valid, new.src_ip_valid),
            "success_username": func.coalesce(c.success_username, new.success_username),
            "success_password": func.coalesce(c.success_password, new.success_password),
            "protocol": func.coalesce(c.protocol, new.protocol),
            "client_version": func.coalesce(c.client_version, new.client_version),
            "hassh": func.coalesce(c.hassh, new.hassh),
            "duration_seconds": func.coalesce(c.duration_seconds, new.duration_seconds),
            "has_connect": c.has_connect | new.has_connect,
            "has_close": c.has_close | new.has_close,
            "updated_at": new.updated_at,
        },
    )


def _pick(current: Any, new: Any, *, earlier: bool) -> Any:
    better = new < current if earlier else new > current
    return case((current.is_(None), new), (new.is_(None), current), (better, new), else_=current)


# The source address and the successful credentials of a session are those of its
# earliest stored event that has them; ties go to the smaller event hash so SQLite and
# PostgreSQL agree. Correlated subqueries keep it to one UPDATE per chunk of sessions.
_summary = table_of(SessionSummary)


def _first(model: Any, column: Any, *conditions: Any) -> Any:
    return (
        select(column)
        .where(model.sensor == _summary.c.sensor, model.session_id == _summary.c.session_id)
        .where(*conditions)
        .order_by(model.event_time.asc().nulls_last(), model.event_hash)
        .limit(1)
        .scalar_subquery()
    )


_FIRST_IP = {
    "src_ip": _first(RawEvent, RawEvent.src_ip, RawEvent.src_ip.is_not(None)),
    "src_ip_valid": _first(RawEvent, RawEvent.src_ip_valid, RawEvent.src_ip.is_not(None)),
}
_FIRST_SUCCESS = {
    "success_username": _first(LoginAttempt, LoginAttempt.username, LoginAttempt.success),
    "success_password": _first(LoginAttempt, LoginAttempt.password, LoginAttempt.success),
}


def _settle(conn: Connection, keys: list[tuple[str, str]], values: dict[str, Any]) -> None:
    key_column = tuple_(_summary.c.sensor, _summary.c.session_id)
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        conn.execute(update(_summary).where(key_column.in_(chunk)).values(values))
