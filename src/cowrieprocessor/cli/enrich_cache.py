"""`cowrie-enrich migrate-cache` and `cowrie-enrich cache stats|cleanup|invalidate`.

Exit codes follow :mod:`cowrieprocessor.cli.common`; ``migrate-cache --validate`` exits 1
when it finds differences. Should the database fail while a command runs (connection
lost, server gone), it ends with exit code 2 and one line saying what stays: migrated
batches (a rerun resumes from the status file), rows removed so far.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from cowrieprocessor.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    SERVICE_NAMES,
    Command,
    ConfigOption,
    DbOption,
    Group,
    JsonOption,
    VerboseOption,
    console,
    database_loss_exits,
    emit_json,
    fail,
    open_database,
    settings_or_exit,
    setup_logging,
)
from cowrieprocessor.db.errors import error_text
from cowrieprocessor.safetext import printable

# The cache backends and SQLAlchemy are imported by the commands, so
# `cowrie-enrich --help` does not wait for them.
if TYPE_CHECKING:
    from rich.table import Table
    from sqlalchemy import Engine

    from cowrieprocessor.config import Settings
    from cowrieprocessor.enrichment.cache.base import Cache, CacheStats

#: ``cowrieprocessor.enrichment.migrate.DEFAULT_BATCH_SIZE`` (tests/cli check).
MIGRATE_BATCH_SIZE = 1000
#: What stays when the database fails during a removal done in batches.
_REMOVED_KEPT = "the rows removed until then stay removed, and a rerun removes the rest"

cache_app = typer.Typer(
    cls=Group,
    help="Inspect and maintain the enrichment cache (database and disk).",
    no_args_is_help=True,
    add_completion=False,
)


class Tier(StrEnum):
    ALL = "all"
    DATABASE = "database"
    DISK = "disk"


TierOption = Annotated[
    Tier,
    typer.Option(
        "--tier",
        metavar="all|database|disk",
        help="Which cache: the database table, the disk, or both.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("migrate-cache", cls=Command)(migrate_cache)
    app.add_typer(cache_app, name="cache", cls=Group)


def _engine(settings: Settings, as_json: bool, *, create: bool) -> Engine:
    """The database; with ``create`` false it must exist, with its schema."""
    return open_database(
        settings.db_url,
        as_json=as_json,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        create=create,
    )


# -- migrate-cache ----------------------------------------------------------------------


def migrate_cache(
    from_disk: Annotated[
        Path | None,
        typer.Option(
            "--from-disk",
            metavar="DIR",
            help="The disk cache directory to read.",
            show_default=False,
        ),
    ] = None,
    to_database: Annotated[
        bool, typer.Option("--to-database", help="Write into the database cache (required).")
    ] = False,
    db: DbOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and check every file; write nothing.")
    ] = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="Compare the migrated rows with the files.")
    ] = False,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample", metavar="N", min=1, help="With --validate: counts plus N random rows."
        ),
    ] = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Remove the rows this migration inserted.")
    ] = False,
    migration_id: Annotated[
        str | None,
        typer.Option("--migration-id", metavar="ID", help="Default: the one in the status file."),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", metavar="N", min=1, help="Entries per transaction."),
    ] = MIGRATE_BATCH_SIZE,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="Processes reading files (default: CPUs, max 4).",
            show_default=False,
        ),
    ] = min(4, os.cpu_count() or 1),
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Move the disk cache into the database cache; validate it or roll it back."""
    from sqlalchemy.exc import SQLAlchemyError

    from cowrieprocessor.enrichment import migrate

    setup_logging(verbose)
    settings = settings_or_exit(config, as_json=json, db_url=db)
    if rollback and (validate or dry_run):
        fail("--rollback cannot be combined with --validate or --dry-run", EXIT_USAGE)
    if not rollback and (from_disk is None or not to_database):
        fail("migrating and validating need --from-disk PATH --to-database", EXIT_USAGE)
    engine = _engine(settings, json, create=not (rollback or validate or dry_run))
    status = migrate.read_status(settings.status_dir)
    if migration_id is None and status is not None:
        migration_id = status.get("migration_id")
    if rollback:
        during, kept = "during the rollback", _REMOVED_KEPT
    elif validate or dry_run:
        during, kept = "during the " + ("validation" if validate else "dry run"), None
    else:
        during = "during the migration"
        kept = "the batches committed until then are kept, and a rerun goes on from there"
    try:
        with database_loss_exits(settings.db_url, as_json=json, during=during, kept=kept):
            if rollback:
                _rollback(engine, settings, migration_id, json)
            elif validate:
                assert from_disk is not None
                _validate(engine, settings, from_disk, migration_id, sample, json)
            else:
                assert from_disk is not None
                _migrate(engine, settings, from_disk, batch_size, workers, dry_run, json)
    except SQLAlchemyError as error:
        fail(f"database error: {error_text(error, settings.db_url)}", as_json=json)
    except ValueError as error:
        fail(str(error), EXIT_USAGE, as_json=json)
    finally:
        engine.dispose()


