"""The database cache: table ``enrichment_cache`` on PostgreSQL or SQLite.

Every worker on every host that points at the same database shares one cache. A row is
found by (``service``, ``cache_key_hash``); see :mod:`.rows` for what the columns hold
and why the payload is serialised by hand.

Concurrency: a store is one ``INSERT ... ON CONFLICT DO UPDATE`` (last writer wins, no
read-then-insert race). A read is one ``SELECT`` (see :mod:`.reads`); reads never write.
Hits are counted in memory and added to ``hit_count`` and ``accessed_at`` in one
transaction (an ``UPDATE`` per group of keys with the same count) every
:attr:`EnrichmentDatabaseCache.hit_flush_count` hits or
``hit_flush_seconds`` seconds, and on :meth:`~EnrichmentDatabaseCache.close`; counts of a
process killed in between are lost, which only understates the statistics. The flush runs
in the read that makes it due and, with many distinct keys, costs more than the reads
(see the benchmarks README). Flushes and the batches of cleanup and invalidation take one
advisory lock on PostgreSQL, so they cannot deadlock with each other (see :mod:`.reads`).
On SQLite every transaction begins with
``BEGIN IMMEDIATE`` and waits up to the busy timeout for another process's lock (see
:mod:`cowrieprocessor.db.engine`), so "database is locked" does not reach the caller.

Single flight (several workers missing the same key at once) can be built on this
table without changing it: on PostgreSQL, ``pg_advisory_xact_lock`` on the first 8 bytes
of ``cache_key_hash`` serialises the callers of one key, and the second caller finds the
row the first one stored; on both databases a *pending* row (an insert ``ON CONFLICT DO
NOTHING`` with a short ``expires_at`` and status ``pending``) marks a call in flight.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import (
    Engine,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.models import EnrichmentCacheEntry, table_of
from cowrieprocessor.enrichment.cache.base import (
    AGE_BUCKETS,
    Cache,
    CacheEntry,
    CacheStats,
)
from cowrieprocessor.enrichment.cache.reads import DirectReads, add_hits, lock_bulk_writes
from cowrieprocessor.enrichment.cache.rows import entry_row, key_hash, load_payload
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.outcome import Status

logger = logging.getLogger(__name__)

TABLE = table_of(EnrichmentCacheEntry)
DEFAULT_HIT_FLUSH_COUNT = 1000
DEFAULT_HIT_FLUSH_SECONDS = 5.0

# Columns a store writes; hit_count and accessed_at survive a replacement of the entry.
_STORED_COLUMNS = (
    "cache_key",
    "payload",
    "response_status",
    "created_at",
    "expires_at",
    "api_response_code",
    "api_latency_ms",
    "error_message",
    "migration_id",
)


def insert_statement(engine: Engine) -> Any:
    """A dialect ``INSERT`` of :func:`~.rows.entry_row` dicts (``payload_json`` as text)."""
    postgres = is_postgres(engine)
    payload_text = bindparam("payload_json", type_=Text())
    payload = cast(payload_text, JSONB) if postgres else payload_text
    dialect_insert = postgresql.insert if postgres else sqlite.insert
    return dialect_insert(TABLE).values(
        service=bindparam("service"),
        cache_key=bindparam("cache_key"),
        cache_key_hash=bindparam("cache_key_hash"),
        payload=payload,
        response_status=bindparam("response_status"),
        created_at=bindparam("created_at", type_=TABLE.c.created_at.type),
        expires_at=bindparam("expires_at", type_=TABLE.c.expires_at.type),
        api_response_code=bindparam("api_response_code", type_=Integer()),
        api_latency_ms=bindparam("api_latency_ms", type_=Integer()),
        error_message=bindparam("error_message", type_=Text()),
        hit_count=0,
        migration_id=bindparam("migration_id", type_=String()),
    )


def payload_text(engine: Engine) -> ColumnElement[str]:
    """The payload column read as JSON text (no driver-side parsing)."""
    if is_postgres(engine):
        return cast(TABLE.c.payload, Text)
    return type_coerce(TABLE.c.payload, Text)


class EnrichmentDatabaseCache(Cache):
    """The database backend, with the same interface as the disk cache.

    The cache does not own ``engine``: :meth:`close` flushes the hit counters and leaves
    the engine open for its owner to dispose of.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: from stores, cleanup, stats and invalidation when
            the database cannot be reached; reads raise too, and the hybrid cache then
            falls back to disk.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        policy: TTLPolicy | None = None,
        clock: Clock = system_clock,
        hit_flush_count: int = DEFAULT_HIT_FLUSH_COUNT,
        hit_flush_seconds: float = DEFAULT_HIT_FLUSH_SECONDS,
    ) -> None:
        super().__init__(policy=policy, clock=clock)
        self.engine = engine
        self.postgres = is_postgres(engine)
        self.hit_flush_count = hit_flush_count
        self.hit_flush_seconds = hit_flush_seconds
        self._hits: dict[tuple[str, str], tuple[int, datetime]] = {}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()

        self._reads = DirectReads(engine)
        self._insert = insert_statement(engine)
        excluded = self._insert.excluded
        self._upsert = self._insert.on_conflict_do_update(
            index_elements=[TABLE.c.service, TABLE.c.cache_key_hash],
            set_={name: excluded[name] for name in _STORED_COLUMNS},
        )
        self._copy = self._insert.on_conflict_do_update(
            index_elements=[TABLE.c.service, TABLE.c.cache_key_hash],
            set_={name: excluded[name] for name in _STORED_COLUMNS},
            where=TABLE.c.created_at < excluded.created_at,
        ).returning(TABLE.c.id)

    # -- reading ---------------------------------------------------------------------------

    def _get(self, service: str, key: str, now: datetime) -> CacheEntry | None:
        digest = key_hash(key)
        raws = self._reads.one(service, digest, now)
        entry = self._decode(raws[0], service, key) if raws else None
        if entry is not None:
            self._count_hits([(service, digest)], now)
        return entry

    def _get_many(self, service: str, keys: Iterable[str], now: datetime) -> dict[str, CacheEntry]:
        wanted = {key_hash(key): key for key in keys}
        if not wanted:
            return {}
        found: dict[str, CacheEntry] = {}
        digests: list[tuple[str, str]] = []
        for digest, raw in self._reads.many(service, list(wanted), now):
            key = wanted.get(digest)
            if key is None:
                continue
            # The row's payload must hold the key asked for, as in _get.
            entry = self._decode(raw, service, key)
            if entry is not None:
                found[key] = entry
                digests.append((service, digest))
        self._count_hits(digests, now)
        return found

    def _decode(self, raw: str, service: str, key: str | None) -> CacheEntry | None:
        try:
            entry = load_payload(raw)
        except ValueError as exc:
            logger.warning(
                "database cache: unreadable %s entry (%s); treating it as a miss", service, exc
            )
            return None
        if entry.service != service or (key is not None and entry.key != key):
            logger.warning(
                "database cache: %s row holds another key; treating it as a miss", service
            )
            return None
        return entry

    # -- hit counters ----------------------------------------------------------------------

    def _count_hits(self, found: Sequence[tuple[str, str]], now: datetime) -> None:
        if not found:
            return
        with self._lock:
            for name in found:
                hits, _ = self._hits.get(name, (0, now))
                self._hits[name] = (hits + 1, now)
            self._buffered += len(found)
            due = (
                self._buffered >= self.hit_flush_count
                or time.monotonic() - self._last_flush >= self.hit_flush_seconds
            )
        if due:
            self.flush_hits()

    def flush_hits(self) -> int:
        """Write the buffered hit counts in one transaction; return how many keys it covers.

        ``accessed_at`` becomes the latest read of the keys' group (same service and hit
        count), at most one flush interval later than a key's own last read.

        A failure (database down, lock timeout) is logged and the counts are dropped:
        they are statistics, and retrying them would turn a read path into a write path.
        """
        with self._lock:
            pending, self._hits = self._hits, {}
            self._buffered = 0
            self._last_flush = time.monotonic()
        if not pending:
            return 0
        groups: dict[tuple[str, int], tuple[list[str], datetime]] = {}
        for (service, digest), (hits, at) in pending.items():
            hashes, latest = groups.get((service, hits), ([], at))
            hashes.append(digest)
            groups[(service, hits)] = (hashes, max(latest, at))
        try:
            add_hits(
                self.engine,
                [
                    (service, hits, latest, sorted(hashes))
                    for (service, hits), (hashes, latest) in sorted(groups.items())
                ],
            )
        except (SQLAlchemyError, psycopg.Error, sqlite3.Error) as exc:
            logger.warning("database cache: dropped %d hit counts: %s", len(pending), exc)
            return 0
        return len(pending)

    # -- writing ---------------------------------------------------------------------------

    def _store(self, entry: CacheEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._upsert, [entry_row(entry, jsonb=self.postgres)])
        logger.debug("database cache: stored %s entry", entry.service)

    def store_copy(self, entry: CacheEntry) -> bool:
        """Store ``entry`` unless the table holds one for its key stored at or after it.

        Used to copy an entry from another tier with its original times: a concurrent
        worker's fresher store is never replaced by the older copy. Returns whether the
        row was written.
        """
        entry = self.make_entry(
            entry.outcome, stored_at=entry.stored_at, expires_at=entry.expires_at
        )
        with self.engine.begin() as conn:
            written = conn.execute(self._copy, entry_row(entry, jsonb=self.postgres)).first()
        return written is not None

    # -- maintenance -----------------------------------------------------------------------

    def _cleanup(self, now: datetime, batch_size: int) -> int:
        removed = delete_in_batches(self.engine, TABLE.c.expires_at <= now, batch_size)
        logger.info("database cache cleanup: removed %d expired entries", removed)
        return removed

    def _invalidate(
        self,
        service: str,
        key: str | None,
        stored_before: datetime | None,
        status: Status | None,
    ) -> int:
        conditions: list[ColumnElement[bool]] = [TABLE.c.service == service]
        if key is not None:
            conditions.append(TABLE.c.cache_key_hash == key_hash(key))
        if stored_before is not None:
            conditions.append(TABLE.c.created_at < stored_before)
        if status is not None:
            conditions.append(TABLE.c.response_status == str(status))
        removed = delete_in_batches(self.engine, and_(*conditions), 1000)
        logger.info("database cache: invalidated %d %s entries", removed, service)
        return removed

    def _stats(self, now: datetime) -> CacheStats:
        stored = TABLE.c.created_at
        bucket = case(
            (stored > now - timedelta(days=1), 0),
            (stored > now - timedelta(days=7), 1),
            (stored > now - timedelta(days=30), 2),
            else_=3,
        )
        expired = case((TABLE.c.expires_at <= now, 1), else_=0)
        size = (
            func.pg_column_size(TABLE.c.payload)
            if self.postgres
            else func.length(type_coerce(TABLE.c.payload, Text))
        )
        query = select(
            TABLE.c.service,
            TABLE.c.response_status,
            bucket.label("bucket"),
            func.count(),
            func.coalesce(func.sum(expired), 0),
            func.coalesce(func.sum(size), 0),
        ).group_by(TABLE.c.service, TABLE.c.response_status, bucket)
        stats = CacheStats(computed_at=now)
        with self.engine.connect() as conn:
            for service, status, bucket_no, count, n_expired, n_bytes in conn.execute(query):
                item = stats.for_service(service)
                item.entries += count
                item.expired += int(n_expired)
                item.bytes += int(n_bytes)
                item.by_status[status] = item.by_status.get(status, 0) + count
                item.age_buckets[AGE_BUCKETS[bucket_no]] += count
        return stats

    def hit_counts(self) -> dict[str, dict[str, int]]:
        """Per service: ``hits`` (sum of ``hit_count``) and ``entries_hit`` (rows read at
        least once), after flushing this process's buffered counts."""
        self.flush_hits()
        query = select(
            TABLE.c.service,
            func.coalesce(func.sum(TABLE.c.hit_count), 0),
            func.count().filter(TABLE.c.hit_count > 0),
        ).group_by(TABLE.c.service)
        with self.engine.connect() as conn:
            return {
                service: {"hits": int(hits), "entries_hit": int(entries)}
                for service, hits, entries in conn.execute(query)
            }

    def close(self) -> None:
        """Flush the buffered hit counts and return the read connections; the engine stays
        open."""
        self.flush_hits()
        self._reads.close()


__all__ = [
    "TABLE",
    "EnrichmentDatabaseCache",
    "insert_statement",
    "payload_text",
]


def delete_in_batches(engine: Engine, condition: ColumnElement[bool], batch_size: int) -> int:
    """Delete the cache rows matching ``condition``, ``batch_size`` per short transaction,
    until none is left; return how many went.

    Concurrency: each batch holds the many-row write lock (:func:`.reads.lock_bulk_writes`),
    so it waits for a hit flush in progress instead of deadlocking with it; stores and
    reads go on meanwhile. Failure: batches already committed stay deleted, and a rerun
    removes the rest.
    """
    removed = 0
    ids = select(TABLE.c.id).where(condition).limit(batch_size).scalar_subquery()
    statement = delete(TABLE).where(TABLE.c.id.in_(ids))
    while True:
        with engine.begin() as conn:
            lock_bulk_writes(conn)
            count = conn.execute(statement).rowcount
        removed += count
        if count < batch_size:
            return removed
