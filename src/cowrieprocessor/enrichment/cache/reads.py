"""The database cache's hot statements, run below SQLAlchemy: lookups and hit flushes.

Reads run on a per-thread connection in autocommit mode. On SQLite one SELECT is its own
snapshot under WAL, and no ``BEGIN IMMEDIATE`` (which the engine issues for every
transaction) takes the write lock, so readers in many processes never queue behind each
other or behind writers. On PostgreSQL a read is one round trip on the thread's own
psycopg connection, without the pool's checkout ping; psycopg prepares a statement once
it has run a few times, so later lookups skip parsing and planning on the server. Each
thread that reads holds one extra connection until :meth:`DirectReads.close`.

The SQL is written out rather than built by SQLAlchemy for each call: at tens of
microseconds per lookup, building and binding a statement costs as much as the server.
A batch of hashes is sent as one array literal (hex digits need no quoting) rather than a
Python list, which psycopg would check and quote element by element.

Failure: a driver error is raised as SQLAlchemy's ``OperationalError`` (one kind for the
callers, the hybrid cache among them) and the thread's connection is given up, so the
next read opens a fresh one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from cowrieprocessor.db.engine import is_postgres, pg_connect_args
from cowrieprocessor.db.types import sqlite_datetime_text as sqlite_time

_PG_ONE = (
    "SELECT payload::text FROM enrichment_cache "
    "WHERE service = %s AND cache_key_hash = %s AND expires_at > %s"
)
_PG_MANY = (
    "SELECT cache_key_hash, payload::text FROM enrichment_cache "
    "WHERE service = %s AND cache_key_hash = ANY(%s::varchar[]) AND expires_at > %s"
)
_SQLITE_ONE = (
    "SELECT payload FROM enrichment_cache "
    "WHERE service = ? AND cache_key_hash = ? AND expires_at > ?"
)
_SQLITE_MANY = (
    "SELECT cache_key_hash, payload FROM enrichment_cache WHERE service = ? "
    "AND cache_key_hash IN (SELECT value FROM json_each(?)) AND expires_at > ?"
)
# One UPDATE per (service, hit count) group. On PostgreSQL every transaction that writes
# many cache rows (a hit flush, a batch of a cleanup, invalidation or migration rollback)
# first takes one transaction-level advisory lock, so they run one at a time across
# processes and hosts: an UPDATE visiting rows in hash order and a DELETE visiting them
# in id order, or two flushes that split the same keys into different groups, would
# otherwise lock overlapping rows in different orders and deadlock, and PostgreSQL would
# fail one of them. Single-row stores need no such lock. The two-int4 form of the lock
# number is a key space apart from the bigint locks of single flight and schema changes.
# SQLite has one writer at a time anyway.
_PG_BULK_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"
_BULK_LOCK_KEY = (0x636F7772, 1)  # "cowr", many-row cache writes
_PG_ADD_HITS = (
    "UPDATE enrichment_cache SET hit_count = hit_count + %s, accessed_at = %s "
    "WHERE service = %s AND cache_key_hash = ANY(%s::varchar[])"
)
_SQLITE_ADD_HITS = (
    "UPDATE enrichment_cache SET hit_count = hit_count + ?, accessed_at = ? "
    "WHERE id IN (SELECT id FROM enrichment_cache WHERE service = ? "
    "AND cache_key_hash IN (SELECT value FROM json_each(?)))"
)

#: A group of hit counts to add: (service, hits per key, latest read, key hashes).
HitGroup = tuple[str, int, datetime, Sequence[str]]


def _pg_array(hashes: Sequence[str]) -> str:
    # SHA-256 hex digests: an array literal needs no quotes or escapes for them.
    return "{" + ",".join(hashes) + "}"


class DirectReads:
    """Lookups by key hash on per-thread autocommit connections (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = is_postgres(engine)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []

    def one(self, service: str, digest: str, now: datetime) -> list[str]:
        """The payload texts of the fresh row for ``digest`` (none or one)."""
        if self.postgres:
            rows = self._run(_PG_ONE, (service, digest, now))
        else:
            rows = self._run(_SQLITE_ONE, (service, digest, sqlite_time(now)))
        return [row[0] for row in rows]

    def many(self, service: str, digests: Sequence[str], now: datetime) -> list[Any]:
        """(hash, payload text) of the fresh rows among ``digests``, in no set order."""
        if self.postgres:
            return self._run(_PG_MANY, (service, _pg_array(sorted(digests)), now))
        batch = orjson.dumps(list(digests)).decode()
        return self._run(_SQLITE_MANY, (service, batch, sqlite_time(now)))

    def _cursor(self) -> Any:
        """This thread's cursor, kept between reads (making one costs microseconds)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None:
            return cursor
        if self.postgres:
            url = self.engine.url.set(drivername="postgresql")
            connection: Any = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                **pg_connect_args(url.query),
            )
        else:
            connection = self.engine.raw_connection()
        with self._lock:
            self._connections.append(connection)
        cursor = connection.cursor()
        self._local.cursor = cursor
        return cursor

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        cursor = self._cursor()
        try:
            if self.postgres:
                cursor.execute(sql, params, prepare=True)
            else:
                cursor.execute(sql, params)
            return list(cursor.fetchall())
        except (psycopg.Error, sqlite3.Error) as exc:
            self._local.cursor = None
            raise OperationalError(sql, params, exc) from exc

    def close(self) -> None:
        """Close every thread's read connection; later reads open new ones."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


def add_hits(engine: Engine, groups: Sequence[HitGroup]) -> None:
    """Add the hit counts of ``groups`` in one transaction of the engine's pool.

    Concurrency: see :func:`lock_bulk_writes`; a flush waits for another process's flush
    or delete batch (about 10 ms for 1,000 keys) rather than interleaving with it.

    Raises:
        sqlalchemy.exc.SQLAlchemyError, psycopg.Error, sqlite3.Error: the database failed;
            nothing of this call is written.
    """
    postgres = is_postgres(engine)
    with engine.begin() as conn:
        lock_bulk_writes(conn)
        cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for service, hits, latest, hashes in groups:
                if postgres:
                    cursor.execute(_PG_ADD_HITS, (hits, latest, service, _pg_array(hashes)))
                else:
                    batch = orjson.dumps(list(hashes)).decode()
                    cursor.execute(_SQLITE_ADD_HITS, (hits, sqlite_time(latest), service, batch))
        finally:
            cursor.close()


def lock_bulk_writes(conn: Connection) -> None:
    """Take, on PostgreSQL, the lock every transaction writing many cache rows holds.

    Call it first in the transaction; it is released at commit or rollback. Transactions
    that hold it run one at a time, so they cannot deadlock with each other whatever
    order their statements visit rows in. A no-op on SQLite.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_PG_BULK_LOCK, _BULK_LOCK_KEY)
