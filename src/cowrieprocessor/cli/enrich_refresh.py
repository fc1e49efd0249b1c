"""`cowrie-enrich refresh`: the enrichment backfill (see docs/refresh.md).

Exit codes: 0 done (some lookups may have failed), 1 a service failed for every lookup it
attempted (or, with ``--workers``, a worker died; its rows were taken over), 2 bad usage,
the database could not be opened or failed during the run (the outcomes stored until then
stay, and a rerun goes on from there), 130 interrupted (Ctrl-C; likewise), 143 with
SIGTERM (its workers, if any, stopped too; the status file says interrupted).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from cowrieprocessor.cli.common import (
    EXIT_USAGE,
    SERVICE_NAMES,
    Command,
    ConfigOption,
    DbOption,
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
from cowrieprocessor.safetext import printable

# The enrichment package (SQLAlchemy, httpx, pyrate-limiter) is imported by the command
# itself, so `cowrie-enrich --help` does not wait for it.
if TYPE_CHECKING:
    from cowrieprocessor.config import Settings
    from cowrieprocessor.enrichment.refresh import RefreshOptions, RefreshResult
    from cowrieprocessor.enrichment.targets import IdFilter
    from cowrieprocessor.enrichment.workers import PoolResult

EXIT_INTERRUPTED = 130
#: SIGTERM to a refresh with workers: 128 + 15, as a shell reports a process it ended.
EXIT_TERMINATED = 128 + signal.SIGTERM
#: ``cowrieprocessor.enrichment.claims.DEFAULT_LEASE`` in seconds (tests/cli check).
DEFAULT_LEASE_SECONDS = 300.0


def register(app: typer.Typer) -> None:
    """Add the ``refresh`` command to ``app``."""
    app.command("refresh", cls=Command)(refresh_command)


def refresh_command(
    sessions: Annotated[
        int,
        typer.Option(
            "--sessions",
            metavar="N",
            min=0,
            help="Sessions to enrich at most, all workers together (0: all).",
        ),
    ] = 0,
    files: Annotated[
        int,
        typer.Option(
            "--files",
            metavar="N",
            min=0,
            help="Files to enrich at most, all workers together (0: all).",
        ),
    ] = 0,
    passwords: Annotated[
        int,
        typer.Option(
            "--passwords",
            metavar="N",
            min=0,
            help="Distinct passwords to enrich at most, all workers together (0: all).",
        ),
    ] = 0,
    services: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help=f"Comma-separated services to use (default: all of {','.join(SERVICE_NAMES)}).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="Only rows from this time on (ISO date or date-time; UTC when no zone).",
            show_default=False,
        ),
    ] = None,
    only_missing: Annotated[
        bool,
        typer.Option(
            "--only-missing",
            help="Rows without an outcome or whose outcome is retried (errors, changeable "
            "skips). The default.",
        ),
    ] = False,
    stale: Annotated[
        bool,
        typer.Option(
            "--stale", help="Also rows whose stored outcome is older than the service's TTL."
        ),
    ] = False,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Every row (fresh cache entries are still used).")
    ] = False,
    ids_from: Annotated[
        Path | None,
        typer.Option(
            "--ids-from",
            metavar="FILE",
            help="Only these sessions: a file with one 'sensor<TAB>session_id' or "
            "'session_id' per line.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", metavar="N", min=1, help="Rows per committed transaction."),
    ] = 200,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="Worker processes sharing the rows, the cache and the rate limits "
            "(1: one process, as before).",
        ),
    ] = 1,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            metavar="NAME",
            help="Join the run of this name: hosts giving the same name split one run's "
            "rows between their workers (default: a new run).",
            show_default=False,
        ),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(
            "--lease-seconds",
            metavar="SECONDS",
            min=1.0,
            help="How long a worker's claim on rows lasts without renewal; a dead "
            "worker's rows are taken over after it.",
        ),
    ] = DEFAULT_LEASE_SECONDS,
    db: DbOption = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Enrichment cache directory (default: settings).",
            show_default=False,
        ),
    ] = None,
    status_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Where enrichment_refresh.json is kept (default: "
            "~/.cache/cowrieprocessor/status).",
            show_default=False,
        ),
    ] = None,
    vt_api_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY", help="VirusTotal key, or env:NAME / file:PATH.", show_default=False
        ),
    ] = None,
    dshield_email: Annotated[
        str | None,
        typer.Option(metavar="EMAIL", help="Contact e-mail DShield asks for.", show_default=False),
    ] = None,
    urlhaus_api_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY", help="URLhaus Auth-Key, or env:NAME / file:PATH.", show_default=False
        ),
    ] = None,
    spur_api_key: Annotated[
        str | None,
        typer.Option(
            metavar="TOKEN", help="Spur token, or env:NAME / file:PATH.", show_default=False
        ),
    ] = None,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Enrich every session, file and password without an outcome (or with a stale one).

    Each outcome is stored on its row as it comes. Safe to stop and rerun.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from cowrieprocessor.db.engine import redact_url
    from cowrieprocessor.enrichment.refresh import RefreshOptions, refresh
    from cowrieprocessor.enrichment.targets import Mode

    setup_logging(verbose)
    if sum((only_missing, stale, all_rows)) > 1:
        fail("choose one of --only-missing, --stale and --all", EXIT_USAGE, as_json=json)
    mode = Mode.ALL if all_rows else Mode.STALE if stale else Mode.ONLY_MISSING
    settings = settings_or_exit(
        config,
        as_json=json,
        db_url=db,
        cache_dir=cache_dir,
        status_dir=status_dir,
        vt_api_key=vt_api_key,
        dshield_email=dshield_email,
        urlhaus_api_key=urlhaus_api_key,
        spur_api_key=spur_api_key,
    )
    ids = _read_ids(ids_from, json) if ids_from is not None else None
    try:
        options = RefreshOptions(
            sessions=sessions,
            files=files,
            passwords=passwords,
            services=_services(services),
            since=_since(since),
            mode=mode,
            ids=ids,
            batch_size=batch_size,
        )
    except (OSError, ValueError) as error:
        fail(str(error), EXIT_USAGE, as_json=json)

    # Opened (and an empty database given the schema) before workers start, so a bad URL
    # or a schema mismatch is reported once, in one line, by this process.
    engine = open_database(settings.db_url, as_json=json, pool_size=1, max_overflow=1)

    if workers > 1 or run_id is not None:
        engine.dispose()
        _run_workers(settings, options, workers, run_id, lease_seconds, json, verbose)
        return

    show_progress = sys.stderr.isatty() and not json
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=True,
    )
    task = bar.add_task("enriching", total=None)

    def on_progress(kind: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None, description=kind)

    try:
        # SIGTERM (systemd stopping the unit) ends the run as Ctrl-C does: the status file
        # says interrupted instead of staying at running.
        with _sigterm_interrupts(), _lost(settings.db_url, json), bar:
            result = refresh(engine, settings, options, progress=on_progress)
    except KeyboardInterrupt as stopped:
        _interrupted(stopped, json)
    finally:
        engine.dispose()

    if json:
        emit_json(result.as_dict() | {"db": redact_url(settings.db_url)})
    else:
        _print_summary(result)
    if result.exit_code:
        failed = ", ".join(result.failed_services)
        console.print(f"error: every lookup failed for: {failed}", markup=False)
        raise typer.Exit(result.exit_code)


def _run_workers(
    settings: Settings,
    options: RefreshOptions,
    workers: int,
    run_id: str | None,
    lease_seconds: float,
    json: bool,
    verbose: bool,
) -> None:
    """``--workers N`` / ``--run-id``: worker processes, then the merged summary."""
    from cowrieprocessor.db.engine import redact_url
    from cowrieprocessor.enrichment.shared_limits import sqlite_limit_file
    from cowrieprocessor.enrichment.workers import refresh_with_workers

    try:
        if settings.db_url.startswith("sqlite"):
            sqlite_limit_file(settings.db_url)  # refuses an in-memory database up front
        with _sigterm_interrupts():
            result = refresh_with_workers(
                settings,
                options,
                workers,
                run_id=run_id,
                lease=timedelta(seconds=lease_seconds),
                log_level=logging.DEBUG if verbose else logging.WARNING,
            )
    except ValueError as error:
        fail(str(error), EXIT_USAGE, as_json=json)
    except KeyboardInterrupt as stopped:
        # The workers were told to stop and have ended (refresh_with_workers saw to it).
        _interrupted(stopped, json)

    if result.database_lost is not None and len(result.died) == workers:
        # Every worker is gone and the database is why: the line the single-process run
        # prints, not a report of deaths.
        fail(
            f"the database {redact_url(settings.db_url)} failed during the refresh: "
            f"{result.database_lost}; {_LOST_KEPT}",
            EXIT_USAGE,
            as_json=json,
        )
    if json:
        emit_json(result.as_dict() | {"db": redact_url(settings.db_url)})
    else:
        _print_summary(result)
        data = result.as_dict()
        console.print(
            f"run {data['run_id']}: {data['workers']} workers, "
            f"{data['cache']['shared']} answers shared between them",
            markup=False,
        )
    if result.died and len(result.died) == workers:
        console.print(
            f"error: every worker died; {_LOST_KEPT}",
            markup=False,
        )
    elif result.died:
        died = ", ".join(str(i) for i in result.died)
        console.print(f"error: worker(s) {died} died; their rows were taken over", markup=False)
    if result.failed_services:
        failed = ", ".join(result.failed_services)
        console.print(f"error: every lookup failed for: {failed}", markup=False)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread the way Ctrl-C raises KeyboardInterrupt."""


