"""Migration speed: entries per second from a generated disk cache into the database.

Generates ``--entries`` files in the disk layout (fresh DShield/VirusTotal/SPUR entries
with realistic small payloads) under a temporary directory, then runs the migration into
a fresh SQLite file and a fresh PostgreSQL database and prints one JSON line per target.

    uv run python benchmarks/migrate_cache.py --entries 1000000
    uv run python benchmarks/migrate_cache.py --entries 100000 --targets sqlite

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.enrichment.cache import CacheEntry, encode_record, entry_to_record
from cowrieprocessor.enrichment.cache.disk import entry_location
from cowrieprocessor.enrichment.migrate import migrate_disk_cache
from cowrieprocessor.enrichment.outcome import Outcome, Status

PG_ADMIN = os.environ.get("COWRIEPROC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def generate(root: Path, count: int) -> float:
    """Write ``count`` entry files; return the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    made: set[Path] = set()
    for n in range(count):
        service = ("dshield", "virustotal", "spur")[n % 3]
        if service == "virustotal":
            key = f"{n:064x}"
            data = {"malicious": n % 7, "names": [f"file{n}.bin"], "type": "ELF"}
        else:
            key = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            data = {"asname": f"AS-{n % 977}", "country": "NL", "count": n % 50}
        stored = now - timedelta(hours=n % 48)
        outcome = Outcome(service, key, Status.SUCCESS, data=data, checked_at=stored)
        entry = CacheEntry(service, key, outcome, stored, stored + timedelta(days=7))
        shard, name = entry_location(service, key)
        directory = root / service / shard
        if directory not in made:
            directory.mkdir(parents=True, exist_ok=True)
            made.add(directory)
        path = directory / name
        path.write_bytes(encode_record(entry_to_record(entry)))
        os.utime(path, (stored.timestamp(), stored.timestamp()))
    return time.perf_counter() - started


def run(
    target: str, url: str, root: Path, status_dir: Path, batch: int, workers: int
) -> dict[str, object]:
    engine = create_engine(url)
    schema.upgrade(engine)
    started = time.perf_counter()
    summary = migrate_disk_cache(
        root, engine, status_dir=status_dir, batch_size=batch, workers=workers
    )
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "target": target,
        "entries": summary.migrated,
        "files": summary.files_seen,
        "seconds": round(seconds, 1),
        "entries_per_second": round(summary.migrated / seconds),
        "batch_size": batch,
        "workers": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--targets", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="Keep the generated files.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cowrie-migrate-bench-"))
    root = work / "disk"
    try:
        seconds = generate(root, args.entries)
        print(json.dumps({"generated": args.entries, "seconds": round(seconds, 1)}), flush=True)
        for target in args.targets.split(","):
            status_dir = work / f"status-{target}"
            if target == "sqlite":
                url = f"sqlite:///{work}/bench.sqlite"
                result = run(target, url, root, status_dir, args.batch_size, args.workers)
                print(json.dumps(result), flush=True)
                continue
            name = f"cp_bench_{uuid.uuid4().hex[:8]}"
            admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                url = admin.rsplit("/", 1)[0] + f"/{name}"
                print(
                    json.dumps(run(target, url, root, status_dir, args.batch_size, args.workers)),
                    flush=True,
                )
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
