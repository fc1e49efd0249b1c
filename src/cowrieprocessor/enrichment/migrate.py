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
shard, the last file name whose entry is committed, and the counts and named problems of
the files up to there. A rerun after a kill, with the same source and database, keeps the
migration id, starts each shard after that name and adds those counts to its own, so its
summary covers every file; rows committed after the last status update count as already
present. Killing the process at any point loses at most the uncommitted batch, which the
rerun inserts. Files added to a shard behind its recorded name after the kill are not read
by the rerun; in the hybrid phase their entries are in the database already, since the
hybrid cache writes both.

Rolling back a migration id that no row carries and the status file does not record (a
mistyped one) is refused by :func:`check_known_migration`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from cowrieprocessor.db.engine import is_postgres, redact_url
from cowrieprocessor.db.textrule import decode_json, encode_json
from cowrieprocessor.enrichment.cache.base import CacheEntry, format_time
from cowrieprocessor.enrichment.cache.database import TABLE, delete_in_batches, payload_text
from cowrieprocessor.enrichment.cache.disk import DiskItem, EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.rows import key_hash, load_payload
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.migrate_files import (
    KNOWN_SERVICES,
    MAX_NAMED,
    judge,
    shown_path,
)
from cowrieprocessor.enrichment.migrate_files import (
    MigrationSummary as MigrationSummary,  # re-exported: callers take it from here
)
from cowrieprocessor.enrichment.migrate_io import (
    BatchWriter,
    chunk_results,
    list_chunks,
    loose_files,
    read_chunk,
    unknown_folders,
)

logger = logging.getLogger(__name__)

STATUS_FILE = "cache_migration.json"
DEFAULT_BATCH_SIZE = 1000
#: Seconds between status file updates (and always after the last batch).
STATUS_INTERVAL = 0.5


Progress = Callable[[MigrationSummary], None]


# -- the status file --------------------------------------------------------------------


def database_name(engine: Engine) -> str:
    """How the status file names ``engine``'s database: its URL, the password hidden."""
    return redact_url(engine.url.render_as_string(hide_password=False))


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
    two would share the status file. A resumed run's summary includes the counts and
    named files the status file kept for the files read before; a status file without
    them (written by an older version) leaves them out, with a warning.

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
    # The folder as the status file and the summary name it (JSON cannot carry a name
    # that is not UTF-8; see shown_path); a resumed run recognises it in the same form.
    shown_root = shown_path(root)
    database = database_name(engine)
    status = read_status(status_dir) if not dry_run else None
    same_target = (
        status is not None
        and status.get("source") == shown_root
        and status.get("database") == database
    )
    resumed = same_target and status is not None and status.get("state") in ("running", "failed")
    migration_id = str(status["migration_id"]) if same_target and status else str(uuid.uuid4())
    done: dict[str, str] = _read_marks(status) if resumed and status else {}
    # The counts come in three parts, so that the status file keeps exactly the counts of
    # the files behind "progress", which a resumed run adds instead of reading them again:
    # ``counted`` holds the chunks up to the last committed batch (earlier runs' included),
    # ``pending`` the chunks read since, ``outside`` the files no run reads (folders of
    # unknown services, files outside the layout), which every run counts afresh.
    new = partial(
        MigrationSummary, migration_id, shown_root, database, dry_run=dry_run, resumed=resumed
    )
    counted, pending, outside = new(), new(), new()
    earlier = (status or {}).get("progress_counts") if resumed else None
    if isinstance(earlier, dict):
        counted.add(earlier)
    elif done:
        logger.warning(
            "cache migration %s: the status file keeps no counts of the files read before; "
            "this run's summary counts only the files it reads",
            migration_id,
        )
    skipped, from_before = len(done), counted.files_seen
    earlier_seconds = counted.seconds
    started = time.monotonic()
    now = clock()
    logger.info(
        "cache migration %s %s from %s to %s",
        migration_id,
        "resumed" if resumed else "started",
        root,
        database,
    )

    def total() -> MigrationSummary:
        """The whole run's summary (the files no run reads first: they are found first)."""
        summary = new(skipped_done_shards=skipped, files_from_earlier_runs=from_before)
        summary.add(outside.counted())
        summary.add(counted.counted())
        return summary

    state: dict[str, Any] = {
        "migration_id": migration_id,
        "source": shown_root,
        "database": database,
        "state": "running",
        "started_at": (status or {}).get("started_at") if resumed else format_time(now),
        "progress": _stored_marks(done),
        "progress_counts": counted.counted(),
    }
    rows: list[tuple[Any, ...]] = []
    writer = BatchWriter(engine)
    marks: list[tuple[str, str]] = []  # chunk ends, recorded once their rows are committed
    last_status = 0.0

    def flush(final: bool = False) -> None:
        nonlocal last_status, pending
        if rows and not dry_run:
            inserted = writer.write(rows)
            counted.migrated += inserted
            counted.already_present += len(rows) - inserted
        elif rows:
            counted.migrated += len(rows)
        counted.batches += 1 if rows else 0
        rows.clear()
        counted.add(pending.counted())
        pending = new()
        done.update(marks)
        marks.clear()
        counted.seconds = earlier_seconds + time.monotonic() - started
        write = not dry_run and (final or time.monotonic() - last_status >= STATUS_INTERVAL)
        summary = total() if write or progress is not None else None
        if write and summary is not None:
            state.update(
                progress=_stored_marks(done),
                progress_counts=counted.counted(),
                summary=summary.to_dict(),
            )
            state["updated_at"] = format_time(clock())
            write_status(status_dir, state)
            last_status = time.monotonic()
        if progress is not None and summary is not None:
            progress(summary)

    read = partial(
        read_chunk, policy=policy, now=now, jsonb=is_postgres(engine), migration_id=migration_id
    )
    for folder, files in unknown_folders(root):
        # Never stored: no TTL, no service to ask; named so the operator can decide.
        outside.files_seen += files
        outside.name(outside.problems, "unknown_service", folder, files)
        logger.warning(
            "cache migration: skipping %d file(s) under %s: %r is not a known service (%s)",
            files,
            folder,
            folder.name,
            ", ".join(sorted(KNOWN_SERVICES)),
        )
    stray = loose_files(root)  # list_chunks adds those found in the shards
    try:
        for result in chunk_results(list_chunks(root, done, stray), workers, read):
            pending.files_seen += result.files
            pending.expired += result.expired
            pending.nul_escapes += result.nul_escapes
            for kind, path, detail, is_problem in result.named:
                pending.name(pending.problems if is_problem else pending.notes, kind, Path(path))
                if is_problem and kind != "temp_file":
                    logger.warning("cache migration: %s %s %s", kind, path, detail or "")
            rows.extend(result.rows)
            marks.append((result.shard, result.last_name))
            if len(rows) >= batch_size:
                flush()
        flush(final=True)
    except BaseException:
        if not dry_run:
            # The counts of the batches committed, as "progress": pending is not in them.
            state.update(
                state="failed",
                progress=_stored_marks(done),
                progress_counts=counted.counted(),
                summary=total().to_dict(),
            )
            write_status(status_dir, state)
        raise
    _name_stray(outside, sorted(stray))
    counted.seconds = earlier_seconds + time.monotonic() - started
    summary = total()
    if not dry_run:
        state.pop("progress_counts", None)  # nothing left to resume
        state.update(
            state="done", progress={}, summary=summary.to_dict(), updated_at=format_time(clock())
        )
        write_status(status_dir, state)
    if progress is not None:
        progress(summary)
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