_INTERRUPTED = "interrupted; committed rows are kept, run again to go on"


def _interrupted(stopped: KeyboardInterrupt, json: bool) -> NoReturn:
    """End a stopped run: the line on stderr (and with ``--json`` one object saying so on
    stdout), exit 143 for SIGTERM, else 130."""
    if json:
        emit_json({"ok": False, "interrupted": True, "error": _INTERRUPTED})
    console.print(_INTERRUPTED, markup=False)
    code = EXIT_TERMINATED if isinstance(stopped, _Terminated) else EXIT_INTERRUPTED
    raise typer.Exit(code) from None


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Inside: SIGTERM raises :class:`_Terminated`, so a refresh with workers stops them
    (they are the forkserver's children: the default SIGTERM would leave them running)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: What stays when the database fails during a refresh.
_LOST_KEPT = "the outcomes stored until then are kept, and a rerun goes on from there"


def _lost(url: str, as_json: bool) -> AbstractContextManager[None]:
    """Exit 2 with one line should the database fail during the run."""
    return database_loss_exits(
        url,
        as_json=as_json,
        during="during the refresh",
        kept=_LOST_KEPT,
    )


def _read_ids(path: Path, as_json: bool) -> IdFilter:
    """The sessions ``--ids-from`` names; exit 2 when the file cannot be read, and warn,
    with the first line numbers, about lines that name no session."""
    from cowrieprocessor.enrichment.targets import IdFilter

    try:
        ids, skipped = IdFilter.read(path)
    except OSError as error:
        fail(f"--ids-from {path}: {error.strerror or error}", EXIT_USAGE, as_json=as_json)
    if skipped:
        shown = ", ".join(
            f"line {number} '{printable(line, limit=40, stored=False)}'"
            for number, line in skipped[:3]
        )
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        console.print(
            f"warning: --ids-from {path}: {len(skipped)} line(s) skipped, not "
            f"'sensor<TAB>session_id' or 'session_id': {shown}{more}; "
            f"{len(ids)} session(s) named",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
    return ids


def _services(text: str | None) -> tuple[str, ...]:
    if text is None:
        return SERVICE_NAMES
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise ValueError("--services names no service")
    return names


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is not an ISO date or date-time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _print_summary(result: RefreshResult | PoolResult) -> None:
    from rich.table import Table

    data = result.as_dict()
    rows = Table(title="cowrie-enrich refresh", title_justify="left")
    for column in ("rows", "total", "scanned", "enriched"):
        rows.add_column(column, justify="left" if column == "rows" else "right")
    for kind, counts in data["rows"].items():
        rows.add_row(kind, *(f"{counts[name]:,}" for name in ("total", "scanned", "enriched")))
    console.print(rows)

    if data["outcomes"]:
        outcomes = Table(show_header=True, title_justify="left")
        for column in ("service", "outcome", "rows"):
            outcomes.add_column(column, justify="right" if column == "rows" else "left")
        for service, counts in data["outcomes"].items():
            for label, number in counts.items():
                outcomes.add_row(service, label, f"{number:,}")
        console.print(outcomes)

    lookups = data["lookups"]
    for service, stats in lookups.items():
        console.print(
            f"{service}: {stats['api_calls']} API calls, {stats['cache_hits']} cache hits, "
            f"{stats['cache_misses']} cache misses",
            markup=False,
        )
    for service, message in data["last_errors"].items():
        console.print(f"last error of {service}: {message}", markup=False)
    if data.get("status_file"):
        console.print(f"status file: {data['status_file']}", markup=False)
