"""What the database cache does beyond the shared suite: columns, hit batching, one trip."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from cowrieprocessor.enrichment.cache import ManualClock
from cowrieprocessor.enrichment.cache.database import TABLE, EnrichmentDatabaseCache
from cowrieprocessor.enrichment.outcome import Outcome, Status

from .conftest import T0

DAY = timedelta(days=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement sent: SQLAlchemy's cursor events, and on SQLite the driver's
    own trace (the cache reads below SQLAlchemy there). Listeners, not mocks."""
    seen: list[str] = []

    def record(conn: object, cursor: object, sql: str, *args: object) -> None:
        seen.append(sql)

    def trace(dbapi_connection: Any, record: object) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    event.listen(engine, "before_cursor_execute", record)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", trace)
        engine.dispose()  # connections opened from now on are traced
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _row(engine: Engine, service: str, key: str) -> dict[str, object]:
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    with engine.connect() as conn:
        row = conn.execute(
            select(TABLE).where(TABLE.c.service == service, TABLE.c.cache_key_hash == digest)
        ).one()
    return dict(row._mapping)


def test_columns_repeat_the_outcome(engine: Engine, clock: ManualClock) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=clock)
    long_key = "k\x00" + "y" * 5000
    cache.store_cached(
        Outcome("urlhaus", long_key, Status.SUCCESS, data={"a": 1}, http_status=200, latency_ms=7)
    )
    cache.store_cached(
        Outcome("virustotal", "f" * 64, Status.NOT_FOUND, http_status=404, message="no\x00such")
    )

    long_row = _row(engine, "urlhaus", long_key)
    vt_row = _row(engine, "virustotal", "f" * 64)

    assert long_row["cache_key"] == "k\ue0000" + "y" * 124 + "…"
    assert len(str(long_row["cache_key"])) == 128
    assert long_row["response_status"] == "success"
    assert (long_row["api_response_code"], long_row["api_latency_ms"]) == (200, 7)
    assert (long_row["created_at"], long_row["expires_at"]) == (T0, T0 + 3 * DAY)
    assert (long_row["hit_count"], long_row["accessed_at"], long_row["migration_id"]) == (
        0,
        None,
        None,
    )
    assert vt_row["cache_key"] == "f" * 64
    assert vt_row["response_status"] == "not_found"
    assert vt_row["error_message"] == "no\ue0000such"
    assert vt_row["expires_at"] == T0 + 10 * DAY


def test_hits_are_written_in_batches(engine: Engine, clock: ManualClock) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=clock, hit_flush_count=3, hit_flush_seconds=1e9)
    cache.store_cached(Outcome("dshield", "192.0.2.1", Status.SUCCESS, data={}))
    cache.store_cached(Outcome("dshield", "192.0.2.2", Status.SUCCESS, data={}))

    cache.get_cached("dshield", "192.0.2.1")
    read_at = clock.advance(timedelta(minutes=1))
    cache.get_cached("dshield", "192.0.2.1")
    assert _row(engine, "dshield", "192.0.2.1")["hit_count"] == 0  # still buffered

    cache.get_many("dshield", ["192.0.2.2", "192.0.2.9"])  # third hit: flushed
    first = _row(engine, "dshield", "192.0.2.1")
    assert (first["hit_count"], first["accessed_at"]) == (2, read_at)
    assert _row(engine, "dshield", "192.0.2.2")["hit_count"] == 1

    cache.get_cached("dshield", "192.0.2.2")
    cache.close()
    assert _row(engine, "dshield", "192.0.2.2")["hit_count"] == 2
    assert cache.hit_counts() == {"dshield": {"hits": 4, "entries_hit": 2}}

    # Replacing an entry keeps its counters.
    cache.store_cached(Outcome("dshield", "192.0.2.2", Status.NOT_FOUND))
    assert _row(engine, "dshield", "192.0.2.2")["hit_count"] == 2


def test_concurrent_flushes_of_overlapping_keys_lose_no_hits(engine: Engine) -> None:
    # Four caches read the same keys with different repetitions, so each flush splits
    # them into different (service, hit count) groups and updates them in a different
    # order; all four flush at the same moment, round after round. A deadlock between
    # two flushes would drop one of them (flush_hits returns 0 and logs a warning).
    keys = [f"198.51.100.{n}" for n in range(120)]
    writer = EnrichmentDatabaseCache(engine)
    for key in keys:
        writer.store_cached(Outcome("dshield", key, Status.SUCCESS, data={}))
    writer.close()
    workers, rounds = 4, 6
    caches = [
        EnrichmentDatabaseCache(engine, hit_flush_count=10**9, hit_flush_seconds=1e9)
        for _ in range(workers)
    ]
    barrier = threading.Barrier(workers)
    expected = dict.fromkeys(keys, 0)
    flushed: list[int] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        cache = caches[index]
        for round_ in range(rounds):
            for position, key in enumerate(keys):
                repeats = 1 + (position + index + round_) % 3
                for _ in range(repeats):
                    assert cache.get_cached("dshield", key) is not None
                with lock:
                    expected[key] += repeats
            barrier.wait()
            written = cache.flush_hits()
            with lock:
                flushed.append(written)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))  # re-raises a worker's failure here
    for cache in caches:
        cache.close()

    assert flushed == [len(keys)] * (workers * rounds)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(TABLE.c.cache_key, TABLE.c.hit_count)).all())
    assert stored == expected


