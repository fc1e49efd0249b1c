"""What the refresh job looks at: the rows of each kind, page by page, and which of their
services need a lookup.

Rows are read in pages ordered by a unique column (keyset pagination: ``id`` for sessions
and files, ``password_sha256`` for passwords), so a page query costs the same at the start
and the end of a large table, and rows inserted by a concurrent load simply show up in a
later page. Whether a row needs work is decided in Python from its stored envelopes
(:func:`needs_lookup`), because JSON queries differ between SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.sql import Select

from cowrieprocessor.db.models import File, LoginAttempt, PasswordEnrichment, SessionSummary
from cowrieprocessor.db.models import table_of as _table_of
from cowrieprocessor.db.textrule import decode_json, decode_text, encode_text
from cowrieprocessor.enrichment.cache import TTLPolicy
from cowrieprocessor.enrichment.outcome import Outcome, Status

logger = logging.getLogger(__name__)

SESSIONS = _table_of(SessionSummary)
FILES = _table_of(File)
LOGINS = _table_of(LoginAttempt)
PASSWORDS = _table_of(PasswordEnrichment)

#: What a bare session id in an ``--ids-from`` file cannot hold: a separator of a pair.
_NOT_BARE = re.compile(r"[\s,]")
#: How many ids go into one ``IN (...)`` when ``--ids-from`` names sessions.
_ID_CHUNK = 500


class Mode(StrEnum):
    """Which rows a refresh rewrites."""

    #: Rows without an outcome, or whose outcome should be retried (error, changeable skip).
    ONLY_MISSING = "only_missing"
    #: Those, and rows whose definitive outcome is older than the service's TTL.
    STALE = "stale"
    #: Every row (fresh cache entries are still used).
    ALL = "all"


def read_envelope(stored: Any) -> Outcome | None:
    """The outcome a stored (text-rule encoded) envelope holds; None when absent or bad."""
    if not isinstance(stored, dict):
        return None
    try:
        return Outcome.from_envelope(decode_json(stored))
    except (ValueError, KeyError, TypeError):
        logger.debug("unreadable stored envelope treated as missing")
        return None


def needs_lookup(stored: Any, service: str, mode: Mode, policy: TTLPolicy, now: datetime) -> bool:
    """Whether a row whose envelope for ``service`` is ``stored`` needs a new lookup."""
    if mode == Mode.ALL:
        return True
    outcome = read_envelope(stored)
    if outcome is None or outcome.retry_later:
        return True
    if mode == Mode.STALE and outcome.definitive:
        # A password's answer is as old as its HIBP range, which is cached (and expires)
        # as a success whatever the password's own status; judging a not-found password
        # by the shorter TTL would rewrite it from the same cached range on every run.
        status = Status.SUCCESS if service == "hibp" else outcome.status
        return outcome.checked_at + policy.ttl_for(service, status) <= now
    return False


@dataclass(frozen=True)
class IdFilter:
    """Sessions named by ``--ids-from``: ``sensor<TAB>session_id`` pairs or bare ids."""

    pairs: frozenset[tuple[str, str]]
    bare: frozenset[str]

    @classmethod
    def from_file(cls, path: Path) -> IdFilter:
        """The sessions :meth:`read` finds in ``path``, without its skipped lines."""
        return cls.read(path)[0]

    @classmethod
    def read(cls, path: Path) -> tuple[IdFilter, list[tuple[int, str]]]:
        """Read one session per line; blank lines and ``#`` comments are ignored.

        Also returns the lines not understood, as (line number, text), which name no
        session: more than one tab, an empty sensor or id beside the tab, or a line
        without a tab holding a blank or a comma (a pair separated by something else).

        Raises:
            OSError: the file cannot be read.
        """
        pairs: set[tuple[str, str]] = set()
        bare: set[str] = set()
        skipped: list[tuple[int, str]] = []
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        # Lines end at \n alone (\r\n too): splitlines() would also cut at the \x1c..\x1e,
        # \x85 and U+2028 an attacker's session id may hold, which the export writes.
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.strip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) == 2 and all(fields):
                pairs.add((fields[0], fields[1]))
            elif len(fields) == 1 and not _NOT_BARE.search(fields[0]):
                bare.add(fields[0])
            else:
                skipped.append((number, line))
        return cls(frozenset(pairs), frozenset(bare)), skipped

    def __len__(self) -> int:
        return len(self.pairs) + len(self.bare)

    def matches(self, sensor: str, session_id: str) -> bool:
        """``sensor`` and ``session_id`` as stored (text-rule encoded)."""
        sensor, session_id = decode_text(sensor), decode_text(session_id)
        return session_id in self.bare or (sensor, session_id) in self.pairs

    def session_ids(self) -> list[str]:
        """Every session id named, encoded as stored."""
        return sorted({encode_text(s) for s in self.bare | {p[1] for p in self.pairs}})


def count_rows(engine: Engine, since: datetime | None) -> dict[str, int]:
    """How many sessions, files and distinct passwords the run may look at (for the ETA)."""
    sessions = select(func.count()).select_from(SESSIONS)
    files = select(func.count()).select_from(FILES)
    passwords = select(func.count(func.distinct(LOGINS.c.password_sha256))).where(
        LOGINS.c.password_sha256.is_not(None)
    )
    if since is not None:
        sessions = sessions.where(SESSIONS.c.first_event_at >= since)
        files = files.where(FILES.c.first_seen >= since)
        passwords = passwords.where(LOGINS.c.event_time >= since)
    with engine.connect() as conn:
        return {
            "sessions": int(conn.scalar(sessions) or 0),
            "files": int(conn.scalar(files) or 0),
            "passwords": int(conn.scalar(passwords) or 0),
        }


def _pages(engine: Engine, query: Select[Any], column: Any, page_size: int) -> Iterator[list[Any]]:
    last: Any = None
    while True:
        page_query = query if last is None else query.where(column > last)
        with engine.connect() as conn:
            rows = list(conn.execute(page_query.order_by(column).limit(page_size)).all())
        if not rows:
            return
        yield rows
        last = getattr(rows[-1], column.name)


def session_pages(
    engine: Engine, since: datetime | None, ids: IdFilter | None, page_size: int
) -> Iterator[list[Any]]:
    """Pages of ``(id, sensor, session_id, src_ip, enrichment)`` in id order."""
    s = SESSIONS.c
    query = select(s.id, s.sensor, s.session_id, s.src_ip, s.enrichment)
    if since is not None:
        query = query.where(s.first_event_at >= since)
    for rows in _pages(engine, query, s.id, page_size):
        yield [r for r in rows if ids is None or ids.matches(r.sensor, r.session_id)]


def file_pages(
    engine: Engine, since: datetime | None, ids: IdFilter | None, page_size: int
) -> Iterator[list[Any]]:
    """Pages of ``(id, sensor, session_id, shasum, url, filename, vt_analysis, urlhaus)``."""
    f = FILES.c
    query = select(
        f.id, f.sensor, f.session_id, f.shasum, f.url, f.filename, f.vt_analysis, f.urlhaus
    )
    if since is not None:
        query = query.where(f.first_seen >= since)
    for rows in _pages(engine, query, f.id, page_size):
        yield [r for r in rows if ids is None or ids.matches(r.sensor, r.session_id)]


def _password_hashes_of(engine: Engine, ids: IdFilter) -> set[str]:
    """The password hashes of the named sessions' login attempts."""
    found: set[str] = set()
    names = ids.session_ids()
    with engine.connect() as conn:
        for start in range(0, len(names), _ID_CHUNK):
            chunk = names[start : start + _ID_CHUNK]
            rows = conn.execute(
                select(LOGINS.c.sensor, LOGINS.c.session_id, LOGINS.c.password_sha256).where(
                    LOGINS.c.session_id.in_(chunk), LOGINS.c.password_sha256.is_not(None)
                )
            )
            found.update(r.password_sha256 for r in rows if ids.matches(r.sensor, r.session_id))
    return found


