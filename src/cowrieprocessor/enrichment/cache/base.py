"""The cache interface every backend implements, its entry, statistics and record format.

A cache maps ``(service, key)`` to a :class:`CacheEntry`: a definitive
:class:`~cowrieprocessor.enrichment.outcome.Outcome` (``success`` or ``not_found``) with
the time it was stored and the time it expires. The interface speaks of services, keys,
outcomes and expiry, never of files or SQL, so the enrichment code cannot tell the memory,
disk, database and hybrid backends apart.

Rules every backend shares (enforced here, in :class:`Cache`, and proven by the one test
suite in ``tests/cache/``):

- Only definitive outcomes are cached. :meth:`Cache.store_cached` raises ``ValueError``
  for ``error`` and ``skipped``: such a call is a bug in the caller, and refusing loudly
  keeps an outage from ever being served as data.
- An entry is expired when ``now >= expires_at`` (see :mod:`.ttl`); reads treat it as a
  miss, but it stays stored (and counted by :meth:`Cache.stats`) until
  :meth:`Cache.cleanup_expired` removes it.
- Keys are arbitrary strings, including empty ones, NUL, lone surrogates and very long
  text; they round-trip exactly. Service names match ``[a-z][a-z0-9_]{0,31}``.
- A store replaces any entry of the same service and key (last writer wins).
- Entries returned are values: changing their ``data`` does not change the cache.

The *record* (:func:`entry_to_record`) is the JSON form of an entry, versioned by
``"format"``; it lives in :mod:`.record` and is re-exported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from cowrieprocessor.enrichment.cache.record import (
    RECORD_FORMAT,
    CacheEntry,
    check_service,
    decode_record,
    encode_record,
    entry_from_record,
    entry_to_record,
    format_time,
    parse_time,
)
from cowrieprocessor.enrichment.cache.ttl import (
    Clock,
    TTLPolicy,
    require_aware,
    system_clock,
)
from cowrieprocessor.enrichment.outcome import Outcome, Status

DEFAULT_CLEANUP_BATCH = 1000

#: Age buckets of :class:`ServiceCacheStats`, by time since ``stored_at``: under one day,
#: one to seven days, seven to thirty days, thirty days and more.
AGE_BUCKETS = ("<1d", "1-7d", "7-30d", ">30d")
_BUCKET_LIMITS = (
    (timedelta(days=1), "<1d"),
    (timedelta(days=7), "1-7d"),
    (timedelta(days=30), "7-30d"),
)


def age_bucket(age: timedelta) -> str:
    """The :data:`AGE_BUCKETS` name for an entry this old (a future entry counts as new)."""
    for limit, name in _BUCKET_LIMITS:
        if age < limit:
            return name
    return AGE_BUCKETS[-1]


@dataclass
class ServiceCacheStats:
    """Counts for one service. ``entries`` includes the ``expired`` ones.

    ``bytes`` is the storage the backend uses for the entries: file sizes on disk, the
    encoded record length in memory. ``corrupt`` counts stored items that could not be
    read (files only); they are not in ``entries``.
    """

    service: str
    entries: int = 0
    bytes: int = 0
    expired: int = 0
    corrupt: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    age_buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGE_BUCKETS, 0))

    def add(self, entry: CacheEntry, size: int, now: datetime) -> None:
        """Count one entry of ``size`` bytes as seen at ``now``."""
        self.entries += 1
        self.bytes += size
        if entry.is_expired(now):
            self.expired += 1
        status = str(entry.outcome.status)
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.age_buckets[age_bucket(now - entry.stored_at)] += 1

    def merge(self, other: ServiceCacheStats) -> None:
        self.entries += other.entries
        self.bytes += other.bytes
        self.expired += other.expired
        self.corrupt += other.corrupt
        for status, count in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + count
        for bucket, count in other.age_buckets.items():
            self.age_buckets[bucket] += count

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "entries": self.entries,
            "bytes": self.bytes,
            "expired": self.expired,
            "corrupt": self.corrupt,
            "by_status": dict(sorted(self.by_status.items())),
            "age_buckets": dict(self.age_buckets),
        }


@dataclass
class CacheStats:
    """Statistics of a whole cache at ``computed_at``, one item per service with entries."""

    computed_at: datetime
    services: dict[str, ServiceCacheStats] = field(default_factory=dict)

    def for_service(self, service: str) -> ServiceCacheStats:
        """The stats of ``service``, created empty when it has none yet."""
        if service not in self.services:
            self.services[service] = ServiceCacheStats(service)
        return self.services[service]

    @property
    def total(self) -> ServiceCacheStats:
        """All services summed (``service`` is ``"*"``)."""
        total = ServiceCacheStats("*")
        for stats in self.services.values():
            total.merge(stats)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "computed_at": format_time(self.computed_at),
            "services": {name: s.to_dict() for name, s in sorted(self.services.items())},
            "total": self.total.to_dict(),
        }


# -- the interface ----------------------------------------------------------------------


class Cache(ABC):
    """A store of definitive outcomes by service and key, with expiry.

    Subclasses implement the ``_get``, ``_store``, ``_cleanup``, ``_stats`` and
    ``_invalidate`` steps and may override ``_get_many`` to answer a batch in one round
    trip. The public methods validate arguments, read the clock once per call and apply
    the shared rules, so every backend behaves the same. Backends say in their docstring
    how they behave under concurrency.

    Failure: a stored entry that cannot be read back (damaged, wrong shape) is logged as
    a warning and answered as a miss; a store that cannot be written or reached (disk
    full, database down) raises from the call, and the caller (the hybrid cache, the
    enrichment service) decides whether to degrade.

    Args:
        policy: the TTLs; defaults to :class:`TTLPolicy` with the standard values.
        clock: returns the current aware time; tests pass a fixed clock.
    """

    def __init__(self, *, policy: TTLPolicy | None = None, clock: Clock = system_clock) -> None:
        self.policy = policy if policy is not None else TTLPolicy()
        self.clock = clock

    def now(self) -> datetime:
        """The current time from the injected clock, in UTC."""
        return require_aware(self.clock(), "the clock's time")

    def get_cached(self, service: str, key: str) -> CacheEntry | None:
        """The fresh entry for ``key``, or None when it is missing or expired."""
        check_service(service)
        _check_key(key)
        return self._get(service, key, self.now())

    def get_many(self, service: str, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The fresh entries among ``keys``, by key; misses are simply absent."""
        check_service(service)
        if isinstance(keys, str):
            raise TypeError("get_many takes a sequence of keys, not one string")
        unique = list(dict.fromkeys(keys))
        for key in unique:
            _check_key(key)
        return self._get_many(service, unique, self.now())

    def store_cached(
        self,
        outcome: Outcome,
        *,
        stored_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> CacheEntry:
        """Store ``outcome`` (replacing any entry for its key) and return the entry.

        ``stored_at`` defaults to now, ``expires_at`` to ``stored_at`` plus the policy's
        TTL for the outcome's service and status. Pass both to copy an entry between
        backends without restarting its expiry.

        Raises:
            ValueError: ``outcome`` is an ``error`` or ``skipped`` outcome, a time is
                naive, ``expires_at`` is not after ``stored_at``, or the service name is
                invalid. Nothing is stored then.
        """
        entry = self.make_entry(outcome, stored_at=stored_at, expires_at=expires_at)
        self._store(entry)
        return entry

    def make_entry(
        self,
        outcome: Outcome,
        *,
        stored_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> CacheEntry:
        """The entry :meth:`store_cached` would store, validated, without storing it."""
        if not outcome.definitive:
            raise ValueError(
                f"refusing to cache a {outcome.status} outcome ({outcome.service} "
                f"{outcome.key!r:.80}): only success and not_found are cached"
            )
        check_service(outcome.service)
        _check_key(outcome.key)
        stored = require_aware(stored_at, "stored_at") if stored_at is not None else self.now()
        if expires_at is None:
            expires = self.policy.expires_at(outcome.service, outcome.status, stored)
        else:
            expires = require_aware(expires_at, "expires_at")
        if expires <= stored:
            raise ValueError(
                f"expires_at {format_time(expires)} must be after stored_at {format_time(stored)}"
            )
        return CacheEntry(outcome.service, outcome.key, outcome, stored, expires)

    def cleanup_expired(self, *, batch_size: int = DEFAULT_CLEANUP_BATCH) -> int:
        """Remove every entry expired now, ``batch_size`` at a time; return how many.

        Batches bound how long one step holds anything (a transaction, a lock); the call
        repeats them until no expired entry is left.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return self._cleanup(self.now(), batch_size)

    def stats(self) -> CacheStats:
        """Counts per service: entries, bytes, expired, by status and age bucket."""
        return self._stats(self.now())

    def invalidate(
        self,
        service: str,
        *,
        key: str | None = None,
        stored_before: datetime | None = None,
        status: Status | str | None = None,
    ) -> int:
        """Remove the entries of ``service`` that match every filter given; return how many.

        With no filter, every entry of the service goes, fresh or expired. ``status`` may
        name any outcome status; since only definitive outcomes are cached, ``error``
        and ``skipped`` match nothing.
        """
        check_service(service)
        if key is not None:
            _check_key(key)
        before = (
            require_aware(stored_before, "stored_before") if stored_before is not None else None
        )
        return self._invalidate(service, key, before, Status(status) if status else None)

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (connections, pools). The default has none."""

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Steps for backends. ``now`` is the time of the public call.

    @abstractmethod
    def _get(self, service: str, key: str, now: datetime) -> CacheEntry | None: ...

    def _get_many(self, service: str, keys: Iterable[str], now: datetime) -> dict[str, CacheEntry]:
        found: dict[str, CacheEntry] = {}
        for key in keys:
            entry = self._get(service, key, now)
            if entry is not None:
                found[key] = entry
        return found

    @abstractmethod
    def _store(self, entry: CacheEntry) -> None: ...

    @abstractmethod
    def _cleanup(self, now: datetime, batch_size: int) -> int: ...

    @abstractmethod
    def _stats(self, now: datetime) -> CacheStats: ...

    @abstractmethod
    def _invalidate(
        self,
        service: str,
        key: str | None,
        stored_before: datetime | None,
        status: Status | None,
    ) -> int: ...


def matches(entry: CacheEntry, stored_before: datetime | None, status: Status | None) -> bool:
    """Whether ``entry`` passes the :meth:`Cache.invalidate` filters other than the key."""
    if stored_before is not None and entry.stored_at >= stored_before:
        return False
    return status is None or entry.outcome.status == status


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"a cache key must be a string, got {type(key).__name__}")


__all__ = [
    "AGE_BUCKETS",
    "RECORD_FORMAT",
    "Cache",
    "CacheEntry",
    "CacheStats",
    "ServiceCacheStats",
    "age_bucket",
    "check_service",
    "decode_record",
    "encode_record",
    "entry_from_record",
    "entry_to_record",
    "format_time",
    "matches",
    "parse_time",
]
