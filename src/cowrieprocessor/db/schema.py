"""Schema versions: upgrade, downgrade, and the check every command runs first.

Alembic is driven programmatically on an existing engine, so no ``alembic.ini`` is
needed at run time and the revisions ship inside the package. Alembic is imported only
to change the schema: the version check every command runs reads ``alembic_version``
directly and compares it with :data:`HEAD`, which a test keeps equal to Alembic's head.

On PostgreSQL a schema change needs ACCESS EXCLUSIVE locks, which wait for every other
session that has touched the table in an open transaction (a ``psql`` left in ``BEGIN``).
Each lock wait is bounded by a lock timeout (:data:`DEFAULT_LOCK_TIMEOUT_SECONDS`); while
it waits, a second connection watches which sessions block it, so that the error
(:class:`SchemaLockTimeout`) can name them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from cowrieprocessor.safetext import printable

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.exc import OperationalError

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).with_name("migrations")

#: The newest revision under ``migrations/versions`` (kept in step by a test).
HEAD = "0007"


#: Seconds a PostgreSQL schema change waits for any one lock before it gives up.
DEFAULT_LOCK_TIMEOUT_SECONDS = 30.0
#: The longest lock timeout PostgreSQL accepts (``lock_timeout`` is an int of ms).
MAX_LOCK_TIMEOUT_SECONDS = 2_147_483.0
#: Seconds blocked on one lock before ``on_wait`` is told (once per wait).
WAIT_NOTICE_SECONDS = 2.0
# How often the watching connection asks what the schema change waits for.
_POLL_SECONDS = 0.2
# How much of a blocking session's query a message shows.
_QUERY_CHARS = 80


class SchemaVersionError(RuntimeError):
    """The database schema is not the one this code was written for."""


@dataclass(frozen=True)
class LockHolder:
    """A session that blocks the schema change, as ``pg_stat_activity`` shows it.

    The text fields are as the server gave them (another user's query may read
    ``<insufficient privilege>``); :meth:`describe` makes them safe to print.
    """

    pid: int
    application_name: str | None
    user: str | None
    state: str | None
    query: str | None

    def describe(self) -> str:
        """One printable line: pid, application, user, state and the query's start."""
        parts = [f"application '{printable(self.application_name or '', stored=False)}'"]
        if self.user:
            parts.append(f"user {printable(self.user, stored=False)}")
        if self.state:
            parts.append(printable(self.state, stored=False))
        if self.query:
            query = " ".join(self.query.split())
            parts.append(f"query '{printable(query, limit=_QUERY_CHARS, stored=False)}'")
        return f"pid {self.pid} ({', '.join(parts)})"


@dataclass(frozen=True)
class LockWait:
    """What a schema change waits for: the lock (``what``) and the sessions holding it.

    ``schema_lock`` is true when the lock is the advisory lock that serialises schema
    changes, i.e. another ``cowrie-db upgrade|downgrade`` (or a loader creating the
    schema) is running.
    """

    what: str
    schema_lock: bool
    holders: tuple[LockHolder, ...]

    def describe(self) -> str:
        """``what`` and the holders, printable, on one line."""
        if not self.holders:
            return f"{self.what} (its holder has gone)"
        return f"{self.what} held by " + "; ".join(h.describe() for h in self.holders)


#: Told, from a watching thread, that a schema change has waited (seconds) for a lock.
WaitCallback = Callable[[LockWait, float], None]


class SchemaLockTimeout(RuntimeError):
    """A PostgreSQL schema change gave up waiting for a lock; it changed nothing.

    ``wait`` is the last lock wait seen (None when it ended before the watching
    connection could see it, or that connection failed). ``str()`` is the whole
    message for an operator: the lock, who holds it, that nothing changed, what to do.
    """

    def __init__(self, action: str, revision: str, seconds: float, wait: LockWait | None) -> None:
        self.action = action
        self.revision = revision
        self.seconds = seconds
        self.wait = wait
        # Alembic's relative targets ("-1") mean nothing to an operator; say what they do.
        if revision.startswith("-") and revision[1:].isdigit():
            steps = int(revision[1:])
            target = "one revision back" if steps == 1 else f"{steps} revisions back"
        else:
            target = f"to {revision!r}"
        waited = f"{action} {target} waited {seconds:g} s"
        unchanged = "nothing was changed (the transaction rolled back)"
        if wait is not None and wait.schema_lock:
            message = (
                f"{waited} for another schema change to finish ({wait.describe()}); "
                f"{unchanged}; wait for that one to end, then run this again"
            )
        elif wait is not None:
            message = (
                f"{waited} for {wait.describe()}; {unchanged}; commit or end those "
                "sessions (SELECT pg_terminate_backend(PID) ends one) and run it again"
            )
        else:
            message = (
                f"{waited} for a lock held by other sessions (not identified: see "
                f"pg_locks and pg_stat_activity); {unchanged}; end those sessions and "
                "run it again"
            )
        super().__init__(message)


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision, the code's head, and whether it is empty."""

    current: str | None
    head: str
    empty: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    return HEAD


