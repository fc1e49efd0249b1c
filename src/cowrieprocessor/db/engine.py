"""Engine creation for SQLite (the embedded default) and PostgreSQL (psycopg 3).

SQLite is opened in WAL mode with a busy timeout, so several processes can read while
one writes and a writer waits for the lock instead of failing with "database is locked".
PostgreSQL URLs of any spelling (``postgres://``, ``postgresql://``) use psycopg 3, and
a connection attempt gives up after :data:`PG_CONNECT_TIMEOUT_SECONDS` (a host that drops
packets would otherwise hold the command for over two minutes) unless the URL's
``connect_timeout`` query parameter or the ``PGCONNECT_TIMEOUT`` variable says otherwise.
Every PostgreSQL connection sets its session time zone to UTC, whatever the server's or
database's default: timestamps near year 1 or 9999 stored in UTC cannot be printed in
another zone (``10000-01-01 08:59:59+09``) and the driver then fails on the whole query.
It also names itself (``application_name``: the command, such as ``cowrie-db``), so a
session of ours that blocks another shows up by name in ``pg_stat_activity``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: How long a SQLite writer waits for another process's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 60_000
#: Seconds a PostgreSQL connection attempt may take (TCP, TLS and authentication).
PG_CONNECT_TIMEOUT_SECONDS = 10


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def normalise_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver for PostgreSQL; other URLs unchanged."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages and summaries."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def check_url(url: str, *, persistent: bool = True) -> str:
    """Return ``url`` normalised, or raise ValueError saying what is wrong with it.

    Only SQLite and PostgreSQL are supported. ``persistent`` refuses an in-memory
    SQLite database, which would keep nothing after the command ends.
    """
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ValueError(
            "the database URL cannot be parsed; use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")
    if backend == "sqlite" and persistent and parsed.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database keeps nothing; give sqlite:///PATH")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5) -> Engine:
    """Create an engine for ``url``.

    For SQLite the parent directory of the file is created if missing. For PostgreSQL the
    pool holds at most ``pool_size + max_overflow`` connections per process (see
    docs/refresh.md for sizing many workers against one server), and each connection
    attempt fails after the connect timeout (see the module docstring) with
    ``OperationalError``.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa_create_engine(
            url,
            json_serializer=_json_dumps,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return sa_create_engine(
        url,
        json_serializer=_json_dumps,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        connect_args=pg_connect_args(parsed.query),
    )


def pg_connect_args(query: Mapping[str, Any]) -> dict[str, Any]:
    """The connection parameters this project adds to a PostgreSQL URL whose query
    parameters are ``query`` (see the module docstring). Parameters the operator gave, in
    the URL or libpq's variables, win; ``options`` of the URL are kept after ours."""
    args: dict[str, Any] = {}
    # The operator's own timeout, in the URL or libpq's variable, is left to psycopg.
    if "connect_timeout" not in query and not os.environ.get("PGCONNECT_TIMEOUT"):
        args["connect_timeout"] = PG_CONNECT_TIMEOUT_SECONDS
    if "application_name" not in query and not os.environ.get("PGAPPNAME"):
        args["application_name"] = Path(sys.argv[0]).name[:63] or "cowrieprocessor"
    given = query.get("options", "")
    args["options"] = " ".join(filter(None, ["-c TimeZone=UTC", str(given)]))
    return args


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy issue BEGIN itself (see _sqlite_on_begin) so that transactions
    # take the write lock up front instead of failing to upgrade a read lock later.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    # BEGIN IMMEDIATE: a writer that must wait does so at BEGIN, where busy_timeout
    # applies, rather than deadlocking on a read-to-write upgrade (SQLITE_BUSY at once).
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_postgres(engine: Engine) -> bool:
    """True when ``engine`` talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"
