"""The two halves of the migration's pipeline: reading chunks of files, writing batches.

Reading is CPU-bound (parse, check, re-encode) and runs in worker processes, one chunk
of at most :data:`CHUNK_FILES` files of one shard per task. Writing runs in the parent,
in one short transaction per batch, below the ORM: SQLite ``executemany`` and PostgreSQL
``COPY`` into a temporary staging table followed by ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING``. Both count the rows actually inserted, so rows already present (a worker's
or an earlier run's) are counted apart and never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.enrichment.cache.base import check_service
from cowrieprocessor.enrichment.cache.disk import ENTRY_SUFFIX, TEMP_SUFFIX, DiskItem
from cowrieprocessor.enrichment.cache.rows import entry_row
from cowrieprocessor.enrichment.cache.ttl import TTLPolicy
from cowrieprocessor.enrichment.migrate_files import judge

#: Files per reading task; a shard's progress is recorded at chunk boundaries.
CHUNK_FILES = 1000
_NUL_MARK = "\ue0000"  # how the text rule stores NUL, seen in the payload text

_COLUMNS = (
    "service",
    "cache_key",
    "cache_key_hash",
    "payload_json",
    "response_status",
    "created_at",
    "expires_at",
    "api_response_code",
    "api_latency_ms",
    "error_message",
    "migration_id",
)


@dataclass(frozen=True)
class Chunk:
    """Files ``names`` (sorted) of the shard directory ``directory`` of ``service``."""

    service: str
    directory: Path
    names: tuple[str, ...]

    @property
    def shard(self) -> str:
        return f"{self.service}/{self.directory.name}"


@dataclass
class ChunkResult:
    """What one chunk held: rows to insert and the files worth naming."""

    shard: str
    last_name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0
    expired: int = 0
    nul_escapes: int = 0
    #: (kind, path, detail, is_problem)
    named: list[tuple[str, str, str | None, bool]] = field(default_factory=list)


def list_chunks(root: Path, progress: dict[str, str]) -> Iterator[Chunk]:
    """Chunks of every shard in name order, skipping names at or before ``progress``."""
    for service_dir in sorted(_dirs(root)):
        try:
            service = check_service(service_dir.name)
        except ValueError:
            continue
        for shard_dir in sorted(_dirs(service_dir)):
            names = sorted(
                e.name
                for e in os.scandir(shard_dir)
                if e.name.endswith((ENTRY_SUFFIX, TEMP_SUFFIX))
            )
            done_through = progress.get(f"{service}/{shard_dir.name}")
            if done_through is not None:
                names = [n for n in names if n > done_through]
            for start in range(0, len(names), CHUNK_FILES):
                yield Chunk(service, shard_dir, tuple(names[start : start + CHUNK_FILES]))


def _dirs(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as items:
            return [Path(i.path) for i in items if i.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def read_chunk(
    chunk: Chunk, policy: TTLPolicy, now: datetime, jsonb: bool, migration_id: str
) -> ChunkResult:
    """Read and classify every file of ``chunk``; build the rows of its fresh entries."""
    result = ChunkResult(chunk.shard, chunk.names[-1] if chunk.names else "")
    for name in chunk.names:
        path = chunk.directory / name
        try:
            info = path.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since the listing (a cleanup beside the migration)
        result.files += 1
        item = DiskItem(
            path=path,
            service=chunk.service,
            is_temp=name.endswith(TEMP_SUFFIX),
            size=info.st_size,
            mtime=info.st_mtime,
            inode=info.st_ino,
            entry=None,
            problem="not read yet",
        )
        verdict = judge(item, policy)
        if verdict.problem is not None:
            result.named.append((verdict.problem, str(path), verdict.detail, True))
            continue
        if verdict.note is not None:
            result.named.append((verdict.note, str(path), verdict.detail, False))
        entry = verdict.entry
        assert entry is not None
        if entry.is_expired(now):
            result.expired += 1
            continue
        row = entry_row(entry, jsonb=jsonb, migration_id=migration_id)
        if _NUL_MARK in row["payload_json"]:
            result.nul_escapes += 1
        result.rows.append(row)
    return result


# -- writing ----------------------------------------------------------------------------


def _sqlite_time(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime writes (naive UTC, microseconds), so
    # rows inserted here compare and read back like rows the ORM wrote.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


_SQLITE_INSERT = (
    "INSERT INTO enrichment_cache (service, cache_key, cache_key_hash, payload, "
    "response_status, created_at, expires_at, api_response_code, api_latency_ms, "
    "error_message, migration_id, hit_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) "
    "ON CONFLICT (service, cache_key_hash) DO NOTHING"
)
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS enrichment_cache_stage (service text, cache_key text, "
    "cache_key_hash text, payload text, response_status text, created_at timestamptz, "
    "expires_at timestamptz, api_response_code integer, api_latency_ms integer, "
    "error_message text, migration_id text) ON COMMIT DELETE ROWS"
)
_PG_INSERT = (
    "INSERT INTO enrichment_cache (service, cache_key, cache_key_hash, payload, "
    "response_status, created_at, expires_at, api_response_code, api_latency_ms, "
    "error_message, migration_id, hit_count) SELECT service, cache_key, cache_key_hash, "
    "payload::jsonb, response_status, created_at, expires_at, api_response_code, "
    "api_latency_ms, error_message, migration_id, 0 FROM enrichment_cache_stage "
    "ON CONFLICT (service, cache_key_hash) DO NOTHING"
)


def write_batch(engine: Engine, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` in one transaction, skipping keys already present; return how many
    were inserted. On SQLite the transaction waits for other writers (busy timeout)."""
    if not rows:
        return 0
    with engine.begin() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            if is_postgres(engine):
                cursor.execute(_PG_STAGE)
                with cursor.copy(
                    f"COPY enrichment_cache_stage ({_copy_columns()}) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row([row[c] for c in _COLUMNS])
                cursor.execute(_PG_INSERT)
                return int(cursor.rowcount)
            params = [
                [
                    *(row[c] for c in _COLUMNS[:5]),
                    _sqlite_time(row["created_at"]),
                    _sqlite_time(row["expires_at"]),
                    *(row[c] for c in _COLUMNS[7:]),
                ]
                for row in rows
            ]
            cursor.executemany(_SQLITE_INSERT, params)
            return int(cursor.rowcount)
        finally:
            cursor.close()


def _copy_columns() -> str:
    return ", ".join("payload" if c == "payload_json" else c for c in _COLUMNS)
