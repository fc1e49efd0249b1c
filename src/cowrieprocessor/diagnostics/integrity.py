"""Diagnostics about individual rows: flags against data (5), sample sessions (6),
the priority backfill list (8) and error patterns (9).

Text read here (sensor names, session ids, envelopes, messages) is returned in its
stored form (see :mod:`cowrieprocessor.db.textrule`); renderers print it through
:func:`cowrieprocessor.safetext.printable`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, func, not_, or_, select

from cowrieprocessor.db.models import DeadLetterEvent, RawEvent
from cowrieprocessor.db.models import table_of as _table
from cowrieprocessor.diagnostics.coverage import FILES, PASSWORDS, SESSIONS
from cowrieprocessor.diagnostics.sql import (
    DEFINITIVE,
    data_is_empty,
    field,
    is_definitive,
    is_gap,
    reason_of,
    status_of,
)
from cowrieprocessor.enrichment.outcome import Status

logger = logging.getLogger(__name__)

DEAD_LETTERS = _table(DeadLetterEvent)
RAW_EVENTS = _table(RawEvent)
_STATUSES = tuple(str(status) for status in Status)
_NEEDS_REASON = (str(Status.SKIPPED), str(Status.ERROR))


# 5. Flags against data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Inconsistency:
    """How many rows of ``target`` fail ``check`` for ``service``.

    Checks: ``empty_data`` (success without data), ``malformed`` (status unknown, or a
    reason where none belongs or missing where one must be), ``flag_without_outcome``
    (a flag set while the service never answered), ``outcome_without_flag`` (an answer
    but the flag still unknown), ``flag_contradicts`` (flag and answer disagree).
    """

    check: str
    target: str
    service: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "target": self.target,
            "service": self.service,
            "count": self.count,
        }


def _malformed(column: Any, service: str | None = None) -> ColumnElement[bool]:
    status = status_of(column, service)
    reason = reason_of(column, service)
    return and_(
        status.is_not(None),
        or_(
            status.not_in(_STATUSES),
            and_(status.in_(DEFINITIVE), reason.is_not(None)),
            and_(status.in_(_NEEDS_REASON), reason.is_(None)),
        ),
    )


def _success_without_data(column: Any, service: str | None = None) -> ColumnElement[bool]:
    return and_(status_of(column, service) == str(Status.SUCCESS), data_is_empty(column, service))


def _malicious_file_of_session() -> ColumnElement[bool]:
    malicious = FILES.c.vt_analysis[("data", "last_analysis_stats", "malicious")].as_integer()
    return exists().where(
        FILES.c.sensor == SESSIONS.c.sensor,
        FILES.c.session_id == SESSIONS.c.session_id,
        status_of(FILES.c.vt_analysis) == str(Status.SUCCESS),
        malicious > 0,
    )


def _vt_answer_of_session() -> ColumnElement[bool]:
    return exists().where(
        FILES.c.sensor == SESSIONS.c.sensor,
        FILES.c.session_id == SESSIONS.c.session_id,
        status_of(FILES.c.vt_analysis) == str(Status.SUCCESS),
    )


def _checks(services: Sequence[str]) -> Iterator[tuple[str, str, str, Any, ColumnElement[bool]]]:
    """(check, target, service, table, condition) for every consistency check."""
    enrichment = SESSIONS.c.enrichment
    for service in services:
        yield (
            "empty_data",
            "sessions",
            service,
            SESSIONS,
            _success_without_data(enrichment, service),
        )
        yield "malformed", "sessions", service, SESSIONS, _malformed(enrichment, service)

    flag = SESSIONS.c.dshield_flagged
    dshield = status_of(enrichment, "dshield")
    yield (
        "flag_without_outcome",
        "sessions",
        "dshield",
        SESSIONS,
        and_(
            flag.is_not(None), or_(dshield.is_(None), not_(is_definitive(enrichment, "dshield")))
        ),
    )
    yield (
        "outcome_without_flag",
        "sessions",
        "dshield",
        SESSIONS,
        and_(flag.is_(None), is_definitive(enrichment, "dshield")),
    )
    yield (
        "flag_contradicts",
        "sessions",
        "dshield",
        SESSIONS,
        or_(
            and_(flag.is_(True), dshield == str(Status.NOT_FOUND)),
            and_(flag.is_(False), dshield == str(Status.SUCCESS)),
        ),
    )

    vt_flag = SESSIONS.c.vt_flagged
    yield (
        "flag_without_outcome",
        "sessions",
        "virustotal",
        SESSIONS,
        and_(vt_flag.is_(True), not_(_vt_answer_of_session())),
    )
    yield (
        "outcome_without_flag",
        "sessions",
        "virustotal",
        SESSIONS,
        and_(vt_flag.is_(None), _malicious_file_of_session()),
    )
    yield (
        "flag_contradicts",
        "sessions",
        "virustotal",
        SESSIONS,
        and_(vt_flag.is_(False), _malicious_file_of_session()),
    )

    for service, column in (("virustotal", FILES.c.vt_analysis), ("urlhaus", FILES.c.urlhaus)):
        yield "empty_data", "files", service, FILES, _success_without_data(column)
        yield "malformed", "files", service, FILES, _malformed(column)

    hibp = PASSWORDS.c.hibp
    yield "empty_data", "passwords", "hibp", PASSWORDS, _success_without_data(hibp)
    yield "malformed", "passwords", "hibp", PASSWORDS, _malformed(hibp)
    yield (
        "flag_without_outcome",
        "passwords",
        "hibp",
        PASSWORDS,
        and_(
            PASSWORDS.c.breached.is_not(None),
            or_(status_of(hibp).is_(None), not_(is_definitive(hibp))),
        ),
    )
    yield (
        "outcome_without_flag",
        "passwords",
        "hibp",
        PASSWORDS,
        and_(PASSWORDS.c.breached.is_(None), is_definitive(hibp)),
    )


def consistency(conn: Connection, services: Sequence[str]) -> list[Inconsistency]:
    """Diagnostic 5: every check with its count (zeros included), in a fixed order.

    One scan per table: each check is a filtered count of the same SELECT.
    """
    checks = list(_checks(services))
    counts: dict[int, int] = {}
    for table in (SESSIONS, FILES, PASSWORDS):
        mine = [(index, c) for index, c in enumerate(checks) if c[3] is table]
        query = select(*(func.count().filter(c[4]) for _, c in mine)).select_from(table)
        row = conn.execute(query).one()
        counts.update(
            {index: int(value or 0) for (index, _), value in zip(mine, row, strict=True)}
        )
    return [
        Inconsistency(check, target, service, counts[index])
        for index, (check, target, service, _, _) in enumerate(checks)
    ]


# 6. Sample sessions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One session shown for an outcome of a service (``outcome`` ``never``: no envelope)."""

    service: str
    outcome: str
    sensor: str
    session_id: str
    src_ip: str | None
    enrichment: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "outcome": self.outcome,
            "sensor": self.sensor,
            "session_id": self.session_id,
            "src_ip": self.src_ip,
            "enrichment": self.enrichment,
        }


