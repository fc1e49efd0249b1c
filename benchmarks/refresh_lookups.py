"""Refresh lookups answered by a database cache: one read per key against one per page.

Stores ``--keys`` DShield answers in a fresh SQLite file and a fresh PostgreSQL
database, then asks :class:`EnrichmentService` for every key in pages of ``--page``, as
the refresh job does: once reading the cache key by key, once reading each page's entries
first with one ``get_many`` (``prefetch_sessions``). No request leaves the machine: every
answer is a cache hit (the provider URL points at a closed port, so a miss would fail).

    uv run python benchmarks/refresh_lookups.py --keys 10000

The PostgreSQL server is taken from COWRIEPROC_BENCH_PG (an administrative URL, default
postgresql://postgres@127.0.0.1:5432/postgres); a database is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from cowrieprocessor.config import Settings
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.enrichment.service import EnrichmentService

PG_ADMIN = os.environ.get("COWRIEPROC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def run(name: str, url: str, keys: list[str], page: int, work: Path) -> None:
    engine = create_engine(url)
    schema.upgrade(engine)
    cache = EnrichmentDatabaseCache(engine)
    for ip in keys:
        data = {"ip": ip, "count": 3, "attacks": 5}
        cache.store_cached(Outcome("dshield", ip, Status.SUCCESS, data=data, latency_ms=80))
    settings = Settings(
        dshield_email="bench@example.org",
        dshield_base_url="http://127.0.0.1:9",
        dshield_rate_limit="1000/second",
        cache_dir=work / "cache",
        status_dir=work / "status",
    )
    limiters = LimiterRegistry()
    try:
        for mode in ("per key", "per page", "per key", "per page"):
            client = ServiceClient.from_settings("dshield", settings, limiters=limiters)
            service = EnrichmentService({"dshield": client}, cache)
            started = time.perf_counter()
            for first in range(0, len(keys), page):
                batch = keys[first : first + page]
                if mode == "per page":
                    service.prefetch_sessions((ip, ["dshield"]) for ip in batch)
                for ip in batch:
                    if service.lookup("dshield", ip).status != Status.SUCCESS:
                        raise SystemExit(f"{ip}: not answered by the cache")
            seconds = time.perf_counter() - started
            client.close()
            result = {
                "backend": name,
                "cache_reads": mode,
                "keys": len(keys),
                "page": page,
                "lookups_per_second": round(len(keys) / seconds),
            }
            print(json.dumps(result), flush=True)
    finally:
        limiters.close()
        cache.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=500)
    args = parser.parse_args()
    keys = [f"45.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(1, args.keys + 1)]
    work = Path(tempfile.mkdtemp(prefix="cowrie-refresh-bench-"))
    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        run("sqlite", f"sqlite:///{work}/bench.sqlite", keys, args.page, work)
        run("postgresql", admin.rsplit("/", 1)[0] + f"/{name}", keys, args.page, work)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
