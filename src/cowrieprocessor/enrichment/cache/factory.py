"""Build the cache a command uses from the settings.

The TTLs come from the service settings (``<service>_ttl_days`` and
``<service>_not_found_ttl_days``), the single source for every backend. The tiers follow
the three rollout phases (docs/runbook-cache-migration.md):

=====================================  ===============================================
settings                               cache
=====================================  ===============================================
(defaults)                             disk only, as before the database cache
``use_database_cache``                 hybrid: database first, disk fallback, both written
``use_database_cache`` and
``disable_disk_cache``                 database only
``memory_cache_size`` > 0              an in-memory LRU of that many entries in front
=====================================  ===============================================
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from cowrieprocessor.config import Settings
from cowrieprocessor.enrichment.cache.base import Cache
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.disk import EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.hybrid import HybridCacheManager
from cowrieprocessor.enrichment.cache.memory import MemoryCache
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.settings import SERVICE_NAMES

logger = logging.getLogger(__name__)


def ttl_policy(settings: Settings) -> TTLPolicy:
    """The TTL policy the settings describe, for every service."""
    services = [settings.service_settings(name) for name in SERVICE_NAMES]
    return TTLPolicy(
        ttls={s.name: s.ttl for s in services},
        not_found_ttls={s.name: s.not_found_ttl for s in services},
    )


def build_cache(
    settings: Settings, engine: Engine | None = None, clock: Clock = system_clock
) -> Cache:
    """The cache for refresh and the cache commands, with the tiers the settings ask for.

    ``engine`` is the database the command works on; the database tier uses it (and does
    not dispose of it). A single tier is returned bare; several are combined in a
    :class:`HybridCacheManager`, which also counts hits per tier.

    Raises:
        ValueError: the database cache is enabled without an ``engine``, or the disk cache
            is disabled while the database cache is not enabled (no cache would remain).
    """
    policy = ttl_policy(settings)
    database: EnrichmentDatabaseCache | None = None
    disk: EnrichmentCacheManager | None = None
    if settings.use_database_cache:
        if engine is None:
            raise ValueError("use_database_cache is set but the command has no database")
        database = EnrichmentDatabaseCache(engine, policy=policy, clock=clock)
    elif settings.disable_disk_cache:
        raise ValueError(
            "disable_disk_cache needs use_database_cache: without either there is no cache"
        )
    if not settings.disable_disk_cache:
        disk = EnrichmentCacheManager(settings.cache_dir, policy=policy, clock=clock)
    memory = (
        MemoryCache(max_entries=settings.memory_cache_size, policy=policy, clock=clock)
        if settings.memory_cache_size > 0
        else None
    )

    tiers = [t for t in (memory, database, disk) if t is not None]
    logger.debug("cache tiers: %s", ", ".join(type(t).__name__ for t in tiers))
    if len(tiers) == 1:
        return tiers[0]
    return HybridCacheManager(
        database=database, disk=disk, memory=memory, policy=policy, clock=clock
    )
