"""Coverage diagnostics: sessions (1), services (2), time periods (3), files (4),
sensors (7) and passwords (10).

Each database query groups rows by their stored outcomes and returns integer counts;
everything else (which outcome counts as covered, percentages, trends) is decided in
Python from those counts, so both databases give identical results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from cowrieprocessor.db.models import File, LoginAttempt, PasswordEnrichment, SessionSummary
from cowrieprocessor.db.models import table_of as _table
from cowrieprocessor.diagnostics.records import Tally, classify, percent
from cowrieprocessor.diagnostics.sql import reason_of, status_of, utc_day

logger = logging.getLogger(__name__)

SESSIONS = _table(SessionSummary)
FILES = _table(File)
LOGINS = _table(LoginAttempt)
PASSWORDS = _table(PasswordEnrichment)

#: Services looked up for every session by default (VirusTotal IP reputation is optional).
SESSION_SERVICES = ("dshield", "urlhaus", "spur")


@dataclass(frozen=True)
class SessionRow:
    """One group of sessions sharing sensor, UTC day and every service's outcome."""

    sensor: str
    day: str | None
    outcomes: tuple[tuple[str | None, str | None], ...]
    count: int


def session_matrix(
    conn: Connection, services: Sequence[str], since: datetime | None
) -> list[SessionRow]:
    """Sessions grouped by sensor, day and (status, reason) of each service."""
    columns = [SESSIONS.c.sensor, utc_day(SESSIONS.c.first_event_at).label("day")]
    for service in services:
        columns.append(status_of(SESSIONS.c.enrichment, service).label(f"{service}_status"))
        columns.append(reason_of(SESSIONS.c.enrichment, service).label(f"{service}_reason"))
    query = select(*columns, func.count().label("n")).group_by(*columns)
    if since is not None:
        query = query.where(SESSIONS.c.first_event_at >= since)
    rows = []
    for row in conn.execute(query):
        pairs = tuple((row[2 + 2 * i], row[3 + 2 * i]) for i in range(len(services)))
        rows.append(SessionRow(str(row[0]), row[1], pairs, int(row[-1])))
    return rows


@dataclass
class SessionCompleteness:
    """Diagnostic 1. ``complete``: every expected service covered or finally skipped."""

    services: tuple[str, ...]
    total: int = 0
    excluded: int = 0
    with_any: int = 0
    complete: int = 0

    def add(self, outcomes: Sequence[tuple[str | None, str | None]], count: int) -> None:
        states = [classify(status, reason) for status, reason in outcomes]
        self.total += count
        if all(state == "final" for state in states):
            self.excluded += count
            return
        if "covered" in states:
            self.with_any += count
        if "gap" not in states:
            self.complete += count

    @property
    def denominator(self) -> int:
        return self.total - self.excluded

    @property
    def coverage_pct(self) -> float | None:
        return percent(self.complete, self.denominator)

    @property
    def any_pct(self) -> float | None:
        return percent(self.with_any, self.denominator)

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected_services": list(self.services),
            "sessions": self.total,
            "excluded_final_skips": self.excluded,
            "denominator": self.denominator,
            "with_any_enrichment": self.with_any,
            "with_any_pct": self.any_pct,
            "complete": self.complete,
            "coverage_pct": self.coverage_pct,
        }


def completeness(rows: Sequence[SessionRow], services: Sequence[str]) -> SessionCompleteness:
    """Diagnostic 1 over ``rows`` (all sessions, or one period's or sensor's)."""
    result = SessionCompleteness(tuple(services))
    for row in rows:
        result.add(row.outcomes, row.count)
    return result


def session_tallies(rows: Sequence[SessionRow], services: Sequence[str]) -> list[Tally]:
    """One tally per service over ``rows``, in the order of ``services``."""
    tallies = [Tally(service, "sessions") for service in services]
    for row in rows:
        for tally, (status, reason) in zip(tallies, row.outcomes, strict=True):
            tally.add(status, reason, row.count)
    return tallies


# Files -------------------------------------------------------------------------------


