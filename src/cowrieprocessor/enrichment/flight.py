"""Single flight: when many workers miss the same cache key at once, one asks the provider.

:class:`SingleFlight` wraps the fetch of one ``(service, key)`` after a cache miss. The
first worker to arrive fetches and stores the answer; the others wait and then read it
from the shared cache, so the provider is asked once per key per TTL however many
workers there are. It only helps with a cache every worker reads (the database cache,
or a disk cache on one host).

* PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit hash of (service, key), held on a
  connection of its own while fetching and storing. Waiters block in the server (no
  polling) for at most ``wait_timeout`` (``lock_timeout``); after that they fetch
  themselves rather than stall the run.
* SQLite: a pending row in ``enrichment_flights`` (owner and lease) taken in a
  ``BEGIN IMMEDIATE`` transaction; waiters poll the cache every ``poll_interval``
  seconds, and take the flight over when its lease ends (the fetcher died).

Errors are never cached, so a failed flight leaves a note in ``enrichment_flights``
(the error outcome and when it failed). Workers that were already waiting when it failed
take that error instead of all asking again; a worker that arrives later tries once more
(and its own waiters share that answer). That bounds a failing key to one request per
wave of workers rather than one per worker.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.models import EnrichmentFlight, table_of
from cowrieprocessor.db.textrule import decode_json, encode_json
from cowrieprocessor.enrichment.claims import worker_name
from cowrieprocessor.enrichment.outcome import Outcome

logger = logging.getLogger(__name__)

FLIGHTS = table_of(EnrichmentFlight)


class Source(StrEnum):
    """Where a flight's outcome came from."""

    #: This worker asked the provider.
    FETCHED = "fetched"
    #: Another worker asked; its answer was read from the cache.
    SHARED = "shared"
    #: Another worker asked and failed; its error is returned without asking again.
    SHARED_FAILURE = "shared_failure"


@dataclass(frozen=True)
class Flight:
    """The callables a flight needs for one key.

    ``reread`` reads the shared cache (None on a miss); ``fetch`` asks the provider
    (never raises); ``store`` puts a definitive outcome into the cache (committed before
    it returns).
    """

    reread: Callable[[], Outcome | None]
    fetch: Callable[[], Outcome]
    store: Callable[[Outcome], None]


def key_hash(service: str, key: str) -> str:
    """SHA-256 of (service, key), hex; keys may hold NUL and lone surrogates."""
    raw = f"{service}\0{key}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()


def advisory_key(service: str, key: str) -> int:
    """The signed 64-bit advisory lock number of (service, key)."""
    return int.from_bytes(bytes.fromhex(key_hash(service, key))[:8], "big", signed=True)


