"""The two halves of the migration's pipeline: reading chunks of files, writing batches.

Reading is CPU-bound (parse, check, build the row) and runs in worker processes
(:func:`chunk_results`), one chunk of at most :data:`CHUNK_FILES` files of one shard per
task; files of the current layout take a fast path, every other file the thorough
classification of :mod:`.migrate_files`.
Writing runs in the parent, in one short transaction per batch, below the ORM: SQLite
``executemany``, and on PostgreSQL a ``COPY`` straight into the table, or, when a key of
the batch is already present, into a temporary staging table followed by ``INSERT ...
SELECT ... ON CONFLICT DO NOTHING`` (see :class:`BatchWriter`). Both count the rows
actually inserted, so rows already present (a worker's or an earlier run's) are counted
apart and never replaced.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.textrule import encode_text
from cowrieprocessor.db.types import sqlite_datetime_text
from cowrieprocessor.enrichment.cache.base import CacheEntry, check_service
from cowrieprocessor.enrichment.cache.disk import (
    ENTRY_SUFFIX,
    TEMP_SUFFIX,
    DiskItem,
    entry_location,
)
from cowrieprocessor.enrichment.cache.record import lean_entry
from cowrieprocessor.enrichment.cache.rows import (
    dump_payload,
    key_hash,
    readable_key,
    record_payload,
)
from cowrieprocessor.enrichment.cache.ttl import TTLPolicy
from cowrieprocessor.enrichment.migrate_files import KNOWN_SERVICES, judge
from cowrieprocessor.jsonnumbers import has_long_number, holds_float

#: Files per reading task; a shard's progress is recorded at chunk boundaries.
CHUNK_FILES = 1000
_READ_SIZE = 16384
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
    """What one chunk held: rows to insert and the files worth naming.

    Each row is a tuple of the :data:`_COLUMNS` values, times already as the text the
    target database takes (see :func:`row_values`), so handing it from a reading process
    to the writer and on to the driver costs little.
    """

    shard: str
    last_name: str
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    files: int = 0
    expired: int = 0
    nul_escapes: int = 0
    #: (kind, path, detail, is_problem)
    named: list[tuple[str, str, str | None, bool]] = field(default_factory=list)


def list_chunks(
    root: Path, progress: dict[str, str], stray: list[Path] | None = None
) -> Iterator[Chunk]:
    """Chunks of every shard of the known services in name order, skipping names at or
    before ``progress`` (other top-level folders: :func:`unknown_folders`).

    Files of a shard without an entry's or temporary file's suffix are appended to
    ``stray`` as the shard is listed (the same listing, not a second walk), so the list
    is complete once the chunks are exhausted.
    """
    for service_dir in sorted(_dirs(root)):
        if service_dir.name not in KNOWN_SERVICES:
            continue
        service = check_service(service_dir.name)
        for shard_dir in sorted(_dirs(service_dir)):
            names, others = _shard_names(shard_dir)
            if stray is not None:
                stray.extend(shard_dir / name for name in others)
            done_through = progress.get(f"{service}/{shard_dir.name}")
            if done_through is not None:
                names = [n for n in names if n > done_through]
            for start in range(0, len(names), CHUNK_FILES):
                yield Chunk(service, shard_dir, tuple(names[start : start + CHUNK_FILES]))


def unknown_folders(root: Path) -> list[tuple[Path, int]]:
    """Top-level folders of ``root`` that are not a known service and hold files laid
    out as entries (``{folder}/{shard}/*.json`` or ``.tmp``), with how many: the
    migration skips them (it never stores a service it does not know) and names them."""
    found = []
    for folder in sorted(_dirs(root)):
        if folder.name not in KNOWN_SERVICES:
            files = sum(len(_shard_names(shard)[0]) for shard in _dirs(folder))
            if files:
                found.append((folder, files))
    return found


def loose_files(root: Path) -> list[Path]:
    """Files at the top of ``root`` or directly in a known service's folder, where no
    entry lives (files of a shard without an entry's suffix: :func:`list_chunks`)."""
    found = _files(root)
    for service_dir in _dirs(root):
        if service_dir.name in KNOWN_SERVICES:
            found += _files(service_dir)
    return found


def _files(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as items:
            return [Path(i.path) for i in items if not i.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _shard_names(shard_dir: Path) -> tuple[list[str], list[str]]:
    """The sorted names of a shard's entry and temporary files, and its other names."""
    layout: list[str] = []
    others: list[str] = []
    try:
        with os.scandir(shard_dir) as items:
            for item in items:
                name = item.name
                if name.endswith((ENTRY_SUFFIX, TEMP_SUFFIX)):
                    layout.append(name)
                elif not item.is_dir(follow_symlinks=False):
                    others.append(name)
    except FileNotFoundError:
        pass
    layout.sort()
    return layout, others


def _dirs(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as items:
            return [Path(i.path) for i in items if i.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def chunk_results(
    chunks: Iterator[Chunk],
    workers: int,
    read: Callable[[Chunk], ChunkResult],
) -> Iterator[ChunkResult]:
    """Results in chunk order; with ``workers`` > 1 read in that many processes, keeping
    at most two chunks per worker in flight so memory stays bounded."""
    if workers <= 1:
        yield from (read(chunk) for chunk in chunks)
        return
    # Readers come from a forkserver, not a fork of this process: a forked reader would
    # inherit this process's database socket, and after a SIGKILL of this process it
    # would keep that connection, and its open transaction's row locks, alive, so a
    # resumed migration would wait on them for ever. forkserver children inherit no
    # sockets, and they exit when this process dies.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        pending: deque[Future[ChunkResult]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(read, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def read_chunk(
    chunk: Chunk, policy: TTLPolicy, now: datetime, jsonb: bool, migration_id: str
) -> ChunkResult:
    """Read and classify every file of ``chunk``; build the rows of its fresh entries.

    Most files are records of the current layout in their right place: those are read
    with one ``open``, checked by the lean record path and turned into a row from the
    parsed record. Every other file (temporary, unreadable, damaged, legacy, misplaced,
    or anything the lean path does not take) goes through :func:`judge`, which classifies
    it exactly as before.
    """
    result = ChunkResult(chunk.shard, chunk.names[-1] if chunk.names else "")
    directory = str(chunk.directory)
    for name in chunk.names:
        path = f"{directory}/{name}"
        raw = None if name.endswith(TEMP_SUFFIX) else _read(path)
        found = _current_record(raw, chunk.service, name) if raw is not None else None
        if found is not None:
            result.files += 1
            entry, record = found
            payload = record_payload(record, entry, jsonb=jsonb)
        else:
            judged = _judge_file(Path(path), chunk.service, name, policy, result)
            if judged is None:
                continue
            entry, payload = judged, None
        if entry.is_expired(now):
            result.expired += 1
            continue
        if payload is None:
            payload = dump_payload(entry, jsonb=jsonb)
        if _NUL_MARK in payload:
            result.nul_escapes += 1
        result.rows.append(row_values(entry, payload, jsonb, migration_id))
    return result


def _read(path: str) -> bytes | None:
    """The file's bytes, or None for any failure (the slow path then names it).

    ``os.open`` and ``os.read`` skip the buffered file object, which costs as much as the
    read itself for files of a few hundred bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        parts: list[bytes] = []
        while True:
            part = os.read(fd, _READ_SIZE)
            if not parts and len(part) < _READ_SIZE:
                return part  # the whole file in one read: the usual case
            if not part:
                return b"".join(parts)
            parts.append(part)
    except OSError:
        return None
    finally:
        os.close(fd)


def _current_record(
    raw: bytes, service: str, name: str
) -> tuple[CacheEntry, dict[str, Any]] | None:
    """The entry and parsed record of a current-format file in its right place, or None.

    Accepts exactly the files :func:`judge` would return as a plain entry (no note): not
    empty, no NUL bytes, a JSON object with ``"format"`` that the record checks take, for
    this service, under its own name. None means "ask :func:`judge`", never "bad".
    """
    if not raw or b"\x00" in raw:
        return None  # empty, or NUL bytes: the slow path names them
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(record) is not dict or "format" not in record:
        return None
    entry = lean_entry(record)
    # orjson reads an integer beyond 64 bits as a float. A long run of digits (often just
    # a hex key) matters only when the outcome's data holds a float (the lean checks
    # took every other field as an integer or text); then the slow path rereads it.
    if entry is not None and has_long_number(raw) and holds_float(entry.outcome.data):
        return None
    if entry is None or entry.service != service or entry_location(service, entry.key)[1] != name:
        return None
    return entry, record


def _judge_file(
    path: Path, service: str, name: str, policy: TTLPolicy, result: ChunkResult
) -> CacheEntry | None:
    """Classify one file the thorough way, naming it in ``result`` when it is odd; the
    entry to migrate, or None (a problem, or the file vanished since the listing)."""
    try:
        info = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed since the listing (a cleanup beside the migration)
    result.files += 1
    item = DiskItem(
        path=path,
        service=service,
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
        return None
    if verdict.note is not None:
        result.named.append((verdict.note, str(path), verdict.detail, False))
    return verdict.entry


def row_values(entry: CacheEntry, payload: str, jsonb: bool, migration_id: str) -> tuple[Any, ...]:
    """The :data:`_COLUMNS` values of ``entry``'s row, times as text for the target."""
    outcome = entry.outcome
    stamp = _pg_time if jsonb else sqlite_datetime_text
    message = outcome.message
    return (
        entry.service,
        readable_key(entry.key),
        key_hash(entry.key),
        payload,
        str(outcome.status),
        stamp(entry.stored_at),
        stamp(entry.expires_at),
        outcome.http_status,
        outcome.latency_ms,
        encode_text(message) if message is not None else None,
        migration_id,
    )


# -- writing ----------------------------------------------------------------------------


def _pg_time(value: datetime) -> str:
    # ISO 8601 with its offset: what timestamptz reads in COPY's text format.
    return value.isoformat()


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


_PG_DIRECT = (
    "COPY enrichment_cache (service, cache_key, cache_key_hash, payload, response_status, "
    "created_at, expires_at, api_response_code, api_latency_ms, error_message, migration_id, "
    "hit_count) FROM STDIN"
)
#: Batches written through the staging table after a direct COPY met a row already present.
STAGED_AFTER_CONFLICT = 16


class BatchWriter:
    """Writes batches of rows, each in one transaction, skipping keys already present.

    On PostgreSQL a batch is first copied straight into ``enrichment_cache`` under a
    savepoint, which costs the server about a third less than staging it: when no key of
    the batch is present (a first run, the usual case) every row is inserted. When one
    is (a resumed run, rows the hybrid cache wrote), COPY fails on the unique key, the
    savepoint is rolled back and the batch goes through the staging table with ``ON
    CONFLICT DO NOTHING``; the next :data:`STAGED_AFTER_CONFLICT` batches go that way
    directly before COPY is tried again. Either way the count of inserted rows is exact
    and no present row is changed. On SQLite the transaction waits for other writers
    (busy timeout). Not for use from several threads at once.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = is_postgres(engine)
        self._staged_left = 0

    def write(self, rows: list[tuple[Any, ...]]) -> int:
        """Insert ``rows``; return how many were inserted (the others were present)."""
        if not rows:
            return 0
        with self.engine.begin() as conn:
            dbapi: Any = conn.connection.dbapi_connection
            cursor = dbapi.cursor()
            try:
                if not self.postgres:
                    cursor.executemany(_SQLITE_INSERT, rows)
                    return int(cursor.rowcount)
                if self._staged_left == 0 and self._copy_direct(cursor, rows):
                    return len(rows)
                self._staged_left = max(self._staged_left - 1, 0)
                cursor.execute(_PG_STAGE)
                with cursor.copy(
                    f"COPY enrichment_cache_stage ({_copy_columns()}) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(_PG_INSERT)
                return int(cursor.rowcount)
            finally:
                cursor.close()

    def _copy_direct(self, cursor: Any, rows: list[tuple[Any, ...]]) -> bool:
        cursor.execute("SAVEPOINT cache_migration_copy")
        try:
            with cursor.copy(_PG_DIRECT) as copy:
                for row in rows:
                    copy.write_row((*row, 0))
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT cache_migration_copy")
            self._staged_left = STAGED_AFTER_CONFLICT
            return False
        cursor.execute("RELEASE SAVEPOINT cache_migration_copy")
        return True


def write_batch(engine: Engine, rows: list[tuple[Any, ...]]) -> int:
    """Insert ``rows`` in one transaction, skipping keys already present; return how many
    were inserted (see :class:`BatchWriter`)."""
    return BatchWriter(engine).write(rows)


def _copy_columns() -> str:
    return ", ".join("payload" if c == "payload_json" else c for c in _COLUMNS)


def _exit_with_parent(parent: int) -> None:
    """In a reader process: end it once the migrating process is gone (killed with
    SIGKILL, it cannot tell its readers), instead of waiting for work for ever."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
