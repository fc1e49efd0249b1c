"""Fixtures for the cache tests, and the registry of backends the shared suite runs on.

Every test that takes ``make_cache`` (or ``cache``) runs once per entry of
:data:`BACKENDS`. To put a new backend through the suite, write a factory and add it
there; a factory may pull other fixtures (``sqlite_url``, ``pg_url``, ``tmp_path``) with
``request.getfixturevalue``. Backends that need PostgreSQL go in :data:`POSTGRES_BACKENDS`
so they carry the ``postgres`` mark. The database backends get a fresh database at the
newest schema from :func:`database_engine`; its engine is disposed after the test.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.enrichment.cache import (
    Cache,
    EnrichmentCacheManager,
    ManualClock,
    MemoryCache,
    TTLPolicy,
)
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.hybrid import HybridCacheManager

#: The instant every cache test starts at.
T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)

BackendFactory = Callable[[pytest.FixtureRequest, ManualClock, TTLPolicy], Cache]


def _memory(request: pytest.FixtureRequest, clock: ManualClock, policy: TTLPolicy) -> Cache:
    return MemoryCache(clock=clock, policy=policy)


def _disk(request: pytest.FixtureRequest, clock: ManualClock, policy: TTLPolicy) -> Cache:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return EnrichmentCacheManager(tmp_path / "cache", clock=clock, policy=policy)


def database_engine(request: pytest.FixtureRequest, url_fixture: str) -> Engine:
    """An engine on a fresh database (``sqlite_url`` or ``pg_url``) at the newest schema."""
    engine = create_engine(request.getfixturevalue(url_fixture))
    schema.upgrade(engine)
    request.addfinalizer(engine.dispose)
    return engine


def _sqlite(request: pytest.FixtureRequest, clock: ManualClock, policy: TTLPolicy) -> Cache:
    engine = database_engine(request, "sqlite_url")
    return EnrichmentDatabaseCache(engine, clock=clock, policy=policy)


def _postgresql(request: pytest.FixtureRequest, clock: ManualClock, policy: TTLPolicy) -> Cache:
    engine = database_engine(request, "pg_url")
    return EnrichmentDatabaseCache(engine, clock=clock, policy=policy)


def _hybrid(request: pytest.FixtureRequest, clock: ManualClock, policy: TTLPolicy) -> Cache:
    """All three tiers: memory in front of SQLite, the disk behind."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    engine = database_engine(request, "sqlite_url")
    return HybridCacheManager(
        memory=MemoryCache(clock=clock, policy=policy),
        database=EnrichmentDatabaseCache(engine, clock=clock, policy=policy),
        disk=EnrichmentCacheManager(tmp_path / "cache", clock=clock, policy=policy),
        clock=clock,
        policy=policy,
    )


def _hybrid_pg(request: pytest.FixtureRequest, clock: ManualClock, policy: TTLPolicy) -> Cache:
    """The database-only phase on PostgreSQL with a memory tier (no disk)."""
    engine = database_engine(request, "pg_url")
    return HybridCacheManager(
        memory=MemoryCache(clock=clock, policy=policy),
        database=EnrichmentDatabaseCache(engine, clock=clock, policy=policy),
        clock=clock,
        policy=policy,
    )


BACKENDS: dict[str, BackendFactory] = {
    "memory": _memory,
    "disk": _disk,
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "hybrid": _hybrid,
    "hybrid_pg": _hybrid_pg,
}
POSTGRES_BACKENDS: frozenset[str] = frozenset({"postgresql", "hybrid_pg"})

#: Backends whose ``stats().bytes`` is the length of each entry's encoded record. Others
#: (a database measures its own storage) must only report a positive size.
RECORD_SIZED_BACKENDS = frozenset({"memory", "disk"})


def _backend_params() -> list[object]:
    return [
        pytest.param(name, id=name, marks=[pytest.mark.postgres])
        if name in POSTGRES_BACKENDS
        else pytest.param(name, id=name)
        for name in BACKENDS
    ]


@pytest.fixture
def t0() -> datetime:
    """The instant every cache test starts at (the clock's initial time)."""
    return T0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=_backend_params())
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def reports_record_bytes(backend_name: str) -> bool:
    """Whether the current backend's ``stats().bytes`` is exact record lengths."""
    return backend_name in RECORD_SIZED_BACKENDS


@pytest.fixture
def make_cache(
    request: pytest.FixtureRequest, backend_name: str, clock: ManualClock
) -> Callable[..., Cache]:
    """Build a cache of the current backend on ``clock``; closed after the test."""

    def make(policy: TTLPolicy | None = None) -> Cache:
        cache = BACKENDS[backend_name](request, clock, policy or TTLPolicy())
        request.addfinalizer(cache.close)
        return cache

    return make


@pytest.fixture
def cache(make_cache: Callable[..., Cache]) -> Cache:
    return make_cache()