class SingleFlight:
    """Single-flight lookups over ``engine``'s database (see the module docstring).

    Args:
        engine: the shared database; one connection of its pool is held per flight
            in progress on PostgreSQL.
        lease: on SQLite, how long a pending flight keeps waiters off before they take
            it over (longer than a lookup with its retries may take).
        wait_timeout: on PostgreSQL, how long a waiter waits for the lock.
        poll_interval: on SQLite, the pause between two looks at the cache.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        lease: timedelta = timedelta(minutes=2),
        wait_timeout: float = 120.0,
        poll_interval: float = 0.05,
        owner: str | None = None,
    ) -> None:
        self.engine = engine
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.owner = owner or worker_name()
        self._pg = is_postgres(engine)

    def run(self, service: str, key: str, flight: Flight) -> tuple[Outcome, Source]:
        """The outcome of ``key`` at ``service``, asking the provider at most once.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed (not a lock timeout).
        """
        if self._pg:
            return self._run_pg(service, key, flight)
        return self._run_sqlite(service, key, flight)

    # PostgreSQL -----------------------------------------------------------------------

    def _run_pg(self, service: str, key: str, flight: Flight) -> tuple[Outcome, Source]:
        digest = key_hash(service, key)
        with self.engine.connect() as conn, conn.begin():
            # now() is the transaction's start, before the wait: a failure noted after it
            # happened while this worker waited. The server's clock, so hosts agree.
            started = conn.scalar(select(func.now()))
            timeout_ms = max(int(self.wait_timeout * 1000), 1)
            conn.execute(text(f"SET LOCAL lock_timeout = {timeout_ms}"))
            try:
                with conn.begin_nested():
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"),
                        {"k": advisory_key(service, key)},
                    )
            except OperationalError:
                logger.warning(
                    "%s: waited %.0f s for another worker's lookup; asking myself",
                    service,
                    self.wait_timeout,
                )
                return self._fetch_alone(flight), Source.FETCHED

            shared = self._shared(conn, service, digest, flight, started)
            if shared is not None:
                return shared
            outcome = flight.fetch()
            # Stored (and committed on the cache's own connection) before the lock goes
            # with this transaction, so a waiter that gets the lock finds it.
            if outcome.definitive:
                flight.store(outcome)
            self._settle(conn, service, digest, outcome, func.clock_timestamp())
            return outcome, Source.FETCHED

    # SQLite ---------------------------------------------------------------------------

    def _run_sqlite(self, service: str, key: str, flight: Flight) -> tuple[Outcome, Source]:
        digest = key_hash(service, key)
        started = datetime.now(UTC)
        while True:
            with self.engine.begin() as conn:
                taken = self._take(conn, service, digest)
            if taken:
                break
            shared = self._look(service, digest, flight, started)
            if shared is not None:
                return shared
            time.sleep(self.poll_interval)

        try:
            # The fetcher may have finished between our last look and our taking over.
            shared = self._look(service, digest, flight, started)
            if shared is not None:
                self._clear(service, digest)
                return shared
            outcome = flight.fetch()
            # Outside any transaction of ours: every SQLite transaction holds the write
            # lock, and the cache writes on a connection of its own.
            if outcome.definitive:
                flight.store(outcome)
        except BaseException:
            self._clear(service, digest)
            raise
        with self.engine.begin() as conn:
            self._settle(conn, service, digest, outcome, datetime.now(UTC))
        return outcome, Source.FETCHED

    def _take(self, conn: Connection, service: str, digest: str) -> bool:
        now = datetime.now(UTC)
        f = FLIGHTS.c
        row = conn.execute(
            select(f.owner, f.lease_until).where(f.service == service, f.key_hash == digest)
        ).first()
        if row is not None and row.owner is not None and row.lease_until > now:
            return False
        values = {"owner": self.owner, "lease_until": now + self.lease}
        insert = sqlite.insert(FLIGHTS).values(service=service, key_hash=digest, **values)
        conn.execute(
            insert.on_conflict_do_update(index_elements=["service", "key_hash"], set_=values)
        )
        return True

    def _look(
        self, service: str, digest: str, flight: Flight, started: datetime
    ) -> tuple[Outcome, Source] | None:
        return self._shared(None, service, digest, flight, started)

    def _clear(self, service: str, digest: str) -> None:
        """End our pending flight without an answer of our own: the row goes unless it
        keeps a failure note."""
        f = FLIGHTS.c
        with self.engine.begin() as conn:
            conn.execute(
                delete(FLIGHTS).where(
                    f.service == service,
                    f.key_hash == digest,
                    f.owner == self.owner,
                    f.failed_at.is_(None),
                )
            )
            conn.execute(
                update(FLIGHTS)
                .where(f.service == service, f.key_hash == digest, f.owner == self.owner)
                .values(owner=None, lease_until=None)
            )

    # Both -----------------------------------------------------------------------------

    def _shared(
        self,
        conn: Connection | None,
        service: str,
        digest: str,
        flight: Flight,
        started: Any,
    ) -> tuple[Outcome, Source] | None:
        """Another worker's answer: from the cache, or the error of a flight that failed
        while we waited; None when this worker should ask. ``conn`` is the PostgreSQL
        flight's connection; on SQLite (None) the note is read in a transaction of its
        own, after the cache, so that no two transactions of this process overlap."""
        found = flight.reread()
        if found is not None:
            return found, Source.SHARED
        f = FLIGHTS.c
        query = select(f.failed_at, f.failure).where(f.service == service, f.key_hash == digest)
        if conn is not None:
            note = conn.execute(query).first()
        else:
            with self.engine.begin() as own:
                note = own.execute(query).first()
        if note is None or note.failed_at is None or note.failed_at < started:
            return None
        try:
            return Outcome.from_envelope(decode_json(note.failure)), Source.SHARED_FAILURE
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: unreadable failure note; asking again", service)
            return None

    def _settle(
        self,
        conn: Connection,
        service: str,
        digest: str,
        outcome: Outcome,
        moment: Any,
    ) -> None:
        """End the pending flight; leave a failure note when it failed (the caller has
        stored a definitive answer in the cache already)."""
        f = FLIGHTS.c
        if outcome.definitive:
            # The cache answers from now on: no row is kept per key fetched (PostgreSQL
            # never wrote one; on SQLite the pending row goes, with any old failure).
            if not self._pg:
                conn.execute(delete(FLIGHTS).where(f.service == service, f.key_hash == digest))
            return
        values: dict[str, Any] = {
            "owner": None,
            "lease_until": None,
            "failed_at": moment,
            "failure": encode_json(outcome.to_envelope()),
        }
        insert = (postgresql.insert if self._pg else sqlite.insert)(FLIGHTS)
        conn.execute(
            insert.values(service=service, key_hash=digest, **values).on_conflict_do_update(
                index_elements=["service", "key_hash"], set_=values
            )
        )

    def _fetch_alone(self, flight: Flight) -> Outcome:
        outcome = flight.fetch()
        if outcome.definitive:
            flight.store(outcome)
        return outcome
