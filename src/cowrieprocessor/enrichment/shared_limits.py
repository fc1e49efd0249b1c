"""Rate limits shared by every process that uses one database: one pace per API key.

:func:`shared_limiters` returns a :class:`LimiterRegistry` whose buckets live where all
refresh workers can see them, so eight workers together stay under a provider's limit
(VirusTotal's 4 per minute) instead of each taking the full rate:

* PostgreSQL: pyrate-limiter's ``PostgresBucket``, one table ``ratelimit___<limiter>``
  per service and key fingerprint in the refreshed database (created on first use, not
  by Alembic: the tables are the library's), through one small psycopg pool per process
  (:data:`PG_POOL_MAX` connections). Each take locks the bucket's table ``NOWAIT``; a
  worker that finds it busy is told to wait a few milliseconds and asks again.
* SQLite: pyrate-limiter's ``SQLiteBucket`` in a file beside the database
  (``<database>.ratelimit``), serialised between processes by a file lock
  (``<database>.ratelimit.lock``, the ``filelock`` package). A separate file, because
  a take must not queue behind a refresh transaction holding the database's write
  lock; its connection autocommits each statement and waits up to the busy timeout
  for SQLite's own lock, so "database is locked" never reaches the user.

Limiter names hold only the key's fingerprint, never the key.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout
from pyrate_limiter import AbstractBucket, PostgresBucket, Rate, RateItem, SQLiteBucket
from sqlalchemy.engine import URL, make_url

from cowrieprocessor.db.engine import SQLITE_BUSY_TIMEOUT_MS, normalise_url
from cowrieprocessor.enrichment.http import BucketFactory, LimiterRegistry

logger = logging.getLogger(__name__)

#: Connections of the per-process pool the PostgreSQL buckets share (one for takes, one
#: for the background leak).
PG_POOL_MAX = 2
RATELIMIT_SUFFIX = ".ratelimit"
#: How long a take waits for another process's hold of the SQLite buckets' file lock.
LOCK_TIMEOUT_SECONDS = 60.0


def sqlite_limit_file(db_url: str) -> Path:
    """Where the SQLite buckets of the database at ``db_url`` live.

    Raises:
        ValueError: ``db_url`` is an in-memory SQLite database (no file to share).
    """
    database = make_url(db_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ValueError("shared rate limits need a SQLite file, not an in-memory database")
    path = Path(database).expanduser()
    return path.with_name(path.name + RATELIMIT_SUFFIX)


def shared_limiters(db_url: str) -> LimiterRegistry:
    """A registry whose limiters share their state through the database at ``db_url``.

    Close it (:meth:`LimiterRegistry.close`) when the process is done: that closes the
    buckets' connections.

    Raises:
        ValueError: an in-memory SQLite database.
    """
    url = make_url(normalise_url(db_url))
    if url.get_backend_name() == "postgresql":
        return LimiterRegistry(_postgres_factory(url.set(drivername="postgresql")))
    return LimiterRegistry(_sqlite_factory(sqlite_limit_file(db_url)))


class _ProcessLock:
    """A file lock with the ``acquire(blocking, timeout)`` signature pyrate-limiter calls.

    pyrate-limiter asks for the lock without blocking and treats a busy lock as a full
    bucket; another process holds it for a few milliseconds only, so this waits (up to
    :data:`LOCK_TIMEOUT_SECONDS`) instead of reporting a wait that is not there.
    """

    def __init__(self, path: str) -> None:
        # Thread-local (the default): the bucket's background leak thread and the
        # lookups exclude each other like two processes do.
        self._lock = FileLock(path, thread_local=True)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        wait = LOCK_TIMEOUT_SECONDS if timeout is None or timeout < 0 else max(timeout, 1.0)
        try:
            self._lock.acquire(timeout=wait)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> _ProcessLock:
        if not self.acquire():
            raise TimeoutError(f"rate-limit lock not free within {LOCK_TIMEOUT_SECONDS} s")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class _SharedSQLiteBucket(SQLiteBucket):
    """pyrate-limiter's SQLite bucket, stamping each item once it holds the file lock.

    The limiter stamps an item before it waits for the lock; a process that waited
    behind others would record its request as older than it is, and the window would
    let the next one through early. Stamped under the lock, items are in the order they
    were let through, at the time they were.
    """

    def put(self, item: RateItem) -> bool:
        with self.lock:
            # The bucket's own clock (wall time in ms), shared by the processes of a host.
            item.timestamp = time.time_ns() // 1_000_000
            return bool(super().put(item))


def _sqlite_factory(path: Path) -> BucketFactory:
    lock = _ProcessLock(str(path) + ".lock")

    def build(name: str, rates: Sequence[Rate]) -> AbstractBucket:
        with lock:
            conn = sqlite3.connect(
                path,
                timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{name}" (name VARCHAR, item_timestamp INTEGER)'
            )
            conn.execute(
                f'CREATE INDEX IF NOT EXISTS "idx_{name}_ts" ON "{name}" (item_timestamp)'
            )
        # The file lock makes each count-then-insert atomic across processes; the bucket
        # takes it around every put and leak.
        return _SharedSQLiteBucket(list(rates), conn, name, lock=lock)

    return build


def _postgres_factory(url: URL) -> BucketFactory:
    from psycopg_pool import ConnectionPool

    conninfo = url.render_as_string(hide_password=False)
    pool: ConnectionPool | None = None

    def build(name: str, rates: Sequence[Rate]) -> AbstractBucket:
        nonlocal pool
        if pool is None or pool.closed:
            pool = ConnectionPool(conninfo, min_size=1, max_size=PG_POOL_MAX, open=True)
        return PostgresBucket(pool, name, list(rates))

    return build