def password_pages(
    engine: Engine, since: datetime | None, ids: IdFilter | None, page_size: int
) -> Iterator[list[Any]]:
    """Pages of ``(password_sha256, password, pe_id, hibp)``, one per distinct password.

    ``password`` is one stored (encoded) spelling of it; ``pe_id`` and ``hibp`` are None
    when the password has no ``password_enrichment`` row yet.
    """
    wanted = _password_hashes_of(engine, ids) if ids is not None else None
    la = LOGINS.c
    last: str | None = None
    while True:
        inner = (
            select(la.password_sha256, func.min(la.password).label("password"))
            .where(la.password_sha256.is_not(None), la.password.is_not(None))
            .group_by(la.password_sha256)
            .order_by(la.password_sha256)
            .limit(page_size)
        )
        if since is not None:
            inner = inner.where(la.event_time >= since)
        if last is not None:
            inner = inner.where(la.password_sha256 > last)
        sub = inner.subquery()
        query = (
            select(sub.c.password_sha256, sub.c.password, PASSWORDS.c.id, PASSWORDS.c.hibp)
            .select_from(
                sub.outerjoin(PASSWORDS, PASSWORDS.c.password_sha256 == sub.c.password_sha256)
            )
            .order_by(sub.c.password_sha256)
        )
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return
        last = rows[-1].password_sha256
        yield [r for r in rows if wanted is None or r.password_sha256 in wanted]


