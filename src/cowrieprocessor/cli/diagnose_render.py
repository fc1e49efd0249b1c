"""How `cowrie-enrich diagnose` shows a report: terminal tables and Markdown.

Attacker text (sensor names, session ids, messages, envelopes) is escaped once, in
:func:`_tables`, for both outputs, so that a terminal never obeys it and Markdown shows it
as text.
"""

from __future__ import annotations

import json as jsonlib
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cowrieprocessor.safetext import printable

if TYPE_CHECKING:
    from cowrieprocessor.diagnostics import Report
    from cowrieprocessor.diagnostics.records import Tally

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
    # Checks of diagnostic 0 (sessions loaded) belong to no table: they come first.
    _print_checks(report, 0, out)
    for number, head, rows, notes in _tables(report):
        table = Table(title=_TITLES[number], title_justify="left")
        for column in head:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        out.print(table)
        for note in notes:
            out.print(Text(note))
        _print_checks(report, number, out)
    verdict = "healthy" if report.healthy else f"UNHEALTHY: {_why(report)}"
    out.print(Text(verdict, style="bold green" if report.healthy else "bold red"))


def _why(report: Report) -> str:
    failed = [check for check in report.checks if not check.ok]
    return "no sessions loaded" if failed[0].diagnostic == 0 else "a threshold was missed"


def _print_checks(report: Report, number: int, out: Console) -> None:
    for ok, line, advice in _check_lines(report, number):
        out.print(Text.assemble(("OK   " if ok else "FAIL ", "green" if ok else "bold red"), line))
        for item in advice:
            out.print(Text(f"  - {item}"))


def _md_cell(text: str) -> str:
    """Table cell text that Markdown shows as text (no table breaks, code, or HTML)."""
    return text.replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;")


def render_markdown(report: Report) -> str:
    parts = [
        "# Enrichment diagnosis",
        "",
        f"**{'Healthy' if report.healthy else f'Unhealthy: {_why(report)}'}**",
        "",
    ]
    if report.checks_of(0):
        parts += [*_md_checks(report, 0), ""]
    for number, head, rows, notes in _tables(report):
        parts += [f"## {_TITLES[number]}", ""]
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        parts += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
        parts.append("")
        parts += [f"{_md_cell(note)}  " for note in notes]
        parts += _md_checks(report, number)
        parts.append("")
    return "\n".join(parts)


def _md_checks(report: Report, number: int) -> list[str]:
    parts = []
    for ok, line, advice in _check_lines(report, number):
        parts.append(f"- {'OK' if ok else '**FAIL**'} {line}")
        for item in advice:
            text, _, command = item.partition("\n    run: ")
            parts.append(f"  - {text}" + (f": `{command}`" if command else ""))
    return parts
