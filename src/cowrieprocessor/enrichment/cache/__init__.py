"""The enrichment cache: one interface, several backends.

Use :class:`Cache` in type hints; pick a backend when wiring things up:
:class:`MemoryCache` (per-process LRU), :class:`EnrichmentCacheManager` (the disk layout
operators have today), :class:`EnrichmentDatabaseCache` (the ``enrichment_cache`` table)
and :class:`HybridCacheManager` (tiers in front of each other); or let
``factory.build_cache`` choose from the settings.
"""

from cowrieprocessor.enrichment.cache.base import (
    AGE_BUCKETS,
    Cache,
    CacheEntry,
    CacheStats,
    ServiceCacheStats,
    decode_record,
    encode_record,
    entry_from_record,
    entry_to_record,
)
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.disk import DiskItem, EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.hybrid import HybridCacheManager
from cowrieprocessor.enrichment.cache.memory import MemoryCache
from cowrieprocessor.enrichment.cache.ttl import (
    DEFAULT_TTLS,
    Clock,
    ManualClock,
    TTLPolicy,
    system_clock,
)

__all__ = [
    "AGE_BUCKETS",
    "DEFAULT_TTLS",
    "Cache",
    "CacheEntry",
    "CacheStats",
    "Clock",
    "DiskItem",
    "EnrichmentCacheManager",
    "EnrichmentDatabaseCache",
    "HybridCacheManager",
    "ManualClock",
    "MemoryCache",
    "ServiceCacheStats",
    "TTLPolicy",
    "decode_record",
    "encode_record",
    "entry_from_record",
    "entry_to_record",
    "system_clock",
]
