"""`cowrie-enrich diagnose` and `cowrie-enrich check-credentials`.

Exit codes: 0 healthy, 1 a threshold was missed (or a configured key failed), 2 the
diagnosis itself could not run (bad options, unreachable database, wrong schema).
"""

from __future__ import annotations

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
    emit_json,
    error_text,
    fail,
    open_database,
    settings_or_exit,
    setup_logging,
)
from cowrieprocessor.db.textrule import decode_text

# The diagnostics (SQLAlchemy, httpx for check-credentials) are imported by the commands,
# so `cowrie-enrich --help` does not wait for them.
if TYPE_CHECKING:
    from cowrieprocessor.diagnostics import Report


def _threshold(what: str, default: str, variable: str) -> Any:
    return typer.Option(
        metavar="PCT",
        help=f"{what} (default {default}, or COWRIEPROC_DIAG_{variable}).",
        show_default=False,
        min=0,
        max=100,
    )


_MinSessions = Annotated[
    float | None, _threshold("Least session coverage, %", "90", "MIN_SESSIONS")
]
_MinDshield = Annotated[float | None, _threshold("Least DShield coverage, %", "95", "MIN_DSHIELD")]
_MinUrlhaus = Annotated[float | None, _threshold("Least URLhaus coverage, %", "90", "MIN_URLHAUS")]
_MinSpur = Annotated[float | None, _threshold("Least SPUR coverage, %", "80", "MIN_SPUR")]
_MinVt = Annotated[
    float | None, _threshold("Least VirusTotal coverage of files, %", "80", "MIN_VIRUSTOTAL")
]
_MinHibp = Annotated[
    float | None, _threshold("Least HIBP coverage of passwords, %", "80", "MIN_HIBP")
]
_MaxDeadLetters = Annotated[
    float | None,
    _threshold("Most unresolved dead letters, % of events", "1", "MAX_DEAD_LETTER_PCT"),
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

    Thresholds default to the runbook and can be set by COWRIEPROC_DIAG_<NAME> too.
    Exit code 0 healthy, 1 a threshold missed, 2 the diagnosis failed.
    """
    from cowrieprocessor.db.engine import redact_url
    from cowrieprocessor.diagnostics import DiagnoseOptions, Thresholds, run_diagnostics
    from cowrieprocessor.diagnostics.run import ALL

    setup_logging(verbose)
    try:
        thresholds = Thresholds.from_env(
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
    except ValueError as error:
        fail(str(error), EXIT_USAGE, as_json=json)

    settings = settings_or_exit(config, db_url=db)
    engine = open_database(settings.db_url, as_json=json, pool_size=1, max_overflow=0)
    try:
        report = run_diagnostics(engine, options)
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

    if export is not None:
        written, skipped = _export(report, export)
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


def _export(report: Report, path: Path) -> tuple[int, int]:
    """Write the ranked sessions of diagnostic 8 as ``refresh --ids-from`` reads them: the
    original text, UTF-8 with surrogate escapes. Ids that such a line cannot carry (a
    tab, a line break, surrounding blanks, a surrogate outside the escape range) are
    counted instead."""
    ranked = report.records.get(8)
    if ranked is None:
        fail("--export needs diagnostic 8 (add 8 to --only)", EXIT_USAGE)
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
    path.write_text("".join(lines), encoding="utf-8", errors="surrogateescape")
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
    settings = settings_or_exit(config)
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