def alembic_head() -> str:
    """The newest revision as Alembic finds it in the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every revision this code knows."""
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def state(engine: Engine) -> SchemaState:
    """Read the database's revision without changing anything."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        current = None
        if "alembic_version" in tables:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return SchemaState(current=current, head=HEAD, empty=not (tables - {"alembic_version"}))


def upgrade(
    engine: Engine,
    revision: str = "head",
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    on_wait: WaitCallback | None = None,
) -> None:
    """Upgrade the schema to ``revision`` (default: the newest).

    ``lock_timeout`` and ``on_wait`` are as for :func:`_run`, which says what it raises.
    """
    _run(engine, "upgrade", revision, lock_timeout, on_wait)


def downgrade(
    engine: Engine,
    revision: str = "-1",
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    on_wait: WaitCallback | None = None,
) -> None:
    """Downgrade the schema to ``revision`` (``-1``: one step; ``base``: remove all).

    ``lock_timeout`` and ``on_wait`` are as for :func:`_run`, which says what it raises.
    """
    _run(engine, "downgrade", revision, lock_timeout, on_wait)


# Any fixed 64-bit number: the advisory lock that serialises schema changes.
_SCHEMA_LOCK_KEY = 0x636F77726965_01


def _run(
    engine: Engine,
    action: str,
    revision: str,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
    on_wait: WaitCallback | None = None,
) -> None:
    """Run an Alembic command in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so two processes that
    both find an empty database (two loaders started at once) create the schema once:
    the second waits, then finds it at the target revision and does nothing. SQLite
    needs no lock: its transactions begin with BEGIN IMMEDIATE (and wait for another
    writer for the busy timeout of ``engine.py``; ``lock_timeout`` is not used there).

    On PostgreSQL every lock wait of the transaction, the advisory lock's included,
    lasts at most ``lock_timeout`` seconds (0: no limit). A second connection from the
    engine's pool watches, from a thread, what the transaction waits for, and calls
    ``on_wait`` once per wait that lasts :data:`WAIT_NOTICE_SECONDS` (from that thread;
    an exception it raises is logged and ignored). If the watching connection cannot be
    had, the migration runs unwatched.

    Raises:
        SchemaLockTimeout: a lock was not granted in time; the transaction rolled back.
        SchemaVersionError: Alembic refused the revision (unknown, or not reachable).
        ValueError: ``lock_timeout`` is negative, not a number, or above
            :data:`MAX_LOCK_TIMEOUT_SECONDS`.
        sqlalchemy.exc.SQLAlchemyError: the database failed otherwise.
    """
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    timeout_ms = _lock_timeout_ms(lock_timeout)
    config = _config()
    watch: _LockWatch | None = None
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Transaction-local: the pooled connection goes back without it.
                conn.execute(
                    text("SELECT set_config('lock_timeout', :ms, true)"),
                    {"ms": f"{timeout_ms}ms"},
                )
                pid = conn.scalar(text("SELECT pg_backend_pid()"))
                watch = _LockWatch(engine, int(pid), on_wait)
                watch.start()
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            config.attributes["connection"] = conn
            try:
                getattr(command, action)(config, revision)
            except CommandError as error:
                raise SchemaVersionError(f"cannot {action} to {revision!r}: {error}") from error
    except OperationalError as error:
        if watch is None or not _is_lock_timeout(error):
            raise
        raise SchemaLockTimeout(action, revision, lock_timeout, watch.stop()) from error
    finally:
        if watch is not None:
            watch.stop()


def _lock_timeout_ms(seconds: float) -> int:
    """``seconds`` as PostgreSQL's ``lock_timeout`` in ms (0: no limit; at least 1 ms
    otherwise), or ValueError when it is negative, NaN or too large."""
    if math.isnan(seconds) or not 0 <= seconds <= MAX_LOCK_TIMEOUT_SECONDS:
        raise ValueError(
            f"the lock timeout must be 0 to {MAX_LOCK_TIMEOUT_SECONDS:g} seconds, not {seconds!r}"
        )
    return max(round(seconds * 1000), 1) if seconds > 0 else 0


def _is_lock_timeout(error: OperationalError) -> bool:
    """True when ``error`` is PostgreSQL's lock_not_available (SQLSTATE 55P03), which
    SQLAlchemy raises with the driver's error as ``orig``."""
    return getattr(error.orig, "sqlstate", None) == "55P03"