@dataclass
class FileCoverage:
    """Diagnostic 4 for one direction: VirusTotal of hashed files, URLhaus of URLs."""

    direction: str
    rows: int = 0
    without_hash: int = 0
    without_url: int = 0
    virustotal: Tally = field(default_factory=lambda: Tally("virustotal", "files"))
    urlhaus: Tally = field(default_factory=lambda: Tally("urlhaus", "files"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "rows": self.rows,
            "without_hash": self.without_hash,
            "without_url": self.without_url,
            "virustotal": self.virustotal.as_dict(),
            "urlhaus": self.urlhaus.as_dict(),
        }


def file_coverage(conn: Connection, since: datetime | None) -> dict[str, FileCoverage]:
    """Rows without a hash (failed transfers) are never sent to VirusTotal, rows without
    a URL never to URLhaus: they are counted apart, outside the denominators."""
    has_hash = FILES.c.shasum.is_not(None).label("has_hash")
    has_url = FILES.c.url.is_not(None).label("has_url")
    columns = [
        FILES.c.direction,
        has_hash,
        has_url,
        status_of(FILES.c.vt_analysis).label("vt_status"),
        reason_of(FILES.c.vt_analysis).label("vt_reason"),
        status_of(FILES.c.urlhaus).label("uh_status"),
        reason_of(FILES.c.urlhaus).label("uh_reason"),
    ]
    query = select(*columns, func.count()).group_by(*columns)
    if since is not None:
        query = query.where(FILES.c.first_seen >= since)
    result = {direction: FileCoverage(direction) for direction in ("download", "upload")}
    for row in conn.execute(query):
        direction, hashed, with_url, vt_s, vt_r, uh_s, uh_r, count = tuple(row)
        entry = result.setdefault(str(direction), FileCoverage(str(direction)))
        entry.rows += count
        if hashed:
            entry.virustotal.add(vt_s, vt_r, count)
        else:
            entry.without_hash += count
        if with_url:
            entry.urlhaus.add(uh_s, uh_r, count)
        else:
            entry.without_url += count
    return result


def merged(tallies: Sequence[Tally], service: str, target: str) -> Tally:
    """One tally that sums ``tallies``."""
    total = Tally(service, target)
    for tally in tallies:
        total.success += tally.success
        total.not_found += tally.not_found
        total.never += tally.never
        total.other += tally.other
        for reason, count in tally.skipped.items():
            total.skipped[reason] = total.skipped.get(reason, 0) + count
        for kind, count in tally.errors.items():
            total.errors[kind] = total.errors.get(kind, 0) + count
    return total


# Passwords ---------------------------------------------------------------------------


@dataclass
class PasswordCoverage:
    """Diagnostic 10: HIBP over the distinct passwords of the login attempts."""

    hibp: Tally = field(default_factory=lambda: Tally("hibp", "passwords"))
    breached: int = 0
    not_breached: int = 0

    @property
    def breached_pct(self) -> float | None:
        """Share of the passwords HIBP answered for that are in a breach."""
        return percent(self.breached, self.breached + self.not_breached)

    def as_dict(self) -> dict[str, Any]:
        return {
            "distinct_passwords": self.hibp.total,
            "hibp": self.hibp.as_dict(),
            "breached": self.breached,
            "not_breached": self.not_breached,
            "breached_pct": self.breached_pct,
        }


def password_coverage(conn: Connection, since: datetime | None) -> PasswordCoverage:
    """Diagnostic 10: every distinct ``password_sha256`` of the login attempts (those at
    or after ``since``), with the HIBP envelope of its breach row if there is one."""
    hashes = (
        select(LOGINS.c.password_sha256.label("sha"))
        .where(LOGINS.c.password_sha256.is_not(None))
        .distinct()
    )
    if since is not None:
        hashes = hashes.where(LOGINS.c.event_time >= since)
    distinct_hashes = hashes.subquery()
    columns = [
        status_of(PASSWORDS.c.hibp).label("status"),
        reason_of(PASSWORDS.c.hibp).label("reason"),
        PASSWORDS.c.breached,
    ]
    query = (
        select(*columns, func.count())
        .select_from(
            distinct_hashes.outerjoin(
                PASSWORDS, PASSWORDS.c.password_sha256 == distinct_hashes.c.sha
            )
        )
        .group_by(*columns)
    )
    result = PasswordCoverage()
    for row in conn.execute(query):
        status, reason, breached, count = tuple(row)
        result.hibp.add(status, reason, count)
        if classify(status, reason) == "covered":
            if breached is True:
                result.breached += count
            elif breached is False:
                result.not_breached += count
    return result


def optional_tallies(conn: Connection, since: datetime | None) -> list[Tally]:
    """VirusTotal IP reputation of sessions, when any session carries one."""
    status = status_of(SESSIONS.c.enrichment, "virustotal")
    reason = reason_of(SESSIONS.c.enrichment, "virustotal")
    query = select(status, reason, func.count()).group_by(status, reason)
    if since is not None:
        query = query.where(SESSIONS.c.first_event_at >= since)
    tally = Tally("virustotal", "sessions")
    for row_status, row_reason, count in conn.execute(query):
        tally.add(row_status, row_reason, count)
    return [tally] if tally.total > tally.never else []


# Time periods and sensors ---------------------------------------------------------------


def period_of(day: str, period: str) -> str:
    """The period a UTC day belongs to: the day itself, or the Monday of its ISO week."""
    if period == "day":
        return day
    start = date.fromisoformat(day)
    return (start - timedelta(days=start.weekday())).isoformat()


@dataclass
class PeriodRow:
    period: str
    completeness: SessionCompleteness
    tallies: list[Tally]

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "sessions": self.completeness.total,
            "complete": self.completeness.complete,
            "denominator": self.completeness.denominator,
            "coverage_pct": self.completeness.coverage_pct,
            "services": {
                tally.service: {
                    "covered": tally.covered,
                    "denominator": tally.denominator,
                    "coverage_pct": tally.coverage_pct,
                }
                for tally in self.tallies
            },
        }


