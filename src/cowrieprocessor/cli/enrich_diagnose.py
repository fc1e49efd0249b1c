"""`cowrie-enrich diagnose` and `cowrie-enrich check-credentials`.

Exit codes: 0 healthy, 1 a threshold was missed or no sessions are loaded (or a
configured key failed), 2 the diagnosis itself could not run (bad options, an export
file that cannot be written, unreachable or missing database, no or wrong schema, the
database lost while it ran). Diagnose never creates a database or its schema.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cowrieprocessor.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
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
from cowrieprocessor.db.errors import error_text
from cowrieprocessor.db.textrule import decode_text

# The diagnostics (SQLAlchemy, httpx for check-credentials) are imported by the commands,
# so `cowrie-enrich --help` does not wait for them.
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from cowrieprocessor.diagnostics import Report, Thresholds
    from cowrieprocessor.diagnostics.records import Check


def _threshold(what: str, name: str) -> Any:
    default = f"{_DEFAULTS[name]:g}"
    return typer.Option(
        metavar="PCT",
        help=f"{what} (default {default}; or COWRIEPROC_DIAG_{name.upper()}, or "
        f"diag_{name} in the config file).",
        show_default=False,
        min=0,
        max=100,
    )


#: The runbook's defaults of ``diagnostics.health.Thresholds``, for the help text without
#: importing the diagnostics (tests/cli/test_diagnose_config.py checks they agree).
_DEFAULTS = {
    "min_sessions": 90.0,
    "min_dshield": 95.0,
    "min_urlhaus": 90.0,
    "min_spur": 80.0,
    "min_virustotal": 80.0,
    "min_hibp": 80.0,
    "max_dead_letter_pct": 1.0,
}
_MinSessions = Annotated[float | None, _threshold("Least session coverage, %", "min_sessions")]
_MinDshield = Annotated[float | None, _threshold("Least DShield coverage, %", "min_dshield")]
_MinUrlhaus = Annotated[float | None, _threshold("Least URLhaus coverage, %", "min_urlhaus")]
_MinSpur = Annotated[float | None, _threshold("Least SPUR coverage, %", "min_spur")]
_MinVt = Annotated[
    float | None, _threshold("Least VirusTotal coverage of files, %", "min_virustotal")
]
_MinHibp = Annotated[float | None, _threshold("Least HIBP coverage of passwords, %", "min_hibp")]
_MaxDeadLetters = Annotated[
    float | None,
    _threshold("Most unresolved dead letters, % of events", "max_dead_letter_pct"),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("diagnose", cls=Command)(diagnose)
    app.command("check-credentials", cls=Command)(check_credentials_command)


def diagnose(
    db: DbOption = None,
    only: Annotated[
        str | None,
        typer.Option(metavar="N,N,...", help="Diagnostics to run, e.g. 1,2,3 (default: all ten)."),
    ] = None,
    period: Annotated[
        str, typer.Option(metavar="day|week", help="Trend period: day or week.")
    ] = "day",
    since: Annotated[
        str | None,
        typer.Option(
            metavar="DATE",
            help="Only rows at or after this UTC date (YYYY-MM-DD).",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format", metavar="terminal|markdown", help="terminal (tables) or markdown."
        ),
    ] = "terminal",
    export: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Write the ranked sessions of diagnostic 8 as 'sensor<TAB>session_id' lines "
            "for `cowrie-enrich refresh --ids-from FILE`.",
            show_default=False,
        ),
    ] = None,
    min_sessions: _MinSessions = None,
    min_dshield: _MinDshield = None,
    min_urlhaus: _MinUrlhaus = None,
    min_spur: _MinSpur = None,
    min_virustotal: _MinVt = None,
    min_hibp: _MinHibp = None,
    max_dead_letter_pct: _MaxDeadLetters = None,
    samples: Annotated[
        int, typer.Option(metavar="N", help="Sample sessions per outcome.", min=0)
    ] = 2,
    top: Annotated[
        int, typer.Option(metavar="N", help="Priority sessions and errors shown.", min=1)
    ] = 20,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """How complete is enrichment, where are the gaps, since when, and why.

    Thresholds default to the runbook. Each can be set by its option, a
    COWRIEPROC_DIAG_<NAME> variable or a diag_<name> key of the config file, in that
    order of precedence. Exit code 0 healthy, 1 a threshold missed or no sessions
    loaded, 2 the diagnosis failed.
    """
    from cowrieprocessor.db.engine import redact_url
    from cowrieprocessor.diagnostics import DiagnoseOptions, run_diagnostics
    from cowrieprocessor.diagnostics.run import ALL

    setup_logging(verbose)
    try:
        thresholds = _thresholds(
            config,
            min_sessions=min_sessions,
            min_dshield=min_dshield,
            min_urlhaus=min_urlhaus,
            min_spur=min_spur,
            min_virustotal=min_virustotal,
            min_hibp=min_hibp,
            max_dead_letter_pct=max_dead_letter_pct,
        )
        numbers = _parse_only(only)
        if output_format not in ("terminal", "markdown"):
            raise ValueError(f"--format must be terminal or markdown, not {output_format!r}")
        options = DiagnoseOptions(
            only=numbers if numbers is not None else ALL,
            period=period,
            since=_parse_since(since),
            thresholds=thresholds,
            samples_per_outcome=samples,
            top=top,
        )
        if export is not None:
            _check_export(export, options.only)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error), EXIT_USAGE, as_json=json)

    settings = settings_or_exit(config, as_json=json, db_url=db)
    engine = open_database(
        settings.db_url, as_json=json, pool_size=1, max_overflow=0, create=False
    )
    try:
        with database_loss_exits(settings.db_url, as_json=json, during="during the diagnosis"):
            report = run_diagnostics(engine, options)
            loaded = _sessions_loaded(engine, options.since)
    except typer.Exit:  # the line is printed already
        raise
    except Exception as error:  # connection refused, permissions, a damaged database
        fail(
            f"diagnosis failed on {redact_url(settings.db_url)}: "
            f"{error_text(error, settings.db_url)}",
            EXIT_USAGE,
            as_json=json,
        )
    finally:
        engine.dispose()

    from cowrieprocessor.cli.diagnose_render import render_markdown, render_terminal

    if loaded == 0:
        report.checks.insert(0, _no_sessions_check(options.since))
        where = f" since {options.since:%Y-%m-%d}" if options.since else ""
        console.print(
            f"warning: no sessions loaded{where} in {redact_url(settings.db_url)}; "
            "unhealthy until `cowrie-loader ingest` loads some (is --db the right database?)",
            style="bold yellow",
            markup=False,
            soft_wrap=True,
        )
    if export is not None:
        written, skipped = _export(report, export, as_json=json)
        console.print(
            f"exported {written} session(s) to {export}"
            + (f"; {skipped} left out (tab or line break in the id)" if skipped else ""),
            markup=False,
        )
    if json:
        emit_json(report.as_dict() | {"db": redact_url(settings.db_url)})
    elif output_format == "markdown":
        typer.echo(render_markdown(report))
    else:
        render_terminal(report, console)
    raise typer.Exit(EXIT_OK if report.healthy else EXIT_FAILED)


def _thresholds(config: Path | None, **options: float | None) -> Thresholds:
    """Each threshold from its option, else ``COWRIEPROC_DIAG_<NAME>``, else the config
    file's ``diag_<name>``, else the runbook default.

    Raises:
        FileNotFoundError: the config file named by ``--config`` or COWRIEPROC_CONFIG
            is missing.
        ValueError: naming the file and key or the variable: not valid TOML, an unknown
            ``diag_`` key, a value that is not a number or lies outside its range.
    """
    from dataclasses import fields

    from cowrieprocessor.config import read_config_file
    from cowrieprocessor.diagnostics.health import ENV_PREFIX, Thresholds

    path, table = read_config_file(config)
    names = {item.name: item.type for item in fields(Thresholds)}
    unknown = sorted(key for key in table if key.startswith("diag_") and key[5:] not in names)
    if unknown:
        known = ", ".join(f"diag_{name}" for name in names)
        raise ValueError(f"config file {path}: unknown key {unknown[0]} (known: {known})")
    from_file: dict[str, Any] = {}
    for name, kind in names.items():
        key = f"diag_{name}"
        if key not in table:
            continue
        try:
            value = _file_number(table[key], kind)
            Thresholds.from_env({}, **{name: value})  # checks its range, named here
        except ValueError as error:
            raise ValueError(f"config file {path}: {key}: {error}") from None
        # A variable wins; one set to blanks counts as unset, as Thresholds.from_env has it.
        if not os.environ.get(ENV_PREFIX + name.upper(), "").strip():
            from_file[name] = value
    chosen: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    return Thresholds.from_env(**(from_file | chosen))


def _file_number(value: Any, kind: Any) -> float | int:
    """A TOML number as the threshold's type; ValueError for anything else."""
    whole = kind in (int, "int")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if whole and not float(value).is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value) if whole else float(value)


