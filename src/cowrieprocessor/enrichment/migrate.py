"""Move the disk cache into ``enrichment_cache``: migrate, validate, roll back.

The migration streams the disk layout shard by shard, classifies every file
(:mod:`.migrate_files`), and inserts fresh entries in batches with ``INSERT ... ON
CONFLICT DO NOTHING RETURNING id``: an entry already in the table (written by a worker,
or by an earlier run) is counted as *already present* and left as it is. Expired entries
are counted and not copied. Each inserted row carries the migration's id in
``migration_id``; any later store of the key (a worker, the hybrid cache) clears it, so
:func:`rollback_migration` removes exactly the rows this migration inserted and still
holds, never a row written since.

Only the known services (:data:`~.migrate_files.KNOWN_SERVICES`) are read: the files of
any other top-level folder are counted and the folder is named as ``unknown_service``,
never stored; dry run and validation skip them alike.

Files are read in a fixed order: services, shards and names sorted. Resuming: after
committed batches the status file (``{status_dir}/cache_migration.json``) records, per
shard, the last file name whose entry is committed. A rerun after a kill, with the same
source and database, keeps the migration id and starts each shard after that name; rows
committed after the last status update count as already present. Killing the process at
any point loses at most the uncommitted batch, which the rerun inserts. Files added to a
shard behind its recorded name after the kill are not read by the rerun; in the hybrid
phase their entries are in the database already, since the hybrid cache writes both.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, select

from cowrieprocessor.db.engine import is_postgres, redact_url
from cowrieprocessor.enrichment.cache.base import CacheEntry, format_time
from cowrieprocessor.enrichment.cache.database import TABLE, payload_text
from cowrieprocessor.enrichment.cache.disk import DiskItem, EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.rows import key_hash, load_payload
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.migrate_files import (
    KNOWN_SERVICES,
    NOT_CORRUPT,
    NOTE_KINDS,
    PROBLEM_KINDS,
    judge,
)
from cowrieprocessor.enrichment.migrate_io import (
    BatchWriter,
    Chunk,
    ChunkResult,
    list_chunks,
    loose_files,
    read_chunk,
    unknown_folders,
)

logger = logging.getLogger(__name__)

STATUS_FILE = "cache_migration.json"
DEFAULT_BATCH_SIZE = 1000
#: At most this many paths are named per kind; the counts stay exact.
MAX_NAMED = 1000
#: Seconds between status file updates (and always after the last batch).
STATUS_INTERVAL = 0.5


@dataclass
class MigrationSummary:
    """Counts of one run; ``problems`` and ``notes`` name files by kind.

    ``unknown_service`` counts files, and names each skipped folder of an unknown service
    once (its files are not listed) besides any record naming such a service.
    """

    migration_id: str
    source: str
    database: str
    dry_run: bool = False
    resumed: bool = False
    files_seen: int = 0
    migrated: int = 0
    already_present: int = 0
    expired: int = 0
    skipped_done_shards: int = 0
    nul_escapes: int = 0
    batches: int = 0
    seconds: float = 0.0
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})
    notes: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in NOTE_KINDS})
    counts: dict[str, int] = field(default_factory=dict)

    def name(self, group: dict[str, list[str]], kind: str, path: Path, files: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + files
        if len(group[kind]) < MAX_NAMED:
            group[kind].append(str(path))

    @property
    def corrupt(self) -> int:
        return sum(self.counts.get(k, 0) for k in PROBLEM_KINDS if k not in NOT_CORRUPT)

    def to_dict(self) -> dict[str, Any]:
        rate = self.files_seen / self.seconds if self.seconds > 0 else 0.0
        return {
            "migration_id": self.migration_id,
            "source": self.source,
            "database": self.database,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "files_seen": self.files_seen,
            "migrated": self.migrated,
            "already_present": self.already_present,
            "expired": self.expired,
            "corrupt": self.corrupt,
            "temp_files": self.counts.get("temp_file", 0),
            "unknown_service": self.counts.get("unknown_service", 0),
            "outside_layout": self.counts.get("outside_layout", 0),
            "nul_escapes": self.nul_escapes,
            "skipped_done_shards": self.skipped_done_shards,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "files_per_second": round(rate, 1),
            "problems": {
                k: {"count": self.counts.get(k, 0), "paths": v} for k, v in self.problems.items()
            },
            "notes": {
                k: {"count": self.counts.get(k, 0), "paths": v} for k, v in self.notes.items()
            },
        }


Progress = Callable[[MigrationSummary], None]


# -- the status file --------------------------------------------------------------------


def status_path(status_dir: Path) -> Path:
    return Path(status_dir) / STATUS_FILE


def read_status(status_dir: Path) -> dict[str, Any] | None:
    """The status file's content, or None when there is none or it is unreadable."""
    path = status_path(status_dir)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        logger.warning("migration status file %s unreadable (%s); starting afresh", path, exc)
        return None
    return data if isinstance(data, dict) else None


