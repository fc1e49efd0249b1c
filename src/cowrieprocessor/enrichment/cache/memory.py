"""An in-memory cache bounded by entry count, least recently used evicted first.

Used as the front tier of the hybrid cache and as the reference backend in tests. It is
per process: nothing is shared between workers and nothing survives a restart.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from typing import Any

from cowrieprocessor.enrichment.cache.base import (
    Cache,
    CacheEntry,
    CacheStats,
    encode_record,
    entry_to_record,
    matches,
)
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.outcome import Status

logger = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 100_000


def _copy_json(value: Any) -> Any:
    # JSON payloads only nest dicts and lists; the scalars are immutable and can be shared.
    # This is several times faster than copy.deepcopy, which tracks identities.
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _detached(entry: CacheEntry) -> CacheEntry:
    """A copy whose payload shares nothing with ``entry``'s, so callers cannot alias it."""
    if entry.outcome.data is None:
        return entry
    outcome = replace(entry.outcome, data=_copy_json(entry.outcome.data))
    return replace(entry, outcome=outcome)


class MemoryCache(Cache):
    """A thread-safe LRU cache of at most ``max_entries`` entries.

    A read (hit or expired) makes an entry the most recently used; a store beyond the bound
    evicts the least recently used entry, expired or not. Payloads are copied on store and
    on read, so the cache behaves like the backends that serialise. One lock guards every
    operation; :meth:`stats` encodes each entry to measure it and holds the lock meanwhile.

    Raises:
        ValueError: ``max_entries`` below 1.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        policy: TTLPolicy | None = None,
        clock: Clock = system_clock,
    ) -> None:
        super().__init__(policy=policy, clock=clock)
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.evictions = 0
        self._entries: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _get(self, service: str, key: str, now: datetime) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get((service, key))
            if entry is None:
                return None
            self._entries.move_to_end((service, key))
        if entry.is_expired(now):
            logger.debug("memory cache: %s entry expired", service)
            return None
        return _detached(entry)

    def _store(self, entry: CacheEntry) -> None:
        stored = _detached(entry)
        with self._lock:
            self._entries[(entry.service, entry.key)] = stored
            self._entries.move_to_end((entry.service, entry.key))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def _cleanup(self, now: datetime, batch_size: int) -> int:
        with self._lock:
            expired = [name for name, e in self._entries.items() if e.is_expired(now)]
        removed = 0
        for start in range(0, len(expired), batch_size):
            # One lock per batch, so readers in other threads are not starved; an entry
            # stored again since the scan is fresh and stays.
            with self._lock:
                for name in expired[start : start + batch_size]:
                    entry = self._entries.get(name)
                    if entry is not None and entry.is_expired(now):
                        del self._entries[name]
                        removed += 1
        if removed:
            logger.info("memory cache: removed %d expired entries", removed)
        return removed

    def _invalidate(
        self,
        service: str,
        key: str | None,
        stored_before: datetime | None,
        status: Status | None,
    ) -> int:
        with self._lock:
            doomed = [
                name
                for name, entry in self._entries.items()
                if name[0] == service
                and (key is None or name[1] == key)
                and matches(entry, stored_before, status)
            ]
            for name in doomed:
                del self._entries[name]
        logger.info("memory cache: invalidated %d %s entries", len(doomed), service)
        return len(doomed)

    def _stats(self, now: datetime) -> CacheStats:
        stats = CacheStats(computed_at=now)
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            size = len(encode_record(entry_to_record(entry)))
            stats.for_service(entry.service).add(entry, size, now)
        return stats
