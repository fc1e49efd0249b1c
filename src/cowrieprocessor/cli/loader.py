"""`cowrie-loader`: load Cowrie JSON logs into the database."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from cowrieprocessor.cli.common import (
    EXIT_FAILED,
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

# The loader and SQLAlchemy are imported by the command itself, so --help stays fast.
if TYPE_CHECKING:
    from rich.progress import Progress

    from cowrieprocessor.ingest.loader import IngestSummary

app = typer.Typer(
    cls=Group,
    help="Load Cowrie JSON logs (plain, .gz, .bz2) into the cowrieprocessor database.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Load Cowrie JSON logs into the cowrieprocessor database."""


@app.command(cls=Command)
def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATH...", help="Files, directories (recursive) or glob patterns."),
    ],
    db: DbOption = None,
    sensor: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Sensor name for events without a `sensor` field.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(metavar="N", help="Events per transaction.", show_default=False, min=1),
    ] = None,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Load logs. Safe to rerun: what is already loaded is recognised and skipped.

    Should the database fail during the load (connection lost, server gone), the command
    ends with exit code 2 and one line; the batches committed until then stay, with
    their files' checkpoints, and a rerun goes on from there.
    """
    from cowrieprocessor.db.engine import redact_url
    from cowrieprocessor.ingest.loader import Loader
    from cowrieprocessor.safetext import printable

    setup_logging(verbose)
    settings = settings_or_exit(
        config, as_json=json, db_url=db, sensor=sensor, batch_size=batch_size
    )
    engine = open_database(settings.db_url, as_json=json, pool_size=1, max_overflow=1)

    show_progress = sys.stderr.isatty() and not json
    lost = database_loss_exits(
        settings.db_url,
        as_json=json,
        during="during the load",
        kept="the batches committed until then are kept with their files' checkpoints, "
        "and a rerun goes on from there",
    )
    with lost, _progress(show_progress) as bar:
        task = bar.add_task("loading", total=None) if show_progress else None

        def on_progress(done: int, size: int, path: str) -> None:
            if task is not None:
                bar.update(
                    task,
                    completed=done,
                    total=size or None,
                    description=printable(path[-40:], stored=False),
                )

        loader = Loader(
            engine,
            default_sensor=settings.sensor,
            batch_size=settings.batch_size,
            progress=on_progress,
        )
        summary = loader.ingest(paths)

    result = summary.as_dict() | {"db": redact_url(settings.db_url)}
    if json:
        emit_json(result)
    else:
        _print_summary(summary, redact_url(settings.db_url))
    if not summary.files:
        fail("no input files found", EXIT_FAILED)
    if summary.nothing_readable:
        fail("nothing could be read from the inputs", EXIT_FAILED)


def _progress(enabled: bool) -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )


def _print_summary(summary: IngestSummary, db: str) -> None:
    from rich.table import Table

    from cowrieprocessor.safetext import printable

    data = summary.as_dict()
    console.print(f"cowrie-loader → {db}", markup=False, soft_wrap=True)
    table = Table(show_header=False)
    for label, key in (
        ("files", "files"),
        ("files unchanged since last run", "files_unchanged"),
        ("events read", "events_read"),
        ("events loaded", "events_loaded"),
        ("duplicates skipped", "duplicates_skipped"),
        ("dead letters", "dead_letters"),
        ("sessions touched", "sessions"),
        ("events per second", "events_per_second"),
    ):
        table.add_row(label, f"{data[key]:,}")
    console.print(table)
    for problem, count in data["event_problems"].items():
        console.print(
            f"warning: {count} event(s) loaded with {problem}: the event is stored whole "
            "in raw_events, the field it concerns is left empty",
            markup=False,
        )
    for warning in summary.warnings:
        console.print(f"warning: {printable(warning, stored=False)}", markup=False)
    if data["dead_letters"]:
        console.print(
            f"warning: {data['dead_letters']} line(s) could not be loaded; "
            "see the dead_letter_events table",
            markup=False,
        )


def main() -> None:
    app()