def _stored_marks(done: dict[str, str]) -> dict[str, str]:
    # Each shard's last file name, exact for the resume; a file name whose bytes are not
    # UTF-8 holds lone surrogates, which JSON cannot carry, so the text rule escapes them.
    return encode_json(dict(done))  # type: ignore[no-any-return]


def _read_marks(status: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in decode_json(status.get("progress", {})).items()}


# -- rolling back -----------------------------------------------------------------------


class UnknownMigrationError(ValueError):
    """A migration id that neither a row of the table nor the status file records."""


def check_known_migration(engine: Engine, status_dir: Path, migration_id: str) -> None:
    """Return when ``migration_id`` names a migration of ``engine``'s database, else raise.

    Known: a row still carries the id, or the status file records it for this database.
    The status file is the only record of a migration whose rows are all gone (rolled
    back before, or all replaced by workers since), and it keeps only the latest
    migration: an older one without rows left is unknown, as is a mistyped id.

    Raises:
        UnknownMigrationError: the message names the id, what the status file records and
            where the right id is found.
    """
    with engine.connect() as conn:
        query = select(TABLE.c.id).where(TABLE.c.migration_id == migration_id).limit(1)
        if conn.execute(query).first() is not None:
            return
    status = read_status(status_dir) or {}
    recorded, database = status.get("migration_id"), database_name(engine)
    if recorded == migration_id and status.get("database") == database:
        return
    path = status_path(status_dir)
    if recorded == migration_id:
        found = f"{path} records it for the database {status.get('database')}, not this one"
    elif recorded is not None:
        found = f"{path} records the migration {recorded} (into {status.get('database')})"
    else:
        found = f"there is no status file {path}"
    raise UnknownMigrationError(
        f"no migration {migration_id!r} in {database}: no row carries that id and {found}; "
        "the status file holds the last migration's id (migrate-cache prints it too), and "
        "SELECT DISTINCT migration_id FROM enrichment_cache lists the ids rows still carry"
    )


def rollback_migration(
    engine: Engine, migration_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> int:
    """Delete the rows ``migration_id`` inserted and still marks, in short batches.

    Rows a worker or the hybrid cache stored since carry no mark and stay. An id no row
    carries removes nothing and is not an error here: :func:`check_known_migration` tells
    a mistyped id from a migration rolled back before.
    """
    removed = delete_in_batches(engine, TABLE.c.migration_id == migration_id, batch_size)
    logger.info("cache migration %s rolled back: %d rows removed", migration_id, removed)
    return removed


def mark_rolled_back(status_dir: Path, migration_id: str, removed: int, when: datetime) -> None:
    """Record a rollback in the status file when it describes ``migration_id``."""
    status = read_status(status_dir)
    if status is None or status.get("migration_id") != migration_id:
        return
    status.update(state="rolled_back", rolled_back_rows=removed, updated_at=format_time(when))
    write_status(status_dir, status)
