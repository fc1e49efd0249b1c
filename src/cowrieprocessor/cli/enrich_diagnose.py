"""`cowrie-enrich diagnose` and `cowrie-enrich check-credentials`.

Exit codes: 0 healthy, 1 a threshold was missed (or a configured key failed), 2 the
diagnosis itself could not run (bad options, unreachable database, wrong schema).
"""

from __future__ import annotations

import json as jsonlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

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
from cowrieprocessor.safetext import printable

# The diagnostics (SQLAlchemy, httpx for check-credentials) are imported by the commands,
# so `cowrie-enrich --help` does not wait for them.
if TYPE_CHECKING:
    from cowrieprocessor.diagnostics import Report
    from cowrieprocessor.diagnostics.records import Tally


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


# Rendering ---------------------------------------------------------------------------------

_TITLES = {
    1: "1. Session enrichment completeness",
    2: "2. Enrichment by service",
    3: "3. Enrichment by time period",
    4: "4. File enrichment completeness",
    5: "5. Flags against data",
    6: "6. Sample sessions",
    7: "7. Enrichment by sensor",
    8: "8. High-value sessions without enrichment",
    9: "9. Error patterns",
    10: "10. Password enrichment (HIBP)",
}
Rows = list[list[str]]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items())) or "0"


def _tally_row(tally: Tally) -> list[str]:
    return [
        tally.service,
        tally.target,
        str(tally.total),
        str(tally.success),
        str(tally.not_found),
        _counts({k: v for k, v in tally.skipped.items() if k not in _FINAL}),
        _counts(tally.errors),
        str(tally.never),
        str(tally.final),
        _pct(tally.coverage_pct),
    ]


_FINAL = ("not_routable", "not_applicable")
_TALLY_HEAD = [
    "service",
    "rows",
    "total",
    "success",
    "not found",
    "skipped (changeable)",
    "errors",
    "never",
    "final skips",
    "coverage",
]


Section = tuple[list[str], Rows, list[str]]


def _table_1(report: Report, r: Any) -> Section:
    head = ["sessions", "final skips (left out)", "with any", "complete", "coverage", "goal"]
    row = [
        str(r.total),
        str(r.excluded),
        f"{r.with_any} ({_pct(r.any_pct)})",
        str(r.complete),
        _pct(r.coverage_pct),
        _pct(report.options.thresholds.goal_sessions),
    ]
    return head, [row], [f"expected services: {', '.join(r.services)}"]


def _table_2(report: Report, tallies: Any) -> Section:
    return _TALLY_HEAD, [_tally_row(t) for t in tallies], []


def _table_3(report: Report, trend: Any) -> Section:
    head = ["period", "sessions", "complete", *report.options.services]
    rows = [
        [p.period, str(p.completeness.total), _pct(p.completeness.coverage_pct)]
        + [_pct(x.coverage_pct) for x in p.tallies]
        for p in trend.rows
    ]
    notes = [
        f"{name}: coverage fell on {since} and stayed below the threshold"
        for name, since in trend.fell_since.items()
        if since
    ]
    if trend.undated:
        notes.append(f"{trend.undated} session(s) without a time are not in any period")
    return head, rows, notes


def _table_4(report: Report, files: Any) -> Section:
    head = ["direction", "rows", "no hash (left out)", "with hash", "success", "not found"]
    head += ["skipped", "errors", "never", "final", "VirusTotal", "URLhaus (files with URL)"]
    rows = [
        [
            entry.direction,
            str(entry.rows),
            str(entry.without_hash),
            *_tally_row(entry.virustotal)[2:],
            _pct(entry.urlhaus.coverage_pct),
        ]
        for entry in files.values()
    ]
    return head, rows, []


def _table_5(report: Report, found: Any) -> Section:
    rows = [[i.check, i.target, i.service, str(i.count)] for i in found]
    return ["check", "rows", "service", "count"], rows, []


def _table_6(report: Report, samples: Any) -> Section:
    rows = []
    for s in samples:
        enrichment = jsonlib.dumps(s.enrichment, ensure_ascii=False, sort_keys=True)
        rows.append(
            [
                s.service,
                s.outcome,
                printable(s.sensor),
                printable(s.session_id),
                printable(s.src_ip),
                printable(enrichment, limit=400),
            ]
        )
    return ["service", "outcome", "sensor", "session", "src_ip", "enrichment"], rows, []


def _table_7(report: Report, sensors: Any) -> Section:
    rows = [
        [printable(s.sensor), str(s.completeness.total), _pct(s.completeness.coverage_pct)]
        + [_pct(x.coverage_pct) for x in s.tallies]
        for s in sensors
    ]
    return ["sensor", "sessions", "complete", *report.options.services], rows, []