def _parse_only(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"--only {text!r}: give diagnostic numbers 1 to 10, e.g. 1,2,3")
    return tuple(int(part) for part in parts)


def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is not a date (YYYY-MM-DD)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _check_export(path: Path, only: tuple[int, ...]) -> None:
    """Raise ValueError, before any work, when ``--export`` cannot be written: diagnostic
    8 not run, the path a directory, or its directory missing."""
    if 8 not in only:
        raise ValueError("--export needs diagnostic 8 (add 8 to --only)")
    if path.is_dir():
        raise ValueError(f"--export {path}: is a directory; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"--export {path}: the directory {path.parent} does not exist")


def _sessions_loaded(engine: Engine, since: datetime | None) -> int:
    """How many sessions the database holds (first seen at or after ``since``)."""
    from sqlalchemy import func, select

    from cowrieprocessor.db.models import SessionSummary, table_of

    sessions = table_of(SessionSummary)
    query = select(func.count()).select_from(sessions)
    if since is not None:
        query = query.where(sessions.c.first_event_at >= since)
    with engine.connect() as conn:
        return int(conn.scalar(query) or 0)


def _no_sessions_check(since: datetime | None) -> Check:
    """The failed check of a database without sessions (diagnostic 0: a precondition of
    all ten), so that a health check on an empty or wrong database does not pass."""
    from cowrieprocessor.diagnostics.records import Advice, Check

    advice = Advice(
        "no sessions are loaded"
        + (f" since {since:%Y-%m-%d}" if since else "")
        + ": load the logs, or point --db at the database they were loaded into",
        "cowrie-loader ingest /var/log/cowrie/",
    )
    return Check(0, "sessions loaded", 0, 1, False, "min", (advice,))


def _export(report: Report, path: Path, *, as_json: bool) -> tuple[int, int]:
    """Write the ranked sessions of diagnostic 8 as ``refresh --ids-from`` reads them: the
    original text, UTF-8 with surrogate escapes. Ids that such a line cannot carry (a
    tab, a line break, surrounding blanks, a surrogate outside the escape range) are
    counted instead. A file that cannot be written ends the command with exit 2."""
    ranked = report.records[8]
    lines, skipped = [], 0
    for item in ranked:
        sensor, session_id = decode_text(item.sensor), decode_text(item.session_id)
        line = f"{sensor}\t{session_id}\n"
        try:
            line.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            skipped += 1
            continue
        unsafe = any(char in sensor + session_id for char in "\t\r\n")
        if unsafe or sensor.strip() != sensor or session_id.strip() != session_id:
            skipped += 1
            continue
        lines.append(line)
    try:
        path.write_text("".join(lines), encoding="utf-8", errors="surrogateescape")
    except OSError as error:
        fail(
            f"cannot write --export {path}: {error.strerror or error}", EXIT_USAGE, as_json=as_json
        )
    return len(lines), skipped


def check_credentials_command(
    services: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES", help=f"Services to check (default: {','.join(SERVICE_NAMES)})."
        ),
    ] = None,
    json: JsonOption = False,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Per service: key configured (never shown), reachable, accepted, quota left.

    One cheap request per service with a key; none for a service without one.
    Exit code 1 when a configured service is unreachable or refuses its key.
    """
    from rich.table import Table

    from cowrieprocessor.diagnostics import check_credentials

    setup_logging(verbose)
    settings = settings_or_exit(config, as_json=json)
    names = tuple(part.strip() for part in services.split(",")) if services else SERVICE_NAMES
    unknown = [name for name in names if name not in SERVICE_NAMES]
    if unknown:
        fail(
            f"unknown service(s) {', '.join(unknown)}; expected {', '.join(SERVICE_NAMES)}",
            EXIT_USAGE,
            as_json=json,
        )
    results = check_credentials(settings, names)
    healthy = all(result.ok for result in results)
    if json:
        emit_json({"ok": healthy, "services": [result.as_dict() for result in results]})
    else:
        table = Table(title="cowrie-enrich check-credentials", title_justify="left")
        for column in ("service", "key", "reachable", "accepted", "quota left", "detail"):
            table.add_column(column)
        for result in results:
            table.add_row(
                result.service,
                _key_state(result.service, result.configured),
                _yes_no(result.reachable),
                _yes_no(result.accepted),
                "" if result.quota_left is None else f"{result.quota_left:,}",
                result.detail,
            )
        console.print(table)
    raise typer.Exit(EXIT_OK if healthy else EXIT_FAILED)


def _key_state(service: str, configured: bool) -> str:
    if service == "hibp":
        return "not needed"
    return "configured" if configured else "missing"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")