@dataclass
class Trend:
    """Diagnostic 3. ``fell_since``: per service (and ``sessions``), the first period of
    the run of below-threshold periods that lasts to the newest period, when an earlier
    period was at or above the threshold."""

    period: str
    rows: list[PeriodRow]
    undated: int
    fell_since: dict[str, str | None]
    below_since: dict[str, str | None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "periods": [row.as_dict() for row in self.rows],
            "sessions_without_time": self.undated,
            "fell_since": self.fell_since,
            "below_since": self.below_since,
        }


def trend(
    rows: Sequence[SessionRow],
    services: Sequence[str],
    period: str,
    thresholds: dict[str, float],
) -> Trend:
    """Group ``rows`` by period and find where coverage fell (see :class:`Trend`)."""
    grouped: dict[str, list[SessionRow]] = {}
    undated = 0
    for row in rows:
        if row.day is None:
            undated += row.count
            continue
        grouped.setdefault(period_of(row.day, period), []).append(row)

    periods = [
        PeriodRow(key, completeness(group, services), session_tallies(group, services))
        for key, group in sorted(grouped.items())
    ]
    fell: dict[str, str | None] = {}
    below: dict[str, str | None] = {}
    series: dict[str, list[tuple[str, float | None]]] = {
        "sessions": [(p.period, p.completeness.coverage_pct) for p in periods]
    }
    for index, service in enumerate(services):
        series[service] = [(p.period, p.tallies[index].coverage_pct) for p in periods]
    for name, points in series.items():
        below[name], fell[name] = _fall(points, thresholds.get(name))
    return Trend(period, periods, undated, fell, below)


def _fall(
    points: Sequence[tuple[str, float | None]], threshold: float | None
) -> tuple[str | None, str | None]:
    """(start of the trailing below-threshold run, the same if it followed a good period)."""
    measured = [(key, value) for key, value in points if value is not None]
    if threshold is None or not measured or measured[-1][1] >= threshold:
        return None, None
    start = len(measured) - 1
    while start > 0 and measured[start - 1][1] < threshold:
        start -= 1
    first = measured[start][0]
    return first, (first if start > 0 else None)


@dataclass
class SensorRow:
    """Diagnostic 7: one sensor's session coverage."""

    sensor: str
    completeness: SessionCompleteness
    tallies: list[Tally]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "sessions": self.completeness.total,
            "complete": self.completeness.complete,
            "denominator": self.completeness.denominator,
            "coverage_pct": self.completeness.coverage_pct,
            "services": {tally.service: tally.coverage_pct for tally in self.tallies},
        }


def by_sensor(rows: Sequence[SessionRow], services: Sequence[str]) -> list[SensorRow]:
    """Diagnostic 7: rows grouped by sensor, sensors in code-point order."""
    grouped: dict[str, list[SessionRow]] = {}
    for row in rows:
        grouped.setdefault(row.sensor, []).append(row)
    return [
        SensorRow(sensor, completeness(group, services), session_tallies(group, services))
        for sensor, group in sorted(grouped.items())
    ]
