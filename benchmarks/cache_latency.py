"""Lookup latency of the disk, SQLite and PostgreSQL caches, and get_many, on the same keys.

Stores ``--keys`` entries (DShield-like payloads) in each backend, warms each once (the
disk's page cache, the database's buffers), then times ``get_cached`` for every key in a
shuffled order and ``get_many`` in batches. Prints one JSON line per measurement.

    uv run python benchmarks/cache_latency.py --keys 20000

The PostgreSQL server is taken from COWRIEPROC_BENCH_PG (an administrative URL, default
postgresql://postgres@127.0.0.1:5432/postgres); a database is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.enrichment.cache import Cache, EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.outcome import Outcome, Status

PG_ADMIN = os.environ.get("COWRIEPROC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def fill(cache: Cache, keys: list[str]) -> None:
    for n, key in enumerate(keys):
        data = {"asname": f"AS-{n % 977}", "ascountry": "NL", "count": n % 50, "attacks": n}
        cache.store_cached(Outcome("dshield", key, Status.SUCCESS, data=data, latency_ms=80))


def lookups(name: str, cache: Cache, keys: list[str]) -> dict[str, object]:
    for key in keys:  # warm-up pass
        cache.get_cached("dshield", key)
    order = keys[:]
    random.shuffle(order)
    times = []
    for key in order:
        started = time.perf_counter_ns()
        entry = cache.get_cached("dshield", key)
        times.append(time.perf_counter_ns() - started)
        assert entry is not None
    times.sort()
    return {
        "backend": name,
        "op": "get_cached",
        "keys": len(keys),
        "p50_us": round(times[len(times) // 2] / 1000, 1),
        "p99_us": round(times[int(len(times) * 0.99)] / 1000, 1),
        "mean_us": round(statistics.fmean(times) / 1000, 1),
    }


def batches(name: str, cache: Cache, keys: list[str], size: int) -> dict[str, object]:
    order = keys[:]
    random.shuffle(order)
    times = []
    started_all = time.perf_counter()
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        started = time.perf_counter_ns()
        found = cache.get_many("dshield", chunk)
        times.append(time.perf_counter_ns() - started)
        assert len(found) == len(chunk)
    total = time.perf_counter() - started_all
    times.sort()
    return {
        "backend": name,
        "op": f"get_many({size})",
        "keys": len(keys),
        "keys_per_second": round(len(keys) / total),
        "p50_ms_per_batch": round(times[len(times) // 2] / 1e6, 2),
        "p99_ms_per_batch": round(times[int(len(times) * 0.99)] / 1e6, 2),
    }


def measure(name: str, make: Callable[[], Cache], keys: list[str], batch: int) -> None:
    cache = make()
    fill(cache, keys)
    print(json.dumps(lookups(name, cache, keys)), flush=True)
    print(json.dumps(batches(name, cache, keys, batch)), flush=True)
    cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    random.seed(7)
    keys = [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(args.keys)]
    work = Path(tempfile.mkdtemp(prefix="cowrie-latency-bench-"))
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engines = []
    try:
        measure("disk", lambda: EnrichmentCacheManager(work / "disk"), keys, args.batch)
        for backend, url in (
            ("sqlite", f"sqlite:///{work}/bench.sqlite"),
            ("postgresql", admin.rsplit("/", 1)[0] + f"/{name}"),
        ):
            engine = create_engine(url)
            schema.upgrade(engine)
            engines.append(engine)
            measure(backend, lambda e=engine: EnrichmentDatabaseCache(e), keys, args.batch)
    finally:
        for engine in engines:
            engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
