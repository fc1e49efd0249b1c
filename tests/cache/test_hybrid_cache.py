"""The hybrid cache's own behaviour: disk fallback and copy, tier counters, degrading."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cowrieprocessor.config import Settings
from cowrieprocessor.enrichment.cache import EnrichmentCacheManager, ManualClock, MemoryCache
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.factory import build_cache
from cowrieprocessor.enrichment.cache.hybrid import HybridCacheManager
from cowrieprocessor.enrichment.outcome import Outcome, Status

from .conftest import T0

DAY = timedelta(days=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def _tiers(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> tuple[EnrichmentDatabaseCache, EnrichmentCacheManager]:
    return EnrichmentDatabaseCache(engine, clock=clock), EnrichmentCacheManager(
        tmp_path / "disk", clock=clock
    )


def test_disk_hit_is_copied_with_its_times_and_counted(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    database, disk = _tiers(engine, tmp_path, clock)
    old = disk.store_cached(
        Outcome("dshield", "192.0.2.7", Status.SUCCESS, data={"asname": "X"}),
        stored_at=T0 - 2 * DAY,
    )
    hybrid = HybridCacheManager(
        database=database, disk=disk, memory=MemoryCache(clock=clock), clock=clock
    )

    first = hybrid.get_cached("dshield", "192.0.2.7")
    second = hybrid.get_cached("dshield", "192.0.2.7")
    missing = hybrid.get_cached("dshield", "192.0.2.8")

    assert first == second == old
    copied = database.get_cached("dshield", "192.0.2.7")
    assert copied == old
    assert (copied.stored_at, copied.expires_at) == (T0 - 2 * DAY, T0 + 5 * DAY)
    assert missing is None
    assert hybrid.tier_counts() == {
        "memory": {"dshield": {"hits": 1, "misses": 2}},
        "database": {"dshield": {"hits": 0, "misses": 2}},
        "disk": {"dshield": {"hits": 1, "misses": 1}},
        "copied_to_database": {"*": {"entries": 1}},
    }


def test_stores_write_through_to_every_tier(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    database, disk = _tiers(engine, tmp_path, clock)
    hybrid = HybridCacheManager(database=database, disk=disk, clock=clock)

    entry = hybrid.store_cached(Outcome("spur", "192.0.2.9", Status.NOT_FOUND))

    assert database.get_cached("spur", "192.0.2.9") == entry
    assert disk.get_cached("spur", "192.0.2.9") == entry
    assert hybrid.invalidate("spur", key="192.0.2.9") == 1
    assert disk.get_cached("spur", "192.0.2.9") is None


def test_an_unreadable_database_falls_back_to_disk(
    engine: Engine, tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    database, disk = _tiers(engine, tmp_path, clock)
    hybrid = HybridCacheManager(database=database, disk=disk, clock=clock)
    hybrid.store_cached(Outcome("hibp", "ABCDE", Status.SUCCESS, data={"count": 3}))
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE enrichment_cache"))

    got = hybrid.get_cached("hibp", "ABCDE")
    stored = hybrid.store_cached(Outcome("hibp", "FFFFF", Status.NOT_FOUND))

    assert got is not None
    assert got.outcome.data == {"count": 3}
    assert disk.get_cached("hibp", "FFFFF") == stored
    assert "database unreadable, asking the disk" in caplog.text
    assert "database store failed, disk only" in caplog.text


def test_database_only_without_disk_raises_database_errors(
    engine: Engine, clock: ManualClock
) -> None:
    hybrid = HybridCacheManager(database=EnrichmentDatabaseCache(engine, clock=clock), clock=clock)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE enrichment_cache"))

    with pytest.raises(Exception, match="enrichment_cache"):
        hybrid.store_cached(Outcome("hibp", "ABCDE", Status.NOT_FOUND))
    with pytest.raises(ValueError, match="needs a database or a disk"):
        HybridCacheManager(clock=clock)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "EnrichmentCacheManager"),
        ({"use_database_cache": True}, "HybridCacheManager:database+disk"),
        ({"use_database_cache": True, "disable_disk_cache": True}, "EnrichmentDatabaseCache"),
        (
            {"use_database_cache": True, "disable_disk_cache": True, "memory_cache_size": 10},
            "HybridCacheManager:memory+database",
        ),
        ({"memory_cache_size": 5}, "HybridCacheManager:memory+disk"),
    ],
)
def test_factory_builds_the_tiers_the_settings_ask_for(
    engine: Engine, tmp_path: Path, options: dict[str, object], expected: str
) -> None:
    settings = Settings(cache_dir=tmp_path / "disk", **options)  # type: ignore[arg-type]

    cache = build_cache(settings, engine)

    name = type(cache).__name__
    if isinstance(cache, HybridCacheManager):
        tiers = [t for t in ("memory", "database", "disk") if getattr(cache, t) is not None]
        name += ":" + "+".join(tiers)
    assert name == expected
    if isinstance(cache, HybridCacheManager) and cache.memory is not None:
        assert cache.memory.max_entries == options["memory_cache_size"]


def test_factory_refuses_impossible_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no database"):
        build_cache(Settings(cache_dir=tmp_path, use_database_cache=True))
    with pytest.raises(ValueError, match="no cache"):
        build_cache(Settings(cache_dir=tmp_path, disable_disk_cache=True))


def test_plain_environment_names_enable_the_database_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USE_DATABASE_CACHE", "true")
    monkeypatch.setenv("DISABLE_DISK_CACHE", "1")
    monkeypatch.setenv("COWRIEPROC_MEMORY_CACHE_SIZE", "500")

    settings = Settings()

    assert (settings.use_database_cache, settings.disable_disk_cache) == (True, True)
    assert settings.memory_cache_size == 500
