"""Build the cache a command uses from the settings.

The TTLs come from the service settings (``<service>_ttl_days`` and
``<service>_not_found_ttl_days``), the single source for every backend.
"""

from __future__ import annotations

from sqlalchemy import Engine

from cowrieprocessor.config import Settings
from cowrieprocessor.enrichment.cache.base import Cache
from cowrieprocessor.enrichment.cache.disk import EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.settings import SERVICE_NAMES


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
    """The cache for refresh and the cache commands: the disk cache under ``cache_dir``.

    ``engine`` is the database the command works on, for backends that live there.
    """
    del engine  # the disk cache does not use the database
    return EnrichmentCacheManager(settings.cache_dir, policy=ttl_policy(settings), clock=clock)
