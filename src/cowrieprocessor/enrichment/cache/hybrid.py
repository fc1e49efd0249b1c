"""The hybrid cache of the transition: memory, then database, then disk.

Reads ask the tiers in order: the optional in-memory LRU, the database, the disk. A disk
hit is copied into the database with its original ``stored_at`` and ``expires_at`` (so
its expiry does not restart) and into memory. Stores go to every tier present (write
through), so either store alone stays complete during the rollout. Every tier's hits and
misses are counted per service (:meth:`HybridCacheManager.tier_counts`), which the refresh
status and summary show as the cache source of each answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from cowrieprocessor.enrichment.cache.base import Cache, CacheEntry, CacheStats
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.disk import EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.memory import MemoryCache
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.outcome import Status

logger = logging.getLogger(__name__)

TIERS = ("memory", "database", "disk")


class HybridCacheManager(Cache):
    """Tiers behind one :class:`Cache`; at least one of ``database`` and ``disk``.

    The tiers must read the same clock as the hybrid (the factory builds them so).
    Answers of :meth:`stats`, :meth:`cleanup_expired` and :meth:`invalidate` count the
    *primary* tier, the database when present, else the disk; the other tiers are cleaned
    and invalidated too.

    Failure: a database that cannot be read is logged as a warning and the disk answers;
    a store that fails on the database but succeeds on disk is logged as a warning; a
    store that fails on every persistent tier raises the database's error.
    Concurrency: as safe as the tiers (see their docstrings); the counters take a lock.

    Raises:
        ValueError: neither ``database`` nor ``disk`` is given.
    """

    def __init__(
        self,
        *,
        database: EnrichmentDatabaseCache | None = None,
        disk: EnrichmentCacheManager | None = None,
        memory: MemoryCache | None = None,
        policy: TTLPolicy | None = None,
        clock: Clock = system_clock,
    ) -> None:
        super().__init__(policy=policy, clock=clock)
        if database is None and disk is None:
            raise ValueError("a hybrid cache needs a database or a disk tier")
        self.database = database
        self.disk = disk
        self.memory = memory
        primary: Cache | None = database if database is not None else disk
        assert primary is not None
        self.primary: Cache = primary
        self._counts: dict[str, dict[str, dict[str, int]]] = {tier: {} for tier in TIERS}
        self._copied = 0
        self._lock = threading.Lock()

    # -- counters --------------------------------------------------------------------------

    def _count(self, tier: str, service: str, outcome: str, n: int = 1) -> None:
        if n == 0:
            return
        with self._lock:
            counts = self._counts[tier].setdefault(service, {"hits": 0, "misses": 0})
            counts[outcome] += n

    def tier_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Hits and misses per tier and service since creation, plus disk copies.

        Shape: ``{"memory": {"dshield": {"hits": 3, "misses": 1}}, "database": {...},
        "disk": {...}, "copied_to_database": {"*": {"entries": 2}}}``. Tiers that are not
        configured have no services.
        """
        with self._lock:
            result = {
                tier: {service: dict(c) for service, c in sorted(per.items())}
                for tier, per in self._counts.items()
            }
            result["copied_to_database"] = {"*": {"entries": self._copied}}
        return result

    # -- reading ---------------------------------------------------------------------------

    def _get(self, service: str, key: str, now: datetime) -> CacheEntry | None:
        return self._get_many(service, [key], now).get(key)

    def _get_many(self, service: str, keys: Iterable[str], now: datetime) -> dict[str, CacheEntry]:
        wanted = list(keys)
        found: dict[str, CacheEntry] = {}
        if self.memory is not None and wanted:
            found.update(self.memory.get_many(service, wanted))
            self._count("memory", service, "hits", len(found))
            self._count("memory", service, "misses", len(wanted) - len(found))
            wanted = [k for k in wanted if k not in found]

        if self.database is not None and wanted:
            try:
                hits = self.database.get_many(service, wanted)
            except SQLAlchemyError as exc:
                logger.warning("hybrid cache: database unreadable, asking the disk: %s", exc)
                hits = {}
            self._count("database", service, "hits", len(hits))
            self._count("database", service, "misses", len(wanted) - len(hits))
            self._remember(hits.values())
            found.update(hits)
            wanted = [k for k in wanted if k not in hits]

        if self.disk is not None and wanted:
            hits = self.disk.get_many(service, wanted)
            self._count("disk", service, "hits", len(hits))
            self._count("disk", service, "misses", len(wanted) - len(hits))
            for entry in hits.values():
                self._promote(entry)
            self._remember(hits.values())
            found.update(hits)
        return found

    def _remember(self, entries: Iterable[CacheEntry]) -> None:
        if self.memory is None:
            return
        for entry in entries:
            self.memory.store_cached(
                entry.outcome, stored_at=entry.stored_at, expires_at=entry.expires_at
            )

    def _promote(self, entry: CacheEntry) -> None:
        """Copy a disk hit into the database, keeping its times; a failure only warns."""
        if self.database is None:
            return
        try:
            copied = self.database.store_copy(entry)
        except SQLAlchemyError as exc:
            logger.warning("hybrid cache: could not copy a %s disk hit: %s", entry.service, exc)
            return
        if copied:
            with self._lock:
                self._copied += 1
            logger.debug("hybrid cache: copied a %s disk hit into the database", entry.service)

    # -- writing ---------------------------------------------------------------------------

    def _store(self, entry: CacheEntry) -> None:
        times = {"stored_at": entry.stored_at, "expires_at": entry.expires_at}
        failure: Exception | None = None
        if self.database is not None:
            try:
                self.database.store_cached(entry.outcome, **times)
            except SQLAlchemyError as exc:
                if self.disk is None:
                    raise
                logger.warning("hybrid cache: database store failed, disk only: %s", exc)
                failure = exc
        if self.disk is not None:
            try:
                self.disk.store_cached(entry.outcome, **times)
            except OSError:
                if failure is not None or self.database is None:
                    raise
                logger.warning("hybrid cache: disk store failed; the database holds it")
        if self.memory is not None:
            self.memory.store_cached(entry.outcome, **times)

    # -- maintenance -----------------------------------------------------------------------

    def _others(self) -> list[Cache]:
        return [t for t in (self.memory, self.database, self.disk) if t and t is not self.primary]

    def _cleanup(self, now: datetime, batch_size: int) -> int:
        for tier in self._others():
            tier.cleanup_expired(batch_size=batch_size)
        return self.primary.cleanup_expired(batch_size=batch_size)

    def _invalidate(
        self,
        service: str,
        key: str | None,
        stored_before: datetime | None,
        status: Status | None,
    ) -> int:
        for tier in self._others():
            tier.invalidate(service, key=key, stored_before=stored_before, status=status)
        return self.primary.invalidate(
            service, key=key, stored_before=stored_before, status=status
        )

    def _stats(self, now: datetime) -> CacheStats:
        return self.primary.stats()

    def close(self) -> None:
        for tier in (self.memory, self.database, self.disk):
            if tier is not None:
                tier.close()
