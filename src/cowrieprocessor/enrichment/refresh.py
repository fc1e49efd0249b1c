"""``cowrie-enrich refresh``: the backfill that writes an outcome onto every row.

The job walks files, then sessions, then distinct passwords (see
:mod:`cowrieprocessor.enrichment.targets`), asks :class:`EnrichmentService` for the
services each row still needs, and writes the outcome envelopes:

* ``files.vt_analysis`` (VirusTotal by sha256) and ``files.urlhaus`` (URLhaus by URL);
* ``session_summaries.enrichment[service]`` for dshield, urlhaus (host), spur and, with a
  VirusTotal key, virustotal (IP reputation), plus ``dshield_flagged`` and ``vt_flagged``;
* ``password_enrichment`` (one row per distinct ``password_sha256``, inserted when
  missing) with ``hibp``, ``breached`` and ``breach_count``.

Stopping and resuming: each page of rows is looked up first, outside any transaction,
then written in one transaction that re-reads the rows it changes, merges in Python and
writes each row with one UPDATE (so SQLite and PostgreSQL behave the same), and commits.
Ctrl-C or SIGKILL loses at most the page in flight; its definitive answers are already in
the cache, so the next run writes them without asking the provider again, and rows that
hold definitive outcomes are not selected again. A new outcome that is not definitive
(an error, a skip) never replaces a stored definitive one: old data beats no data, and
the row stays eligible for the next ``--stale`` run.

Many workers (:mod:`cowrieprocessor.enrichment.workers`): given :class:`RowClaims`, the
job enriches only the rows it claims (re-read after claiming), marks each claim finished
in the transaction that writes its row, writes nothing whose claim was taken over, and
at the end of each kind takes over the rows of its run whose leases ended. Given a
:class:`SingleFlight`, cache misses are shared between workers. Given a shared
:class:`RowBudget`, the row limits bound all the workers together.

Flags always follow the JSON: ``dshield_flagged`` is True for a DShield success, False
for not found and None otherwise; ``vt_flagged`` is True when any file of the session
with a hash is malicious per VirusTotal, None while any such file lacks a definitive
VirusTotal outcome, else False (also for sessions without files). It is recomputed for
every session written and for the sessions of every file written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cowrieprocessor.config import Settings
from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.textrule import decode_text
from cowrieprocessor.enrichment.budget import RowBudget
from cowrieprocessor.enrichment.cache import Cache
from cowrieprocessor.enrichment.cache.factory import build_cache, ttl_policy
from cowrieprocessor.enrichment.claims import PageClaims, RowClaims
from cowrieprocessor.enrichment.flags import (
    breach_fields,
    dshield_flag,
    merged_envelope,
    update_vt_flags,
    vt_flags,
)
from cowrieprocessor.enrichment.flight import SingleFlight
from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome
from cowrieprocessor.enrichment.service import EnrichmentService
from cowrieprocessor.enrichment.settings import SERVICE_NAMES
from cowrieprocessor.enrichment.status import STATUS_FILE_NAME, RunCounters, StatusFile
from cowrieprocessor.enrichment.targets import (
    FILES,
    PASSWORDS,
    SESSIONS,
    IdFilter,
    Mode,
    count_rows,
    file_pages,
    file_rows,
    needs_lookup,
    password_pages,
    password_rows,
    read_envelope,
    session_keys,
    session_pages,
    session_rows,
)

logger = logging.getLogger(__name__)

#: Called after each row is looked up: (kind, rows scanned of that kind, total rows).
ProgressCallback = Callable[[str, int, int], None]

_FILE_COLUMNS = {"virustotal": "vt_analysis", "urlhaus": "urlhaus"}


@dataclass(frozen=True)
class RefreshOptions:
    """What a refresh does. Row limits count rows written; 0 means no limit."""

    sessions: int = 0
    files: int = 0
    passwords: int = 0
    services: tuple[str, ...] = SERVICE_NAMES
    since: datetime | None = None
    mode: Mode = Mode.ONLY_MISSING
    ids: IdFilter | None = None
    batch_size: int = 200

    def __post_init__(self) -> None:
        unknown = [name for name in self.services if name not in SERVICE_NAMES]
        if unknown:
            raise ValueError(
                f"unknown service(s) {', '.join(unknown)}; expected {', '.join(SERVICE_NAMES)}"
            )
        if min(self.sessions, self.files, self.passwords) < 0:
            raise ValueError("row limits must be 0 (all) or positive")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since must be timezone-aware")


@dataclass
class RefreshResult:
    """The outcome of one run: counters, per-service lookups and the verdict."""

    counters: RunCounters
    service: EnrichmentService
    status_path: Path | None
    failed_services: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when a service failed for every lookup it attempted, else 0."""
        return 1 if self.failed_services else 0

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` summary: the status document plus the verdict."""
        summary = _with_tiers(self.counters.snapshot(self.service.stats), self.service)
        summary["ok"] = not self.failed_services
        summary["failed_services"] = list(self.failed_services)
        summary["status_file"] = str(self.status_path) if self.status_path else None
        return summary


def refresh(
    engine: Engine,
    settings: Settings,
    options: RefreshOptions | None = None,
    *,
    cache: Cache | None = None,
    clients: Mapping[str, ServiceClient] | None = None,
    limiters: LimiterRegistry | None = None,
    status_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    claims: RowClaims | None = None,
    flight: SingleFlight | None = None,
    budget: RowBudget | None = None,
) -> RefreshResult:
    """Run one refresh over ``engine``'s database (see the module docstring).

    ``cache`` defaults to :func:`build_cache` of the settings; ``clients`` to one client
    per selected service built from the settings (closed at the end); the status file
    goes to ``status_dir`` (default ``settings.status_dir``). ``now`` decides staleness.

    With ``claims`` the run is one worker among many (see :mod:`.workers`): it enriches
    only the rows it claims, and at the end of each kind of row it takes over the rows of
    workers whose leases ended, waiting for live leases of its run to finish. With
    ``flight``, cache misses go through single flight. ``budget`` (default: one of
    ``options``' limits, for this run alone) is what the row limits draw from; the
    workers of one command share one, so the limits bound them together.

    Raises:
        KeyboardInterrupt: re-raised after the status file says ``interrupted``.
        sqlalchemy.exc.SQLAlchemyError: the database failed; committed pages stay.
    """
    options = options or RefreshOptions()
    own_clients = clients is None
    if clients is None:
        clients = {
            name: ServiceClient.from_settings(name, settings, limiters=limiters)
            for name in options.services
        }
    else:
        clients = {name: c for name, c in clients.items() if name in options.services}
    own_cache = cache is None
    cache = cache if cache is not None else build_cache(settings, engine)
    service = EnrichmentService(clients, cache, flight=flight)
    counters = RunCounters(mode=str(options.mode), services=list(clients))
    directory = status_dir if status_dir is not None else settings.status_dir
    status_path = directory / STATUS_FILE_NAME

    def snapshot() -> dict[str, Any]:
        service.refresh_api_calls()
        return _with_tiers(counters.snapshot(service.stats), service)

    status = StatusFile(status_path, snapshot)
    job = _Job(
        engine,
        settings,
        options,
        service,
        counters,
        status,
        progress,
        now,
        claims,
        budget,
    )
    try:
        for kind, total in count_rows(engine, options.since).items():
            counters.rows[kind].total = total
        status.write()
        job.run()
        counters.state = "finished"
    except KeyboardInterrupt:
        counters.state = "interrupted"
        raise
    except BaseException:
        counters.state = "failed"
        raise
    finally:
        status.write()
        if own_clients:
            for client in clients.values():
                client.close()
        if own_cache:
            cache.close()
    service.refresh_api_calls()
    result = RefreshResult(counters, service, status_path, service.failed_services())
    for name in result.failed_services:
        logger.error("%s failed for every lookup: %s", name, service.stats[name].last_error)
    return result


class _Job:
    """The walk itself; one instance per run."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        options: RefreshOptions,
        service: EnrichmentService,
        counters: RunCounters,
        status: StatusFile,
        progress: ProgressCallback | None,
        now: Callable[[], datetime],
        claims: RowClaims | None = None,
        budget: RowBudget | None = None,
    ) -> None:
        self.engine = engine
        self.options = options
        self.service = service
        self.counters = counters
        self.status = status
        self.progress = progress
        self.now = now
        self.pages = PageClaims(claims) if claims is not None else None
        self.budget = budget if budget is not None else RowBudget.for_options(options)
        self.policy = ttl_policy(settings)
        self.pg = is_postgres(engine)

    def run(self) -> None:
        self._files()
        self._sessions()
        self._passwords()

    # Selection ------------------------------------------------------------------------

    def _wanted(self, stored: Mapping[str, Any], services: Collection[str]) -> list[str]:
        moment = self.now()
        return [
            name
            for name in services
            if needs_lookup(stored.get(name), name, self.options.mode, self.policy, moment)
        ]

    def _page_wants(
        self,
        kind: str,
        page: list[Any],
        stored: Callable[[Any], Mapping[str, Any]],
        services: Collection[str],
    ) -> tuple[list[tuple[Any, list[str]]], int]:
        """The rows of ``page`` this job gets to, each with the services it needs, and
        the rows taken from the budget for them: the page stops at the first row needing
        a lookup that the row limit of ``kind`` leaves no room for. Hand the count to
        :meth:`_settle_budget` once the page is written."""
        every = [(row, self._wanted(stored(row), services)) for row in page]
        granted = self.budget.take(kind, sum(1 for _, wanted in every if wanted))
        if granted is None:
            return every, 0
        room = granted
        wants: list[tuple[Any, list[str]]] = []
        for row, wanted in every:
            if wanted:
                if room <= 0:
                    break
                room -= 1
            wants.append((row, wanted))
        return wants, granted

    def _settle_budget(self, kind: str, granted: int, enriched_before: int) -> None:
        """Give back the rows taken for a page and not written (taken over, gone)."""
        written = self.counters.rows[kind].enriched - enriched_before
        self.budget.give_back(kind, granted - written)

    def _tick(self, kind: str) -> None:
        counts = self.counters.rows[kind]
        counts.scanned += 1
        if self.progress is not None:
            total = sum(r.total for r in self.counters.rows.values())
            self.progress(kind, sum(r.scanned for r in self.counters.rows.values()), total)
        self.status.maybe_write()
        if self.pages is not None:
            self.pages.renew_if_due()

    def _finish(self, conn: Any, kind: str, keys: set[str]) -> set[str] | None:
        """Inside a write: the keys still ours (None: no claims, every key is ours)."""
        return self.pages.claims.finish(conn, kind, keys) if self.pages is not None else None

    # Files ----------------------------------------------------------------------------

    def _files(self) -> None:
        services = [s for s in ("virustotal", "urlhaus") if s in self.service.services]
        if not services:
            return
        opts = self.options
        for page in file_pages(self.engine, opts.since, opts.ids, opts.batch_size):
            if self._files_page(page, services, sweep=False):
                return
        if self.pages is None:
            return
        self.pages.sweep(
            "files",
            lambda keys: file_rows(self.engine, [int(k) for k in keys]),
            _id_key,
            lambda rows, sweep: self._files_page(rows, services, sweep=sweep),
        )

    def _files_page(self, page: list[Any], services: list[str], *, sweep: bool) -> bool:
        """Look up and write one page; True when the row limit is reached."""
        claimed: set[str] = set()
        if self.pages is not None:
            page, claimed = self.pages.claim(
                "files",
                page,
                _id_key,
                lambda row: sweep or bool(self._wanted(_file_stored(row), services)),
                lambda keys: file_rows(self.engine, [int(k) for k in keys]),
            )
        before = self.counters.rows["files"].enriched
        wants, granted = self._page_wants("files", page, _file_stored, services)
        self.service.prefetch_files(
            (row.shasum, _text(row.url), wanted) for row, wanted in wants if wanted
        )
        pending: list[tuple[Any, dict[str, Outcome]]] = []
        idle: set[str] = set()
        for row, wanted in wants:
            if wanted:
                name = _text(row.filename)
                outcomes = self.service.enrich_file(
                    row.shasum, name, _text(row.url), services=wanted
                )
                pending.append((row, outcomes))
            else:
                idle.add(str(row.id))
            self._tick("files")
        written = self._write_files(pending) if pending else set()
        self._settle_budget("files", granted, before)
        if self.pages is not None:
            self.pages.settle("files", claimed, written, idle)
        return self.budget.spent("files")

    def _write_files(self, pending: list[tuple[Any, dict[str, Outcome]]]) -> set[str]:
        ids = [row.id for row, _ in pending]
        with self.engine.begin() as conn:
            owned = self._finish(conn, "files", {str(i) for i in ids})
            if owned is not None:
                pending = [(row, out) for row, out in pending if str(row.id) in owned]
                ids = [row.id for row, _ in pending]
            current = {
                r.id: r
                for r in conn.execute(
                    self._locked(
                        select(FILES.c.id, FILES.c.vt_analysis, FILES.c.urlhaus).where(
                            FILES.c.id.in_(ids)
                        )
                    )
                )
            }
            for row, outcomes in pending:
                now_row = current.get(row.id)
                if now_row is None:
                    continue
                values: dict[str, Any] = {}
                for name, outcome in outcomes.items():
                    column = _FILE_COLUMNS[name]
                    values[column] = merged_envelope(getattr(now_row, column), outcome)
                    self.counters.count_outcome(outcome)
                conn.execute(update(FILES).where(FILES.c.id == row.id).values(**values))
            update_vt_flags(conn, session_keys(row for row, _ in pending))
        self.counters.rows["files"].enriched += len(pending)
        self.status.maybe_write()
        return {str(i) for i in ids}

    # Sessions -------------------------------------------------------------------------

    def _sessions(self) -> None:
        services = [s for s in ("dshield", "urlhaus", "spur") if s in self.service.services]
        if self.service.uses_vt_ip():
            services.append("virustotal")
        if not services:
            return
        opts = self.options
        for page in session_pages(self.engine, opts.since, opts.ids, opts.batch_size):
            if self._sessions_page(page, services, sweep=False):
                return
        if self.pages is None:
            return
        self.pages.sweep(
            "sessions",
            lambda keys: session_rows(self.engine, [int(k) for k in keys]),
            _id_key,
            lambda rows, sweep: self._sessions_page(rows, services, sweep=sweep),
        )

    def _sessions_page(self, page: list[Any], services: list[str], *, sweep: bool) -> bool:
        """Look up and write one page; True when the row limit is reached."""
        claimed: set[str] = set()
        if self.pages is not None:
            page, claimed = self.pages.claim(
                "sessions",
                page,
                _id_key,
                lambda row: sweep or bool(self._wanted(_session_stored(row), services)),
                lambda keys: session_rows(self.engine, [int(k) for k in keys]),
            )
        before = self.counters.rows["sessions"].enriched
        wants, granted = self._page_wants("sessions", page, _session_stored, services)
        self.service.prefetch_sessions((_text(row.src_ip), w) for row, w in wants if w)
        pending: list[tuple[Any, dict[str, Outcome]]] = []
        idle: set[str] = set()
        for row, wanted in wants:
            if wanted:
                outcomes = self.service.enrich_session(
                    decode_text(row.session_id), _text(row.src_ip), services=wanted
                )
                pending.append((row, outcomes))
            else:
                idle.add(str(row.id))
            self._tick("sessions")
        written = self._write_sessions(pending) if pending else set()
        self._settle_budget("sessions", granted, before)
        if self.pages is not None:
            self.pages.settle("sessions", claimed, written, idle)
        return self.budget.spent("sessions")

    def _write_sessions(self, pending: list[tuple[Any, dict[str, Outcome]]]) -> set[str]:
        ids = [row.id for row, _ in pending]
        s = SESSIONS.c
        with self.engine.begin() as conn:
            owned = self._finish(conn, "sessions", {str(i) for i in ids})
            if owned is not None:
                pending = [(row, out) for row, out in pending if str(row.id) in owned]
                ids = [row.id for row, _ in pending]
            current = {
                r.id: r.enrichment
                for r in conn.execute(
                    self._locked(select(s.id, s.enrichment).where(s.id.in_(ids)))
                )
            }
            flags = vt_flags(conn, session_keys(row for row, _ in pending))
            moment = self.now()
            for row, outcomes in pending:
                if row.id not in current:
                    continue
                stored = current[row.id]
                merged = dict(stored) if isinstance(stored, dict) else {}
                for name, outcome in outcomes.items():
                    merged[name] = merged_envelope(merged.get(name), outcome)
                    self.counters.count_outcome(outcome)
                conn.execute(
                    update(SESSIONS)
                    .where(s.id == row.id)
                    .values(
                        enrichment=merged,
                        dshield_flagged=dshield_flag(merged.get("dshield")),
                        vt_flagged=flags.get((row.sensor, row.session_id), False),
                        updated_at=moment,
                    )
                )
        self.counters.rows["sessions"].enriched += len(pending)
        self.status.maybe_write()
        return {str(i) for i in ids}

    # Passwords ------------------------------------------------------------------------

    def _passwords(self) -> None:
        if "hibp" not in self.service.services:
            return
        opts = self.options
        for page in password_pages(self.engine, opts.since, opts.ids, opts.batch_size):
            if self._passwords_page(page, sweep=False):
                return
        if self.pages is None:
            return
        self.pages.sweep(
            "passwords",
            lambda keys: password_rows(self.engine, keys),
            _password_key,
            lambda rows, sweep: self._passwords_page(rows, sweep=sweep),
        )

    def _passwords_page(self, page: list[Any], *, sweep: bool) -> bool:
        """Look up and write one page; True when the row limit is reached."""
        claimed: set[str] = set()
        if self.pages is not None:
            page, claimed = self.pages.claim(
                "passwords",
                page,
                _password_key,
                lambda row: sweep or bool(self._wanted({"hibp": row.hibp}, ["hibp"])),
                lambda keys: password_rows(self.engine, keys),
            )
        before = self.counters.rows["passwords"].enriched
        wants, granted = self._page_wants(
            "passwords", page, lambda row: {"hibp": row.hibp}, ["hibp"]
        )
        self.service.prefetch_passwords(decode_text(row.password) for row, w in wants if w)
        pending: list[tuple[Any, Outcome]] = []
        idle: set[str] = set()
        for row, wanted in wants:
            if wanted:
                outcome = self.service.enrich_password(decode_text(row.password))
                pending.append((row, outcome))
            else:
                idle.add(str(row.password_sha256))
            self._tick("passwords")
        written = self._write_passwords(pending) if pending else set()
        self._settle_budget("passwords", granted, before)
        if self.pages is not None:
            self.pages.settle("passwords", claimed, written, idle)
        return self.budget.spent("passwords")

    def _write_passwords(self, pending: list[tuple[Any, Outcome]]) -> set[str]:
        p = PASSWORDS.c
        hashes = [row.password_sha256 for row, _ in pending]
        moment = self.now()
        with self.engine.begin() as conn:
            owned = self._finish(conn, "passwords", set(hashes))
            if owned is not None:
                pending = [(row, out) for row, out in pending if row.password_sha256 in owned]
                hashes = [row.password_sha256 for row, _ in pending]
            current = {
                r.password_sha256: r.hibp
                for r in conn.execute(
                    self._locked(
                        select(p.password_sha256, p.hibp).where(p.password_sha256.in_(hashes))
                    )
                )
            }
            for row, outcome in pending:
                self.counters.count_outcome(outcome)
                envelope = merged_envelope(current.get(row.password_sha256), outcome)
                kept = read_envelope(envelope)
                breached, count = breach_fields(kept)
                values = {
                    "hibp": envelope,
                    "breached": breached,
                    "breach_count": count,
                    "updated_at": moment,
                }
                if row.password_sha256 in current:
                    conn.execute(
                        update(PASSWORDS)
                        .where(p.password_sha256 == row.password_sha256)
                        .values(**values)
                    )
                    continue
                insert = (postgresql.insert if self.pg else sqlite.insert)(PASSWORDS)
                # A concurrent refresh may have inserted it since the page was read: its
                # row wins, and the next run sees it as done or retries it.
                conn.execute(
                    insert.values(
                        password_sha256=row.password_sha256, **values
                    ).on_conflict_do_nothing(index_elements=["password_sha256"])
                )
        self.counters.rows["passwords"].enriched += len(pending)
        self.status.maybe_write()
        return set(hashes)

    def _locked(self, query: Any) -> Any:
        # SQLite's BEGIN IMMEDIATE already holds the write lock; PostgreSQL needs the rows
        # locked so a concurrent refresh cannot merge into the same JSON at once.
        return query.with_for_update() if self.pg else query


def _with_tiers(document: dict[str, Any], service: EnrichmentService) -> dict[str, Any]:
    """Add the hybrid cache's hits and misses per tier and service (cache source
    tracking) to a status document, when the cache has tiers."""
    tier_counts = getattr(service.cache, "tier_counts", None)
    if callable(tier_counts):
        document["cache"]["tiers"] = tier_counts()
    return document


def _id_key(row: Any) -> str:
    """The claim key of a session or file row."""
    return str(row.id)


def _password_key(row: Any) -> str:
    """The claim key of a password row."""
    return str(row.password_sha256)


def _text(value: str | None) -> str | None:
    return decode_text(value) if value is not None else None


def _file_stored(row: Any) -> dict[str, Any]:
    return {"virustotal": row.vt_analysis, "urlhaus": row.urlhaus}


def _session_stored(row: Any) -> dict[str, Any]:
    return row.enrichment if isinstance(row.enrichment, dict) else {}