SAMPLE_OUTCOMES = (*_STATUSES, "never")


def samples(
    conn: Connection, services: Sequence[str], per_outcome: int, since: datetime | None
) -> list[Sample]:
    """Diagnostic 6: up to ``per_outcome`` sessions (lowest ids first) per service outcome."""
    found = []
    for service in services:
        status = status_of(SESSIONS.c.enrichment, service)
        for outcome in SAMPLE_OUTCOMES:
            condition = status.is_(None) if outcome == "never" else status == outcome
            query = (
                select(
                    SESSIONS.c.sensor,
                    SESSIONS.c.session_id,
                    SESSIONS.c.src_ip,
                    SESSIONS.c.enrichment,
                )
                .where(condition)
                .order_by(SESSIONS.c.id)
                .limit(per_outcome)
            )
            if since is not None:
                query = query.where(SESSIONS.c.first_event_at >= since)
            for sensor, session_id, src_ip, enrichment in conn.execute(query):
                found.append(Sample(service, outcome, sensor, session_id, src_ip, enrichment))
    return found


# 8. High-value sessions without enrichment -------------------------------------------------


@dataclass(frozen=True)
class PrioritySession:
    """A session worth enriching first, with what makes it valuable and what it lacks."""

    sensor: str
    session_id: str
    src_ip: str | None
    first_event_at: datetime | None
    transfers: int
    login_successes: int
    commands: int
    missing: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "session_id": self.session_id,
            "src_ip": self.src_ip,
            "first_event_at": (
                self.first_event_at.isoformat().replace("+00:00", "Z")
                if self.first_event_at
                else None
            ),
            "transfers": self.transfers,
            "login_successes": self.login_successes,
            "commands": self.commands,
            "missing": list(self.missing),
        }