def session_keys(rows: Iterable[Any]) -> set[tuple[str, str]]:
    """The distinct (sensor, session_id) pairs of rows, as stored."""
    return {(r.sensor, r.session_id) for r in rows}


def session_rows(engine: Engine, ids: Iterable[int]) -> list[Any]:
    """The sessions with these ids as they are now, shaped like :func:`session_pages`."""
    s = SESSIONS.c
    query = select(s.id, s.sensor, s.session_id, s.src_ip, s.enrichment)
    return _rows_by(engine, query, s.id, sorted(set(ids)))


def file_rows(engine: Engine, ids: Iterable[int]) -> list[Any]:
    """The files with these ids as they are now, shaped like :func:`file_pages`."""
    f = FILES.c
    query = select(
        f.id, f.sensor, f.session_id, f.shasum, f.url, f.filename, f.vt_analysis, f.urlhaus
    )
    return _rows_by(engine, query, f.id, sorted(set(ids)))


def password_rows(engine: Engine, hashes: Iterable[str]) -> list[Any]:
    """The distinct passwords with these hashes as they are now, like :func:`password_pages`."""
    la = LOGINS.c
    found: list[Any] = []
    wanted = sorted(set(hashes))
    for start in range(0, len(wanted), _ID_CHUNK):
        chunk = wanted[start : start + _ID_CHUNK]
        sub = (
            select(la.password_sha256, func.min(la.password).label("password"))
            .where(la.password_sha256.in_(chunk), la.password.is_not(None))
            .group_by(la.password_sha256)
            .subquery()
        )
        query = (
            select(sub.c.password_sha256, sub.c.password, PASSWORDS.c.id, PASSWORDS.c.hibp)
            .select_from(
                sub.outerjoin(PASSWORDS, PASSWORDS.c.password_sha256 == sub.c.password_sha256)
            )
            .order_by(sub.c.password_sha256)
        )
        with engine.connect() as conn:
            found.extend(conn.execute(query).all())
    return found


def _rows_by(engine: Engine, query: Select[Any], column: Any, ids: list[Any]) -> list[Any]:
    found: list[Any] = []
    with engine.connect() as conn:
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            found.extend(conn.execute(query.where(column.in_(chunk)).order_by(column)).all())
    return found