def write_status(status_dir: Path, status: dict[str, Any]) -> None:
    """Replace the status file atomically (a reader never sees half of it)."""
    path = status_path(status_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(orjson.dumps(status, option=orjson.OPT_INDENT_2))
    os.replace(temp, path)


# -- migrating --------------------------------------------------------------------------


def _chunk_results(
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


def migrate_disk_cache(
    source: Path,
    engine: Engine,
    *,
    status_dir: Path,
    policy: TTLPolicy | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    workers: int = 1,
    clock: Clock = system_clock,
    progress: Progress | None = None,
) -> MigrationSummary:
    """Copy every fresh entry of the disk cache at ``source`` into the database.

    ``dry_run`` reads and classifies every file and writes nothing (no rows, no status
    file). ``workers`` processes read the files (the parent writes). Safe to run beside
    live workers: inserts never replace a row. Run one migration of a source at a time:
    two would share the status file.

    Raises:
        ValueError: ``batch_size`` or ``workers`` below 1, or ``source`` is not a
            directory.
        sqlalchemy.exc.SQLAlchemyError: the database failed; committed batches stay and
            the status file lets a rerun resume.
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be at least 1, got {batch_size}, {workers}")
    if not Path(source).is_dir():
        raise ValueError(f"the disk cache {source} is not a directory")
    policy = policy or TTLPolicy()
    root = Path(source).absolute()
    database = redact_url(engine.url.render_as_string(hide_password=False))
    status = read_status(status_dir) if not dry_run else None
    same_target = (
        status is not None
        and status.get("source") == str(root)
        and status.get("database") == database
    )
    resumed = same_target and status is not None and status.get("state") in ("running", "failed")
    migration_id = str(status["migration_id"]) if same_target and status else str(uuid.uuid4())
    done: dict[str, str] = dict(status.get("progress", {})) if resumed and status else {}
    summary = MigrationSummary(migration_id, str(root), database, dry_run=dry_run, resumed=resumed)
    summary.skipped_done_shards = len(done)
    started = time.monotonic()
    now = clock()
    logger.info(
        "cache migration %s %s from %s to %s",
        migration_id,
        "resumed" if resumed else "started",
        root,
        database,
    )

    state: dict[str, Any] = {
        "migration_id": migration_id,
        "source": str(root),
        "database": database,
        "state": "running",
        "started_at": (status or {}).get("started_at") if resumed else format_time(now),
        "progress": dict(done),
    }
    rows: list[tuple[Any, ...]] = []
    writer = BatchWriter(engine)
    marks: list[tuple[str, str]] = []  # chunk ends, recorded once their rows are committed
    last_status = 0.0

    def flush(final: bool = False) -> None:
        nonlocal last_status
        if rows and not dry_run:
            inserted = writer.write(rows)
            summary.migrated += inserted
            summary.already_present += len(rows) - inserted
        elif rows:
            summary.migrated += len(rows)
        summary.batches += 1 if rows else 0
        rows.clear()
        done.update(marks)
        marks.clear()
        summary.seconds = time.monotonic() - started
        if not dry_run and (final or time.monotonic() - last_status >= STATUS_INTERVAL):
            state.update(progress=dict(done), summary=summary.to_dict())
            state["updated_at"] = format_time(clock())
            write_status(status_dir, state)
            last_status = time.monotonic()
        if progress is not None:
            progress(summary)

    read = partial(
        read_chunk, policy=policy, now=now, jsonb=is_postgres(engine), migration_id=migration_id
    )
    for folder, files in unknown_folders(root):
        # Never stored: no TTL, no service to ask; named so the operator can decide.
        summary.files_seen += files
        summary.name(summary.problems, "unknown_service", folder, files)
        logger.warning(
            "cache migration: skipping %d file(s) under %s: %r is not a known service (%s)",
            files,
            folder,
            folder.name,
            ", ".join(sorted(KNOWN_SERVICES)),
        )
    stray = loose_files(root)  # list_chunks adds those found in the shards
    try:
        for result in _chunk_results(list_chunks(root, done, stray), workers, read):
            summary.files_seen += result.files
            summary.expired += result.expired
            summary.nul_escapes += result.nul_escapes
            for kind, path, detail, is_problem in result.named:
                summary.name(summary.problems if is_problem else summary.notes, kind, Path(path))
                if is_problem and kind != "temp_file":
                    logger.warning("cache migration: %s %s %s", kind, path, detail or "")
            rows.extend(result.rows)
            marks.append((result.shard, result.last_name))
            if len(rows) >= batch_size:
                flush()
        _name_stray(summary, sorted(stray))
        flush(final=True)
    except BaseException:
        if not dry_run:
            state.update(state="failed", progress=dict(done), summary=summary.to_dict())
            write_status(status_dir, state)
        raise
    summary.seconds = time.monotonic() - started
    if not dry_run:
        state.update(
            state="done", progress={}, summary=summary.to_dict(), updated_at=format_time(clock())
        )
        write_status(status_dir, state)
    logger.info(
        "cache migration %s: %d files, %d migrated, %d already present, %d expired, %d corrupt",
        migration_id,
        summary.files_seen,
        summary.migrated,
        summary.already_present,
        summary.expired,
        summary.corrupt,
    )
    return summary


def _name_stray(summary: MigrationSummary, stray: list[Path]) -> None:
    """Count and name the files outside the layout, which are never read."""
    for path in stray:
        summary.files_seen += 1
        summary.name(summary.problems, "outside_layout", path)
    if stray:
        logger.warning(
            "cache migration: skipping %d file(s) outside {service}/{shard}/*.json, such as %s",
            len(stray),
            stray[0],
        )


# -- validating -------------------------------------------------------------------------


@dataclass
class ValidationReport:
    """Differences between the disk cache and the table (paths named, at most 1000)."""

    migration_id: str | None
    compared: int = 0
    matching: int = 0
    missing: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)
    superseded: int = 0
    unlocated: int = 0
    rows_of_migration: int = 0
    sampled: bool = False

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.differs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration_id": self.migration_id,
            "sampled": self.sampled,
            "compared": self.compared,
            "matching": self.matching,
            "differences": self.differences,
            "missing": self.missing[:MAX_NAMED],
            "differs": self.differs[:MAX_NAMED],
            "superseded_by_workers": self.superseded,
            "unlocated": self.unlocated,
            "rows_of_migration": self.rows_of_migration,
        }


def _rows_by_hash(engine: Engine, service: str, hashes: list[str]) -> dict[str, tuple[Any, str]]:
    query = select(TABLE.c.cache_key_hash, TABLE.c.migration_id, payload_text(engine)).where(
        TABLE.c.service == service, TABLE.c.cache_key_hash.in_(hashes)
    )
    with engine.connect() as conn:
        return {h: (mid, raw) for h, mid, raw in conn.execute(query)}


def _compare(
    report: ValidationReport,
    engine: Engine,
    pending: list[tuple[CacheEntry, Path]],
) -> None:
    by_service: dict[str, list[tuple[CacheEntry, Path]]] = {}
    for entry, path in pending:
        by_service.setdefault(entry.service, []).append((entry, path))
    for service, items in by_service.items():
        found = _rows_by_hash(engine, service, [key_hash(e.key) for e, _ in items])
        for entry, path in items:
            report.compared += 1
            row = found.get(key_hash(entry.key))
            if row is None:
                report.missing.append(str(path))
                continue
            mid, raw = row
            try:
                same = load_payload(raw) == entry
            except ValueError:
                same = False
            if same:
                report.matching += 1
            elif mid is None or (report.migration_id is not None and mid != report.migration_id):
                report.superseded += 1  # a worker stored this key since; not a difference
            else:
                report.differs.append(str(path))


def validate_migration(
    source: Path,
    engine: Engine,
    *,
    migration_id: str | None,
    policy: TTLPolicy | None = None,
    sample: int | None = None,
    clock: Clock = system_clock,
) -> ValidationReport:
    """Compare the migrated entries with their files.

    Without ``sample``: every fresh, readable file is compared with its row (missing rows
    and different rows are differences; rows a worker replaced since are counted as
    superseded). With ``sample``: the rows of ``migration_id`` are counted and ``sample``
    of them, picked at random, are compared with the files they came from.
    """
    policy = policy or TTLPolicy()
    disk = EnrichmentCacheManager(source, policy=policy, clock=clock)
    report = ValidationReport(migration_id, sampled=sample is not None)
    if migration_id is not None:
        with engine.connect() as conn:
            report.rows_of_migration = int(
                conn.execute(
                    select(func.count()).where(TABLE.c.migration_id == migration_id)
                ).scalar_one()
            )
    if sample is not None:
        _validate_sample(report, engine, disk, policy, sample)
        return report

    now = clock()
    pending: list[tuple[CacheEntry, Path]] = []
    # Only the known services' folders, as the migration reads them.
    items = (item for service in sorted(KNOWN_SERVICES) for item in disk.scan(service))
    for item in items:
        verdict = judge(item, policy)
        if verdict.entry is None or verdict.entry.is_expired(now):
            continue
        pending.append((verdict.entry, item.path))
        if len(pending) >= DEFAULT_BATCH_SIZE:
            _compare(report, engine, pending)
            pending.clear()
    _compare(report, engine, pending)
    return report


def _validate_sample(
    report: ValidationReport,
    engine: Engine,
    disk: EnrichmentCacheManager,
    policy: TTLPolicy,
    sample: int,
) -> None:
    query = (
        select(TABLE.c.migration_id, payload_text(engine))
        .where(TABLE.c.migration_id == report.migration_id)
        .order_by(func.random())
        .limit(sample)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    for mid, raw in rows:
        report.compared += 1
        try:
            stored = load_payload(raw)
        except ValueError:
            report.differs.append(f"<unreadable row of {mid}>")
            continue
        path = disk.path_for(stored.service, stored.key)
        item = _item_at(path, stored.service)
        if item is None:
            # Removed since, or migrated from another place (a misplaced record); only the
            # full validation, which reads every file, can compare it.
            report.unlocated += 1
            continue
        verdict = judge(item, policy)
        if verdict.entry is None:
            report.differs.append(str(path))
        elif verdict.entry == stored:
            report.matching += 1
        else:
            report.differs.append(str(path))


def _item_at(path: Path, service: str) -> DiskItem | None:
    """One file as an unread scan item, so :func:`judge` reads and classifies it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return DiskItem(
        path=path,
        service=service,
        is_temp=False,
        size=info.st_size,
        mtime=info.st_mtime,
        inode=info.st_ino,
        entry=None,
        problem="not read yet",
    )


# -- rolling back -----------------------------------------------------------------------


def rollback_migration(
    engine: Engine, migration_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> int:
    """Delete the rows ``migration_id`` inserted and still marks, in short batches.

    Rows a worker or the hybrid cache stored since carry no mark and stay.
    """
    ids = (
        select(TABLE.c.id)
        .where(TABLE.c.migration_id == migration_id)
        .limit(batch_size)
        .scalar_subquery()
    )
    statement = delete(TABLE).where(TABLE.c.id.in_(ids))
    removed = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(statement).rowcount
        removed += count
        if count < batch_size:
            break
    logger.info("cache migration %s rolled back: %d rows removed", migration_id, removed)
    return removed


def mark_rolled_back(status_dir: Path, migration_id: str, removed: int, when: datetime) -> None:
    """Record a rollback in the status file when it describes ``migration_id``."""
    status = read_status(status_dir)
    if status is None or status.get("migration_id") != migration_id:
        return
    status.update(state="rolled_back", rolled_back_rows=removed, updated_at=format_time(when))
    write_status(status_dir, status)


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