def _table_8(report: Report, ranked: Any) -> Section:
    head = ["sensor", "session", "src_ip", "transfers", "logins ok", "commands", "missing"]
    rows = [
        [
            printable(p.sensor),
            printable(p.session_id),
            printable(p.src_ip),
            str(p.transfers),
            str(p.login_successes),
            str(p.commands),
            ", ".join(p.missing),
        ]
        for p in ranked[: report.options.top]
    ]
    note = (
        f"{len(ranked)} session(s) in all; export them with "
        "`cowrie-enrich diagnose --only 8 --export priority.tsv`, then run "
        "`cowrie-enrich refresh --ids-from priority.tsv`"
    )
    return head, rows, [note]


def _table_9(report: Report, found: Any) -> Section:
    patterns, letters, events = found
    head = ["rows", "service", "kind", "HTTP", "message", "count", "first seen", "last seen"]
    rows = [
        [
            p.target,
            p.service,
            p.kind or "",
            "" if p.http_status is None else str(p.http_status),
            printable(p.message, limit=120),
            str(p.count),
            p.first_seen or "",
            p.last_seen or "",
        ]
        for p in patterns[: report.options.top]
    ]
    for group in letters:
        seen = group.as_dict()
        rows.append(
            [
                "dead letters",
                "",
                group.reason,
                "",
                f"{group.unresolved} unresolved",
                str(group.count),
                seen["first_seen"],
                seen["last_seen"],
            ]
        )
    notes = [f"{len(patterns)} enrichment error pattern(s); {events} loaded event(s)"]
    return head, rows, notes


def _table_10(report: Report, p: Any) -> Section:
    row = [*_tally_row(p.hibp), f"{p.breached} ({_pct(p.breached_pct)})"]
    return [*_TALLY_HEAD, "breached"], [row], []


_BUILDERS = {
    1: _table_1,
    2: _table_2,
    3: _table_3,
    4: _table_4,
    5: _table_5,
    6: _table_6,
    7: _table_7,
    8: _table_8,
    9: _table_9,
    10: _table_10,
}


def _tables(report: Report) -> list[tuple[int, list[str], Rows, list[str]]]:
    """(diagnostic, header, rows, notes) for each diagnostic that ran. Attacker text is
    escaped here, once, for both the terminal and Markdown."""
    return [
        (number, *_BUILDERS[number](report, record))
        for number, record in sorted(report.records.items())
    ]


def _check_lines(report: Report, number: int) -> list[tuple[bool, str, list[str]]]:
    lines = []
    for check in report.checks_of(number):
        relation = ">=" if check.kind == "min" else "<="
        value = "n/a" if check.value is None else f"{check.value:g}"
        # Check names and advice can quote a sensor name: escape them like table cells.
        head = f"{printable(check.name)}: {value} (needs {relation} {check.threshold:g})"
        advice = [
            printable(a.text) + (f"\n    run: {printable(a.command)}" if a.command else "")
            for a in check.advice
        ]
        lines.append((check.ok, head, advice))
    return lines


def render_terminal(report: Report, out: Console) -> None:
    from rich.table import Table

    for number, head, rows, notes in _tables(report):
        table = Table(title=_TITLES[number], title_justify="left")
        for column in head:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        out.print(table)
        for note in notes:
            out.print(Text(note))
        for ok, line, advice in _check_lines(report, number):
            out.print(
                Text.assemble(("OK   " if ok else "FAIL ", "green" if ok else "bold red"), line)
            )
            for item in advice:
                out.print(Text(f"  - {item}"))
    verdict = "healthy" if report.healthy else "UNHEALTHY: a threshold was missed"
    out.print(Text(verdict, style="bold green" if report.healthy else "bold red"))


def _md_cell(text: str) -> str:
    """Table cell text that Markdown shows as text (no table breaks, code, or HTML)."""
    return text.replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;")


def render_markdown(report: Report) -> str:
    parts = [
        "# Enrichment diagnosis",
        "",
        f"**{'Healthy' if report.healthy else 'Unhealthy: a threshold was missed'}**",
        "",
    ]
    for number, head, rows, notes in _tables(report):
        parts += [f"## {_TITLES[number]}", ""]
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        parts += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
        parts.append("")
        parts += [f"{_md_cell(note)}  " for note in notes]
        for ok, line, advice in _check_lines(report, number):
            parts.append(f"- {'OK' if ok else '**FAIL**'} {line}")
            for item in advice:
                text, _, command = item.partition("\n    run: ")
                parts.append(f"  - {text}" + (f": `{command}`" if command else ""))
        parts.append("")
    return "\n".join(parts)