def test_flushes_and_batched_deletes_do_not_deadlock(engine: Engine) -> None:
    # Readers flush hit counts (rows visited in hash order) while an operator invalidates
    # the service (rows deleted in batches, visited in id order) and a worker stores the
    # entries again, round after round. Without one lock for many-row writes the two
    # orders deadlock: PostgreSQL fails one side, a flush drops its counts or the
    # invalidation fails half done.
    keys = [f"10.1.0.{n}" for n in range(200)]
    writer = EnrichmentDatabaseCache(engine)

    def store_all() -> None:
        for key in keys:
            writer.store_cached(Outcome("dshield", key, Status.SUCCESS, data={"k": key}))

    store_all()
    readers = [
        EnrichmentDatabaseCache(engine, hit_flush_count=10**9, hit_flush_seconds=1e9)
        for _ in range(3)
    ]
    done = threading.Event()
    dropped: list[int] = []

    def read(index: int) -> int:
        flushes = 0
        while not done.is_set():
            found = readers[index].get_many("dshield", keys[index::2] + keys[::3])
            written = readers[index].flush_hits()
            if found and written != len(found):
                dropped.append(len(found))
            flushes += 1
        return flushes

    removed = 0
    with ThreadPoolExecutor(len(readers)) as pool:
        running = [pool.submit(read, i) for i in range(len(readers))]
        try:
            for _ in range(8):
                removed += writer.invalidate("dshield")
                store_all()
        finally:
            done.set()
        flushes = [future.result() for future in running]
    for cache in (writer, *readers):
        cache.close()

    assert removed == 8 * len(keys)
    assert min(flushes) > 0
    assert dropped == []


def test_get_many_is_one_statement(
    engine: Engine, clock: ManualClock, statements: list[str]
) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=clock, hit_flush_count=10**9)
    keys = [f"198.51.100.{n}" for n in range(200)]
    for key in keys[:150]:
        cache.store_cached(Outcome("spur", key, Status.SUCCESS, data={"k": key}))
    statements.clear()

    found = cache.get_many("spur", keys)

    assert sorted(found) == sorted(keys[:150])
    sent = [s.lstrip().upper() for s in statements]
    if engine.dialect.name == "sqlite":
        # The driver's trace shows every statement: one SELECT, and no BEGIN (no lock).
        assert len([s for s in sent if s.startswith("SELECT")]) == 1
        assert not [s for s in sent if s.startswith(("BEGIN", "UPDATE", "INSERT"))]
    else:
        # PostgreSQL reads run on the cache's own psycopg connection, which SQLAlchemy
        # does not see; nothing at all went through the engine.
        assert sent == []


def test_store_copy_never_replaces_a_newer_entry(engine: Engine, clock: ManualClock) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=clock)
    newer = cache.store_cached(Outcome("hibp", "ABCDE", Status.SUCCESS, data={"v": "new"}))
    older = cache.make_entry(
        Outcome("hibp", "ABCDE", Status.SUCCESS, data={"v": "old"}),
        stored_at=T0 - DAY,
        expires_at=T0 + DAY,
    )

    assert cache.store_copy(older) is False
    assert cache.get_cached("hibp", "ABCDE") == newer

    cache.invalidate("hibp")
    assert cache.store_copy(older) is True
    got = cache.get_cached("hibp", "ABCDE")
    assert got is not None
    assert (got.stored_at, got.expires_at, got.outcome.data) == (T0 - DAY, T0 + DAY, {"v": "old"})


def test_stored_times_are_aware_utc(engine: Engine, clock: ManualClock) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=clock)
    cache.store_cached(Outcome("dshield", "192.0.2.3", Status.SUCCESS, data={}))

    created = _row(engine, "dshield", "192.0.2.3")["created_at"]

    assert isinstance(created, datetime)
    assert created.utcoffset() == timedelta(0)


def test_containment_search_in_the_answers_uses_the_gin_index(
    engine: Engine, clock: ManualClock
) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=clock)
    for n in range(50):
        data = {"asname": f"AS-{n}", "country": "NL" if n % 10 else "DE"}
        cache.store_cached(Outcome("dshield", f"10.0.0.{n}", Status.SUCCESS, data=data))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert "ix_enrichment_cache_answer" not in {
                row[0] for row in conn.exec_driver_sql("SELECT name FROM sqlite_master")
            }
            return
        conn.exec_driver_sql("SET enable_seqscan = off")
        search = (
            "SELECT cache_key FROM enrichment_cache "
            """WHERE payload -> 'outcome' -> 'data' @> '{"country": "DE"}' ORDER BY cache_key"""
        )
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + search))
        keys = [row[0] for row in conn.exec_driver_sql(search)]
    assert "Bitmap Index Scan on ix_enrichment_cache_answer" in plan
    assert keys == [f"10.0.0.{n}" for n in (0, 10, 20, 30, 40)]