# The lock the backend waits for, if any: its type, the table (or index) for relation
# locks, and the advisory lock's key in halves (classid: high 32 bits, objid: low).
_WAITING_FOR = text(
    "SELECT locktype, relation::regclass::text, classid::bigint, objid::bigint "
    "FROM pg_locks WHERE pid = :pid AND NOT granted LIMIT 1"
)
_HOLDERS = text(
    "SELECT pid, application_name, usename, state, query FROM pg_stat_activity "
    "WHERE pid = ANY(pg_blocking_pids(:pid)) ORDER BY pid"
)


def _lock_wait(conn: Connection, pid: int) -> LockWait | None:
    """What backend ``pid`` waits for now, and who blocks it; None when it waits not."""
    row = conn.execute(_WAITING_FOR, {"pid": pid}).first()
    if row is None:
        return None
    locktype, relation, classid, objid = row
    key = (_SCHEMA_LOCK_KEY >> 32, _SCHEMA_LOCK_KEY & 0xFFFFFFFF)
    schema_lock = locktype == "advisory" and (classid, objid) == key
    if schema_lock:
        what = "the schema lock"
    elif relation:
        what = f"a lock on {printable(relation, stored=False)}"
    else:
        what = f"a {printable(str(locktype), stored=False)} lock"
    holders = tuple(
        LockHolder(pid=r[0], application_name=r[1], user=r[2], state=r[3], query=r[4])
        for r in conn.execute(_HOLDERS, {"pid": pid})
    )
    return LockWait(what=what, schema_lock=schema_lock, holders=holders)


class _LockWatch:
    """A thread that asks, on a connection of its own, what backend ``pid`` waits for.

    It keeps the last wait that had holders (:meth:`stop` returns it), so the error
    raised after a lock timeout can name them, and calls ``on_wait`` once per wait that
    lasts :data:`WAIT_NOTICE_SECONDS`. Any failure of its own (no connection to be had,
    a query refused) ends the watching quietly (logged at debug level): the schema
    change goes on without it.
    """

    def __init__(self, engine: Engine, pid: int, on_wait: WaitCallback | None) -> None:
        self._engine = engine
        self._pid = pid
        self._on_wait = on_wait
        self._stopped = threading.Event()
        self._last: LockWait | None = None
        self._thread = threading.Thread(target=self._watch, name="schema-lock-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> LockWait | None:
        """Stop watching (waiting briefly for the thread); the last wait seen, or None."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        return self._last

    def _watch(self) -> None:
        try:
            with self._engine.connect() as conn:
                # Autocommit: pg_stat_activity is read afresh by every statement.
                conn.execution_options(isolation_level="AUTOCOMMIT")
                self._poll(conn)
        except Exception:
            logger.debug("watching the schema change's locks failed", exc_info=True)

    def _poll(self, conn: Connection) -> None:
        since: float | None = None
        told = False
        while not self._stopped.wait(_POLL_SECONDS):
            wait = _lock_wait(conn, self._pid)
            if wait is None:
                since, told = None, False
                continue
            if wait.holders:
                self._last = wait
            now = time.monotonic()
            since = now if since is None else since
            if not told and self._on_wait is not None and now - since >= WAIT_NOTICE_SECONDS:
                told = True
                try:
                    self._on_wait(wait, now - since)
                except Exception:
                    logger.debug("on_wait failed", exc_info=True)


def ensure_current(engine: Engine, *, create_if_empty: bool = True) -> SchemaState:
    """Refuse to work on a database whose schema is older or newer than the code.

    An empty database (a first run) is brought to the newest revision when
    ``create_if_empty`` is set. Raises :class:`SchemaVersionError` with the command to
    run otherwise (an empty database included). Creating the schema on PostgreSQL waits
    at most :data:`DEFAULT_LOCK_TIMEOUT_SECONDS` for a lock (another process creating
    it) and raises :class:`SchemaLockTimeout` after that, having created nothing.
    """
    found = state(engine)
    if found.up_to_date:
        return found
    if found.current is None and found.empty and create_if_empty:
        upgrade(engine)
        return state(engine)
    if found.current is None and found.empty:
        raise SchemaVersionError(
            "the database is empty (no cowrieprocessor schema); `cowrie-loader ingest` "
            "or `cowrie-db upgrade --db URL` creates the schema"
        )
    if found.current is None:
        raise SchemaVersionError(
            "the database has tables but no cowrieprocessor schema version; "
            "point --db at a cowrieprocessor database or an empty one"
        )
    if found.current not in known_revisions():
        raise SchemaVersionError(
            f"the database schema ({found.current}) is newer than this cowrieprocessor "
            f"(head {found.head}); upgrade cowrieprocessor"
        )
    raise SchemaVersionError(
        f"the database schema ({found.current}) is older than this cowrieprocessor "
        f"(head {found.head}); run `cowrie-db upgrade --db URL` first"
    )
