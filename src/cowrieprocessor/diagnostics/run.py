"""Run the ten diagnostics, apply the thresholds, and collect one :class:`Report`.

All queries run in one read-only transaction, so the numbers of one report describe
one state of the database even while a refresh writes (on PostgreSQL under
REPEATABLE READ; SQLite's reader sees one snapshot in WAL mode).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from cowrieprocessor.diagnostics import coverage, integrity
from cowrieprocessor.diagnostics.health import (
    Thresholds,
    inconsistency_advice,
    refresh_command,
    service_advice,
)
from cowrieprocessor.diagnostics.records import Advice, Check, percent

logger = logging.getLogger(__name__)

ALL = tuple(range(1, 11))
PRIORITY_EXPORT = "priority.tsv"


@dataclass(frozen=True)
class DiagnoseOptions:
    """What to run. ``since`` limits sessions, files, passwords and dead letters to rows
    at or after it; ``top`` is how many priority sessions and error patterns a report
    shows (the export gets all of them)."""

    only: tuple[int, ...] = ALL
    period: str = "day"
    since: datetime | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    services: tuple[str, ...] = coverage.SESSION_SERVICES
    samples_per_outcome: int = 2
    top: int = 20

    def __post_init__(self) -> None:
        bad = [number for number in self.only if number not in ALL]
        if bad or not self.only:
            raise ValueError(f"diagnostics are numbered 1 to 10; got {list(self.only)}")
        if self.period not in ("day", "week"):
            raise ValueError(f"period must be day or week, not {self.period!r}")


@dataclass
class Report:
    """The outcome of one run: JSON-ready results keyed 1..10, records and checks."""

    options: DiagnoseOptions
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    records: dict[int, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    def checks_of(self, number: int) -> list[Check]:
        return [check for check in self.checks if check.diagnostic == number]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "healthy": self.healthy,
            "thresholds": self.options.thresholds.as_dict(),
            "checks": [check.as_dict() for check in self.checks],
        }
        for number in sorted(self.results):
            out[str(number)] = self.results[number] | {
                "checks": [check.as_dict() for check in self.checks_of(number)]
            }
        return out


def run_diagnostics(engine: Engine, options: DiagnoseOptions | None = None) -> Report:
    """Run the diagnostics ``options.only`` names; raises what the database raises."""
    options = options or DiagnoseOptions()
    report = Report(options)
    limits = options.thresholds
    services = options.services
    since = options.since
    wanted = set(options.only)

    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        matrix = coverage.session_matrix(conn, services, since) if wanted & {1, 2, 3, 7} else []
        patterns = integrity.error_patterns(conn, services) if wanted & {2, 4, 9, 10} else []

        if 1 in wanted:
            whole = coverage.completeness(matrix, services)
            report.records[1] = whole
            report.results[1] = whole.as_dict() | {"goal_pct": limits.goal_sessions}
            report.checks.append(_sessions_check(1, "sessions", whole.coverage_pct, limits))

        if 2 in wanted:
            tallies = coverage.session_tallies(matrix, services)
            tallies += coverage.optional_tallies(conn, since)
            files = coverage.file_coverage(conn, since)
            tallies.append(
                coverage.merged([f.virustotal for f in files.values()], "virustotal", "files")
            )
            tallies.append(coverage.password_coverage(conn, since).hibp)
            report.records[2] = tallies
            report.results[2] = {"services": [tally.as_dict() for tally in tallies]}
            for tally in tallies[: len(services)]:
                minimum = limits.service_minimum(tally.service)
                if minimum is not None:
                    report.checks.append(_min_check(2, tally.service, tally, minimum, patterns))

        if 3 in wanted:
            minimums = {"sessions": limits.min_sessions}
            for service in services:
                minimum = limits.service_minimum(service)
                if minimum is not None:
                    minimums[service] = minimum
            found = coverage.trend(matrix, services, options.period, minimums)
            report.records[3] = found
            report.results[3] = found.as_dict()
            for name, period in found.fell_since.items():
                if period is not None:
                    report.checks.append(_trend_check(name, period, found, minimums[name]))

        if 4 in wanted:
            files = coverage.file_coverage(conn, since)
            report.records[4] = files
            all_files = coverage.merged(
                [f.virustotal for f in files.values()], "virustotal", "files"
            )
            report.results[4] = {
                "directions": [entry.as_dict() for entry in files.values()],
                "virustotal": all_files.as_dict(),
            }
            report.checks.append(
                _min_check(4, "virustotal", all_files, limits.min_virustotal, patterns)
            )

        if 5 in wanted:
            found_5 = integrity.consistency(conn, services)
            report.records[5] = found_5
            total = sum(item.count for item in found_5)
            report.results[5] = {
                "checks_run": [item.as_dict() for item in found_5],
                "inconsistent_rows": total,
            }
            advice = inconsistency_advice(
                [(i.check, i.target, i.service, i.count) for i in found_5]
            )
            report.checks.append(
                Check(
                    5,
                    "inconsistent rows",
                    total,
                    limits.max_inconsistent,
                    total <= limits.max_inconsistent,
                    "max",
                    advice,
                )
            )

        if 6 in wanted:
            found_6 = integrity.samples(conn, services, options.samples_per_outcome, since)
            report.records[6] = found_6
            report.results[6] = {"samples": [sample.as_dict() for sample in found_6]}

        if 7 in wanted:
            sensors = coverage.by_sensor(matrix, services)
            report.records[7] = sensors
            report.results[7] = {"sensors": [row.as_dict() for row in sensors]}
            for row in sensors:
                value = row.completeness.coverage_pct
                if value is not None and value < limits.min_sessions:
                    report.checks.append(_sensor_check(row, sensors, limits))

        if 8 in wanted:
            ranked = integrity.priority_sessions(conn, services, since)
            report.records[8] = ranked
            report.results[8] = {
                "sessions": len(ranked),
                "top": [item.as_dict() for item in ranked[: options.top]],
                "export_command": f"cowrie-enrich diagnose --only 8 --export {PRIORITY_EXPORT}",
                "refresh_command": f"cowrie-enrich refresh --ids-from {PRIORITY_EXPORT}",
            }

        if 9 in wanted:
            letters = integrity.dead_letters(conn, since)
            events = integrity.loaded_events(conn)
            report.records[9] = (patterns, letters, events)
            unresolved = sum(group.unresolved for group in letters)
            share = percent(unresolved, events + unresolved)
            report.results[9] = {
                "enrichment_errors": [p.as_dict() for p in patterns],
                "error_patterns": len(patterns),
                "dead_letters": [group.as_dict() for group in letters],
                "unresolved_dead_letters": unresolved,
                "loaded_events": events,
                "dead_letter_pct": share,
            }
            report.checks.append(_dead_letter_check(share, letters, limits))

        if 10 in wanted:
            passwords = coverage.password_coverage(conn, since)
            report.records[10] = passwords
            report.results[10] = passwords.as_dict()
            report.checks.append(_min_check(10, "hibp", passwords.hibp, limits.min_hibp, patterns))
    return report


def _min_check(
    number: int,
    name: str,
    tally: Any,
    minimum: float,
    patterns: Sequence[integrity.ErrorPattern],
) -> Check:
    value = tally.coverage_pct
    ok = value is None or value >= minimum
    advice = () if ok else service_advice(tally, patterns)
    return Check(number, name, value, minimum, ok, "min", advice)


def _sessions_check(number: int, name: str, value: float | None, limits: Thresholds) -> Check:
    ok = value is None or value >= limits.min_sessions
    advice: tuple[Advice, ...] = ()
    if not ok:
        advice = (
            Advice(
                f"session coverage is below {limits.min_sessions:g} %: run a backfill of "
                "every session",
                "cowrie-enrich refresh --sessions 0",
            ),
            Advice(
                "or enrich the sessions with downloads, logins and commands first",
                f"cowrie-enrich diagnose --only 8 --export {PRIORITY_EXPORT} && "
                f"cowrie-enrich refresh --ids-from {PRIORITY_EXPORT}",
            ),
        )
    return Check(number, name, value, limits.min_sessions, ok, "min", advice)


def _trend_check(name: str, period: str, found: coverage.Trend, minimum: float) -> Check:
    latest = found.rows[-1]
    if name == "sessions":
        value = latest.completeness.coverage_pct
        target = "sessions"
        command = f"cowrie-enrich refresh --sessions 0 --since {period}"
    else:
        value = next(t.coverage_pct for t in latest.tallies if t.service == name)
        target = name
        command = f"{refresh_command(name, 'sessions')} --since {period}"
    advice = Advice(
        f"{target} coverage fell below {minimum:g} % in the {found.period} of {period} and "
        f"stayed there: the backfill stopped working on {period}. Check that the refresh "
        "timer runs (systemctl list-timers 'cowrie-enrich-*'), then backfill since then",
        command,
    )
    return Check(3, f"trend {name}", value, minimum, False, "min", (advice,))


def _sensor_check(
    row: coverage.SensorRow, sensors: Sequence[coverage.SensorRow], limits: Thresholds
) -> Check:
    others = [s for s in sensors if s is not row]
    text = f"sensor {row.sensor!r} is below {limits.min_sessions:g} %"
    best = max((s.completeness.coverage_pct or 0.0) for s in others) if others else 0.0
    if best >= limits.min_sessions:
        text += f" while another sensor reaches {best:g} %: look for a sensor-specific cause"
    advice = Advice(
        text + "; enrich its sessions first",
        f"cowrie-enrich diagnose --only 8 --export {PRIORITY_EXPORT} && "
        f"cowrie-enrich refresh --ids-from {PRIORITY_EXPORT}",
    )
    return Check(
        7,
        f"sensor {row.sensor}",
        row.completeness.coverage_pct,
        limits.min_sessions,
        False,
        "min",
        (advice,),
    )


def _dead_letter_check(
    share: float | None, letters: Sequence[integrity.DeadLetterGroup], limits: Thresholds
) -> Check:
    ok = share is None or share <= limits.max_dead_letter_pct
    advice: tuple[Advice, ...] = ()
    if not ok:
        reasons = ", ".join(f"{g.reason} ({g.unresolved})" for g in letters if g.unresolved)
        advice = (
            Advice(
                f"many input lines could not be loaded ({reasons}): the loader's error "
                "handling or the input needs attention; inspect the dead letters",
                "SELECT source_file, source_line, reason, detail FROM dead_letter_events "
                "WHERE resolved_at IS NULL ORDER BY created_at DESC LIMIT 50;",
            ),
        )
    return Check(9, "dead letters", share, limits.max_dead_letter_pct, ok, "max", advice)