def priority_query(services: Sequence[str], since: datetime | None) -> Any:
    """Sessions with transfers, successful logins or commands and a gap in any service,
    ranked by transfers, then successful logins, then commands (then oldest id)."""
    enrichment = SESSIONS.c.enrichment
    transfers = (SESSIONS.c.download_count + SESSIONS.c.upload_count).label("transfers")
    gaps = [is_gap(enrichment, service).label(f"{service}_gap") for service in services]
    query = (
        select(
            SESSIONS.c.sensor,
            SESSIONS.c.session_id,
            SESSIONS.c.src_ip,
            SESSIONS.c.first_event_at,
            transfers,
            SESSIONS.c.login_successes,
            SESSIONS.c.command_count,
            *gaps,
        )
        .where(
            or_(
                SESSIONS.c.download_count > 0,
                SESSIONS.c.upload_count > 0,
                SESSIONS.c.login_successes > 0,
                SESSIONS.c.command_count > 0,
            ),
            or_(*(is_gap(enrichment, service) for service in services)),
        )
        .order_by(
            transfers.desc(),
            SESSIONS.c.login_successes.desc(),
            SESSIONS.c.command_count.desc(),
            SESSIONS.c.id,
        )
    )
    if since is not None:
        query = query.where(SESSIONS.c.first_event_at >= since)
    return query


def priority_sessions(
    conn: Connection, services: Sequence[str], since: datetime | None
) -> list[PrioritySession]:
    """Diagnostic 8: every ranked session (the caller shows the top and exports all)."""
    found = []
    for row in conn.execute(priority_query(services, since)):
        missing = tuple(service for index, service in enumerate(services) if bool(row[7 + index]))
        found.append(
            PrioritySession(
                row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), int(row[6]), missing
            )
        )
    return found


# 9. Error patterns -------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorPattern:
    """Enrichment errors of one service, kind, HTTP status and message."""

    target: str
    service: str
    kind: str | None
    http_status: int | None
    message: str | None
    count: int
    first_seen: str | None
    last_seen: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "service": self.service,
            "kind": self.kind,
            "http_status": self.http_status,
            "message": self.message,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True)
class DeadLetterGroup:
    """Input lines that could not be loaded, for one reason."""

    reason: str
    count: int
    unresolved: int
    first_seen: datetime
    last_seen: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": self.count,
            "unresolved": self.unresolved,
            "first_seen": self.first_seen.isoformat().replace("+00:00", "Z"),
            "last_seen": self.last_seen.isoformat().replace("+00:00", "Z"),
        }


def _envelope_columns(services: Sequence[str]) -> Iterator[tuple[str, str, Any, Any]]:
    for service in services:
        yield "sessions", service, SESSIONS, SESSIONS.c.enrichment[service]
    yield "files", "virustotal", FILES, FILES.c.vt_analysis
    yield "files", "urlhaus", FILES, FILES.c.urlhaus
    yield "passwords", "hibp", PASSWORDS, PASSWORDS.c.hibp


def error_patterns(conn: Connection, services: Sequence[str]) -> list[ErrorPattern]:
    """Every error envelope grouped; most frequent first, ties in a fixed order."""
    found = []
    for target, service, table, envelope in _envelope_columns(services):
        kind = field(envelope, "reason")
        http_status = field(envelope, "http_status")
        message = field(envelope, "message")
        checked = field(envelope, "checked_at")
        query = (
            select(kind, http_status, message, func.count(), func.min(checked), func.max(checked))
            .select_from(table)
            .where(field(envelope, "status") == str(Status.ERROR))
            .group_by(kind, http_status, message)
        )
        for row_kind, row_http, row_message, count, first, last in conn.execute(query):
            code = int(row_http) if row_http is not None else None
            found.append(
                ErrorPattern(target, service, row_kind, code, row_message, count, first, last)
            )
    found.sort(
        key=lambda p: (
            -p.count,
            p.target,
            p.service,
            p.kind or "",
            p.http_status or 0,
            p.message or "",
        )
    )
    return found


def dead_letters(conn: Connection, since: datetime | None) -> list[DeadLetterGroup]:
    """Dead letters by reason (created at or after ``since``), most frequent first."""
    unresolved = func.count().filter(DEAD_LETTERS.c.resolved_at.is_(None))
    query = select(
        DEAD_LETTERS.c.reason,
        func.count(),
        unresolved,
        func.min(DEAD_LETTERS.c.created_at),
        func.max(DEAD_LETTERS.c.created_at),
    ).group_by(DEAD_LETTERS.c.reason)
    if since is not None:
        query = query.where(DEAD_LETTERS.c.created_at >= since)
    groups = [
        DeadLetterGroup(reason, int(count), int(open_count), first, last)
        for reason, count, open_count, first, last in conn.execute(query)
    ]
    groups.sort(key=lambda g: (-g.count, g.reason))
    return groups


def loaded_events(conn: Connection) -> int:
    """Events loaded in all: the base of the dead-letter share."""
    return int(conn.execute(select(func.count()).select_from(RAW_EVENTS)).scalar() or 0)