def _migrate(
    engine: Engine,
    settings: Settings,
    source: Path,
    batch_size: int,
    workers: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from cowrieprocessor.enrichment import migrate
    from cowrieprocessor.enrichment.cache.factory import ttl_policy

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as bar:
        task = bar.add_task("reading the disk cache", total=None)

        def show(summary: migrate.MigrationSummary) -> None:
            bar.update(
                task,
                description=f"{summary.files_seen} files, {summary.migrated} migrated, "
                f"{summary.already_present} present, {summary.expired} expired, "
                f"{summary.corrupt} corrupt",
            )

        summary = migrate.migrate_disk_cache(
            source,
            engine,
            status_dir=settings.status_dir,
            policy=ttl_policy(settings),
            batch_size=batch_size,
            dry_run=dry_run,
            workers=workers,
            progress=show,
        )
    result = summary.to_dict()
    if as_json:
        emit_json({"ok": True, **result})
        return
    verb = "would migrate" if dry_run else "migrated"
    console.print(
        f"{'dry run: ' if dry_run else ''}{result['files_seen']} files: {verb} "
        f"{result['migrated']}, already present {result['already_present']}, expired "
        f"{result['expired']}, corrupt {result['corrupt']}, temporary "
        f"{result['temp_files']} ({result['files_per_second']} files/s)"
    )
    if summary.resumed:
        console.print(
            f"resumed: the counts include the {result['files_from_earlier_runs']} files read "
            f"before ({result['skipped_done_shards']} shards), and their problems"
        )
    for group in ("problems", "notes"):
        for kind, found in result[group].items():
            if found["count"]:
                console.print(f"  {kind}: {found['count']}")
                for path in found["paths"][:20]:
                    console.print(f"    {printable(path)}")
    if not dry_run:
        console.print(f"migration id {summary.migration_id} (needed for --rollback)")


def _validate(
    engine: Engine,
    settings: Settings,
    source: Path,
    migration_id: str | None,
    sample: int | None,
    as_json: bool,
) -> None:
    from cowrieprocessor.enrichment import migrate
    from cowrieprocessor.enrichment.cache.factory import ttl_policy

    if sample is not None and migration_id is None:
        fail("--sample needs a migration id (status file or --migration-id)", EXIT_USAGE)
    report = migrate.validate_migration(
        source,
        engine,
        migration_id=migration_id,
        policy=ttl_policy(settings),
        sample=sample,
    )
    result = report.to_dict()
    if as_json:
        emit_json({"ok": report.differences == 0, **result})
    else:
        console.print(
            f"compared {report.compared}: {report.matching} match, {len(report.missing)} "
            f"missing, {len(report.differs)} differ, {report.superseded} superseded by "
            f"workers, {report.unlocated} not at their key's file; "
            f"{report.rows_of_migration} rows carry this migration's id"
        )
        for path in (report.missing + report.differs)[:50]:
            console.print(f"  {printable(path)}")
    if report.differences:
        raise typer.Exit(EXIT_FAILED)


def _rollback(engine: Engine, settings: Settings, migration_id: str | None, as_json: bool) -> None:
    from cowrieprocessor.enrichment import migrate

    if migration_id is None:
        fail("no migration to roll back: no status file and no --migration-id", EXIT_USAGE)
    # A mistyped id would otherwise "roll back" nothing and report success (exit 2 through
    # migrate_cache's ValueError handler, like any other bad argument).
    migrate.check_known_migration(engine, settings.status_dir, migration_id)
    removed = migrate.rollback_migration(engine, migration_id)
    migrate.mark_rolled_back(settings.status_dir, migration_id, removed, datetime.now(UTC))
    if as_json:
        emit_json({"ok": True, "migration_id": migration_id, "removed": removed})
    elif removed:
        console.print(f"rolled back migration {migration_id}: {removed} rows removed")
    else:
        console.print(
            f"rolled back migration {migration_id}: 0 rows removed (no row carries its id any "
            "more: rolled back before, or every row stored again by workers since)"
        )


# -- cache stats | cleanup | invalidate -------------------------------------------------


def _tiers(
    settings: Settings, tier: Tier, as_json: bool
) -> tuple[dict[str, Cache], Engine | None]:
    from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
    from cowrieprocessor.enrichment.cache.disk import EnrichmentCacheManager
    from cowrieprocessor.enrichment.cache.factory import ttl_policy

    caches: dict[str, Cache] = {}
    engine = None
    policy = ttl_policy(settings)
    if tier in (Tier.ALL, Tier.DATABASE):
        engine = _engine(settings, as_json, create=False)
        caches["database"] = EnrichmentDatabaseCache(engine, policy=policy)
    if tier == Tier.DISK or (tier == Tier.ALL and not settings.disable_disk_cache):
        if settings.cache_dir.is_dir():
            caches["disk"] = EnrichmentCacheManager(settings.cache_dir, policy=policy)
        elif tier == Tier.DISK:
            fail(f"no disk cache at {settings.cache_dir}", EXIT_USAGE, as_json=as_json)
    return caches, engine


def _stats_table(name: str, stats: CacheStats, hits: dict[str, dict[str, int]]) -> Table:
    from rich import box
    from rich.table import Table

    from cowrieprocessor.enrichment.cache.base import AGE_BUCKETS

    # Narrow enough for 80 columns: the database shows hits, the disk unreadable files.
    last = "hits" if name == "database" else "corrupt"
    table = Table(
        title=f"{name} cache",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("service", no_wrap=True)
    for column in ("entries", "success", "not_found", "expired", *AGE_BUCKETS, "MB", last):
        table.add_column(column, justify="right", no_wrap=True)
    for item in [*stats.services.values(), stats.total]:
        if item.service == "*":
            count = sum(v["hits"] for v in hits.values())
        else:
            count = hits.get(item.service, {}).get("hits", 0)
        table.add_row(
            item.service if item.service != "*" else "all",
            str(item.entries),
            str(item.by_status.get("success", 0)),
            str(item.by_status.get("not_found", 0)),
            str(item.expired),
            *(str(n) for n in item.age_buckets.values()),
            f"{item.bytes / 1e6:.1f}",
            str(count if name == "database" else item.corrupt),
        )
    return table


@cache_app.command("stats", cls=Command)
def stats(
    tier: TierOption = Tier.ALL,
    db: DbOption = None,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Per service: entries, by status, expired, age buckets, size, hits."""
    from sqlalchemy.exc import SQLAlchemyError

    from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache

    setup_logging(verbose)
    settings = settings_or_exit(config, as_json=json, db_url=db)
    caches, engine = _tiers(settings, tier, json)
    result: dict[str, Any] = {"ok": True}
    try:
        with database_loss_exits(settings.db_url, as_json=json, during="reading the cache"):
            for name, cache in caches.items():
                found = cache.stats()
                hits = cache.hit_counts() if isinstance(cache, EnrichmentDatabaseCache) else {}
                entry = found.to_dict()
                for service, counts in hits.items():
                    if service in entry["services"]:
                        entry["services"][service].update(counts)
                        entries = entry["services"][service]["entries"]
                        entry["services"][service]["read_share"] = round(
                            counts["entries_hit"] / entries, 4
                        )
                result[name] = entry
                if not json:
                    # A pipe or log file gets 120 columns rather than 80, so no header is cut.
                    wide = console if console.is_terminal else Console(stderr=True, width=120)
                    wide.print(_stats_table(name, found, hits))
    except SQLAlchemyError as error:
        fail(f"database error: {error_text(error, settings.db_url)}", as_json=json)
    finally:
        if engine is not None:
            engine.dispose()
    if json:
        emit_json(result)


@cache_app.command("cleanup", cls=Command)
def cleanup(
    tier: TierOption = Tier.ALL,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, help="Rows per short transaction.")
    ] = 1000,
    db: DbOption = None,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Remove expired entries in bounded batches (safe to schedule beside workers)."""
    from sqlalchemy.exc import SQLAlchemyError

    setup_logging(verbose)
    settings = settings_or_exit(config, as_json=json, db_url=db)
    caches, engine = _tiers(settings, tier, json)
    removed: dict[str, int] = {}
    lost = database_loss_exits(
        settings.db_url, as_json=json, during="during the cleanup", kept=_REMOVED_KEPT
    )
    try:
        with lost:
            for name, cache in caches.items():
                removed[name] = cache.cleanup_expired(batch_size=batch_size)
    except SQLAlchemyError as error:
        fail(f"database error: {error_text(error, settings.db_url)}", as_json=json)
    finally:
        if engine is not None:
            engine.dispose()
    if json:
        emit_json({"ok": True, "removed": removed})
    else:
        for name, count in removed.items():
            console.print(f"{name} cache: removed {count} expired entries")


def _status_names() -> tuple[str, ...]:
    """The outcome statuses ``--status`` takes (imported here: see the imports above)."""
    from cowrieprocessor.enrichment.outcome import Status

    return tuple(item.value for item in Status)


@cache_app.command("invalidate", cls=Command)
def invalidate(
    service: Annotated[
        str, typer.Option("--service", metavar="NAME", help="The service, e.g. dshield.")
    ],
    key: Annotated[str | None, typer.Option("--key", metavar="KEY", help="Only this key.")] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=0,
            help="Only entries stored more than DAYS days ago.",
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only entries of this outcome status (success, not_found, ...).",
        ),
    ] = None,
    tier: TierOption = Tier.ALL,
    db: DbOption = None,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Remove the entries of a service matching every filter given."""
    from sqlalchemy.exc import SQLAlchemyError

    setup_logging(verbose)
    if service not in SERVICE_NAMES:
        fail(
            f"--service {service!r} is not a service; use one of {', '.join(SERVICE_NAMES)}",
            EXIT_USAGE,
            as_json=json,
        )
    statuses = _status_names()
    if status is not None and status not in statuses:
        fail(
            f"--status {status!r} is not a status; use one of {', '.join(statuses)}",
            EXIT_USAGE,
            as_json=json,
        )
    settings = settings_or_exit(config, as_json=json, db_url=db)
    caches, engine = _tiers(settings, tier, json)
    before = datetime.now(UTC) - timedelta(days=older_than) if older_than is not None else None
    removed: dict[str, int] = {}
    lost = database_loss_exits(
        settings.db_url, as_json=json, during="during the invalidation", kept=_REMOVED_KEPT
    )
    try:
        with lost:
            for name, cache in caches.items():
                removed[name] = cache.invalidate(
                    service, key=key, stored_before=before, status=status
                )
    except ValueError as error:
        fail(str(error), EXIT_USAGE, as_json=json)
    except SQLAlchemyError as error:
        fail(f"database error: {error_text(error, settings.db_url)}", as_json=json)
    finally:
        if engine is not None:
            engine.dispose()
    if json:
        emit_json({"ok": True, "service": service, "removed": removed})
    else:
        for name, count in removed.items():
            console.print(f"{name} cache: invalidated {count} {service} entries")
