"""What only the memory backend has: its LRU bound."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cowrieprocessor.enrichment.cache import ManualClock, MemoryCache
from cowrieprocessor.enrichment.outcome import Outcome, Status


def success(key: str) -> Outcome:
    return Outcome("dshield", key, Status.SUCCESS, data={"k": key})


def test_least_recently_used_entry_is_evicted(clock: ManualClock) -> None:
    cache = MemoryCache(max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        cache.store_cached(success(key))

    assert cache.get_cached("dshield", "a") is not None  # a is now the most recent
    cache.store_cached(success("d"))

    assert len(cache) == 3
    assert cache.evictions == 1
    assert cache.get_cached("dshield", "b") is None
    assert sorted(cache.get_many("dshield", ["a", "b", "c", "d"])) == ["a", "c", "d"]


def test_storing_again_refreshes_recency(clock: ManualClock) -> None:
    cache = MemoryCache(max_entries=2, clock=clock)
    cache.store_cached(success("a"))
    cache.store_cached(success("b"))
    cache.store_cached(success("a"))
    cache.store_cached(success("c"))

    assert sorted(cache.get_many("dshield", ["a", "b", "c"])) == ["a", "c"]
    assert cache.evictions == 1


def test_expired_entries_count_until_cleanup(clock: ManualClock) -> None:
    cache = MemoryCache(max_entries=10, clock=clock)
    cache.store_cached(success("a"))
    clock.advance(timedelta(days=7))

    assert cache.get_cached("dshield", "a") is None
    assert len(cache) == 1
    assert cache.cleanup_expired() == 1
    assert len(cache) == 0


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(max_entries=0)
